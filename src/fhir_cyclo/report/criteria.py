"""The response criteria in words, with the keys of the sources they come from."""

from __future__ import annotations

from typing import Any

from fhir_cyclo.core.scoring_config import Criteria, ScoringConfig, Test
from fhir_cyclo.scoring.rules import display_unit, label


def describe(test: Test, criteria: Criteria, cfg: ScoringConfig) -> str:
    """One test of a rule in words ("PLT >= 2 x baseline")."""
    name = label(criteria.analyte)
    if test.kind == "value":
        return f"{name} {test.op} {test.threshold:g}"
    if test.kind == "ratio_to_baseline":
        return f"{name} {test.op} {test.threshold:g} x baseline"
    if test.kind == "rise_from_baseline":
        return f"{name} - baseline {test.op} {test.threshold:g}"
    if test.kind == "marker_within_upper_limit":
        uln = cfg.analytes[test.analyte].default_upper_limit
        unit = cfg.analytes[test.analyte].unit
        return (
            f"{label(test.analyte)} \u2264 upper limit of the lab's reference range (else "
            f"{uln:g} {display_unit(unit)})"
        )
    if test.kind == "within_normal_range":
        low = cfg.normal_low
        return (
            f"{name} \u2265 lower limit of the lab's reference range (else WHO: female "
            f"{low['female']:g} / male {low['male']:g} g/dL)"
        )
    return f"no counted red-cell transfusion in the {cfg.transfusion.free_days} days before"


def criteria_entries(cfg: ScoringConfig, diseases: list[str]) -> list[dict[str, Any]]:
    """Per disease: analyte, unit, the rules in words and the source keys they cite."""
    entries = []
    for disease in diseases:
        criteria = cfg.criteria[disease]
        parts = []
        for rule in criteria.rules:
            joiner = " and " if rule.mode == "all" else " or "
            parts.append(
                f"{rule.response} if " + joiner.join(describe(t, criteria, cfg) for t in rule.tests)
            )
        sources = list(criteria.sources)
        notes = []
        if disease == "PRCA":
            sources += [cfg.normal_low_source, cfg.transfusion.source]
            notes.append(
                f"lower limit of normal [{cfg.normal_low_source}]; transfusion-free window "
                f"{cfg.transfusion.free_days} days [{cfg.transfusion.source}]"
            )
        entries.append(
            {
                "disease": disease,
                "analyte": criteria.analyte,
                "unit": cfg.analytes[criteria.analyte].unit,
                "text": "; ".join(parts) + "; else NR.",
                "rule_sources": [rule.source for rule in criteria.rules],
                "notes": notes,
                "sources": sources,
            }
        )
    return entries


def timepoint_text(cfg: ScoringConfig) -> str:
    """The baseline and timepoint rule in words."""
    return (
        f"Baseline: latest value in [start - {cfg.baseline_days} d, start]; timepoints: start + "
        f"{'/'.join(map(str, cfg.months))} months +/- {cfg.window_days} d, value closest to the "
        "target (later on a tie); no baseline or no value -> NE"
    )


def cited_sources(cfg: ScoringConfig, diseases: list[str]) -> dict[str, str]:
    """Every source the criteria of `diseases` cite, key -> full citation, in citing order."""
    keys: list[str] = [cfg.timepoint_source]
    for entry in criteria_entries(cfg, diseases):
        keys += entry["sources"]
    return {key: cfg.cite(key) for key in dict.fromkeys(keys)}


def criteria_text(cfg: ScoringConfig, diseases: list[str]) -> list[str]:
    """Human-readable criteria with their citations, for the table and the README."""
    lines = ["Criteria"]
    for entry in criteria_entries(cfg, diseases):
        unit = display_unit(entry["unit"])
        lines.append(f"  {entry['disease']} ({label(entry['analyte'])}, {unit}): {entry['text']}")
        lines.append("    [" + "; ".join(cfg.criteria[entry["disease"]].sources) + "]")
        lines += [f"    {note}" for note in entry["notes"]]
    lines.append(f"  {timepoint_text(cfg)} [{cfg.timepoint_source}]")
    lines.append("Sources")
    lines += [f"  [{key}] {text}" for key, text in cited_sources(cfg, diseases).items()]
    return lines
