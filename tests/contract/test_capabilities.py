"""capabilities(): the /metadata check that the server is reachable, FHIR, and R4."""

from __future__ import annotations

import pytest
import requests
import responses

from fhir_cyclo.client import FhirClient
from fhir_cyclo.core.errors import FatalTransportError, ServerError

from .helpers import BASE, FHIR_JSON

METADATA = f"{BASE}/metadata"


def _capability(version: str | None) -> dict[str, object]:
    body: dict[str, object] = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "kind": "instance",
        "software": {"name": "HAPI FHIR Server", "version": "8.10.0"},
    }
    if version is not None:
        body["fhirVersion"] = version
    return body


def test_r4_server_is_accepted(client: FhirClient, rsps: responses.RequestsMock) -> None:
    rsps.add(responses.GET, METADATA, json=_capability("4.0.1"), content_type=FHIR_JSON)
    statement = client.capabilities()
    assert statement["software"] == {"name": "HAPI FHIR Server", "version": "8.10.0"}
    assert rsps.calls[0].request.method == "GET"
    assert rsps.calls[0].request.url == METADATA


@pytest.mark.parametrize(
    ("version", "shown"), [("5.0.0", "5.0.0"), ("3.0.2", "3.0.2"), (None, "(none declared)")]
)
def test_non_r4_server_is_refused(
    client: FhirClient, rsps: responses.RequestsMock, version: str | None, shown: str
) -> None:
    rsps.add(responses.GET, METADATA, json=_capability(version), content_type=FHIR_JSON)
    with pytest.raises(FatalTransportError) as info:
        client.capabilities()
    assert f"speaks FHIR {shown}, fhir-cyclo needs R4 4.0.1" in str(info.value)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><body>Welcome to nginx!</body></html>", "text/html"),
        (b'{"resourceType": "Patient", "id": "x"}', FHIR_JSON),
        (b'{"status": "ok"}', "application/json"),
    ],
)
def test_non_fhir_answer_is_not_a_fhir_server(
    client: FhirClient, rsps: responses.RequestsMock, body: bytes, content_type: str
) -> None:
    rsps.add(responses.GET, METADATA, body=body, content_type=content_type)
    with pytest.raises(FatalTransportError, match=f"not a FHIR server at {BASE}"):
        client.capabilities()


def test_404_metadata_is_not_a_fhir_server(
    client: FhirClient, rsps: responses.RequestsMock
) -> None:
    rsps.add(responses.GET, METADATA, status=404, body="Not Found")
    with pytest.raises(FatalTransportError, match=r"not a FHIR server .* HTTP 404"):
        client.capabilities()
    assert len(rsps.calls) == 1


def test_unreachable_server_after_retries(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.add(responses.GET, METADATA, body=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(FatalTransportError, match=f"cannot reach FHIR server at {BASE}"):
        client.capabilities()
    assert len(rsps.calls) == 4
    assert len(sleeps) == 3


def test_server_down_with_503_is_cannot_reach(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.add(responses.GET, METADATA, status=503, body="maintenance")
    with pytest.raises(FatalTransportError, match="cannot reach FHIR server") as info:
        client.capabilities()
    assert info.value.status == 503
    assert len(rsps.calls) == 4
    assert len(sleeps) == 3


def test_auth_failure_stays_a_server_error(
    client: FhirClient, rsps: responses.RequestsMock
) -> None:
    rsps.add(responses.GET, METADATA, status=401, body="login required")
    with pytest.raises(ServerError) as info:
        client.capabilities()
    assert info.value.status == 401
