"""Integration: push fixtures to a real FHIR server, read them back, idempotency, atomicity, errors."""

from __future__ import annotations

import copy
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fhir_cyclo.core.case import Case
from fhir_cyclo.core.errors import Unprocessable
from fhir_cyclo.fhir.bundle import transaction_bundle
from fhir_cyclo.importing.readback import case_resources, fetch_case, find_patients
from fhir_cyclo.server.push import push_bundles
from tests.conftest import FIXTURES
from tests.integration.conftest import Server

pytestmark = pytest.mark.integration


def push_all(server: Server, cases: list[Case], workers: int = 2) -> None:
    with server.client() as client:
        summary = push_bundles(
            client, ((c.identifier.token, transaction_bundle(c)) for c in cases), workers=workers
        )
    assert summary.failed == 0, [f.error for f in summary.failures]
    assert summary.pushed == len(cases)


def footprint(server: Server, cases: list[Case]) -> Counter[str]:
    """Resources on the server per type, for these cases only (works on shared servers too)."""
    counts: Counter[str] = Counter()
    with server.client() as client:
        for case in cases:
            patients = find_patients(client, case.identifier.token)
            counts["Patient"] += len(patients)
            for patient in patients:
                for res in case_resources(client, patient["id"]):
                    counts[res["resourceType"]] += 1
    return counts


def test_push_and_read_back_every_case(server: Server, all_fixture_cases: list[Case]) -> None:
    push_all(server, all_fixture_cases)
    with server.client() as client:
        for case in all_fixture_cases:
            assert fetch_case(client, case.identifier.token) == case, case.identifier.token


def test_pushing_twice_changes_nothing(server: Server, all_fixture_cases: list[Case]) -> None:
    push_all(server, all_fixture_cases)
    first = footprint(server, all_fixture_cases)
    push_all(server, all_fixture_cases)
    second = footprint(server, all_fixture_cases)
    assert first == second
    assert first["Patient"] == len(all_fixture_cases)  # one Patient per identifier
    expected = sum(len(transaction_bundle(c)["entry"]) for c in all_fixture_cases)
    assert sum(first.values()) == expected


def test_eight_concurrent_pushes_make_one_patient(server: Server, case_report: Case) -> None:
    bundle = transaction_bundle(case_report)
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def push() -> None:
        try:
            with server.client() as client:
                barrier.wait()
                client.transaction(bundle)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=push) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with server.client() as client:
        assert len(find_patients(client, case_report.identifier.token)) == 1
        assert fetch_case(client, case_report.identifier.token) == case_report


def _bad_code(obs: dict[str, Any]) -> None:
    obs["status"] = "not-a-status"  # required binding (observation-status)


def _unknown_extension(obs: dict[str, Any]) -> None:
    obs.setdefault("extension", []).append(
        {
            "url": "http://fhir-cyclo.example.org/fhir/StructureDefinition/undefined",
            "valueString": "x",
        }
    )


def _broken_invariant(obs: dict[str, Any]) -> None:
    # obs-6: dataAbsentReason SHALL only be present if Observation.value[x] is not present.
    obs["dataAbsentReason"] = {"text": "not measured"}


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (_bad_code, "not-a-status"),
        (_unknown_extension, "StructureDefinition/undefined"),
        (_broken_invariant, "obs-6"),
    ],
    ids=["required-binding", "unknown-extension", "invariant"],
)
def test_rejected_resource_is_a_clear_error_and_stores_nothing(
    server: Server, case_report: Case, mutate: Callable[[dict[str, Any]], None], words: str
) -> None:
    bundle = copy.deepcopy(transaction_bundle(case_report))
    # A resource the mappers would never make, in a case that is otherwise sound.
    bad = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation" and "valueQuantity" in e["resource"]
    )
    mutate(bad)
    with server.client() as client:
        summary = push_bundles(client, [("isshiki (mutated)", bundle)])
        assert summary.failed == 1 and summary.pushed == 0
        message = summary.failures[0].error or ""
        # HAPI refuses what its validator finds an error in with 422 + OperationOutcome; the
        # report names the case and carries the validator's own words.
        assert "isshiki (mutated)" in message and "422" in message
        assert words in message
        # atomic: nothing of that bundle is stored, not even the Patient
        assert find_patients(client, case_report.identifier.token) == []


def test_reference_to_missing_resource_is_rejected(server: Server, case_report: Case) -> None:
    bundle = copy.deepcopy(transaction_bundle(case_report))
    cond = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Condition")
    cond["resource"]["subject"] = {"reference": "Patient/does-not-exist-anywhere"}
    with server.client() as client, pytest.raises(Unprocessable) as info:
        client.transaction(bundle)
    assert info.value.status == 400 and info.value.outcome.message
    with server.client() as client:
        assert find_patients(client, case_report.identifier.token) == []


def test_search_pages_through_next_links(server: Server, all_fixture_cases: list[Case]) -> None:
    push_all(server, all_fixture_cases)
    cohort = "http://fhir-cyclo.example.org/fhir/sid/synthetic-cohort"
    params = {
        "identifier": f"{cohort}|",
        "_count": "3",
    }  # system-only token: works on shared servers
    with server.client() as client:
        pages = list(client.search_bundles("Patient", params))
        patients = list(client.search("Patient", params))
    ids = [p["id"] for p in patients]
    assert len(ids) == len(set(ids)) == 13  # every cohort patient, none twice
    assert len(pages) == 5  # 3 + 3 + 3 + 3 + 1, reached only by following next links
    assert all(len(p.get("entry", [])) <= 3 for p in pages)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhir_cyclo.cli", *args], capture_output=True, text=True, check=False
    )


def test_cli_push_summary_and_idempotency(
    server: Server, all_fixture_cases: list[Case], tmp_path: Path
) -> None:
    journal = str(tmp_path / "journal.jsonl")
    first = cli(
        "push", str(FIXTURES), "--server", server.base_url, "--workers", "4", "--no-progress",
        "--journal", journal,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "pushed 14 case(s), skipped 0 (already there), failed 0;" in first.stderr
    again = cli(
        "push", str(FIXTURES), "--server", server.base_url, "--no-progress", "--journal", journal
    )
    assert again.returncode == 0 and "pushed 14 case(s), skipped 0" in again.stderr
    assert footprint(server, all_fixture_cases)["Patient"] == 14


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:9/fhir", "cannot reach FHIR server"),
        ("http://example.invalid/fhir", "refusing plain http"),  # non-loopback http is refused
    ],
)
def test_cli_push_to_bad_server(url: str, message: str) -> None:
    result = cli(
        "push", str(FIXTURES / "cases"), "--server", url, "--no-progress", "--timeout", "2"
    )
    assert result.returncode == 3, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_cli_push_to_a_non_r4_server() -> None:
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class R5(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(
                {"resourceType": "CapabilityStatement", "fhirVersion": "5.0.0"}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), R5)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/fhir"
        result = cli("push", str(FIXTURES / "cases"), "--server", url, "--no-progress")
    finally:
        httpd.shutdown()
    assert result.returncode == 3
    assert "5.0.0" in result.stderr and "R4" in result.stderr and "Traceback" not in result.stderr
