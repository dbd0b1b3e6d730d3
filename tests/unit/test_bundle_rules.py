"""Bundle rule checks over every fixture, and proof that each rule catches its violation."""

from __future__ import annotations

import copy

import pytest

from fhir_cyclo.core.case import Case
from fhir_cyclo.fhir.bundle import check_bundle, transaction_bundle
from fhir_cyclo.mappers.datatypes import Resource


def test_every_fixture_bundle_is_sound(all_fixture_cases: list[Case]) -> None:
    for case in all_fixture_cases:
        bundle = transaction_bundle(case)
        assert check_bundle(bundle) == [], case.identifier.token
        urls = [e["fullUrl"] for e in bundle["entry"]]
        assert len(urls) == len(set(urls))
        assert all(u.startswith("urn:uuid:") for u in urls)
        # every resource carries a business identifier
        for entry in bundle["entry"]:
            assert entry["resource"].get("identifier"), entry["fullUrl"]


def test_only_the_patient_is_conditional(case_report: Case) -> None:
    bundle = transaction_bundle(case_report)
    methods = [(e["request"]["method"], e["request"]["url"]) for e in bundle["entry"]]
    conditional = [u for _, u in methods if "?" in u]
    assert conditional == [
        "Patient?identifier=http://fhir-cyclo.example.org/fhir/sid/case-report|isshiki-thymoma-prca"
    ]
    assert all(m == "PUT" for m, _ in methods)
    assert "id" not in bundle["entry"][0]["resource"]  # the server owns the Patient id
    for entry in bundle["entry"][1:]:
        _, rid = entry["request"]["url"].split("/")
        assert entry["resource"]["id"] == rid and entry["fullUrl"] == f"urn:uuid:{rid}"


def _mutated(case: Case, fn: object) -> list[str]:
    bundle: Resource = copy.deepcopy(transaction_bundle(case))
    fn(bundle)  # type: ignore[operator]
    return check_bundle(bundle)


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        (lambda b: b["entry"][2].update(fullUrl=b["entry"][1]["fullUrl"]), "duplicates"),
        (
            lambda b: b["entry"][1]["resource"].update(subject={"reference": "urn:uuid:nope"}),
            "does not resolve",
        ),
        (
            lambda b: b["entry"][1]["resource"]["code"]["coding"].append(
                {"system": "http://snomed.info/sct", "code": "95563006"}
            ),
            "not in mappings",
        ),
        (lambda b: b["entry"][1].update(resource={"resourceType": "Condition"}), "empty resource"),
        (lambda b: b["entry"][1]["resource"].update(clinicalStatus="active"), "R4B validation"),
        (lambda b: b["entry"][1]["resource"].update(bogusElement=1), "R4B validation"),
    ],
)
def test_rule_violations_are_reported(case_report: Case, mutation: object, expected: str) -> None:
    problems = _mutated(case_report, mutation)
    assert any(expected in p for p in problems), problems
