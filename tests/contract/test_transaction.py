"""Transactions: POST to the base URL, and parsing of recorded HAPI transaction-responses."""

from __future__ import annotations

import gzip

import orjson
import pytest
import responses

from fhir_cyclo.client import FhirClient, ServerOptions, parse_location, parse_status
from fhir_cyclo.core.errors import FatalTransportError, InputError

from .helpers import BASE, FHIR_JSON, MakeClient, load, recorded_ids, sent_body, tx_bundle

# (file, [(status, type, version, storage code)], created, updated); the ids are the server's
# (uuid5 ids of the recording, numeric Patient ids), read from each entry's Location.
RECORDED = [
    (
        # fhir-cyclo's PUT Observation/<uuid5> on a server that has never seen the id
        "tx-response-local-hapi88-create-2-observations.json",
        [
            (201, "Observation", "1", "SUCCESSFUL_UPDATE_AS_CREATE"),
            (201, "Observation", "1", "SUCCESSFUL_UPDATE_AS_CREATE"),
        ],
        2,
        0,
    ),
    (
        # the conditional PUT Patient?identifier= matched (200), two new Observations (201)
        "tx-response-local-hapi88-update200-and-create201.json",
        [
            (200, "Patient", "2", "SUCCESSFUL_UPDATE_WITH_CONDITIONAL_MATCH"),
            (201, "Observation", "1", "SUCCESSFUL_UPDATE_AS_CREATE"),
            (201, "Observation", "1", "SUCCESSFUL_UPDATE_AS_CREATE"),
        ],
        2,
        1,
    ),
]


@pytest.mark.parametrize("case", RECORDED, ids=[c[0] for c in RECORDED])
def test_recorded_transaction_response_is_parsed_in_order(
    client: FhirClient,
    rsps: responses.RequestsMock,
    case: tuple[str, list[tuple[int, str, str, str]], int, int],
) -> None:
    name, expected, created, updated = case
    rsps.add(responses.POST, BASE, json=load(name), content_type=FHIR_JSON)
    result = client.transaction(tx_bundle(len(expected)))

    got = [(e.status, e.resource_type, e.version, e.storage_code) for e in result]
    assert got == expected
    assert [e.id for e in result] == recorded_ids(name)
    assert result.ok
    assert (result.created, result.updated) == (created, updated)
    raw_entries = load(name)["entry"]
    for entry, raw in zip(result, raw_entries, strict=True):
        assert entry.location == raw["response"]["location"]
        assert entry.etag == raw["response"]["etag"]
        assert entry.last_modified == raw["response"].get("lastModified")
        assert entry.outcome is not None
        assert entry.outcome.issues[0].severity == "information"
        assert entry.outcome.issues[0].diagnostics.startswith("Successfully ")


def test_transaction_posts_serialised_bytes_to_the_base_url(
    client: FhirClient, rsps: responses.RequestsMock
) -> None:
    rsps.add(
        responses.POST,
        BASE,
        json=load("tx-response-local-hapi88-create-2-observations.json"),
        content_type=FHIR_JSON,
    )
    bundle = tx_bundle(2)
    client.transaction(bundle)

    assert len(rsps.calls) == 1
    request = rsps.calls[0].request
    assert request.url == BASE  # never [base]/Bundle (HAPI would store it or answer HAPI-0522)
    assert request.method == "POST"
    assert request.headers["Content-Type"] == FHIR_JSON
    assert request.headers["Accept"] == FHIR_JSON
    assert "gzip" in request.headers["Accept-Encoding"]
    assert "Content-Encoding" not in request.headers
    assert orjson.loads(sent_body(request)) == bundle  # pre-serialised bytes, never json=


def test_transaction_sends_pre_serialised_bytes_unchanged(
    client: FhirClient, rsps: responses.RequestsMock
) -> None:
    rsps.add(
        responses.POST,
        BASE,
        json=load("tx-response-local-hapi88-create-2-observations.json"),
        content_type=FHIR_JSON,
    )
    body = orjson.dumps(tx_bundle(2), option=orjson.OPT_INDENT_2)
    result = client.transaction(body)
    assert rsps.calls[0].request.body == body
    assert [e.id for e in result] == recorded_ids(
        "tx-response-local-hapi88-create-2-observations.json"
    )


def test_large_bodies_are_gzipped_only_when_enabled(
    make_client: MakeClient, rsps: responses.RequestsMock
) -> None:
    reply = load("tx-response-local-hapi88-create-2-observations.json")
    rsps.add(responses.POST, BASE, json=reply, content_type=FHIR_JSON)
    big = tx_bundle(2)
    big["entry"][0]["resource"]["note"] = [{"text": "x" * 70_000}]

    with make_client(server=ServerOptions(BASE, gzip_requests=True)) as zipped:
        zipped.transaction(big)
        zipped.transaction(tx_bundle(2))  # small: sent as is
    with make_client() as plain:
        plain.transaction(big)

    first, small, unzipped = (c.request for c in rsps.calls)
    assert first.headers["Content-Encoding"] == "gzip"
    assert orjson.loads(gzip.decompress(sent_body(first))) == big
    assert "Content-Encoding" not in small.headers
    assert "Content-Encoding" not in unzipped.headers
    assert orjson.loads(sent_body(unzipped)) == big


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("Observation/11804/_history/1", ("Observation", "11804", "1")),
        (
            "https://hapi.fhir.org/baseR4/Patient/131943013/_history/12",
            ("Patient", "131943013", "12"),
        ),
        (
            "http://localhost:8103/fhir/R4/Patient/3f1c2a9e-8f4b-4c1e-9d7a-0b6f5e4d3c2b/_history/"
            "9a8b7c6d-0000-4000-8000-000000000001",
            (
                "Patient",
                "3f1c2a9e-8f4b-4c1e-9d7a-0b6f5e4d3c2b",
                "9a8b7c6d-0000-4000-8000-000000000001",
            ),
        ),
        ("Patient/abc-1", ("Patient", "abc-1", None)),
        ("https://example.org/fhir/Patient/abc-1?_format=json", ("Patient", "abc-1", None)),
        ("", (None, None, None)),
        (None, (None, None, None)),
        ("not-a-location", (None, None, None)),
    ],
)
def test_parse_location_variants(
    location: str | None, expected: tuple[str | None, str | None, str | None]
) -> None:
    assert parse_location(location) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("201 Created", 201), ("200 OK", 200), ("204", 204), (404, 404), ("OK", None), (None, None)],
)
def test_parse_status(value: object, expected: int | None) -> None:
    assert parse_status(value) == expected


def test_version_falls_back_to_the_etag_when_location_has_no_history(
    client: FhirClient, rsps: responses.RequestsMock
) -> None:
    reply = {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [
            {"response": {"status": "200 OK", "location": "Patient/abc", "etag": 'W/"3"'}},
            {"response": {"status": "201 Created", "location": "Patient/def", "etag": "7"}},
            {"response": {"status": "204 No Content"}},
        ],
    }
    rsps.add(responses.POST, BASE, json=reply, content_type=FHIR_JSON)
    result = client.transaction(tx_bundle(3))
    assert [(e.status, e.id, e.version) for e in result] == [
        (200, "abc", "3"),
        (201, "def", "7"),
        (204, None, None),
    ]
    # No HAPI storage codes here: 201 counts as created, a 200 with a location as updated.
    assert (result.created, result.updated) == (1, 1)


def test_entry_count_mismatch_is_an_error(client: FhirClient, rsps: responses.RequestsMock) -> None:
    rsps.add(
        responses.POST,
        BASE,
        json=load("tx-response-local-hapi88-create-2-observations.json"),
        content_type=FHIR_JSON,
    )
    with pytest.raises(FatalTransportError, match="had 3 entries but the response has 2"):
        client.transaction(tx_bundle(3))


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ({"resourceType": "Bundle", "type": "searchset"}, "type 'searchset'"),
        ({"resourceType": "Patient"}, "Patient instead of a transaction-response"),
        (
            {
                "resourceType": "Bundle",
                "type": "transaction-response",
                "entry": [{"response": {"status": "created"}}],
            },
            "entry 0 has no valid response.status",
        ),
    ],
)
def test_unexpected_success_bodies_are_refused(
    client: FhirClient, rsps: responses.RequestsMock, reply: dict[str, object], message: str
) -> None:
    rsps.add(responses.POST, BASE, json=reply, content_type=FHIR_JSON)
    with pytest.raises(FatalTransportError, match=message):
        client.transaction(tx_bundle(1))


def test_non_json_success_body_is_refused(client: FhirClient, rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, BASE, body="<html>welcome</html>", content_type="text/html")
    with pytest.raises(FatalTransportError, match="not JSON"):
        client.transaction(tx_bundle(1))


@pytest.mark.parametrize(
    "bundle",
    [
        {"resourceType": "Patient"},
        {"resourceType": "Bundle", "type": "collection", "entry": []},
    ],
)
def test_non_transaction_dicts_are_refused_before_sending(
    client: FhirClient, rsps: responses.RequestsMock, bundle: dict[str, object]
) -> None:
    with pytest.raises(InputError, match="transaction or batch"):
        client.transaction(bundle)
    assert len(rsps.calls) == 0


@pytest.mark.parametrize(
    ("status", "code", "created", "updated"),
    [
        ("200 OK", "SUCCESSFUL_CREATE_WITH_CONDITIONAL_MATCH", False, False),  # ifNoneExist hit
        ("200 OK", "SUCCESSFUL_UPDATE_NO_CHANGE", False, False),
        ("200 OK", "SUCCESSFUL_UPDATE_WITH_CONDITIONAL_MATCH", False, True),
        ("201 Created", "SUCCESSFUL_UPDATE_AS_CREATE", True, False),  # PUT to a new id
        ("201 Created", "SUCCESSFUL_UPDATE_NO_CONDITIONAL_MATCH", True, False),
    ],
)
def test_storage_code_decides_created_or_updated(
    client: FhirClient,
    rsps: responses.RequestsMock,
    status: str,
    code: str,
    *,
    created: bool,
    updated: bool,
) -> None:
    # The recorded envelope with another HAPI StorageResponseCode: a bare "200 OK" cannot tell
    # an update from a conditional create that matched an existing resource.
    reply = load("tx-response-local-hapi88-update200-and-create201.json")
    reply["entry"] = reply["entry"][:1]
    reply["entry"][0]["response"]["status"] = status
    reply["entry"][0]["response"]["outcome"]["issue"][0]["details"]["coding"][0]["code"] = code
    rsps.add(responses.POST, BASE, json=reply, content_type=FHIR_JSON)
    [entry] = client.transaction(tx_bundle(1))
    assert entry.storage_code == code
    assert (entry.created, entry.updated) == (created, updated)
