"""Response scoring from FHIR data: extraction, criteria, reports."""

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
