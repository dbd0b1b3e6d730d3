"""HTTP faults between the client and HAPI: 429, 503, resets, slow answers, 4xx refusals, a dead server."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import orjson
import pytest

from fhir_cyclo.client import FhirClient, RetryPolicy, ServerOptions
from fhir_cyclo.importing.readback import find_patients
from fhir_cyclo.server.journal import PushJournal
from fhir_cyclo.server.push import GIVE_UP_AFTER, push_bundles
from tests.conftest import FIXTURES
from tests.faults.conftest import (
    FaultLedger,
    RecordingSleep,
    Scene,
    Summary,
    case_marker,
    parse_summary,
    run_cli,
)
from tests.faults.proxy import (
    REJECT,
    RESET,
    RESET_AFTER,
    SLOW,
    TOO_MANY,
    UNAVAILABLE,
    FaultProxy,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

READ_TIMEOUT = 3.0  # the proxy holds SLOW answers for 4.0 s; HAPI answers a case in 0.1-1 s
RETRIES = 3  # the client default: 4 attempts per request
TRANSIENT = (TOO_MANY, UNAVAILABLE, RESET, RESET_AFTER, SLOW)
# After these the server has committed the transaction: the retry re-sends a stored bundle.
COMMITTED = frozenset({RESET_AFTER, SLOW})


def client(url: str, sleep: RecordingSleep, backoff: float = 0.05) -> FhirClient:
    return FhirClient(
        ServerOptions(url, timeout=(2.0, READ_TIMEOUT)),
        retry=RetryPolicy(retries=RETRIES, backoff=backoff, sleep=sleep),
    )


@pytest.mark.parametrize("fault", TRANSIENT)
def test_transient_fault_is_retried_within_the_bound_and_duplicates_nothing(
    fault: str,
    proxy: FaultProxy,
    scene: Scene,
    ledger: FaultLedger,
) -> None:
    # One case meets the fault on all but its last allowed attempt, another once.
    proxy.for_case(case_marker(scene.tokens[0]), [fault] * RETRIES)
    proxy.for_case(case_marker(scene.tokens[1]), [fault])
    sleep = RecordingSleep()
    with client(proxy.base_url, sleep) as c:
        summary = push_bundles(c, scene.bundles, workers=2)
    state = scene.state()
    ledger.record(f"{fault} x{RETRIES + 1}", proxy.injected, state, absorbed=proxy.injected_total)

    assert summary.failed == 0, [f.error for f in summary.failures]
    assert summary.pushed == len(scene.bundles)
    assert proxy.injected == {fault: RETRIES + 1} and proxy.pending() == 0
    # Each fault cost exactly one more attempt: no extra retries, no give-up.
    assert proxy.received == len(scene.bundles) + RETRIES + 1
    committed_twice = RETRIES + 1 if fault in COMMITTED else 0
    assert proxy.forwarded == len(scene.bundles) + committed_twice
    if fault == TOO_MANY:
        assert sleep.delays.count(1.0) == RETRIES + 1  # Retry-After: 1 was honoured
    assert state.duplicate_patients == 0 and state.lost_cases == 0
    assert state.counts == scene.clean_counts


def test_mixed_faults_with_four_workers(
    proxy: FaultProxy,
    scene: Scene,
    ledger: FaultLedger,
) -> None:
    planned = 0
    for i, token in enumerate(scene.tokens):
        faults = [TRANSIENT[(i + k) % len(TRANSIENT)] for k in range(i % (RETRIES + 1))]
        proxy.for_case(case_marker(token), faults)
        planned += len(faults)
    with client(proxy.base_url, RecordingSleep()) as c:
        summary = push_bundles(c, scene.bundles, workers=4)
    state = scene.state()
    ledger.record("mixed, 4 workers", proxy.injected, state, absorbed=proxy.injected_total)

    assert summary.failed == 0, [f.error for f in summary.failures]
    assert proxy.injected_total == planned and set(proxy.injected) == set(TRANSIENT)
    assert proxy.received == len(scene.bundles) + planned
    assert state.clean, state


def test_fault_outlasting_the_retries_is_reported_then_resumed(
    proxy: FaultProxy,
    scene: Scene,
    ledger: FaultLedger,
    tmp_path: Path,
) -> None:
    victim = scene.tokens[3]
    rule = proxy.always(UNAVAILABLE, case_marker(victim))
    path = tmp_path / "journal.jsonl"
    with client(proxy.base_url, RecordingSleep()) as c, PushJournal(path, c.base_url) as journal:
        first = push_bundles(c, scene.bundles, workers=2, journal=journal)
        acknowledged = len(journal)
        on_server = find_patients(c, victim)
    proxy.clear()
    with client(proxy.base_url, RecordingSleep()) as c, PushJournal(path, c.base_url) as journal:
        second = push_bundles(c, scene.bundles, workers=2, journal=journal, resume=True)
    state = scene.state()
    ledger.record("503 outlasting retries", proxy.injected, state, absorbed=0, reported_cases=1)

    assert first.pushed == len(scene.bundles) - 1 and first.failed == 1
    (failure,) = first.failures
    assert failure.label == victim and failure.status == 503
    assert failure.error is not None and "FAULT-0503" in failure.error
    assert rule.hits == RETRIES + 1  # the retry bound, and not one attempt more
    assert on_server == []  # the failed case left nothing behind
    assert acknowledged == len(scene.bundles) - 1
    assert (second.pushed, second.skipped, second.failed) == (1, len(scene.bundles) - 1, 0)
    assert state.clean, state


def test_transaction_is_never_retried_on_4xx(
    proxy: FaultProxy,
    scene: Scene,
    ledger: FaultLedger,
) -> None:
    token, bundle = scene.bundles[2]
    rule = proxy.for_case(case_marker(token), [REJECT])
    sleep = RecordingSleep()
    with client(proxy.base_url, sleep) as c:
        scripted = push_bundles(c, [(token, bundle)])
        seen_scripted = (rule.hits, proxy.received, proxy.forwarded)
        # The same rule through the real server: HAPI's validator refuses it with 422.
        bad = orjson.loads(bundle)
        next(e for e in bad["entry"] if e["resource"]["resourceType"] == "Observation")["resource"][
            "status"
        ] = "not-a-status"
        real = push_bundles(c, [("invalid status", bad)])
        seen_real = (proxy.received, proxy.forwarded)
        rerun = push_bundles(c, scene.bundles, workers=2)  # no faults left: completes the rest
    state = scene.state()
    ledger.record("scripted 400", proxy.injected, state, absorbed=0, reported_cases=1)

    assert scripted.failed == 1 and scripted.failures[0].status == 400
    assert seen_scripted == (1, 1, 0)  # exactly one request, and it never reached the server
    assert real.failed == 1 and real.failures[0].status == 422
    assert "not-a-status" in (real.failures[0].error or "")
    assert seen_real == (2, 1)  # exactly one request reached the server
    assert sleep.delays == []  # no backoff either
    assert rerun.failed == 0 and state.clean, state


def test_unreachable_server_gives_up_within_bounds_then_resume_completes(
    proxy: FaultProxy,
    scene: Scene,
    ledger: FaultLedger,
    tmp_path: Path,
) -> None:
    workers = 2
    proxy.always(RESET)  # every transaction: connection reset, nothing reaches the server
    path = tmp_path / "journal.jsonl"
    started = time.monotonic()
    with client(proxy.base_url, RecordingSleep()) as c, PushJournal(path, c.base_url) as journal:
        first = push_bundles(c, scene.bundles, workers=workers, journal=journal)
        acknowledged = len(journal)
    elapsed = time.monotonic() - started
    resets, forwarded = proxy.received, proxy.forwarded
    proxy.clear()
    with client(proxy.base_url, RecordingSleep()) as c, PushJournal(path, c.base_url) as journal:
        second = push_bundles(c, scene.bundles, workers=workers, journal=journal, resume=True)
    state = scene.state()
    ledger.record(
        "server unreachable", proxy.injected, state, absorbed=0, reported_cases=first.failed
    )

    attempted = first.failed - first.not_sent
    assert first.pushed == 0 and first.failed == len(scene.bundles)
    assert first.gave_up is not None and "in a row" in first.gave_up
    # It gave up after GIVE_UP_AFTER cases; only cases already started could still run.
    assert GIVE_UP_AFTER <= attempted <= GIVE_UP_AFTER + 2 * workers
    assert resets == attempted * (RETRIES + 1)  # each attempted case used exactly its bound
    assert acknowledged == 0 and forwarded == 0
    assert elapsed < 10
    assert (second.pushed, second.skipped, second.failed) == (len(scene.bundles), 0, 0)
    assert state.clean, state


def case_hash(token: str) -> str:
    return "case #" + hashlib.sha256(token.encode()).hexdigest()[:10]


def test_cli_reports_each_failed_case_and_exit_codes_tell_outcomes_apart(
    proxy: FaultProxy,
    scene: Scene,
    ledger: FaultLedger,
    tmp_path: Path,
) -> None:
    unavailable, rejected = scene.tokens[0], scene.tokens[5]
    proxy.always(UNAVAILABLE, case_marker(unavailable))
    proxy.always(REJECT, case_marker(rejected))
    journal = tmp_path / "journal.jsonl"
    args = [
        "push", str(FIXTURES), "--server", proxy.base_url, "--workers", "2", "--no-progress",
        "--journal", str(journal),
    ]  # fmt: skip
    first = run_cli(*args)
    proxy.clear()
    second = run_cli(*args, "--resume")
    state = scene.state()
    ledger.record("CLI: 503 + 400", proxy.injected, state, absorbed=0, reported_cases=2)
    never = tmp_path / "never.jsonl"
    dead = run_cli(
        "push", str(FIXTURES), "--server", "http://127.0.0.1:9/fhir", "--no-progress",
        "--timeout", "2", "--journal", str(never),
    )  # fmt: skip

    n = len(scene.tokens)
    assert first.returncode == 1, first.stderr
    assert parse_summary(first.stderr) == Summary(pushed=n - 2, skipped=0, failed=2)
    failed = [line for line in first.stderr.splitlines() if line.startswith("fhir-cyclo: failed: ")]
    assert len(failed) == 2
    # failure lines name the case by file and hash: the identifier value is PHI
    assert not any(unavailable in f or rejected in f for f in failed)
    assert any(
        case_hash(unavailable) in f and "HTTP 503" in f and "FAULT-0503" in f for f in failed
    )
    assert any(case_hash(rejected) in f and "HTTP 400" in f and "FAULT-0400" in f for f in failed)
    assert "--resume" in first.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    assert parse_summary(second.stderr) == Summary(pushed=2, skipped=n - 2, failed=0)
    assert state.clean, state
    assert dead.returncode == 3 and not never.exists()  # nothing sent, nothing journaled
