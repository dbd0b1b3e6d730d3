"""Paged search: next links followed verbatim, no `total` needed, and the paging safety rails."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
import requests
import responses

from fhir_cyclo.client import FhirClient, ServerOptions
from fhir_cyclo.core.errors import FatalTransportError, NotFound

from .helpers import BASE, FHIR_JSON, MakeClient, load, obs, outcome, searchset, sent_url

# Recorded from the project's HAPI 8.8 server (tests/contract/record_hapi.py): 26 Observations of
# one Patient, _count=10 -> 3 pages; only the last page carries `total`.
LOCAL_BASE = "http://localhost:8080/fhir"
PAGES = [
    "searchset-local-hapi88-paging-page1.json",
    "searchset-local-hapi88-paging-page2.json",
    "searchset-local-hapi88-paging-page3-last.json",
]
LOCAL = "searchset-local-hapi88-observation-by-subject.json"


def _get(rsps: responses.RequestsMock, url: str, body: object, status: int = 200) -> None:
    rsps.add(responses.GET, url, body=orjson.dumps(body), status=status, content_type=FHIR_JSON)


def _link(page: dict[str, Any], relation: str) -> str | None:
    return next((lk["url"] for lk in page["link"] if lk["relation"] == relation), None)


def test_recorded_pages_without_total_are_followed_verbatim_to_the_last(
    rsps: responses.RequestsMock,
) -> None:
    pages = [load(name) for name in PAGES]
    assert "total" not in pages[0] and "total" not in pages[1]  # HAPI: no total while paging
    assert _link(pages[2], "next") is None
    subject = parse_qs(urlsplit(_link(pages[0], "self") or "").query)["subject"][0]
    _get(rsps, f"{LOCAL_BASE}/Observation", pages[0])
    for page, previous in zip(pages[1:], pages[:-1], strict=True):
        _get(rsps, _link(previous, "next") or "", page)

    with FhirClient(LOCAL_BASE) as client:
        ids = [r["id"] for r in client.search("Observation", {"subject": subject}, page_size=10)]

    assert ids == [e["resource"]["id"] for page in pages for e in page["entry"]]
    assert len(ids) == pages[2]["total"] == 26
    assert len(rsps.calls) == 3
    for call, previous in zip(rsps.calls[1:], pages[:-1], strict=True):
        sent = urlsplit(sent_url(call.request))
        expected = urlsplit(_link(previous, "next") or "")
        assert (sent.scheme, sent.netloc, sent.path) == (
            expected.scheme,
            expected.netloc,
            expected.path,
        )
        assert parse_qs(sent.query) == parse_qs(expected.query)  # no offsets computed by us
        assert "_getpages" in parse_qs(sent.query)
    for call in rsps.calls:
        assert call.request.headers["Cache-Control"] == "no-cache"
        assert "no-store" not in call.request.headers["Cache-Control"]


def test_recorded_local_searchset_single_page_with_encoded_params(
    client: FhirClient, rsps: responses.RequestsMock
) -> None:
    recorded = load(LOCAL)
    rsps.add(responses.GET, f"{BASE}/Observation", json=recorded, content_type=FHIR_JSON)
    found = list(
        client.search(
            "Observation",
            {
                "subject": "Patient/11803",
                "code": "http://loinc.org|718-7",
                "date": ["ge2024-01-01", "lt2027-01-01"],
            },
        )
    )
    assert [r["id"] for r in found] == [e["resource"]["id"] for e in recorded["entry"]]
    assert len(found) == recorded["total"] == 4
    assert len(rsps.calls) == 1
    url = sent_url(rsps.calls[0].request)
    assert "code=http%3A%2F%2Floinc.org%7C718-7" in url  # `|` sent as %7C
    assert parse_qs(urlsplit(url).query) == {
        "subject": ["Patient/11803"],
        "code": ["http://loinc.org|718-7"],
        "date": ["ge2024-01-01", "lt2027-01-01"],
    }


def test_multi_page_sequence_with_relative_links(
    client: FhirClient, rsps: responses.RequestsMock
) -> None:
    _get(rsps, f"{BASE}/Observation?_count=2", searchset([obs("a"), obs("b")], next_url="?p=2"))
    _get(rsps, f"{BASE}?p=2", searchset([obs("c"), obs("d")], next_url="Observation?p=3"))
    _get(rsps, f"{BASE}/Observation?p=3", searchset([obs("e")]))

    pages = list(client.search_bundles("Observation", page_size=2))

    assert [len(p["entry"]) for p in pages] == [2, 2, 1]
    assert [c.request.url for c in rsps.calls] == [
        f"{BASE}/Observation?_count=2",
        f"{BASE}?p=2",
        f"{BASE}/Observation?p=3",
    ]


@pytest.mark.parametrize(
    ("link", "shown"),
    [
        ("https://evil.example.org/baseR4?_getpages=x", "https://evil.example.org:443"),
        ("https://hapi.fhir.org:8443/baseR4?_getpages=x", "https://hapi.fhir.org:8443"),
        ("http://hapi.fhir.org/baseR4?_getpages=x", "http://hapi.fhir.org:80"),
        ("//evil.example.org/baseR4?_getpages=x", "https://evil.example.org:443"),
    ],
)
def test_next_link_to_another_server_is_refused(
    client: FhirClient, rsps: responses.RequestsMock, link: str, shown: str
) -> None:
    _get(rsps, f"{BASE}/Observation", searchset([obs("a")], next_url=link))
    got: list[str] = []
    with pytest.raises(FatalTransportError) as info:
        got.extend(r["id"] for r in client.search("Observation"))
    message = str(info.value)
    assert shown in message
    assert "https://hapi.fhir.org:443" in message
    assert got == ["a"]
    assert len(rsps.calls) == 1  # the other host never saw a request (nor the token)


def test_next_link_loop_is_refused(client: FhirClient, rsps: responses.RequestsMock) -> None:
    first = f"{BASE}/Observation?_count=1"
    _get(rsps, first, searchset([obs("a")], next_url=f"{BASE}?page=2"))
    _get(rsps, f"{BASE}?page=2", searchset([obs("b")], next_url=first))
    got: list[str] = []
    with pytest.raises(FatalTransportError, match="already visited"):
        got.extend(r["id"] for r in client.search("Observation", page_size=1))
    assert got == ["a", "b"]
    assert len(rsps.calls) == 2


def test_max_pages_stops_with_an_error(client: FhirClient, rsps: responses.RequestsMock) -> None:
    for page in range(1, 4):
        _get(rsps, f"{BASE}?page={page}", searchset([obs(str(page))], next_url=f"?page={page + 1}"))
    _get(rsps, f"{BASE}/Observation", searchset([obs("0")], next_url="?page=1"))
    got: list[str] = []
    with pytest.raises(FatalTransportError, match=r"stopped after 2 pages \(max_pages=2\)"):
        got.extend(r["id"] for r in client.search("Observation", max_pages=2))
    assert got == ["0", "1"]
    assert len(rsps.calls) == 2


def test_max_pages_exactly_reached_without_next_is_fine(
    client: FhirClient, rsps: responses.RequestsMock
) -> None:
    _get(rsps, f"{BASE}/Observation", searchset([obs("a")], next_url="?page=2"))
    _get(rsps, f"{BASE}?page=2", searchset([obs("b")]))
    assert [r["id"] for r in client.search("Observation", max_pages=2)] == ["a", "b"]


def test_operation_outcome_instead_of_bundle(
    client: FhirClient, rsps: responses.RequestsMock
) -> None:
    _get(rsps, f"{BASE}/Observation", outcome("HAPI-1234: something odd"))
    with pytest.raises(FatalTransportError, match="OperationOutcome instead of a") as info:
        list(client.search("Observation"))
    assert "HAPI-1234: something odd" in str(info.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"resourceType": "Patient", "id": "x"}', "Patient instead of a searchset"),
        (b"<html>hello</html>", "non-JSON body instead of a searchset"),
        (b'{"resourceType": "Bundle", "type": "history"}', "type 'history', expected searchset"),
    ],
)
def test_non_searchset_bodies_are_refused(
    client: FhirClient, rsps: responses.RequestsMock, body: bytes, message: str
) -> None:
    rsps.add(responses.GET, f"{BASE}/Observation", body=body)
    with pytest.raises(FatalTransportError, match=message):
        list(client.search("Observation"))


def test_expired_paging_link_410_hapi_0417(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    _get(rsps, f"{BASE}/Observation", searchset([obs("a")], next_url="?_getpages=abc"))
    gone = outcome('HAPI-0417: Search ID "abc" does not exist and may have expired')
    _get(rsps, f"{BASE}?_getpages=abc", gone, status=410)
    got: list[str] = []
    with pytest.raises(NotFound) as info:
        got.extend(r["id"] for r in client.search("Observation"))
    exc = info.value
    assert exc.status == 410
    assert "re-run the search" in str(exc)
    assert "expire" in str(exc)
    assert exc.hapi_codes == ("HAPI-0417",)
    assert got == ["a"]
    assert len(rsps.calls) == 2  # a 410 is not retried
    assert sleeps == []


def test_paging_link_5xx_is_retried(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    _get(rsps, f"{BASE}/Observation", searchset([obs("a")], next_url="?page=2"))
    _get(rsps, f"{BASE}?page=2", outcome("HAPI-2223: Timer already cancelled."), status=500)
    _get(rsps, f"{BASE}?page=2", searchset([obs("b")]))
    assert [r["id"] for r in client.search("Observation")] == ["a", "b"]
    assert len(sleeps) == 1


def test_include_and_outcome_entries_are_skipped_unless_asked(
    client: FhirClient, rsps: responses.RequestsMock
) -> None:
    page = searchset(
        [obs("a"), {"resourceType": "Patient", "id": "p"}, outcome("warning: slow"), obs("b")],
        modes=["match", "include", "outcome", "match"],
    )
    del page["entry"][3]["search"]  # no mode at all still counts as a match
    _get(rsps, f"{BASE}/Observation", page)
    _get(rsps, f"{BASE}/Observation", page)

    default = [r["id"] for r in client.search("Observation")]
    with_included = [r["id"] for r in client.search("Observation", modes=("match", "include"))]
    assert default == ["a", "b"]
    assert with_included == ["a", "p", "b"]


def test_page_body_over_the_size_limit_is_refused(
    rsps: responses.RequestsMock, make_client: MakeClient
) -> None:
    _get(rsps, f"{BASE}/Observation", searchset([obs(str(i)) for i in range(200)]))
    client = make_client(server=ServerOptions(BASE, max_body_bytes=2_000))
    with pytest.raises(FatalTransportError, match="larger than the 2,000 byte limit"):
        list(client.search("Observation"))


def test_page_size_limit_holds_without_content_length(
    rsps: responses.RequestsMock, make_client: MakeClient
) -> None:
    big = orjson.dumps(searchset([obs(str(i)) for i in range(200)]))
    rsps.add(responses.GET, f"{BASE}/Observation", body=big, auto_calculate_content_length=False)
    client = make_client(server=ServerOptions(BASE, max_body_bytes=2_000))
    with pytest.raises(FatalTransportError, match="byte limit"):
        list(client.search("Observation"))
    response = rsps.calls[0].response
    assert isinstance(response, requests.Response)
    assert "Content-Length" not in response.headers


def test_search_rejects_bad_resource_type_before_any_request(
    client: FhirClient, rsps: responses.RequestsMock
) -> None:
    with pytest.raises(Exception, match="not a FHIR resource type"):
        client.search("../metadata")
    assert len(rsps.calls) == 0
