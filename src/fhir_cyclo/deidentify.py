"""De-identification for export: drop direct identifiers, keep birth year, shift dates per patient.

One random offset (days) per patient, kept with a secret in a local key file, shifts every full
date, so intervals, and therefore response scoring, are unchanged. A partial date ("2011-12") is
shifted at its first day and re-truncated to its precision, so it can move by less than one unit of
that precision (documented in the README). Ages and relative times are not dates and stay as they
are. The case identifier becomes an HMAC pseudonym: stable across runs with the same key file, so
re-exporting still updates instead of duplicating, and useless without the key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from fhir_cyclo.case import Case, date_lower_bound
from fhir_cyclo.errors import InputError
from fhir_cyclo.terminology import LOCAL_BASE

PSEUDONYM_SYSTEM = f"{LOCAL_BASE}/sid/deidentified-case"
MAX_SHIFT_DAYS = 365  # offsets are drawn from [-365, -1] U [1, 365]


class KeyFile:
    """{"secret": hex, "offsets": {pseudonym: days}}; created on first use, written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                self.secret = bytes.fromhex(data["secret"])
                self.offsets: dict[str, int] = {k: int(v) for k, v in data["offsets"].items()}
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(f"not a fhir-cyclo key file: {exc}", source=str(path)) from None
        else:
            self.secret = secrets.token_bytes(32)
            self.offsets = {}
        self._dirty = not path.exists()

    def pseudonym(self, case: Case) -> str:
        digest = hmac.new(self.secret, case.identifier.token.encode(), hashlib.sha256).hexdigest()
        return digest[:24]

    def offset(self, pseudonym: str) -> int:
        if pseudonym not in self.offsets:
            days = secrets.randbelow(MAX_SHIFT_DAYS) + 1
            self.offsets[pseudonym] = days if secrets.randbelow(2) else -days
            self._dirty = True
        return self.offsets[pseudonym]

    def save(self) -> None:
        if not self._dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        # The key re-identifies every date: owner-only permissions from the first byte.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"secret": self.secret.hex(), "offsets": self.offsets}, fh, indent=1)
        os.replace(tmp, self.path)
        self._dirty = False


def shift_date(value: str, days: int) -> str:
    """Shift a FHIR date/dateTime by `days`, keeping its precision (and time of day)."""
    first = date_lower_bound(value) + dt.timedelta(days=days)
    if len(value) == 4:
        return f"{first.year:04d}"
    if len(value) == 7:
        return f"{first.year:04d}-{first.month:02d}"
    return first.isoformat() + value[10:]


def _shift(node: Any, days: int, key: str = "") -> Any:
    """Walk the case's plain data and shift every date-valued field."""
    if isinstance(node, dict):
        return {k: _shift(v, days, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_shift(v, days, key) for v in node]
    if isinstance(node, str) and key in _DATE_FIELDS:
        return shift_date(node, days)
    return node


# Fields of the case model that hold a When/PartialDate (a dict When is age or text: untouched).
_DATE_FIELDS = {
    "onset", "abatement", "start", "end", "date", "performed", "performed_end", "deceased",
}  # fmt: skip


def deidentify(case: Case, keys: KeyFile) -> Case:
    """A copy of `case` without direct identifiers and with every date shifted by one offset."""
    pseudonym = keys.pseudonym(case)
    days = keys.offset(pseudonym)
    data = case.model_dump(mode="json", exclude_none=True)
    patient = data["patient"]
    for field in ("name", "telecom", "address"):
        patient.pop(field, None)
    if "birth_date" in patient:
        patient["birth_date"] = patient["birth_date"][:4]
    if isinstance(patient.get("deceased"), str):
        patient["deceased"] = shift_date(patient["deceased"], days)
    for group in ("diagnoses", "treatments", "labs", "imaging", "marrow", "procedures",
                  "adverse_events"):  # fmt: skip
        data[group] = _shift(data.get(group, []), days)
    data["identifier"] = {"system": PSEUDONYM_SYSTEM, "value": pseudonym}
    return Case.model_validate(data)
