"""Fixtures for the contract tests: a mocked requests transport and a client with instant sleeps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
import responses

from fhir_cyclo.client import (
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    AuthOptions,
    FhirClient,
    RetryPolicy,
    ServerOptions,
)

from .helpers import BASE


@pytest.fixture(autouse=True)
def _no_ambient_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own FHIR_CYCLO_TOKEN must not leak into (or change) the tests."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv(TOKEN_FILE_ENV, raising=False)


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    # Unmatched requests raise ConnectionError, so a request to a host we did not register fails.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    """Every delay the client asked to sleep, in order (the sleep itself is a no-op)."""
    return []


@pytest.fixture
def make_client(sleeps: list[float]) -> Iterator[Callable[..., FhirClient]]:
    """Build clients on BASE with the recording sleep; all are closed after the test."""
    made: list[FhirClient] = []

    def make(
        *,
        server: ServerOptions | None = None,
        auth: AuthOptions | None = None,
        retry: RetryPolicy | None = None,
    ) -> FhirClient:
        policy = replace(retry or RetryPolicy(), sleep=sleeps.append)
        made.append(FhirClient(server or ServerOptions(BASE), auth=auth, retry=policy))
        return made[-1]

    yield make
    for c in made:
        c.close()


@pytest.fixture
def client(make_client: Callable[..., FhirClient]) -> FhirClient:
    return make_client()
