"""The terminal summary: the cohort paper's Table 2 layout, then the criteria and citations."""

from __future__ import annotations

from fhir_cyclo.report.criteria import criteria_text
from fhir_cyclo.report.summary import summarise
from fhir_cyclo.scoring.rules import CohortScore


def to_table(cohort: CohortScore) -> str:
    """Cohort summary laid out like Table 2 of the cohort paper, with criteria and citations."""
    rows_by_disease = summarise(cohort)
    diseases = [row["disease"] for row in rows_by_disease]
    header = ["Month"] + [f"{row['disease']} (N = {row['patients']})" for row in rows_by_disease]
    rows = [header]
    for i, month in enumerate(cohort.config.months):
        row = [str(month)]
        for entry in rows_by_disease:
            t = entry["timepoints"][i]
            n = t["evaluable"]
            row.append(
                f"CR {t['CR']}/{n} ({t['CR_percent']}) - PR {t['PR']}/{n} ({t['PR_percent']})"
            )
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "Hematologic response to cyclosporine, N (%) CR - PR (layout of Fattizzo et al. 2022, "
        "Table 2)",
        "N in a cell = evaluable patients (response not NE); N in the header = patients scored",
        "",
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if not diseases:
        lines.append("(no patient could be scored)")
    lines.append("")
    lines += criteria_text(cohort.config, diseases)
    return "\n".join(lines) + "\n"
