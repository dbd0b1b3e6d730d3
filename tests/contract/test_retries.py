"""Retry policy: which failures are re-sent, how long the client waits, and when it gives up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
import responses

from fhir_cyclo.client import FhirClient, RetryPolicy, parse_retry_after
from fhir_cyclo.core.errors import (
    FatalTransportError,
    PreconditionFailed,
    ServerError,
    TemporaryTransportError,
    Unprocessable,
)

from .helpers import BASE, FHIR_JSON, MakeClient, load, recorded_ids, tx_bundle

OK_TX = "tx-response-local-hapi88-create-2-observations.json"
FAULT_2223 = "oo-public-baseR4-500-hapi-2223-server-fault.json"


def _add(rsps: responses.RequestsMock, status: int, name: str, **headers: str) -> None:
    rsps.add(
        responses.POST,
        BASE,
        json=load(name),
        status=status,
        headers=headers,
        content_type=FHIR_JSON,
    )


def test_500_hapi_2223_is_retried_then_succeeds(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    _add(rsps, 500, FAULT_2223)
    _add(rsps, 200, OK_TX)
    result = client.transaction(tx_bundle(2))
    assert [e.id for e in result] == recorded_ids(OK_TX)
    assert len(rsps.calls) == 2
    assert len(sleeps) == 1


def test_500_retried_n_times_then_raises_the_last_server_error(
    rsps: responses.RequestsMock, sleeps: list[float], make_client: MakeClient
) -> None:
    _add(rsps, 500, FAULT_2223)  # the last registered response repeats
    client = make_client(retry=RetryPolicy(retries=3))
    with pytest.raises(ServerError) as info:
        client.transaction(tx_bundle(2))
    assert type(info.value) is ServerError
    assert info.value.status == 500
    assert info.value.hapi_codes == ("HAPI-2223",)
    assert len(rsps.calls) == 4  # 1 attempt + 3 retries
    assert len(sleeps) == 3


def test_backoff_grows_exponentially_with_bounded_jitter(
    rsps: responses.RequestsMock, sleeps: list[float], make_client: MakeClient
) -> None:
    _add(rsps, 503, FAULT_2223)
    client = make_client(retry=RetryPolicy(retries=4, backoff=0.5, max_retry_after=3.0))
    with pytest.raises(ServerError):
        client.transaction(tx_bundle(2))
    # attempt n waits between half and all of min(0.5 * 2**n, 3.0).
    for attempt, delay in enumerate(sleeps):
        ceiling = min(0.5 * 2**attempt, 3.0)
        assert ceiling / 2 <= delay <= ceiling, (attempt, delay)
    assert len(sleeps) == 4


def test_412_hapi_2840_is_not_retried(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    _add(rsps, 412, "oo-public-baseR4-412-hapi-2840-duplicate-create.json")
    _add(rsps, 200, OK_TX)  # would be served if the client (wrongly) retried
    with pytest.raises(PreconditionFailed):
        client.transaction(tx_bundle(2))
    assert len(rsps.calls) == 1
    assert sleeps == []


@pytest.mark.parametrize(
    "name",
    [
        "oo-public-baseR4-400-hapi-0450-parse-error.json",
        "oo-local-hapi88-400-hapi-0541-unresolved-placeholder.json",
        "oo-local-hapi88-400-hapi-1094-unknown-reference-target.json",
    ],
)
def test_400_transaction_is_never_retried(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float], name: str
) -> None:
    _add(rsps, 400, name)
    _add(rsps, 200, OK_TX)
    with pytest.raises(Unprocessable):
        client.transaction(tx_bundle(2))
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_401_is_not_retried(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.add(responses.GET, f"{BASE}/Patient/abc", status=401, body="unauthorized")
    with pytest.raises(ServerError) as info:
        client.read("Patient", "abc")
    assert info.value.status == 401
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_429_retry_after_seconds_is_honoured(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    _add(rsps, 429, FAULT_2223, **{"Retry-After": "7"})
    _add(rsps, 200, OK_TX)
    client.transaction(tx_bundle(2))
    assert sleeps == [7.0]
    assert len(rsps.calls) == 2


@pytest.mark.parametrize(("cap", "expected"), [(30.0, 30.0), (5.0, 5.0)])
def test_429_retry_after_is_capped(
    rsps: responses.RequestsMock,
    sleeps: list[float],
    cap: float,
    expected: float,
    make_client: MakeClient,
) -> None:
    _add(rsps, 429, FAULT_2223, **{"Retry-After": "120"})
    _add(rsps, 200, OK_TX)
    with make_client(retry=RetryPolicy(max_retry_after=cap)) as client:
        client.transaction(tx_bundle(2))
    assert sleeps == [expected]


def test_503_with_retry_after_date_is_retried(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(hours=2), usegmt=True)
    _add(rsps, 503, FAULT_2223, **{"Retry-After": later})
    _add(rsps, 200, OK_TX)
    client.transaction(tx_bundle(2))
    assert sleeps == [30.0]  # two hours away, capped at max_retry_after


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        ("0", 0.0),
        ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0),
        ("Wed, 21 Oct 2015 07:28:10 -0000", 10.0),  # naive in Python, GMT by the RFC
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: retry now
        ("soon", None),
        ("", None),
        (None, None),
        ("-5", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after(value, now=now) == expected


@pytest.mark.parametrize("status", [408, 502, 503, 504])
def test_other_retryable_statuses(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float], status: int
) -> None:
    rsps.add(responses.POST, BASE, body="busy", status=status)
    _add(rsps, 200, OK_TX)
    assert client.transaction(tx_bundle(2)).ok
    assert len(rsps.calls) == 2
    assert len(sleeps) == 1


def test_connection_error_is_retried_then_succeeds(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.add(responses.POST, BASE, body=requests.exceptions.ConnectionError("reset by peer"))
    _add(rsps, 200, OK_TX)
    assert client.transaction(tx_bundle(2)).ok
    assert len(rsps.calls) == 2
    assert len(sleeps) == 1


@pytest.mark.parametrize(
    "error",
    [
        requests.exceptions.ConnectionError("connection refused"),
        requests.exceptions.ReadTimeout("read timed out"),
        requests.exceptions.ConnectTimeout("connect timed out"),
    ],
)
def test_network_errors_retried_then_temporary_transport_error(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float], error: Exception
) -> None:
    rsps.add(responses.POST, BASE, body=error)
    with pytest.raises(TemporaryTransportError, match="failed after 4 attempts") as info:
        client.transaction(tx_bundle(2))
    # One short cause instead of urllib3's nested repr (issue 11).
    cause = {
        "ConnectionError": "connection refused",
        "ReadTimeout": "no answer within the read timeout",
        "ConnectTimeout": "connection timed out",
    }[type(error).__name__]
    assert str(info.value).endswith(f"failed after 4 attempts: {cause}")
    assert info.value.url == BASE
    assert len(rsps.calls) == 4
    assert len(sleeps) == 3


def test_tls_failure_is_fatal_and_not_retried(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.add(responses.POST, BASE, body=requests.exceptions.SSLError("certificate verify failed"))
    with pytest.raises(FatalTransportError, match="TLS verification failed"):
        client.transaction(tx_bundle(2))
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_redirects_are_not_followed(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.add(responses.POST, BASE, status=302, headers={"Location": "https://elsewhere.example/"})
    rsps.add(responses.GET, "https://elsewhere.example/", body="gotcha")
    with pytest.raises(FatalTransportError, match=r"redirected \(HTTP 302\) to https://elsewhere"):
        client.transaction(tx_bundle(2))
    assert len(rsps.calls) == 1
    assert sleeps == []


def test_zero_retries_means_one_attempt(
    rsps: responses.RequestsMock, sleeps: list[float], make_client: MakeClient
) -> None:
    _add(rsps, 503, FAULT_2223)
    client = make_client(retry=RetryPolicy(retries=0))
    with pytest.raises(ServerError):
        client.transaction(tx_bundle(2))
    assert len(rsps.calls) == 1
    assert sleeps == []
