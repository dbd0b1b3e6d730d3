"""Cohort CSV layout (patients.csv + long-format labs.csv + cohort.yaml) -> one Case per patient."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from fhir_cyclo.core.case import AdverseEvent, Case, Diagnosis, Patient, Treatment
from fhir_cyclo.core.errors import InputError
from fhir_cyclo.core.terminology import Terminology
from fhir_cyclo.readers.checks import (
    COHORT_LABS,
    COHORT_META,
    COHORT_PATIENTS,
    Loaded,
    check_case,
    from_validation_error,
    read_csv,
    read_structured,
)

PATIENT_COLUMNS = ("case_id", "sex", "disease", "csa_start")
LAB_COLUMNS = ("case_id", "date", "analyte", "value", "unit")
# Every column the reader uses, with what it holds: docs/reference.md is generated from these.
PATIENT_COLUMN_DOCS = {
    "case_id": "the patient's id in the cohort (with cohort.yaml identifier_system: the case id)",
    "sex": "female, male, other or unknown (any case)",
    "disease": "a diagnosis name (see Diagnoses; any case)",
    "csa_start": "cyclosporine start date (YYYY, YYYY-MM or YYYY-MM-DD)",
    "birth_year": "optional: year of birth",
    "deceased": "optional: yes, or the date of death",
    "diagnosis_date": "optional: date of diagnosis",
    "dat_pattern": "optional (AIHA): IgG, IgG+C or IgA (any case)",
    "csa_end": "optional: cyclosporine end date",
    "csa_dose_mg_kg_d": "optional: starting dose in mg/kg/day (two doses a day)",
    "csa_status": "optional: treatment status (default completed; see enumerated values)",
    "prior_lines": "optional: number of earlier lines of therapy",
    "splenectomy_date": "optional: date of splenectomy",
    "ae_event": "optional: an adverse event name (see Adverse events)",
    "ae_grade": "optional: CTCAE grade 1-5 (with ae_event)",
    "ae_date": "optional: date of the adverse event",
    "ae_serious": "optional: yes or no (default no)",
    "ae_outcome": "optional: resolved, recovering, ongoing, fatal or unknown",
}
LAB_COLUMN_DOCS = {
    "case_id": "the patient (a case_id of patients.csv)",
    "date": "date of the measurement",
    "analyte": "an analyte name (see Analytes; any case)",
    "value": "the number as reported",
    "unit": "the unit as reported: UCUM or a lab spelling (see Units)",
    "ref_low": "optional: lower reference limit, in the same unit",
    "ref_high": "optional: upper reference limit, in the same unit",
}
META_KEY_DOCS = {
    "identifier_system": "required: the URI that makes case_id a case identifier",
    "synthetic": "optional: true marks every patient as synthetic test data",
}
# Cohort paper, Methods: "CyA starting dose of 3-5 mg/kg/day in two divided doses".
DOSES_PER_DAY = 2


def cohort_cases(folder: Path, terms: Terminology) -> Iterator[Loaded]:
    meta_path = folder / COHORT_META
    try:
        meta = read_structured(meta_path) if meta_path.exists() else {}
        if not isinstance(meta, dict) or not meta.get("identifier_system"):
            raise InputError("needs `identifier_system`", source=str(meta_path))
        patients = read_csv(folder / COHORT_PATIENTS, PATIENT_COLUMNS)
        labs = read_csv(folder / COHORT_LABS, LAB_COLUMNS)
    except InputError as exc:
        yield Loaded(str(folder), error=exc)
        return
    labs_file = str(folder / COHORT_LABS)
    patients_file = str(folder / COHORT_PATIENTS)
    by_case: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
    known = {row["case_id"] for row in patients}
    for line, row in enumerate(labs, start=2):
        if row["case_id"] not in known:
            yield Loaded(
                f"{labs_file}:{line}",
                error=InputError(
                    f"lab row for unknown patient {row['case_id']!r}",
                    source=f"{labs_file}:{line}",
                    path="case_id",
                ),
            )
            continue
        by_case[row["case_id"]].append((line, row))
    for line, row in enumerate(patients, start=2):
        source = f"{patients_file}:{line}"
        try:
            data = _case_dict(row, by_case.get(row["case_id"], []), meta, labs_file, terms)
            case = Case.model_validate(_without_lines(data))
        except InputError as exc:
            yield Loaded(source, error=exc)
            continue
        except ValidationError as exc:
            yield Loaded(source, error=_csv_error(exc, source, labs_file, by_case[row["case_id"]]))
            continue
        problems = check_case(case, terms)
        if problems:
            yield Loaded.failed(
                source,
                [_point_at_lab_row(m, source, p, data, labs_file) for p, m in problems],
            )
            continue
        yield Loaded(source, case=case)


def _csv_error(
    exc: ValidationError, source: str, labs_file: str, lab_rows: list[tuple[int, dict[str, str]]]
) -> InputError:
    """Point a model error at the CSV cell it came from (labs[3].value -> labs.csv:57 value)."""
    err = from_validation_error(exc, source)
    match = re.match(r"labs\[(\d+)\]\.?(.*)", err.path)
    if match:
        # Lab items are sorted by id inside the Case; find the row by the id we generated.
        index = int(match[1])
        ids = sorted((_lab_id(r, 0), line) for line, r in lab_rows)
        if index < len(ids):
            return InputError(err.message, source=f"{labs_file}:{ids[index][1]}", path=match[2])
    return err


def _point_at_lab_row(
    message: str, source: str, path: str, data: dict[str, Any], labs_file: str
) -> InputError:
    """A problem in `labs[<id>].field` is reported at its labs.csv line, where it can be fixed."""
    match = re.match(r"labs\[([^\]]+)\]\.?(.*)", path)
    if match:
        for lab in data.get("labs", []):
            if lab["id"] == match[1]:
                return InputError(message, source=f"{labs_file}:{lab['_line']}", path=match[2])
    return InputError(message, source=source, path=path)


def _enum(value: str | None, allowed: Iterable[str]) -> str | None:
    """A CSV enumerated value matched ignoring case and spaces ("Male", "FEMALE", "Warm_AIHA");
    unmatched values are kept as written so the model names them in its message."""
    raw = _blank(value)
    if raw is None:
        return None
    fold = raw.replace(" ", "_").lower()
    for choice in allowed:
        if choice.lower() == fold or choice.lower() == raw.lower():
            return choice
    return raw


def _literals(model: type[BaseModel], field: str) -> tuple[str, ...]:
    """The values a Literal field accepts (through Optional), for case-insensitive matching."""
    annotation = model.model_fields[field].annotation
    out: list[str] = []
    for arg in get_args(annotation) or (annotation,):
        out.extend(a for a in get_args(arg) if isinstance(a, str))
        if isinstance(arg, str):
            out.append(arg)
    return tuple(out)


def _blank(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _number(row: dict[str, str], column: str, source: str) -> float | None:
    raw = _blank(row.get(column))
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise InputError(f"{raw!r} is not a number", source=source, path=column) from None


def _lab_id(row: dict[str, str], n: int) -> str:
    # Content-derived, so reordering labs.csv never changes ids (no duplicates on re-export).
    date = re.sub(r"[^0-9A-Za-z]", "", row.get("date", ""))
    base = f"{row.get('analyte', '').replace('_', '-')}-{date}"
    return base if n == 0 else f"{base}-{n + 1}"


def _case_dict(
    row: dict[str, str],
    lab_rows: list[tuple[int, dict[str, str]]],
    meta: dict[str, Any],
    labs_file: str,
    terms: Terminology,
) -> dict[str, Any]:
    case_id = row["case_id"]
    data: dict[str, Any] = {
        "identifier": {"system": meta["identifier_system"], "value": case_id},
        "patient": {
            "sex": _enum(row["sex"], _literals(Patient, "sex")) or row["sex"],
            "birth_date": _blank(row.get("birth_year")),
            "synthetic": bool(meta.get("synthetic", False)),
        },
    }
    deceased = _blank(row.get("deceased"))
    if deceased:
        data["patient"]["deceased"] = True if deceased.lower() == "yes" else deceased
    diagnosis: dict[str, Any] = {
        "id": "dx",
        "concept": _enum(row["disease"], terms.diagnoses) or row["disease"],
    }
    if _blank(row.get("diagnosis_date")):
        diagnosis["onset"] = row["diagnosis_date"].strip()
    if _blank(row.get("dat_pattern")):
        diagnosis["dat_pattern"] = _enum(row["dat_pattern"], _literals(Diagnosis, "dat_pattern"))
    data["diagnoses"] = [diagnosis]
    src = f"patients.csv case {case_id}"
    treatment: dict[str, Any] = {
        "id": "csa",
        "drug": "cyclosporine",
        "start": row["csa_start"].strip(),
        "status": _enum(row.get("csa_status"), _literals(Treatment, "status")) or "completed",
        "route": "oral",
        "reasons": ["dx"],
    }
    if _blank(row.get("csa_end")):
        treatment["end"] = row["csa_end"].strip()
    dose = _number(row, "csa_dose_mg_kg_d", src)
    if dose is not None:
        treatment["dose"] = {"value": dose, "unit": "mg/kg/d", "doses_per_day": DOSES_PER_DAY}
    prior = _number(row, "prior_lines", src)
    if prior is not None:
        treatment["line"] = int(prior) + 1
    data["treatments"] = [treatment]
    if _blank(row.get("splenectomy_date")):
        data["procedures"] = [
            {
                "id": "splenectomy",
                "procedure": "splenectomy",
                "performed": row["splenectomy_date"].strip(),
                "reasons": ["dx"],
            }
        ]
    if _blank(row.get("ae_event")):
        grade = _number(row, "ae_grade", src)
        data["adverse_events"] = [
            {
                "id": "ae1",
                "event": _enum(row["ae_event"], terms.adverse_events),
                "grade": int(grade) if grade is not None else None,
                "date": _blank(row.get("ae_date")),
                "serious": (_blank(row.get("ae_serious")) or "no").lower() == "yes",
                "outcome": _enum(row.get("ae_outcome"), _literals(AdverseEvent, "outcome")),
                "suspect": ["csa"],
            }
        ]
    labs = []
    counts: dict[str, int] = defaultdict(int)
    for line, lab in lab_rows:
        where = f"{labs_file}:{line}"
        item: dict[str, Any] = {
            "analyte": _enum(lab["analyte"], terms.analytes),
            "date": lab["date"].strip(),
            "value": _number(lab, "value", where),
            "unit": _blank(lab.get("unit")),
        }
        base = _lab_id(lab, 0)
        item["id"] = _lab_id(lab, counts[base])
        counts[base] += 1
        low, high = _number(lab, "ref_low", where), _number(lab, "ref_high", where)
        if low is not None or high is not None:
            item["reference_range"] = {"low": low, "high": high}
        item["_line"] = line  # where the row came from, for error messages only
        labs.append(item)
    data["labs"] = labs
    return data


def _without_lines(data: dict[str, Any]) -> dict[str, Any]:
    return {
        **data,
        "labs": [{k: v for k, v in lab.items() if k != "_line"} for lab in data["labs"]],
    }
