"""push_bundles: one transaction per case, failures contained and reported, 409 retried once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import orjson
import pytest
import requests
import responses

from fhir_cyclo.client import FhirClient
from fhir_cyclo.server.push import CaseResult, push_bundles

from .helpers import BASE, FHIR_JSON, load, outcome, tx_bundle

CREATE_2 = "tx-response-local-hapi88-create-2-observations.json"
MIXED_3 = "tx-response-local-hapi88-update200-and-create201.json"


def _add(rsps: responses.RequestsMock, name: str, status: int = 200) -> None:
    rsps.add(responses.POST, BASE, json=load(name), status=status, content_type=FHIR_JSON)


def test_one_failing_case_is_reported_and_the_others_continue(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    _add(rsps, CREATE_2)
    _add(rsps, "oo-public-baseR4-412-hapi-2840-duplicate-create.json", status=412)
    _add(rsps, MIXED_3)
    items = [("case-1", tx_bundle(2)), ("case-2", tx_bundle(2)), ("case-3", tx_bundle(3))]
    seen: list[CaseResult] = []

    summary = push_bundles(client, items, on_result=seen.append)

    assert (summary.pushed, summary.failed, summary.created, summary.updated) == (2, 1, 4, 1)
    assert not summary.ok
    assert [c.label for c in seen] == ["case-1", "case-2", "case-3"]
    assert [c.ok for c in seen] == [True, False, True]
    [failure] = summary.failures
    assert failure.label == "case-2"
    assert failure.status == 412
    assert failure.entries == 2
    assert failure.error is not None
    assert "case-2" in failure.error
    assert "HAPI-2840" in failure.error
    assert "Patient/131943013" in failure.error  # the server's diagnostics, not just a code
    assert len(rsps.calls) == 3  # the 412 was not retried
    assert seen[2].created == 2
    assert seen[2].updated == 1
    assert sleeps == []  # no 409, so no conflict backoff either


def test_parallel_workers_share_one_pool_and_isolate_failures(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    threads: set[str] = set()
    lock = threading.Lock()

    def reply(request: requests.PreparedRequest) -> tuple[int, dict[str, str], bytes]:
        with lock:
            threads.add(threading.current_thread().name)
        tag = orjson.loads(request.body or b"{}")["entry"][0]["resource"]["id"]
        if tag.startswith("bad-"):
            body = orjson.dumps(load("oo-local-hapi88-400-hapi-0541-unresolved-placeholder.json"))
            return 400, {"Content-Type": FHIR_JSON}, body
        return 200, {"Content-Type": FHIR_JSON}, orjson.dumps(load(CREATE_2))

    rsps.add_callback(responses.POST, BASE, callback=reply)
    labels = [f"ok{i}" for i in range(6)] + ["bad-a", "bad-b"]

    def items() -> Iterator[tuple[str, dict[str, object]]]:  # lazy, not Sized
        for label in labels:
            yield label, tx_bundle(2, tag=label)

    summary = push_bundles(client, items(), workers=3)

    assert client.pool_size >= 3
    assert (summary.pushed, summary.failed, summary.created) == (6, 2, 12)
    assert sorted(f.label for f in summary.failures) == ["bad-a", "bad-b"]
    assert all(f.error and "HAPI-0541" in f.error for f in summary.failures)
    assert len(rsps.calls) == 8
    assert all(name.startswith("fhir-push") for name in threads)
    assert sleeps == []


def test_409_conflict_is_retried_then_succeeds(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    # HAPI-0550/HAPI-2745: two workers raced one conditional create; the loser committed nothing.
    conflict = outcome("HAPI-0550: HAPI-2745: Error flushing transaction ... conditional create")
    rsps.add(responses.POST, BASE, json=conflict, status=409, content_type=FHIR_JSON)
    _add(rsps, CREATE_2)

    summary = push_bundles(client, [("racy", tx_bundle(2))])

    assert (summary.pushed, summary.failed) == (1, 0)
    assert len(rsps.calls) == 2
    assert len(sleeps) == 1  # one jittered backoff before the second attempt


def test_409_on_every_attempt_fails_within_the_retry_bound(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    conflict = outcome("HAPI-0550: HAPI-0989: version conflict")
    attempts = 4  # the client default: 3 retries after the first attempt
    for _ in range(attempts):
        rsps.add(responses.POST, BASE, json=conflict, status=409, content_type=FHIR_JSON)
    _add(rsps, CREATE_2)  # only one more attempt would get this

    summary = push_bundles(client, [("stuck", tx_bundle(2))])

    assert summary.failed == 1
    [failure] = summary.failures
    assert failure.status == 409
    assert failure.error is not None
    assert "HAPI-0989" in failure.error
    assert len(rsps.calls) == attempts
    assert len(sleeps) == attempts - 1


def test_transport_failure_is_a_case_failure(
    client: FhirClient, rsps: responses.RequestsMock, sleeps: list[float]
) -> None:
    rsps.add(responses.POST, BASE, body=requests.exceptions.ConnectionError("refused"))
    summary = push_bundles(client, [("offline", tx_bundle(1)), ("offline-2", tx_bundle(1))])
    assert summary.failed == 2
    assert summary.failures[0].status is None
    assert summary.failures[0].error is not None
    assert summary.failures[0].error.startswith("case offline: ")
    assert "failed after 4 attempts" in summary.failures[0].error
    assert len(sleeps) == 6  # 3 transport retries per case, both cases tried


def test_dry_run_sends_nothing_and_counts(client: FhirClient, rsps: responses.RequestsMock) -> None:
    items: list[tuple[str, dict[str, object] | bytes]] = [
        ("a", tx_bundle(3)),
        ("b", orjson.dumps(tx_bundle(2))),
        ("broken", b"{not json"),
        ("wrong", {"resourceType": "Bundle", "type": "collection"}),
    ]
    seen: list[CaseResult] = []
    summary = push_bundles(client, items, dry_run=True, on_result=seen.append)

    assert len(rsps.calls) == 0
    assert summary.dry_run
    assert (summary.pushed, summary.failed, summary.created) == (2, 2, 0)
    assert [c.entries for c in seen] == [3, 2, 0, 0]
    assert sorted(f.label for f in summary.failures) == ["broken", "wrong"]


def test_progress_bar_stays_off_when_stderr_is_not_a_tty(
    client: FhirClient, rsps: responses.RequestsMock, capsys: pytest.CaptureFixture[str]
) -> None:
    _add(rsps, CREATE_2)
    summary = push_bundles(client, [("a", tx_bundle(2))], progress=True)
    assert summary.pushed == 1
    assert capsys.readouterr().err == ""


def test_workers_must_be_positive(client: FhirClient) -> None:
    with pytest.raises(Exception, match="workers must be >= 1"):
        push_bundles(client, [], workers=0)
