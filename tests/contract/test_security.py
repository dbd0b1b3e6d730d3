"""Secrets and transport safety: tokens never echoed, plain http refused, TLS verified."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from fhir_cyclo.client import (
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    AuthOptions,
    FhirClient,
    RetryPolicy,
    ServerOptions,
    TlsOptions,
)
from fhir_cyclo.core.errors import FatalTransportError, FhirCycloError, InputError, ServerError

from .helpers import BASE, FHIR_JSON, MakeClient, load, outcome, tx_bundle

TOKEN = "tok-SECRET-4f9a8b7c6d5e"


def test_bearer_token_is_sent_but_not_in_repr(
    rsps: responses.RequestsMock, make_client: MakeClient
) -> None:
    rsps.add(responses.GET, f"{BASE}/Patient/abc", json={"resourceType": "Patient", "id": "abc"})
    with make_client(auth=AuthOptions(token=TOKEN)) as client:
        client.read("Patient", "abc")
        text = repr(client)
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in text
    assert "***" in text
    assert BASE in text


def test_token_never_in_exceptions_or_logs(
    rsps: responses.RequestsMock, make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    # A server that echoes the credentials back in its diagnostics, and a network error whose
    # text happens to contain them: both must come out redacted.
    echo = outcome(f"HAPI-0333: invalid token Bearer {TOKEN}")
    rsps.add(responses.POST, BASE, json=echo, status=500, content_type=FHIR_JSON)
    rsps.add(responses.POST, BASE, json=echo, status=403, content_type=FHIR_JSON)
    net = requests.exceptions.ConnectionError(f"proxy said: Authorization: Bearer {TOKEN}")
    rsps.add(responses.GET, f"{BASE}/metadata", body=net)

    caplog.set_level(logging.DEBUG)
    client = make_client(auth=AuthOptions(token=TOKEN), retry=RetryPolicy(retries=1))
    with pytest.raises(ServerError) as server_error:
        client.transaction(tx_bundle(1))
    with pytest.raises(FatalTransportError) as transport_error:
        client.capabilities()

    assert server_error.value.status == 403
    assert all(TOKEN not in i.diagnostics for i in server_error.value.outcome.issues)
    caught: list[FhirCycloError] = [server_error.value, transport_error.value]
    for exc in caught:
        assert "***" in str(exc)
        assert TOKEN not in str(exc)
        assert TOKEN not in repr(exc)
    assert caplog.records, "the retries should have been logged"
    for record in caplog.records:
        assert TOKEN not in record.getMessage()


def test_basic_auth_password_is_redacted(
    rsps: responses.RequestsMock, make_client: MakeClient
) -> None:
    password = "pw-VERY-secret-123"
    encoded = base64.b64encode(f"alice:{password}".encode()).decode()
    rsps.add(
        responses.GET,
        f"{BASE}/Patient/abc",
        json=outcome(f"bad credentials {password} / {encoded}"),
        status=401,
        content_type=FHIR_JSON,
    )
    with make_client(auth=AuthOptions(basic_auth=("alice", password))) as client:
        with pytest.raises(ServerError) as info:
            client.read("Patient", "abc")
        text = repr(client)
    assert rsps.calls[0].request.headers["Authorization"] == f"Basic {encoded}"
    assert password not in str(info.value)
    assert encoded not in str(info.value)
    assert password not in text
    assert "alice" in text


def test_token_from_environment(
    rsps: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch, make_client: MakeClient
) -> None:
    monkeypatch.setenv(TOKEN_ENV, f"  {TOKEN}\n")
    rsps.add(responses.GET, f"{BASE}/Patient/abc", json={"resourceType": "Patient", "id": "abc"})
    with make_client() as client:
        client.read("Patient", "abc")
        assert TOKEN not in repr(client)
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_token_file_from_environment_and_argument(
    rsps: responses.RequestsMock,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_client: MakeClient,
) -> None:
    env_file = tmp_path / "env-token"
    env_file.write_text("env-file-token-123\n")
    env_file.chmod(0o600)
    arg_file = tmp_path / "arg-token"
    arg_file.write_text("arg-file-token-456\n")
    arg_file.chmod(0o600)
    monkeypatch.setenv(TOKEN_FILE_ENV, str(env_file))
    rsps.add(responses.GET, f"{BASE}/Patient/abc", json={"resourceType": "Patient", "id": "abc"})

    with make_client() as from_env:
        from_env.read("Patient", "abc")
    with make_client(auth=AuthOptions(token_file=arg_file)) as from_arg:
        from_arg.read("Patient", "abc")
    with make_client(auth=AuthOptions(token=TOKEN)) as explicit:
        explicit.read("Patient", "abc")

    sent = [c.request.headers["Authorization"] for c in rsps.calls]
    assert sent == [
        "Bearer env-file-token-123",
        "Bearer arg-file-token-456",
        f"Bearer {TOKEN}",
    ]


def test_unreadable_or_empty_token_file(tmp_path: Path) -> None:
    with pytest.raises(FatalTransportError, match="cannot read token file"):
        FhirClient(BASE, auth=AuthOptions(token_file=tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(FatalTransportError, match="is empty"):
        FhirClient(BASE, auth=AuthOptions(token_file=empty))


def test_conflicting_credentials_are_refused() -> None:
    with pytest.raises(FatalTransportError, match="not both") as info:
        FhirClient(BASE, auth=AuthOptions(token=TOKEN, basic_auth=("alice", "pw")))
    assert TOKEN not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://hapi.fhir.org/baseR4",
        "http://10.0.0.5:8080/fhir",
        "http://localhost.evil.example/fhir",
        "http://128.0.0.1/fhir",
    ],
)
def test_plain_http_off_loopback_is_refused(url: str) -> None:
    with pytest.raises(FatalTransportError, match="refusing plain http"):
        FhirClient(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8080/fhir",
        "http://127.0.0.1:8080/fhir/",
        "http://127.5.6.7/fhir",
        "http://[::1]:8080/fhir",
    ],
)
def test_plain_http_on_loopback_is_allowed(url: str) -> None:
    with FhirClient(url) as client:
        assert client.base_url == url.rstrip("/")


def test_plain_http_allowed_when_explicitly_asked() -> None:
    with FhirClient(
        ServerOptions("http://fhir.internal:8080/fhir", tls=TlsOptions(allow_http=True))
    ) as client:
        assert client.base_url == "http://fhir.internal:8080/fhir"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.org/fhir", "absolute http"),
        ("hapi.fhir.org/baseR4", "absolute http"),
        ("https://alice:hunter2-secret@hapi.fhir.org/baseR4", "not in the base URL"),
        ("https://hapi.fhir.org/baseR4?x=1", "query or fragment"),
    ],
)
def test_bad_base_urls(url: str, message: str) -> None:
    with pytest.raises(FatalTransportError, match=message) as info:
        FhirClient(url)
    assert "hunter2-secret" not in str(info.value)


class RecordingSession(requests.Session):
    """A real Session that remembers the keyword arguments of each request."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, Any]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(kwargs)
        return super().request(method, url, *args, **kwargs)


def test_tls_verified_timeouts_set_and_redirects_off_by_default(
    rsps: responses.RequestsMock, make_client: MakeClient
) -> None:
    rsps.add(
        responses.POST,
        BASE,
        json=load("tx-response-local-hapi88-create-2-observations.json"),
        content_type=FHIR_JSON,
    )
    session = RecordingSession()
    with make_client(server=ServerOptions(BASE, session=session)) as client:
        client.transaction(tx_bundle(2))
    with make_client(
        server=ServerOptions(BASE, tls=TlsOptions(verify=False), timeout=3.0, session=session)
    ) as c:
        c.transaction(tx_bundle(2))
    default, insecure = session.seen
    assert default["verify"] is True
    assert default["timeout"] == (5.0, 60.0)
    assert default["allow_redirects"] is False
    assert insecure["verify"] is False
    assert insecure["timeout"] == 3.0


def test_option_objects_never_show_secrets() -> None:
    options = AuthOptions(token=TOKEN, basic_auth=("alice", "pw-hunter2"))
    assert TOKEN not in repr(options) and "pw-hunter2" not in repr(options)


@pytest.mark.parametrize("field", ["retries", "backoff", "max_retry_after"])
def test_negative_retry_settings_are_refused(field: str) -> None:
    with pytest.raises(InputError, match=">= 0"):
        RetryPolicy(**{field: -1})
