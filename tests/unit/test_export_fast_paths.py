"""Export's fast paths give exactly what the plain ways give: ids, local references."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fhir_cyclo.bundle import dumps, local_reference_lines, with_local_references
from fhir_cyclo.export import map_case
from fhir_cyclo.ids import NAMESPACE, uuid5_text
from fhir_cyclo.inputs import load
from fhir_cyclo.terminology import terminology

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@given(st.text())
def test_uuid5_text_is_uuid5(name: str) -> None:
    try:
        expected = str(uuid.uuid5(NAMESPACE, name))
    except UnicodeEncodeError:  # lone surrogates: both refuse
        try:
            uuid5_text(name)
        except UnicodeEncodeError:
            return
        raise AssertionError("uuid5_text accepted what uuid5 refuses") from None
    assert uuid5_text(name) == expected


def _plain(resources: list[dict[str, Any]]) -> list[bytes]:
    return [dumps(r, pretty=False) for r in with_local_references(resources)]


def test_local_reference_lines_equal_the_rewritten_copies_for_every_fixture() -> None:
    terms = terminology()
    cases = [loaded.case for loaded in load([FIXTURES], terms) if loaded.case is not None]
    assert len(cases) > 10
    changed = 0
    for case in cases:
        resources = map_case(case, terms)
        compact = [dumps(r, pretty=False) for r in resources]
        lines = local_reference_lines(resources, compact)
        assert lines == _plain(resources)
        changed += sum(1 for a, b in zip(lines, compact, strict=True) if a != b)
    assert changed > 100  # the references were really rewritten


_ID = "6f0f3c8e-2a4b-5d7e-9c1a-3b5e7d9f1a2c"
_OTHER = "0b1e7d9f-1a2c-5d7e-9c1a-3b5e7d9f1a2c"


def test_local_reference_lines_handle_tricky_text() -> None:
    resources: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": _ID},
        {
            "resourceType": "Observation",
            "id": _OTHER,
            "subject": {"reference": f"urn:uuid:{_ID}"},
            # Looks like a reference, but is text inside a string: must stay.
            "note": [{"text": f'"reference":"urn:uuid:{_ID}"'}],
            "focus": [
                {"reference": f"urn:uuid:{_OTHER}"},
                {"reference": "urn:uuid:not-in-this-bundle"},
                {"reference": f'urn:uuid:{_ID}"quoted'},
                {"display": f"urn:uuid:{_ID}"},
            ],
            "extension": [{"url": "x", "valueReference": {"reference": f"urn:uuid:{_ID}"}}],
        },
    ]
    compact = [dumps(r, pretty=False) for r in resources]
    lines = local_reference_lines(resources, compact)
    assert lines == _plain(resources)
    assert lines[1].count(f"Patient/{_ID}".encode()) == 2


def test_ids_json_would_escape_take_the_plain_way() -> None:
    resources: list[dict[str, Any]] = [
        {"resourceType": "Patient", "id": 'a"b'},
        {"resourceType": "Observation", "id": "o", "subject": {"reference": 'urn:uuid:a"b'}},
    ]
    compact = [dumps(r, pretty=False) for r in resources]
    assert local_reference_lines(resources, compact) == _plain(resources)
    assert b"Patient/a" in local_reference_lines(resources, compact)[1]
