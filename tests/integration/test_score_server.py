"""Integration: the cohort pushed to a server and scored with --server equals scoring the files;
--write-back writes one Observation per patient and month, and re-scoring updates, not duplicates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fhir_cyclo.cli.app import main
from tests.conftest import FIXTURES
from tests.integration.conftest import Server
from tests.unit.test_score_end_to_end import without_warning_sources

pytestmark = pytest.mark.integration
RESPONSE_SYSTEM = "http://fhir-cyclo.example.org/fhir/sid/response-assessment"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhir_cyclo.cli", *args], capture_output=True, text=True, check=False
    )


def score(*args: str) -> dict[str, Any]:
    result = cli("score", *args, "--json", "-")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_server_scoring_equals_file_scoring(server: Server, tmp_path: Path) -> None:
    assert main(["export", str(FIXTURES), "--out", str(tmp_path)]) == 0
    pushed = cli(
        "push", str(tmp_path), "--server", server.base_url, "--no-progress", "--no-journal"
    )
    assert pushed.returncode == 0, pushed.stderr
    # A patient warning names the Patient by server id on a server, by a hash in Bundle files
    # whose Patient has no id (conditional PUT): the names differ, nothing else may.
    from_files = without_warning_sources(score(str(tmp_path)))
    from_server = without_warning_sources(score("--server", server.base_url))
    assert from_server == from_files
    assert len(from_server["patients"]) == 14


def test_score_one_patient_by_identifier(server: Server) -> None:
    assert (
        cli(
            "push", str(FIXTURES), "--server", server.base_url, "--no-progress", "--no-journal"
        ).returncode
        == 0
    )
    token = "http://fhir-cyclo.example.org/fhir/sid/synthetic-cohort|itp-05"
    (patient,) = score("--server", server.base_url, "--identifier", token)["patients"]
    assert patient["patient"] == token
    assert [a["response"] for a in patient["assessments"]] == ["PR", "CR", "PR"]


def test_write_back_is_idempotent(server: Server) -> None:
    assert (
        cli(
            "push", str(FIXTURES), "--server", server.base_url, "--no-progress", "--no-journal"
        ).returncode
        == 0
    )
    for _ in range(2):
        result = cli("score", "--server", server.base_url, "--write-back")
        assert result.returncode == 0, result.stderr
    with server.client() as client:
        written = list(
            client.search(
                "Observation",
                {
                    "identifier": f"{RESPONSE_SYSTEM}|http://fhir-cyclo.example.org/fhir/sid/synthetic-cohort|itp-05|m3"
                },
            )
        )
        assert len(written) == 1
        obs = written[0]
        codes = {(c["system"], c["code"]) for c in obs["valueCodeableConcept"]["coding"]}
        assert ("http://snomed.info/sct", "103337004") in codes  # PR -> in partial remission
        assert obs["derivedFrom"]
        everything = [o for o in client.search("Observation", {"category": "survey"})]
        assert len(everything) == 14 * 3  # one per patient and timepoint, no duplicates
