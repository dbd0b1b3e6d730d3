"""De-identification for export: drop direct identifiers, pseudonymise ids, shift dates per patient.

Each patient gets one random offset, kept with a secret in a local key file, and every date of the
patient moves by it. The offset is a whole number of 4-year leap cycles (4 to 40 years back), not a
number of days: response scoring counts calendar months (start + 3/6/12 months, clamped to month
end) and a day shift changes month lengths under the dates, moving windows by up to 3 days (it
flipped a day-32 lab into a window in our tests). Shifting by leap cycles keeps every interval,
every calendar-month target, and the precision of partial dates ("2011-12") exactly. The birth date
is cut to its year and shifted by the same offset, so ages stay right. Ages and relative times are
not dates and stay as they are. The case identifier becomes an HMAC pseudonym: stable with the same
key file, so re-exports update instead of duplicating, and meaningless without the key.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from fhir_cyclo.core.case import Case
from fhir_cyclo.core.errors import InputError, UsageError
from fhir_cyclo.core.terminology import LOCAL_BASE

PSEUDONYM_SYSTEM = f"{LOCAL_BASE}/sid/deidentified-case"
LEAP_CYCLE_YEARS = 4
MAX_CYCLES = 10  # offsets are -4, -8, ..., -40 years


class KeyFile:
    """{"secret": hex, "offsets": {pseudonym: years}}; created on first use, written atomically."""

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
            cycles = secrets.randbelow(MAX_CYCLES) + 1
            self.offsets[pseudonym] = -LEAP_CYCLE_YEARS * cycles
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


MARKER = ".fhir-cyclo-deidentified"  # in the output folder: which key made its pseudonyms


def key_fingerprint(secret: bytes) -> str:
    """Names a key without revealing it (HMAC of a fixed label), for the output-folder marker."""
    return hmac.new(secret, b"fhir-cyclo key fingerprint", hashlib.sha256).hexdigest()[:16]


def check_key_file(path: Path, out_dir: Path) -> None:
    """Usage checks for --key-file, before any work: where it is, and that the output folder
    holds no pseudonyms made with another key (two keys = two pseudonymous copies of a patient).
    """
    if path.resolve().is_relative_to(out_dir.resolve()):
        raise UsageError(f"--key-file {path}: must not be inside the output folder {out_dir}")
    if path.exists() and not path.is_file():
        raise UsageError(f"--key-file {path}: is not a file")
    if not path.exists() and path.parent.exists() and not os.access(path.parent, os.W_OK):
        raise UsageError(f"--key-file {path}: cannot create it (permission denied)")
    if not path.exists() and not path.parent.is_dir():
        raise UsageError(f"--key-file {path}: folder {path.parent} does not exist")
    marker = out_dir / MARKER
    if not marker.is_file():
        if out_dir.is_dir() and any(out_dir.glob("*.json")):
            raise UsageError(
                f"--out {out_dir}: holds Bundles that were not de-identified (or by an older "
                "version); use an empty folder for a de-identified export"
            )
        return
    try:
        keys = KeyFile(path) if path.exists() else None
    except InputError as exc:
        raise UsageError(str(exc)) from None
    recorded = marker.read_text(encoding="utf-8").strip()
    if keys is None or key_fingerprint(keys.secret) != recorded:
        raise UsageError(
            f"--out {out_dir}: was de-identified with another key file; re-export there only with "
            "that key, or use an empty folder (two keys would give each patient two pseudonyms)"
        )


def mark_folder(out_dir: Path, keys: KeyFile) -> None:
    """Record which key made the pseudonyms in `out_dir` (see check_key_file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text(key_fingerprint(keys.secret) + "\n", encoding="utf-8")


def shift_date(value: str, years: int) -> str:
    """Move a FHIR date/dateTime by whole years, keeping its precision and time of day.

    A 4-year multiple keeps 29 February valid except across 1900/2100 (not leap years): that one
    day becomes 28 February.
    """
    year = int(value[:4]) + years
    rest = value[4:]
    if rest.startswith("-02-29") and not calendar.isleap(year):
        rest = "-02-28" + rest[6:]
    return f"{year:04d}{rest}"


def _shift(node: Any, years: int, key: str = "") -> Any:
    """Walk the case's plain data and shift every date-valued field."""
    if isinstance(node, dict):
        return {k: _shift(v, years, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_shift(v, years, key) for v in node]
    if isinstance(node, str) and key in _DATE_FIELDS:
        return shift_date(node, years)
    return node


# Fields of the case model that hold a When/PartialDate (a dict When is age or text: untouched).
_DATE_FIELDS = {
    "onset", "abatement", "start", "end", "date", "performed", "performed_end", "deceased",
}  # fmt: skip


def deidentify(case: Case, keys: KeyFile) -> Case:
    """A copy of `case` without direct identifiers and with every date shifted by one offset."""
    pseudonym = keys.pseudonym(case)
    years = keys.offset(pseudonym)
    data = case.model_dump(mode="json", exclude_none=True)
    patient = data["patient"]
    for field in ("name", "telecom", "address"):
        patient.pop(field, None)
    if "birth_date" in patient:
        patient["birth_date"] = shift_date(patient["birth_date"][:4], years)
    if isinstance(patient.get("deceased"), str):
        patient["deceased"] = shift_date(patient["deceased"], years)
    for group in ("diagnoses", "treatments", "labs", "imaging", "marrow", "procedures",
                  "adverse_events"):  # fmt: skip
        data[group] = _shift(data.get(group, []), years)
    data["identifier"] = {"system": PSEUDONYM_SYSTEM, "value": pseudonym}
    return Case.model_validate(data)
