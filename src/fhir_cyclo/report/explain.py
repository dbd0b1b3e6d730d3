"""`score --explain`: per patient, what scoring found in the data and will use or skip."""

from __future__ import annotations

from typing import Any

from fhir_cyclo.scoring.model import PatientInputs, ScoringInputs, log_name
from fhir_cyclo.scoring.rules import NO_BOTH, NO_CONDITION, NO_START, CohortScore

# A data manager reads this before trusting a score: for every patient read (scored or not) the
# diagnosis and its code, the cyclosporine start and the resource it came from, the results per
# analyte, the results read but skipped and why, and the near misses (codes or names close to
# the tables that were NOT used). Patients are named as in warnings (Patient/id or a hash).


def _status(inputs: PatientInputs) -> str:
    if inputs.disease is not None and inputs.start is not None:
        return "scored"
    if inputs.disease is None and inputs.start is None:
        return f"not scored: {NO_BOTH}"
    return f"not scored: {NO_START if inputs.disease is not None else NO_CONDITION}"


def explain_patient(inputs: PatientInputs) -> dict[str, Any]:
    """The explanation of one patient's inputs as a JSON-ready dict."""
    diagnosis = None
    if inputs.disease is not None:
        diagnosis = {
            "disease": inputs.disease,
            "codes": inputs.condition_codes.get(inputs.disease, ""),
            "source": inputs.condition_refs.get(inputs.disease),
            "also_coded": list(inputs.diseases[1:]),
        }
    start = None
    if inputs.start is not None:
        start = {
            "date": inputs.start.day.isoformat(),
            "date_text": inputs.start.date_text,
            "kind": inputs.start.kind,
            "field": inputs.start.date_field,
            "source": inputs.start.ref,
        }
    results = {}
    for analyte, series in sorted(inputs.labs.items()):
        dated = sorted(m.span[0] for m in series)
        results[analyte] = {
            "count": len(series),
            "first": dated[0].isoformat() if dated else None,
            "last": dated[-1].isoformat() if dated else None,
        }
    skipped = [
        {
            "source": s.ref,
            "analyte": s.analyte,
            "date": s.span[0].isoformat() if s.span else None,
            "why": s.why,
        }
        for s in inputs.skipped
    ]
    return {
        "patient": log_name(inputs),
        "status": _status(inputs),
        "diagnosis": diagnosis,
        "cyclosporine_start": start,
        "results": results,
        "skipped": skipped,
        "near_misses": list(inputs.near_misses),
    }


def explain(inputs: ScoringInputs) -> list[dict[str, Any]]:
    """Every patient read, in input key order."""
    return [explain_patient(p) for p in inputs.patients]


def to_text(explained: list[dict[str, Any]], cohort: CohortScore | None = None) -> str:
    """The explanation as indented text, with each scored patient's responses when given."""
    responses: dict[str, str] = {}
    if cohort is not None:
        for p in cohort.patients:
            responses[log_name(p.inputs)] = ", ".join(
                f"{a.month} mo {a.response}" for a in p.assessments
            )
    lines = ["What scoring found (--explain):"]
    for e in explained:
        lines.append(f"{e['patient']}: {e['status']}")
        d = e["diagnosis"]
        if d is not None:
            also = f"; also coded {', '.join(d['also_coded'])}" if d["also_coded"] else ""
            lines.append(f"  diagnosis: {d['disease']} ({d['codes']}) from {d['source']}{also}")
        else:
            lines.append("  diagnosis: none of the ITP/AIHA/PRCA codes")
        s = e["cyclosporine_start"]
        if s is not None:
            lines.append(f"  cyclosporine start: {s['date']} from {s['source']} ({s['field']})")
        else:
            lines.append("  cyclosporine start: none")
        if e["results"]:
            parts = [
                f"{name} {r['count']} ({r['first']}..{r['last']})"
                for name, r in e["results"].items()
            ]
            lines.append(f"  results: {'; '.join(parts)}")
        else:
            lines.append("  results: none of the scored analytes")
        for skip in e["skipped"]:
            lines.append(
                f"  skipped: {skip['source']} {skip['analyte']} ({skip['date'] or 'no date'}): "
                f"{skip['why']}"
            )
        for miss in e["near_misses"]:
            lines.append(f"  near miss: {miss}")
        if e["patient"] in responses:
            lines.append(f"  responses: {responses[e['patient']]}")
    return "\n".join(lines) + "\n"
