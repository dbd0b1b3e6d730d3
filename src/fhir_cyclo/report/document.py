"""The --json document: results with their reasons, the summary, warnings and accounting.

Its shape is fixed by score.schema.json beside this module (checked by a test).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

from fhir_cyclo.report.criteria import cited_sources, criteria_entries, timepoint_text
from fhir_cyclo.report.summary import patient_is_synthetic, summarise
from fhir_cyclo.scoring.dates import Span
from fhir_cyclo.scoring.model import Note, PatientInputs, log_name, patient_token
from fhir_cyclo.scoring.rules import (
    Assessment,
    Check,
    CohortScore,
    PatientScore,
    Pick,
    Reason,
)

FORMAT = "fhir-cyclo-score/2"


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None


def _window(span: Span) -> dict[str, str]:
    return {"start": span[0].isoformat(), "end": span[1].isoformat()}


def short_label(inputs: PatientInputs) -> str:
    """How reports name a patient: the identifier value (case value or pseudonym), else the
    Patient id, else a hash; never the identifier system URL."""
    if inputs.identifier is not None:
        return inputs.identifier[1]
    if inputs.reference:
        return inputs.reference.removeprefix("Patient/")
    return "patient-" + hashlib.sha256(inputs.key.encode()).hexdigest()[:10]


def _evidence(pick: Pick, analyte: str, unit: str) -> dict[str, Any]:
    m = pick.measurement
    return {
        "analyte": analyte,
        "value": pick.value,
        "unit": unit if pick.value is not None else None,
        "interpretation_normal": m.normal and pick.value is None,
        "date": pick.date.isoformat(),
        "date_text": m.date_text,
        "imputed": pick.imputed,
        "source": m.ref,
        "reference_range": {"low": m.low, "high": m.high},
    }


def _check(c: Check) -> dict[str, Any]:
    return {
        "rule": c.rule,
        "test": c.test,
        "held": c.held,
        "kind": c.kind,
        "text": c.text,
        "value": c.value,
        "op": c.op,
        "threshold": c.threshold,
        "unit": c.unit,
        "threshold_source": c.threshold_source,
        "sources": list(c.refs),
    }


def _reason(r: Reason) -> dict[str, Any]:
    return {"kind": r.kind, "text": r.text, "sources": list(r.refs)}


def _first(item: tuple[int, Note]) -> int:
    return item[0]


def _note(n: Note) -> dict[str, str]:
    return {"source": n.source, "path": n.path, "message": n.message}


def patient_refs(inputs: PatientInputs) -> set[str]:
    """Every name under which a warning can be about this patient."""
    refs = {inputs.key, log_name(inputs)}
    if inputs.reference:
        refs.add(inputs.reference)
    if inputs.start is not None:
        refs.add(inputs.start.ref)
    refs.update(inputs.condition_refs.values())
    refs.update(m.ref for series in inputs.labs.values() for m in series)
    refs.update(e.ref for e in inputs.transfusions)
    return refs


def _assessment(p: PatientScore, a: Assessment, cohort: CohortScore) -> dict[str, Any]:
    cfg = cohort.config
    analyte = cfg.criteria[p.disease].analyte
    value = a.pick.value if a.pick else None
    entry: dict[str, Any] = {
        "month": a.month,
        "response": a.response,
        "date": _iso(a.date),
        "value": value,
        "unit": p.unit if value is not None else None,
        "target": a.target.isoformat(),
        "window": _window(a.window),
        "used": _evidence(a.pick, analyte, p.unit) if a.pick else None,
        "markers": [
            _evidence(pick, name, cfg.analytes[name].unit)
            for name, pick in a.markers.items()
            if pick is not None
        ],
        "transfusions": [
            {
                "source": e.ref,
                "text": e.text,
                "status": e.status,
                "start": e.span[0].isoformat(),
                "end": None if e.span[1] == date.max else e.span[1].isoformat(),
            }
            for e in a.transfusions
        ],
        "normal_low": a.normal_low,
        "checks": [_check(c) for c in a.checks],
        "reasons": [_reason(r) for r in a.reasons],
    }
    if a.missing_markers:
        # Why a better response was out of reach: markers without data in the window.
        entry["missing_markers"] = list(a.missing_markers)
    return entry


def _patient(
    p: PatientScore, cohort: CohortScore, notes: dict[str, list[tuple[int, Note]]]
) -> dict[str, Any]:
    cfg = cohort.config
    baseline = None
    if p.baseline is not None:
        baseline = {
            "date": _iso(p.baseline.date),
            "value": p.baseline.value,
            "unit": p.unit,
            "date_text": p.baseline.measurement.date_text,
            "imputed": p.baseline.imputed,
            "source": p.baseline.measurement.ref,
        }
    start = p.inputs.start
    assert start is not None  # scored patients have a start
    return {
        "patient": p.key,
        "token": patient_token(p.key),
        "label": short_label(p.inputs),
        "synthetic": patient_is_synthetic(p.inputs.tags),
        "disease": p.disease,
        "analyte": cfg.criteria[p.disease].analyte,
        "cyclosporine_start": p.start.isoformat(),
        "start": {
            "date": p.start.isoformat(),
            "date_text": start.date_text,
            "imputed": start.span[0] != start.span[1],
            "source": start.ref,
        },
        "baseline_window": _window((p.start - timedelta(days=cfg.baseline_days), p.start)),
        "baseline": baseline,
        "assessments": [_assessment(p, a, cohort) for a in p.assessments],
        "reasons": [_reason(r) for r in p.reasons],
        # In the order they were raised, like the cohort's list.
        "warnings": [_note(n) for _, n in sorted(notes.get(patient_token(p.key), ()), key=_first)],
    }


def note_patients(cohort: CohortScore) -> list[str | None]:
    """The token of the scored patient each warning is about (by the resources it names or the
    patient token in its context), None for a warning about no one scored; in note order."""
    owner: dict[str, str] = {}
    for p in cohort.patients:
        mine = patient_token(p.key)
        for ref in patient_refs(p.inputs):
            owner.setdefault(ref, mine)
        owner.setdefault(mine, mine)
    found: list[str | None] = []
    for note in cohort.notes:
        token = owner.get(note.source)
        if token is None and "[p-" in note.context:
            # A resource skipped while reading: its file context names the patient's token.
            start = note.context.index("[p-") + 1
            token = owner.get(note.context[start : start + 10])
        found.append(token)
    return found


def logged(note: Note, token: str | None) -> Note:
    """A warning as logged: led by its patient's token when it is about one scored patient."""
    if token is None or token in str(note):
        return note
    return replace(note, context=f"{token} {note.context}".strip())


def log_lines(cohort: CohortScore) -> list[str]:
    """The warnings as log lines, each naming its patient by token when it is about one."""
    return [
        str(logged(note, token))
        for token, note in zip(note_patients(cohort), cohort.notes, strict=True)
    ]


def patient_entries(cohort: CohortScore) -> list[dict[str, Any]]:
    """The "patients" array of the document, sorted by key."""
    by_token: dict[str, list[tuple[int, Note]]] = {}  # one pass, not one per patient
    for index, (token, note) in enumerate(zip(note_patients(cohort), cohort.notes, strict=True)):
        if token is not None:
            by_token.setdefault(token, []).append((index, note))
    return [_patient(p, cohort, by_token) for p in sorted(cohort.patients, key=lambda s: s.key)]


def tail(cohort: CohortScore) -> dict[str, Any]:
    """The keys after "patients": summary, accounting, warnings, criteria. Only counts and
    notes are read from the patients, so a streaming writer can pass stand-in scores."""
    cfg = cohort.config
    summary = summarise(cohort)
    diseases = [row["disease"] for row in summary]
    return {
        "summary": summary,
        # Patients read, scored, and not scored by reason (rules.Accounting).
        "accounting": cohort.accounting.to_json(),
        "warnings": [_note(n) for n in cohort.notes],
        "criteria": {
            "timepoints": timepoint_text(cfg),
            "diseases": criteria_entries(cfg, diseases),
            "sources": cited_sources(cfg, diseases),
        },
    }


def to_json(cohort: CohortScore) -> dict[str, Any]:
    """The --json document (see score.schema.json): "format", "patients", then `tail`."""
    return {"format": FORMAT, "patients": patient_entries(cohort), **tail(cohort)}
