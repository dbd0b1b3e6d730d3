"""validate on FHIR input: what is an error in a record someone else wrote, and what is not;
the project's own Bundles keep every strict rule."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_cyclo.core.case import Case
from fhir_cyclo.core.ids import ITEM_IDENTIFIER_SYSTEM
from fhir_cyclo.core.terminology import terminology
from fhir_cyclo.fhir.bundle import transaction_bundle
from fhir_cyclo.validation.bindings import BINDINGS, binding_problems
from fhir_cyclo.validation.fhir_input import document_problems, is_ours
from fhir_cyclo.validation.local import validate_paths

LOINC = "http://loinc.org"


def observation(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "29463-7"}]},  # not in mappings/
        "subject": {"reference": "Patient/elsewhere"},  # not in the file
        "meta": {"profile": ["http://example.org/unknown-profile"]},
        **extra,
    }


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"fullUrl": f"https://x/{r['id']}", "resource": r} for r in resources],
    }


def problems(doc: Any) -> list[str]:
    return document_problems(doc, terminology())[0]


def test_foreign_codes_outside_references_and_unknown_profiles_are_not_errors() -> None:
    assert problems(searchset(observation())) == []
    assert problems(observation()) == []


def test_own_bundle_keeps_the_strict_table_and_reference_rules() -> None:
    own = searchset(observation(identifier=[{"system": ITEM_IDENTIFIER_SYSTEM, "value": "a|b"}]))
    assert is_ours(own) and not is_ours(searchset(observation()))
    found = problems(own)
    assert any("29463-7 is not in mappings/" in p for p in found), found
    assert any("Patient/elsewhere does not resolve" in p for p in found), found


def test_status_with_a_trailing_space_is_named() -> None:
    found = problems(searchset(observation(status="entered-in-error ")))
    assert found == [
        "entry[0] Observation.status: invalid code 'entered-in-error ': leading, trailing or "
        "repeated whitespace"
    ]


@pytest.mark.parametrize(
    ("kind", "element", "bad"),
    [
        ("Observation", "status", "done"),
        ("MedicationStatement", "status", "taken"),
        ("MedicationRequest", "intent", "instance"),
        ("Procedure", "status", "finished"),
        ("Patient", "gender", "f"),
    ],
)
def test_required_binding_code_outside_its_r4_value_set(kind: str, element: str, bad: str) -> None:
    assert binding_problems({"resourceType": kind, element: bad}, kind) == [
        f"{kind}.{element}: {bad!r} is not in the required value set "
        f"{next(b.value_set for b in BINDINGS[kind] if b.path == (element,))} "
        f"(https://hl7.org/fhir/R4/valueset-"
        f"{next(b.value_set for b in BINDINGS[kind] if b.path == (element,))}.html)"
    ]


def test_condition_clinical_status_codeable_concept() -> None:
    system = "http://terminology.hl7.org/CodeSystem/condition-clinical"
    good = {
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": system, "code": "active"}]},
    }
    assert binding_problems(good, "Condition") == []
    bad = copy.deepcopy(good)
    bad["clinicalStatus"]["coding"][0]["code"] = "current"
    assert len(binding_problems(bad, "Condition")) == 1
    text_only = {"resourceType": "Condition", "clinicalStatus": {"text": "active"}}
    assert "no coding" in binding_problems(text_only, "Condition")[0]


def test_bundle_type_is_r4_not_r4b() -> None:
    # R4B added subscription-notification; it is not an R4 Bundle type.
    doc = {"resourceType": "Bundle", "type": "subscription-notification"}
    assert any("bundle-type" in p for p in problems(doc))


def test_contained_references_resolve_and_unresolved_ones_are_named() -> None:
    eob = {
        "resourceType": "ExplanationOfBenefit",
        "id": "e1",
        "contained": [
            {
                "resourceType": "Coverage",
                "id": "coverage",
                "status": "active",
                "beneficiary": {"reference": "Patient/p"},
                "payor": [{"display": "x"}],
            },
        ],
        "insurance": [{"focal": True, "coverage": {"reference": "#coverage"}}],
        "referral": {"reference": "#referral"},
    }
    found = [p for p in problems(searchset(eob)) if "reference" in p and "#" in p]
    assert found == [
        "entry[0] ExplanationOfBenefit.referral: reference #referral names no contained resource"
    ]


def test_entry_without_resource_is_an_error_unless_it_is_a_request() -> None:
    doc = searchset(observation())
    doc["entry"].append({"fullUrl": "https://x/missing"})
    assert problems(doc) == ["entry[1]: no resource (and no request or response)"]
    delete = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": "Observation/o1"}}],
    }
    assert problems(delete) == []
    post = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "POST", "url": "Observation"}}],
    }
    assert problems(post) == ["entry[0]: no resource for request POST"]


def test_single_resource_and_ndjson_files_are_read_like_score_reads_them(tmp_path: Path) -> None:
    (tmp_path / "one.json").write_bytes(orjson.dumps(observation()))
    lines = [observation(id=f"o{i}") for i in range(3)]
    lines[2]["status"] = "bogus"
    (tmp_path / "Observation.ndjson").write_bytes(b"\n".join(orjson.dumps(r) for r in lines))
    found = validate_paths([tmp_path])
    assert found.resources == 4 and found.files == 2
    assert found.problems == [
        f"{tmp_path / 'Observation.ndjson'}:3: Observation.status: 'bogus' is not in the required "
        "value set observation-status (https://hl7.org/fhir/R4/valueset-observation-status.html)"
    ]
    assert found.summary() == "checked 4 resource(s) in 2 FHIR file(s): 1 problem(s)"


def test_an_exported_bundle_is_ours_and_stays_strict(tmp_path: Path, case_report: Case) -> None:
    bundle = transaction_bundle(case_report, terminology())
    assert is_ours(bundle) and validate_paths_of(tmp_path, bundle) == []
    obs = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
    )
    obs["code"]["coding"][0]["code"] = "00000-0"  # not in mappings/: an error in our own output
    assert any("00000-0 is not in mappings/" in p for p in validate_paths_of(tmp_path, bundle))
    for entry in bundle["entry"]:  # the same Bundle without our identifiers is someone else's
        entry["resource"].pop("identifier", None)
    assert not is_ours(bundle)
    assert validate_paths_of(tmp_path, bundle) == []


def validate_paths_of(folder: Path, doc: dict[str, Any]) -> list[str]:
    path = folder / "bundle.json"
    path.write_bytes(orjson.dumps(doc))
    return validate_paths([path]).problems
