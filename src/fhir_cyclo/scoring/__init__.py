"""Response scoring from FHIR data: extraction, criteria, reports.

Pipeline: `read_paths` / `iter_from_server` -> `extract` -> `score` -> `to_json`, `to_table`,
`plot`, `to_bundle` (write-back). Everything the rules decide on lives in mappings/scoring.yaml.

Partial dates (case reports say "2011" or "2012-02"): a date of any precision is the interval
[first day, last day]; a dateTime with a time is its date part as written (no timezone
conversion). The cyclosporine start is the first day of its interval. A measurement is in a window
when its interval overlaps the window, at its representative date: the point of its interval
closest to the reference point (baseline: the start, i.e. the latest point of the overlap;
timepoint: the target). Distances, ordering and ties use that date, which is also the date
reported, and every imputation is warned about. For full dates this is exactly the plain rule.

One disease per patient: codes for several are scored for the first of PRCA > AIHA > ITP
(`diseases.precedence` in the table) with a warning.
"""

from fhir_cyclo.scoring.config import ScoringConfig, load_config
from fhir_cyclo.scoring.extract import Note, PatientInputs, ScoringInputs, extract
from fhir_cyclo.scoring.report import criteria_text, plot, to_json, to_table
from fhir_cyclo.scoring.rules import CohortScore, PatientScore, score
from fhir_cyclo.scoring.sources import (
    SearchClient,
    SourceItem,
    iter_document,
    iter_from_server,
    read_paths,
)
from fhir_cyclo.scoring.writeback import to_bundle

__all__ = [
    "CohortScore",
    "Note",
    "PatientInputs",
    "PatientScore",
    "ScoringConfig",
    "ScoringInputs",
    "SearchClient",
    "SourceItem",
    "criteria_text",
    "extract",
    "iter_document",
    "iter_from_server",
    "load_config",
    "plot",
    "read_paths",
    "score",
    "to_bundle",
    "to_json",
    "to_table",
]
