"""Opt-in: the public HAPI server (https://hapi.fhir.org/baseR4). Runs only with FHIR_LIVE_HAPI=1."""

from __future__ import annotations

import os
import uuid

import pytest

from fhir_cyclo.client import FhirClient
from fhir_cyclo.core.case import Case, Identifier
from fhir_cyclo.fhir.bundle import transaction_bundle
from fhir_cyclo.importing.readback import fetch_case, find_patients

pytestmark = [
    pytest.mark.live_hapi,
    pytest.mark.skipif(os.environ.get("FHIR_LIVE_HAPI") != "1", reason="set FHIR_LIVE_HAPI=1"),
]
PUBLIC = os.environ.get("FHIR_LIVE_HAPI_URL", "https://hapi.fhir.org/baseR4")


def test_round_trip_and_idempotency_on_public_hapi(case_report: Case) -> None:
    # A fresh identifier per run: the public server is shared and purged irregularly.
    run = Identifier(
        system="http://fhir-cyclo.example.org/fhir/sid/live-test", value=str(uuid.uuid4())
    )
    case = case_report.model_copy(update={"identifier": run})
    with FhirClient(PUBLIC) as client:
        assert client.capabilities()["fhirVersion"].startswith("4.0")
        first = client.transaction(transaction_bundle(case))
        assert first.ok and len(first.entries) == len(transaction_bundle(case)["entry"])
        client.transaction(transaction_bundle(case))  # second push: updates, no duplicates
        assert len(find_patients(client, run.token)) == 1
        assert fetch_case(client, run.token) == case
