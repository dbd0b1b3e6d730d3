"""validate_resource(): POST [base]/Type/$validate; an invalid resource is an answer, not an error."""

from __future__ import annotations

import orjson
import pytest
import responses

from fhir_cyclo.client import RetryPolicy
from fhir_cyclo.core.errors import InputError, ServerError
from fhir_cyclo.validation.server import findings, target_for

from .helpers import BASE, FHIR_JSON, MakeClient, load, sent_body, sent_url

URL = f"{BASE}/Observation/$validate"
OBS = {"resourceType": "Observation", "id": "o-1", "status": "nonsense", "code": {"text": "Hb"}}


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("oo-local-hapi88-422-validate-observation.json", 422),
        ("oo-local-hapi88-422-validate-observation.json", 412),  # the spec's status for it
        ("oo-local-hapi88-422-validate-observation.json", 400),
        ("oo-local-hapi88-200-validate-observation.json", 200),
    ],
)
def test_recorded_outcome_is_returned_with_every_issue(
    rsps: responses.RequestsMock, make_client: MakeClient, name: str, status: int
) -> None:
    recorded = load(name)
    rsps.add(responses.POST, URL, json=recorded, status=status, content_type=FHIR_JSON)
    outcome = make_client(retry=RetryPolicy(retries=0)).validate_resource(OBS)
    assert [(i.severity, i.diagnostics) for i in outcome.issues] == [
        (i["severity"], i["diagnostics"]) for i in recorded["issue"]
    ]
    assert [i.expression for i in outcome.issues] == [
        tuple(i.get("expression", ())) for i in recorded["issue"]
    ]
    assert all(i.location for i in outcome.issues)
    assert len(rsps.calls) == 1
    assert sent_url(rsps.calls[0].request) == URL
    assert orjson.loads(sent_body(rsps.calls[0].request)) == OBS


def test_bytes_are_sent_unchanged_to_their_type(
    rsps: responses.RequestsMock, make_client: MakeClient
) -> None:
    recorded = load("oo-local-hapi88-200-validate-observation.json")
    rsps.add(responses.POST, f"{BASE}/Patient/$validate", json=recorded, content_type=FHIR_JSON)
    body = b'{\n  "resourceType": "Patient",\n  "active": true\n}\n'
    make_client(retry=RetryPolicy(retries=0)).validate_resource(body)
    assert rsps.calls[0].request.body == body


@pytest.mark.parametrize("status", [404, 500])
def test_other_failures_raise(
    rsps: responses.RequestsMock, make_client: MakeClient, status: int
) -> None:
    recorded = load("oo-local-hapi88-422-validate-observation.json")
    rsps.add(responses.POST, URL, json=recorded, status=status, content_type=FHIR_JSON)
    with pytest.raises(ServerError) as info:
        make_client(retry=RetryPolicy(retries=0)).validate_resource(OBS)
    assert info.value.status == status


def test_a_422_that_is_not_an_operation_outcome_raises(
    rsps: responses.RequestsMock, make_client: MakeClient
) -> None:
    rsps.add(responses.POST, URL, body="<html>no</html>", status=422, content_type="text/html")
    with pytest.raises(ServerError):
        make_client(retry=RetryPolicy(retries=0)).validate_resource(OBS)


def test_not_a_resource_is_refused_before_sending(make_client: MakeClient) -> None:
    with pytest.raises(InputError):
        make_client().validate_resource({"status": "final"})
    with pytest.raises(InputError):
        make_client().validate_resource(b"{not json")


def test_bundle_findings_name_entry_and_clean_fhirpath(
    rsps: responses.RequestsMock, make_client: MakeClient
) -> None:
    """Recorded Bundle issues: HAPI's /*Type/id*/ comments dropped, entries named, dups once."""
    recorded = load("oo-local-hapi88-422-validation-failure.json")
    doubled = {**recorded, "issue": recorded["issue"] * 2}  # as HAPI's $validate answers
    rsps.add(responses.POST, f"{BASE}/Bundle/$validate", json=doubled, status=422)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:x", "resource": {"resourceType": "Observation", "id": "o"}}
        ],
    }
    target = target_for("case.json", bundle)
    found = findings(target, make_client(retry=RetryPolicy(retries=0)).validate_resource(bundle))
    assert len(found) == len(recorded["issue"])
    errors = [f for f in found if f.is_error]
    assert errors
    assert {f.location for f in errors} == {"Bundle.entry[0].resource.status"}
    assert all(f.entry == "entry[0] Observation/o" for f in found)
    assert all("/*" not in f.location for f in found)
    assert (
        errors[0]
        .line()
        .startswith("case.json entry[0] Observation/o: error: Bundle.entry[0].resource.status: ")
    )


def test_location_is_the_fallback_when_there_is_no_expression() -> None:
    from fhir_cyclo.core.errors import Issue
    from fhir_cyclo.validation.server import fhirpath

    assert fhirpath(Issue("error", "x", location=("Line[3] Col[5]", "Patient.active"))) == (
        "Patient.active"
    )
    assert fhirpath(Issue("error", "x", expression=("Patient.gender",), location=("P",))) == (
        "Patient.gender"
    )
    assert fhirpath(Issue("error", "x", location=("Line[1] Col[1]",))) == ""
