"""Failed requests: recorded HAPI OperationOutcomes become the right ServerError subclass."""

from __future__ import annotations

import pytest
import responses

from fhir_cyclo.client import FhirClient, RetryPolicy
from fhir_cyclo.core.errors import (
    Conflict,
    NotFound,
    PreconditionFailed,
    ServerError,
    Unprocessable,
)

from .helpers import BASE, FHIR_JSON, MakeClient, load, outcome, tx_bundle

RECORDED = [
    (
        "oo-public-baseR4-400-hapi-0450-parse-error.json",
        400,
        Unprocessable,
        ("HAPI-0450", "HAPI-1861"),
    ),
    (
        "oo-local-hapi88-400-hapi-0541-unresolved-placeholder.json",
        400,
        Unprocessable,
        ("HAPI-0541",),
    ),
    (
        "oo-local-hapi88-400-hapi-1094-unknown-reference-target.json",
        400,
        Unprocessable,
        ("HAPI-1094",),
    ),
    (
        "oo-public-baseR4-412-hapi-2840-duplicate-create.json",
        412,
        PreconditionFailed,
        ("HAPI-2840",),
    ),
    ("oo-public-baseR4-500-hapi-2223-server-fault.json", 500, ServerError, ("HAPI-2223",)),
]


@pytest.mark.parametrize("case", RECORDED, ids=[c[0] for c in RECORDED])
def test_recorded_outcome_becomes_server_error(
    rsps: responses.RequestsMock,
    make_client: MakeClient,
    case: tuple[str, int, type[ServerError], tuple[str, ...]],
) -> None:
    name, status, error_type, codes = case
    rsps.add(responses.POST, BASE, json=load(name), status=status, content_type=FHIR_JSON)
    recorded_issue = load(name)["issue"][0]

    client = make_client(retry=RetryPolicy(retries=0))
    with pytest.raises(ServerError) as info:
        client.transaction(tx_bundle(1))

    exc = info.value
    assert type(exc) is error_type
    assert exc.status == status
    assert exc.method == "POST"
    assert exc.url == BASE
    issue = exc.outcome.issues[0]
    assert issue.severity == "error"
    assert issue.code == "processing"
    assert issue.diagnostics == recorded_issue["diagnostics"]
    assert exc.hapi_codes == codes
    # The message a user sees names the request, the status and the root HAPI code.
    assert f"HTTP {status}" in str(exc)
    assert codes[-1] in str(exc)


def test_recorded_validation_failure_lists_every_issue(
    rsps: responses.RequestsMock, make_client: MakeClient
) -> None:
    """422 from the server's validating interceptor: the error issues name their FHIRPath."""
    recorded = load("oo-local-hapi88-422-validation-failure.json")
    rsps.add(responses.POST, BASE, json=recorded, status=422, content_type=FHIR_JSON)
    client = make_client(retry=RetryPolicy(retries=0))
    with pytest.raises(Unprocessable) as info:
        client.transaction(tx_bundle(1))
    exc = info.value
    assert exc.status == 422
    assert len(exc.outcome.issues) == len(recorded["issue"])
    errors = [i for i in exc.outcome.issues if i.severity == "error"]
    assert errors
    assert all(i.expression[0].endswith(".status") for i in errors)
    assert all(i.message_id for i in exc.outcome.issues)  # the validator's message ids
    assert "nonsense" in str(exc)
    assert "performer" not in str(exc)  # warnings are not part of the error message


@pytest.mark.parametrize(
    ("name", "status", "fragment"),
    [
        ("oo-local-hapi88-404-hapi-2001-not-found.json", 404, "HAPI-2001"),
        ("oo-local-hapi88-410-deleted.json", 410, "Resource was deleted at"),
    ],
)
def test_recorded_read_of_missing_or_deleted_is_not_found(
    rsps: responses.RequestsMock, make_client: MakeClient, name: str, status: int, fragment: str
) -> None:
    rsps.add(
        responses.GET,
        f"{BASE}/Observation/gone",
        json=load(name),
        status=status,
        content_type=FHIR_JSON,
    )
    client = make_client(retry=RetryPolicy(retries=0))
    with pytest.raises(NotFound) as info:
        client.read("Observation", "gone")
    assert info.value.status == status
    assert fragment in str(info.value)
    assert len(rsps.calls) == 1  # 404/410 are answers, never retried


@pytest.mark.parametrize(
    ("status", "error_type"),
    [(404, NotFound), (410, NotFound), (409, Conflict), (422, Unprocessable), (403, ServerError)],
)
def test_status_picks_the_subclass(
    client: FhirClient,
    rsps: responses.RequestsMock,
    status: int,
    error_type: type[ServerError],
) -> None:
    body = outcome("HAPI-0550: HAPI-0550: HAPI-0989: version conflict")
    rsps.add(responses.POST, BASE, json=body, status=status, content_type=FHIR_JSON)
    with pytest.raises(ServerError) as info:
        client.transaction(tx_bundle(1))
    assert type(info.value) is error_type
    assert info.value.hapi_codes == ("HAPI-0550", "HAPI-0550", "HAPI-0989")


def test_html_gateway_page_becomes_a_text_outcome(
    rsps: responses.RequestsMock, make_client: MakeClient
) -> None:
    page = (
        "<html><head><title>502 Bad Gateway</title></head>"
        "<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
    )
    rsps.add(responses.POST, BASE, body=page, status=502, content_type="text/html")
    client = make_client(retry=RetryPolicy(retries=0))
    with pytest.raises(ServerError) as info:
        client.transaction(tx_bundle(1))
    exc = info.value
    assert exc.status == 502
    assert exc.hapi_codes == ()
    diagnostics = exc.outcome.issues[0].diagnostics
    assert "502 Bad Gateway" in diagnostics
    assert "nginx" in diagnostics
    assert "<" not in diagnostics


def test_empty_error_body_still_gives_a_message(
    rsps: responses.RequestsMock, make_client: MakeClient
) -> None:
    rsps.add(responses.POST, BASE, body=b"", status=503)
    client = make_client(retry=RetryPolicy(retries=0))
    with pytest.raises(ServerError, match="HTTP 503 with an empty body"):
        client.transaction(tx_bundle(1))
