"""Table 2 style counts per disease and timepoint, and the paper's own figures for reference."""

from __future__ import annotations

import functools
from typing import Any

from fhir_cyclo.core.errors import TerminologyError
from fhir_cyclo.core.tables import load_table
from fhir_cyclo.core.terminology import SYNTHETIC_TAG
from fhir_cyclo.scoring.rules import CohortScore

DISEASES = ("ITP", "AIHA", "PRCA")


def percent(n: int, total: int) -> str:
    """Whole percent, half up, as the paper prints it (12/29 -> 41, 1/8 -> 13); "-" for 0/0."""
    # In integers: floats would round 12.5 to even and disagree with the paper.
    return "-" if total == 0 else str((200 * n + total) // (2 * total))


def summarise(cohort: CohortScore) -> list[dict[str, Any]]:
    """Per disease scored: patients, and per month CR/PR/NR/NE counts and the evaluable N."""
    rows = []
    for disease in DISEASES:
        patients = [p for p in cohort.patients if p.disease == disease]
        if not patients:
            continue
        timepoints = []
        for month in cohort.config.months:
            responses = [a.response for p in patients for a in p.assessments if a.month == month]
            counts = {r: responses.count(r) for r in ("CR", "PR", "NR", "NE")}
            evaluable = len(responses) - counts["NE"]
            timepoints.append(
                {
                    "month": month,
                    "evaluable": evaluable,
                    **counts,
                    "CR_percent": percent(counts["CR"], evaluable),
                    "PR_percent": percent(counts["PR"], evaluable),
                }
            )
        rows.append({"disease": disease, "patients": len(patients), "timepoints": timepoints})
    return rows


def is_synthetic(cohort: CohortScore) -> bool:
    """True when any scored patient is tagged as synthetic data (Patient.meta.tag)."""
    return any(patient_is_synthetic(p.inputs.tags) for p in cohort.patients)


def patient_is_synthetic(tags: tuple[str, ...]) -> bool:
    """True when Patient.meta.tag ("system|code" strings) carries the synthetic-data tag."""
    return f"{SYNTHETIC_TAG['system']}|{SYNTHETIC_TAG['code']}" in tags


@functools.cache
def paper_figures() -> dict[str, Any]:
    """The cohort paper's Table 2 response figures (mappings/reference_results.yaml), checked."""
    data = load_table("reference_results")
    diseases = data.get("diseases")
    if not isinstance(diseases, dict) or not isinstance(data.get("label"), str):
        raise TerminologyError("mappings/reference_results.yaml: needs `label` and `diseases`")
    for disease, entry in diseases.items():
        months = entry.get("months") if isinstance(entry, dict) else None
        if disease not in DISEASES or not isinstance(months, dict):
            raise TerminologyError(f"mappings/reference_results.yaml: diseases.{disease}: bad")
        for month, cells in months.items():
            for response in ("CR", "PR"):
                cell = cells.get(response) if isinstance(cells, dict) else None
                if not isinstance(cell, dict) or not all(
                    isinstance(cell.get(k), int) for k in ("n", "of", "percent")
                ):
                    raise TerminologyError(
                        f"mappings/reference_results.yaml: diseases.{disease}.months.{month}."
                        f"{response}: needs whole numbers n, of, percent"
                    )
    return data
