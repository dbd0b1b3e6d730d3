"""Reading and checking one case record (YAML/JSON, CSV rows): shared by case files and cohorts.

Every problem becomes an InputError naming the file and the field.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from fhir_cyclo.core.case import Age, Case, Lab, date_lower_bound
from fhir_cyclo.core.errors import InputError, pydantic_path
from fhir_cyclo.core.terminology import Terminology
from fhir_cyclo.core.units import unit_problem

CASE_SUFFIXES = (".yaml", ".yml", ".json")
COHORT_PATIENTS = "patients.csv"
COHORT_LABS = "labs.csv"
COHORT_META = "cohort.yaml"


@dataclass(frozen=True)
class Loaded:
    """A case read from `source`, or the error that stopped it."""

    source: str
    case: Case | None = None
    error: InputError | None = None  # the first problem, "(and N more)" when there are more
    problems: tuple[InputError, ...] = ()  # every problem found (validate lists them all)
    # A FHIR Bundle file met by `load(..., bundles=True)` (push sends those as they are).
    bundle: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.error is not None and not self.problems:
            object.__setattr__(self, "problems", (self.error,))

    @classmethod
    def failed(cls, source: str, problems: list[InputError]) -> Loaded:
        first = problems[0]
        if len(problems) > 1:
            first = InputError(
                f"{first.message} (and {len(problems) - 1} more; `fhir-cyclo validate` lists all)",
                source=first.source,
                path=first.path,
            )
        return cls(source, error=first, problems=tuple(problems))


def validation_errors(exc: ValidationError, source: str) -> list[InputError]:
    """Every model error as an InputError, once per field (union branches report alike)."""
    out: list[InputError] = []
    seen: set[str] = set()
    for err in exc.errors():
        path = pydantic_path(err["loc"])
        if path in seen:
            continue
        seen.add(path)
        message = str(err["msg"]).removeprefix("Value error, ")
        out.append(InputError(message, source=source, path=path))
    return out


def from_validation_error(exc: ValidationError, source: str) -> InputError:
    errors = validation_errors(exc, source)
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return InputError(first.message + more, source=source, path=first.path)


# --- discovery ----------------------------------------------------------------------------------


def read_structured(path: Path) -> Any:
    source = str(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", source=source) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=source) from None
    if not text.strip():
        raise InputError("file is empty", source=source)
    try:
        if path.suffix == ".json":
            return _json(text, raw)
        return yaml.safe_load(text)
    except RecursionError:  # "[[[[..." thousands deep: the parsers recurse per level
        raise InputError("nested too deeply to read (thousands of levels)", source=source) from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", source=source
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise InputError(f"invalid YAML: {problem}{where}", source=source) from None


# Twenty digits in a row may be an integer beyond 64 bits, which orjson reads as a float. Found
# by mapping every ASCII digit to "0" and everything else to " " (UTF-8 continuation bytes are
# >= 0x80, so a run in the bytes is a run of ASCII digits in the text): bytes.translate and a
# substring search take ~20 us on a 29 KB case file where re's `\d{20}` took ~370 us.
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_TWENTY_ZEROS = b"0" * 20


def _json(text: str, raw: bytes) -> Any:
    # orjson reads a case file ~4x faster than json; a file it refuses (or that may hold a huge
    # integer) goes to json, whose rules decide and whose message (line, column) the user sees.
    # `raw` is the UTF-8 encoding of `text`.
    if _TWENTY_ZEROS in raw.translate(_DIGITS_AS_ZERO):
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


# --- checks against the tables and the calendar -------------------------------------------------


def check_case(
    case: Case, terms: Terminology, today: dt.date | None = None
) -> list[tuple[str, str]]:
    """(path, message) for every problem the model alone cannot see: unknown keys, units, values.

    Paths name items by id (`labs[hb-2011].value`): the case keeps items sorted by id, so a
    position would not match the file.
    """
    today = today or dt.date.today()
    problems: list[tuple[str, str]] = []

    def unknown(kind: str, name: str, group: Mapping[str, object], anchor: str) -> str:
        return unknown_name(kind, name, group, anchor)

    def future(when: object, path: str) -> None:
        if isinstance(when, str) and date_lower_bound(when) > today:
            problems.append((path, f"date {when} is in the future"))

    def order(start: object, end: object, path: str) -> None:
        if (
            isinstance(start, str)
            and isinstance(end, str)
            and end[: len(start)] < start[: len(end)]
        ):
            problems.append((path, f"end {end} is before start {start}"))
        if isinstance(start, Age) and isinstance(end, Age) and end.age < start.age:
            problems.append((path, f"end age {end.age} is before start age {start.age}"))

    future(case.patient.birth_date, "patient.birth_date")
    for d in case.diagnoses:
        i = d.id
        if d.concept not in terms.diagnoses:
            problems.append(
                (
                    f"diagnoses[{i}].concept",
                    unknown("diagnosis", d.concept, terms.diagnoses, "diagnoses"),
                )
            )
        if d.body_site and d.body_site not in terms.body_sites:
            problems.append(
                (
                    f"diagnoses[{i}].body_site",
                    unknown("body site", d.body_site, terms.body_sites, "body-sites"),
                )
            )
        future(d.onset, f"diagnoses[{i}].onset")
        order(d.onset, d.abatement, f"diagnoses[{i}].abatement")
    for t in case.treatments:
        i = t.id
        if t.drug not in terms.drugs:
            problems.append(
                (f"treatments[{i}].drug", unknown("drug", t.drug, terms.drugs, "drugs"))
            )
        future(t.start, f"treatments[{i}].start")
        order(t.start, t.end, f"treatments[{i}].end")
    for lab in case.labs:
        i = lab.id
        problems.extend(_check_lab(lab, f"labs[{i}]", terms))
        future(lab.date, f"labs[{i}].date")
    for m in case.marrow:
        i = m.id
        if m.finding not in terms.marrow_findings:
            problems.append(
                (
                    f"marrow[{i}].finding",
                    unknown("marrow finding", m.finding, terms.marrow_findings, "marrow-findings"),
                )
            )
    for p in case.procedures:
        i = p.id
        if p.procedure not in terms.procedures:
            problems.append(
                (
                    f"procedures[{i}].procedure",
                    unknown("procedure", p.procedure, terms.procedures, "procedures"),
                )
            )
        future(p.performed, f"procedures[{i}].performed")
        order(p.performed, p.performed_end, f"procedures[{i}].performed_end")
    for ae in case.adverse_events:
        i = ae.id
        if ae.event not in terms.adverse_events:
            problems.append(
                (
                    f"adverse_events[{i}].event",
                    unknown("adverse event", ae.event, terms.adverse_events, "adverse-events"),
                )
            )
        future(ae.date, f"adverse_events[{i}].date")
    for img in case.imaging:
        i = img.id
        future(img.date, f"imaging[{i}].date")
    return problems


def close_matches(name: str, group: Mapping[str, object], limit: int = 3) -> list[str]:
    """Keys of `group` close to `name`: same key ignoring case and separators first, then keys
    or concept labels (`text`) that look alike."""
    fold = re.sub(r"[\s_-]+", "", name).lower()
    exact = [k for k in group if re.sub(r"[\s_-]+", "", k).lower() == fold]
    if exact:
        return exact
    labels: dict[str, str] = {}
    for key, concept in group.items():
        labels[key.lower()] = key
        text = getattr(concept, "text", None) or getattr(concept, "display", None)
        if isinstance(text, str):
            labels.setdefault(text.lower(), key)
    found = difflib.get_close_matches(name.lower(), list(labels), n=limit * 2, cutoff=0.6)
    prefix = [k for k in group if k.startswith(name.lower()) or name.lower().startswith(k)]
    out: list[str] = []
    for key in [*prefix, *(labels[f] for f in found)]:
        if key not in out:
            out.append(key)
    return out[:limit]


def unknown_name(kind: str, name: str, group: Mapping[str, object], anchor: str) -> str:
    """'unknown drug 'ciclosporin'; did you mean 'cyclosporine'? (valid names: ...)'."""
    matches = close_matches(name, group)
    hint = f"; did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""
    return (
        f"unknown {kind} {name!r}{hint} (valid names: docs/reference.md#{anchor}, from "
        "mappings/terminology.yaml)"
    )


def _check_lab(lab: Lab, path: str, terms: Terminology) -> list[tuple[str, str]]:
    concept = terms.analytes.get(lab.analyte)
    if concept is None:
        return [
            (f"{path}.analyte", unknown_name("analyte", lab.analyte, terms.analytes, "analytes"))
        ]
    if lab.value is None or lab.unit is None:
        return []
    if concept.qualitative:
        return [(f"{path}.value", f"{lab.analyte} is qualitative: give interpretation POS/NEG")]
    factor = concept.factor_to_unit(lab.unit)
    if factor is None:
        return [(f"{path}.unit", unit_problem(lab.unit, lab.analyte, concept.unit or ""))]
    if concept.plausible:
        low, high = concept.plausible
        value = lab.value * factor
        if not low <= value <= high:
            return [
                (
                    f"{path}.value",
                    f"{lab.value} {lab.unit} is impossible for {lab.analyte} "
                    f"(accepted {low}-{high} {concept.unit})",
                )
            ]
    return []


def read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV with the required columns, or an InputError naming the missing ones."""
    source = str(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise InputError("file missing", source=source) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", source=source) from None
    try:
        reader = csv.DictReader(text.splitlines())
        columns = reader.fieldnames or []
        missing = [c for c in required if c not in columns]
        if missing:
            raise InputError(
                f"missing column(s): {', '.join(missing)}", source=source, path="header"
            )
        rows = list(reader)
    except csv.Error as exc:  # a NUL byte, an unterminated quote, a field over the size limit
        raise InputError(f"not a readable CSV: {exc}", source=source) from None
    for line, row in enumerate(rows, start=2):
        # DictReader fills a short row with None and files a long row's extras under None.
        if None in row or any(v is None for v in row.values()):
            fields = len(columns) + len(row.get(None) or []) - sum(v is None for v in row.values())
            raise InputError(
                f"row has {fields} field(s), the header has {len(columns)}",
                source=f"{source}:{line}",
            )
    return rows
