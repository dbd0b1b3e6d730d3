"""Round trip: from_fhir(to_fhir(case)) == case, for every fixture and for generated cases."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings

from fhir_cyclo.core.case import Case
from fhir_cyclo.fhir.bundle import (
    bundle_entries,
    bundle_to_case,
    check_bundle,
    dumps,
    transaction_bundle,
    with_local_references,
)
from fhir_cyclo.mappers import case_to_resources, resources_to_case
from tests.unit.strategies import cases


def test_every_fixture_round_trips(all_fixture_cases: list[Case]) -> None:
    assert len(all_fixture_cases) == 14  # the case report + 13 synthetic cohort patients
    for case in all_fixture_cases:
        bundle = json.loads(dumps(transaction_bundle(case)))  # through real JSON bytes
        assert bundle_to_case(bundle) == case, case.identifier.token


def test_round_trip_through_local_references(case_report: Case) -> None:
    # NDJSON/collection form: references are Type/id instead of urn:uuid.
    resources = with_local_references(case_to_resources(case_report))
    assert all("urn:uuid" not in json.dumps(r) for r in resources)
    assert resources_to_case((None, r) for r in resources) == case_report


def test_round_trip_in_any_order(case_report: Case) -> None:
    # Servers return search results in their own order; the case must not depend on it.
    entries = bundle_entries(transaction_bundle(case_report))
    assert resources_to_case(list(reversed(entries))) == case_report


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_generated_cases_round_trip_and_pass_bundle_rules(case: Case) -> None:
    bundle = transaction_bundle(case)
    assert check_bundle(bundle) == []
    assert bundle_to_case(json.loads(dumps(bundle))) == case
