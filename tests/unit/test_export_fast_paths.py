"""Export's fast paths give exactly what the plain ways give: ids, local references, reading."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fhir_cyclo.core.case import Case
from fhir_cyclo.core.errors import InputError
from fhir_cyclo.core.ids import NAMESPACE, uuid5_text
from fhir_cyclo.core.terminology import terminology
from fhir_cyclo.export.writer import map_case
from fhir_cyclo.fhir.bundle import dumps, local_reference_lines, with_local_references
from fhir_cyclo.readers.case_files import load, read_structured

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


# --- reading: orjson first, json's rules and messages ------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "a": 2}',  # duplicate key: the last one wins, as in json
        '{"big": 123456789012345678901234567890}',  # beyond 64 bits: orjson would make a float
        '{"big": -18446744073709551616, "id": "12345678901234567890123"}',
        '{"big": 18446744073709551616}',  # exactly twenty digits, one past the largest u64
        '{"é": "ü", "big": 99999999999999999999}',  # the run after multi-byte characters
        '{"n": 1234567890123456789, "s": "١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦٧٨٩٠"}',  # Arabic-Indic digits: text
        '{"x": NaN, "y": -Infinity}',  # json's extensions, accepted as they always were
        '{"s": "caf\\u00e9 \\ud83d\\ude00"}',
        '{"lone": "\\ud800"}',  # a lone surrogate: orjson refuses, json reads
        "[1.5, 2, -0.0, 1e400]",
    ],
)
def test_json_case_files_read_as_the_json_module_reads_them(tmp_path: Path, text: str) -> None:
    path = tmp_path / "case.json"
    path.write_text(text, encoding="utf-8")
    got, want = read_structured(path), json.loads(text)
    assert repr(got) == repr(want)  # repr: NaN != NaN, and 1 == 1.0 would hide a type change


def test_invalid_json_keeps_the_json_module_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{\n  "identifier": }\n')
    with pytest.raises(InputError) as caught:
        read_structured(path)
    assert caught.value.message == "invalid JSON: Expecting value at line 2 column 17"


def test_cached_date_and_unit_checks_still_refuse_bad_values() -> None:
    base = {"identifier": {"system": "s", "value": "v"}, "patient": {"sex": "female"}}
    lab = {"id": "l1", "analyte": "hemoglobin", "date": "2011-02-28", "value": 9.1, "unit": "g/dl"}
    for _ in range(2):  # the second time answers from the caches
        case = Case.model_validate({**base, "labs": [lab]})
        assert case.labs[0].unit == "g/dL"
        with pytest.raises(ValidationError, match="not a real calendar date"):
            Case.model_validate({**base, "labs": [{**lab, "date": "2011-02-30"}]})


def test_push_reads_each_input_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A folder of case files and an exported Bundle: each is parsed once (it was twice).
    from fhir_cyclo.cli.push import _bundles
    from fhir_cyclo.fhir.bundle import transaction_bundle
    from fhir_cyclo.readers import case_files as inputs

    terms = terminology()
    cases = [loaded.case for loaded in load([FIXTURES], terms) if loaded.case]
    assert len(cases) >= 3
    for n, one in enumerate(cases[:3]):
        (tmp_path / f"case-{n}.json").write_bytes(dumps(one.model_dump(exclude_defaults=True)))
    case = cases[0]
    bundle = transaction_bundle(case, terms, map_case(case, terms))
    (tmp_path / "exported-bundle.json").write_bytes(dumps(bundle))
    reads: list[str] = []
    real = inputs.read_structured
    monkeypatch.setattr(inputs, "read_structured", lambda p: reads.append(p.name) or real(p))
    failures: list[str] = []
    sent = list(_bundles([str(tmp_path)], failures, []))
    assert failures == []
    assert len(sent) == 4
    assert sorted(reads) == sorted(p.name for p in tmp_path.iterdir())
    assert dumps(bundle, pretty=False) in [item.bundle for item in sent]


def test_push_keys_each_case_as_the_journal_would_from_the_bundle(tmp_path: Path) -> None:
    # push hands the journal each case's identifier instead of having it parse the Bundle again:
    # the key must be the one the Bundle's Patient gives, for case files and exported Bundles.
    from fhir_cyclo.cli.push import _bundles
    from fhir_cyclo.fhir.bundle import transaction_bundle
    from fhir_cyclo.server.journal import case_key

    terms = terminology()
    cases = [loaded.case for loaded in load([FIXTURES], terms) if loaded.case]
    for n, one in enumerate(cases):
        (tmp_path / f"case-{n}.json").write_bytes(dumps(one.model_dump(exclude_defaults=True)))
        exported = transaction_bundle(one, terms, map_case(one, terms))
        (tmp_path / f"bundle-{n}.json").write_bytes(dumps(exported))
    sent = list(_bundles([str(tmp_path)], [], []))
    assert len(sent) == 2 * len(cases)
    for label, data, identifier in sent:
        assert isinstance(data, bytes) and identifier is not None
        assert case_key(label, data, identifier) == case_key(label, data)
    # Some tokens need quoting in the conditional URL (a space, '&'): the key is still the same.
    tricky = cases[0].model_copy(
        update={"identifier": cases[0].identifier.model_copy(update={"value": "A 1&b=2"})}
    )
    data = dumps(transaction_bundle(tricky, terms, map_case(tricky, terms)), pretty=False)
    assert case_key("x", data, tricky.identifier.token) == case_key("x", data)


def test_only_json_bundles_pass_through_unread(tmp_path: Path) -> None:
    # A YAML file is always a case file: one that says resourceType Bundle fails as a case.
    (tmp_path / "b.yaml").write_text("resourceType: Bundle\ntype: transaction\n")
    (tmp_path / "b.json").write_text('{"resourceType": "Bundle", "type": "transaction"}')
    got = {Path(x.source).name: x for x in load([tmp_path], terminology(), bundles=True)}
    assert got["b.json"].bundle == {"resourceType": "Bundle", "type": "transaction"}
    assert got["b.yaml"].bundle is None and got["b.yaml"].error is not None
