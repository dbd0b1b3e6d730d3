"""Reading for scoring keeps only the resource types and fields extraction reads (memory flat in
the input, bench/rss.py), and scores exactly what the whole resources score."""

from __future__ import annotations

import copy
from pathlib import Path

from fhir_cyclo.core.scoring_config import load_config
from fhir_cyclo.readers.fhir import read_paths
from fhir_cyclo.report import to_json
from fhir_cyclo.scoring.extract import SCORED_TYPES, _Extractor, extract, slim
from fhir_cyclo.scoring.rules import score

DERIVED = Path(__file__).parents[1] / "realworld" / "data" / "derived"
REAL = [DERIVED / "d1-damion-itp.derived.json", DERIVED / "d2-granville-waiha.derived.json"]


def test_scored_types_are_exactly_the_types_extraction_reads() -> None:
    assert set(_Extractor(load_config(), strict=False)._handlers) == SCORED_TYPES


def test_slim_keeps_what_scoring_reads_and_scores_the_same() -> None:
    whole = list(read_paths(REAL))
    kept = list(slim(copy.deepcopy(whole)))
    types = {i.resource["resourceType"] for i in whole}
    assert {"Claim", "ExplanationOfBenefit", "Encounter"} <= types  # real Synthea records
    assert {i.resource["resourceType"] for i in kept} <= SCORED_TYPES
    assert len(kept) < len(whole)
    assert not any("text" in i.resource or "presentedForm" in i.resource for i in kept)
    full = to_json(score(extract(whole)))
    assert sorted(p["disease"] for p in full["patients"]) == ["AIHA", "ITP"]
    assert to_json(score(extract(kept))) == full
