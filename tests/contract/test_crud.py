"""read/create/update/delete: URLs, result parsing from headers, and the same error mapping."""

from __future__ import annotations

import orjson
import pytest
import responses

from fhir_cyclo.client import FhirClient
from fhir_cyclo.core.errors import FatalTransportError, InputError, NotFound

from .helpers import BASE, FHIR_JSON, outcome, sent_body


def test_read(client: FhirClient, rsps: responses.RequestsMock) -> None:
    rsps.add(
        responses.GET,
        f"{BASE}/Patient/pat-1",
        json={"resourceType": "Patient", "id": "pat-1"},
        content_type=FHIR_JSON,
    )
    assert client.read("Patient", "pat-1") == {"resourceType": "Patient", "id": "pat-1"}


@pytest.mark.parametrize("status", [404, 410])
def test_read_missing_or_deleted_is_not_found(
    client: FhirClient, rsps: responses.RequestsMock, status: int
) -> None:
    rsps.add(
        responses.GET,
        f"{BASE}/Patient/gone",
        json=outcome("HAPI-2001: Resource Patient/gone is not known"),
        status=status,
        content_type=FHIR_JSON,
    )
    with pytest.raises(NotFound) as info:
        client.read("Patient", "gone")
    assert info.value.status == status
    assert info.value.hapi_codes == ("HAPI-2001",)
    assert len(rsps.calls) == 1


def test_read_of_the_wrong_type_is_refused(
    client: FhirClient, rsps: responses.RequestsMock
) -> None:
    rsps.add(responses.GET, f"{BASE}/Patient/x", json={"resourceType": "Observation", "id": "x"})
    with pytest.raises(FatalTransportError, match="answered Observation, expected Patient"):
        client.read("Patient", "x")


@pytest.mark.parametrize(
    ("rtype", "rid"), [("Patient", "../metadata"), ("Patient", "a/b"), ("patient", "x"), ("", "x")]
)
def test_unsafe_type_or_id_never_reaches_the_url(
    client: FhirClient, rsps: responses.RequestsMock, rtype: str, rid: str
) -> None:
    with pytest.raises(InputError):
        client.read(rtype, rid)
    assert len(rsps.calls) == 0


def test_create_reads_location_header(client: FhirClient, rsps: responses.RequestsMock) -> None:
    rsps.add(
        responses.POST,
        f"{BASE}/Patient",
        json={"resourceType": "Patient", "id": "123", "meta": {"versionId": "1"}},
        status=201,
        headers={"Location": f"{BASE}/Patient/123/_history/1", "ETag": 'W/"1"'},
        content_type=FHIR_JSON,
    )
    result = client.create({"resourceType": "Patient", "active": True})
    assert (result.status, result.resource_type, result.id, result.version) == (
        201,
        "Patient",
        "123",
        "1",
    )
    assert result.created
    assert result.resource is not None
    assert orjson.loads(sent_body(rsps.calls[0].request)) == {
        "resourceType": "Patient",
        "active": True,
    }


def test_update_puts_to_type_and_id_with_if_match(
    client: FhirClient, rsps: responses.RequestsMock
) -> None:
    rsps.add(
        responses.PUT,
        f"{BASE}/Patient/pat-1",
        json={"resourceType": "Patient", "id": "pat-1", "meta": {"versionId": "4"}},
        status=200,
        content_type=FHIR_JSON,
    )
    result = client.update({"resourceType": "Patient", "id": "pat-1"}, if_match="3")
    assert (result.status, result.id, result.version) == (200, "pat-1", "4")
    assert rsps.calls[0].request.headers["If-Match"] == 'W/"3"'


def test_update_needs_an_id(client: FhirClient, rsps: responses.RequestsMock) -> None:
    with pytest.raises(InputError, match="needs a resource with an id"):
        client.update({"resourceType": "Patient"})
    assert len(rsps.calls) == 0


def test_delete(client: FhirClient, rsps: responses.RequestsMock) -> None:
    rsps.add(
        responses.DELETE,
        f"{BASE}/Observation/obs-1",
        json={
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "information",
                    "code": "informational",
                    "diagnostics": "Successfully deleted 1 resource(s).",
                }
            ],
        },
        content_type=FHIR_JSON,
    )
    result = client.delete("Observation", "obs-1")
    assert (result.status, result.resource_type, result.id) == (200, "Observation", "obs-1")
    assert result.outcome is not None
    assert result.outcome.issues[0].severity == "information"
    assert not result.created
    assert not result.updated
