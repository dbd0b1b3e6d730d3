"""The FHIR server under test: $FHIR_BASE_URL if set (HAPI in Docker, the public server), else the
bundled sandbox started here on 127.0.0.1. The same tests run against both."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fhir_cyclo.client import FhirClient
from fhir_cyclo.sandbox import Sandbox


class Server:
    def __init__(self, base_url: str, sandbox: Sandbox | None) -> None:
        self.base_url = base_url
        self.sandbox = sandbox

    @property
    def resettable(self) -> bool:
        return self.sandbox is not None

    def reset(self) -> None:
        if self.sandbox is not None:
            self.sandbox.reset()

    def client(self, **kw: object) -> FhirClient:
        return FhirClient(self.base_url, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def fhir_server() -> Iterator[Server]:
    url = os.environ.get("FHIR_BASE_URL")
    if url:
        yield Server(url.rstrip("/"), None)
        return
    with Sandbox() as sandbox:
        yield Server(sandbox.base_url, sandbox)


@pytest.fixture
def server(fhir_server: Server) -> Server:
    fhir_server.reset()
    return fhir_server
