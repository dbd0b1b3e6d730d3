"""docs/reference.md is generated and current; it documents every CSV column the reader uses and
every name the error messages point to."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from fhir_cyclo.readers import cohort
from tools.reference import render

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "reference.md"


def test_reference_is_not_stale() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/reference.md is stale: run `python -m tools.reference > docs/reference.md`"
    )


def test_every_column_the_cohort_reader_uses_is_documented() -> None:
    source = Path(cohort.__file__).read_text(encoding="utf-8")
    used = set(re.findall(r'row(?:\.get\(|\[)"([a-z_]+)"', source))
    used |= set(re.findall(r'lab(?:\.get\(|\[)"([a-z_]+)"', source)) - {"id", "_line"}
    used |= set(re.findall(r'_number\((?:row|lab), "([a-z_]+)"', source))
    documented = set(cohort.PATIENT_COLUMN_DOCS) | set(cohort.LAB_COLUMN_DOCS)
    assert used, "the pattern found no column: update this test"
    assert used <= documented, used - documented
    for name in ("patients.csv", "labs.csv"):
        with (REPO / "fixtures" / "cohort" / name).open(encoding="utf-8") as fh:
            header = next(csv.reader(fh))
        docs = cohort.PATIENT_COLUMN_DOCS if name == "patients.csv" else cohort.LAB_COLUMN_DOCS
        assert set(header) <= set(docs), set(header) - set(docs)


def test_anchors_named_in_messages_exist() -> None:
    from fhir_cyclo.core.case import Case
    from fhir_cyclo.core.terminology import terminology
    from fhir_cyclo.readers.case_files import check_case

    text = DOC.read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", text, re.M)
    }
    case = Case.model_validate(
        {
            "identifier": {"system": "s", "value": "v"},
            "patient": {"sex": "male"},
            "diagnoses": [{"id": "d", "concept": "ITP", "body_site": "thymus-x"}],
            "treatments": [{"id": "t", "drug": "ciclosporin"}],
            "labs": [
                {"id": "l", "analyte": "platelet", "date": "2020", "value": 1, "unit": "/uL"},
                {"id": "m", "analyte": "platelets", "date": "2020", "value": 1, "unit": "kg"},
            ],
            "marrow": [{"id": "k", "finding": "cellularity-x", "value_text": "x"}],
            "procedures": [{"id": "p", "procedure": "splenectomy-x"}],
            "adverse_events": [{"id": "a", "event": "nausea-x", "grade": 1}],
        }
    )
    messages = [m for _, m in check_case(case, terminology())]
    assert len(messages) == 8, messages
    named = {a for m in messages for a in re.findall(r"docs/reference\.md#([a-z-]+)", m)}
    assert len(named) == 8, messages  # seven name groups and units, each with its own section
    assert named <= anchors, named - anchors
    assert "did you mean 'itp'?" in messages[0] and "did you mean 'cyclosporine'?" in messages[2]
