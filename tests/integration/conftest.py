"""The FHIR server under test: $FHIR_BASE_URL if set (the public server, another HAPI), else the
project's HAPI FHIR JPA server (hapi/, built by `make hapi`; `hapi_server` in tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fhir_cyclo.client import FhirClient
from fhir_cyclo.server.hapi import HapiServer


class Server:
    def __init__(self, base_url: str, hapi: HapiServer | None) -> None:
        self.base_url = base_url
        self.hapi = hapi

    @property
    def resettable(self) -> bool:
        return self.hapi is not None

    def reset(self) -> None:
        if self.hapi is not None:
            self.hapi.reset()

    def client(self) -> FhirClient:
        return FhirClient(self.base_url)


@pytest.fixture(scope="session")
def fhir_server(request: pytest.FixtureRequest) -> Iterator[Server]:
    url = os.environ.get("FHIR_BASE_URL")
    if url:
        yield Server(url.rstrip("/"), None)
        return
    hapi: HapiServer = request.getfixturevalue("hapi_server")
    yield Server(hapi.base_url, hapi)


@pytest.fixture
def server(fhir_server: Server) -> Server:
    fhir_server.reset()
    return fhir_server
