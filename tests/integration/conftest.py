"""The FHIR server under test: $FHIR_BASE_URL if set (the public server, another HAPI), else the
project's HAPI FHIR JPA server (hapi/, built by `make hapi`) started once for the session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_cyclo.client import FhirClient
from fhir_cyclo.hapi import HapiServer

ROOT = Path(__file__).resolve().parents[2]
LOG_DIR = ROOT / "out" / "test-artifacts"


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

    def client(self, **kw: object) -> FhirClient:
        return FhirClient(self.base_url, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def hapi_server() -> Iterator[HapiServer]:
    """The project's HAPI server, started once per session (log in out/test-artifacts/).

    $FHIR_CYCLO_TEST_HAPI=URL reuses a test server already started by `fhir-cyclo sandbox`
    (its data is deleted between tests): saves the start-up minute while developing.
    """
    reuse = os.environ.get("FHIR_CYCLO_TEST_HAPI")
    if reuse:
        yield HapiServer.attach(reuse)
        return
    with HapiServer(log_path=LOG_DIR / "hapi-integration.log") as hapi:
        print(f"\nHAPI test server ready in {hapi.started_in:.0f}s at {hapi.base_url}")
        yield hapi
        print(f"\nHAPI test server peak RSS {hapi.peak_rss_mb:.0f} MB")


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
