"""Kills mid-export of 200 cases: HAPI (SIGKILL, restarted on the same port and H2 file) and the CLI
(kill -9). A restart of HAPI takes about a minute, longer than any retry window, so the old
"restart within the retry window" scenario of the Node sandbox (1.3 s restarts) has no HAPI form."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from fhir_cyclo.server.hapi import HapiServer
from tests.faults.conftest import (
    FaultLedger,
    Summary,
    cli_argv,
    end_state,
    journal_lines,
    parse_summary,
    patients_by_identifier,
    run_cli,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

CASES = 200
KILL_AT = 80  # acknowledged cases (40%) before the kill
SYSTEM = "http://fhir-cyclo.example.org/fhir/sid/fault-test"


@dataclass(frozen=True)
class Cohort:
    folder: Path
    tokens: list[str]
    clean_counts: dict[str, int]

    def push_args(self, url: str, journal: Path, *extra: str) -> list[str]:
        return [
            "push", str(self.folder), "--server", url, "--workers", "2", "--no-progress",
            "--journal", str(journal), *extra,
        ]  # fmt: skip


def write_cohort(folder: Path, n: int) -> list[str]:
    """A synthetic cohort folder (patients.csv, labs.csv, cohort.yaml) of small cases."""
    folder.mkdir(parents=True)
    (folder / "cohort.yaml").write_text(
        f"name: fault-test cohort\nsynthetic: true\nidentifier_system: {SYSTEM}\n"
    )
    patients = ["case_id,sex,birth_year,disease,diagnosis_date,csa_start,csa_dose_mg_kg_d"]
    labs = ["case_id,date,analyte,value,unit"]
    ids = [f"ft-{i:03d}" for i in range(n)]
    for i, case_id in enumerate(ids):
        sex = "female" if i % 2 else "male"
        patients.append(f"{case_id},{sex},{1950 + i % 50},itp,2015-01-10,2016-0{1 + i % 9}-05,3.5")
        for month, value in (("01", 12), ("04", 60), ("09", 140)):
            labs.append(f"{case_id},2016-{month}-15,platelets,{value + i % 7},10*9/L")
    (folder / "patients.csv").write_text("\n".join(patients) + "\n")
    (folder / "labs.csv").write_text("\n".join(labs) + "\n")
    return [f"{SYSTEM}|{case_id}" for case_id in ids]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory, hapi_server: HapiServer) -> Cohort:
    """The cohort plus the counts of a clean CLI run into an emptied server."""
    root = tmp_path_factory.mktemp("cohort")
    tokens = write_cohort(root / "cohort", CASES)
    hapi_server.reset()
    result = run_cli(
        "push", str(root / "cohort"), "--server", hapi_server.base_url, "--workers", "2",
        "--no-progress", "--no-journal",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert parse_summary(result.stderr) == Summary(pushed=CASES, skipped=0, failed=0)
    counts = hapi_server.counts()
    assert counts["Patient"] == CASES
    return Cohort(root / "cohort", tokens, counts)


def start_push(args: list[str], out: Path) -> subprocess.Popen[bytes]:
    # Output to files: an unread pipe could fill up and stall the CLI mid-run.
    return subprocess.Popen(
        cli_argv(*args),
        stdout=(out / "stdout.txt").open("wb"),
        stderr=(out / "stderr.txt").open("wb"),
    )


def wait_for_acks(
    journal: Path, n: int, proc: subprocess.Popen[bytes], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while journal_lines(journal) < n:
        assert proc.poll() is None, f"the push ended before {n} cases were acknowledged"
        assert time.monotonic() < deadline, f"fewer than {n} acknowledged after {timeout}s"
        time.sleep(0.005)


def journal_keys(journal: Path) -> set[str]:
    keys = set()
    for line in journal.read_bytes().split(b"\n"):
        if line.strip():
            keys.add(orjson.loads(line)["case"])
    return keys


def key_of(token: str) -> str:
    # Same derivation as fhir_cyclo.server.journal.case_key, written out so the test checks it.
    return hashlib.sha256(f"identifier:{token}".encode()).hexdigest()


def test_server_killed_mid_export_then_resume_completes_the_rest(
    cohort: Cohort, ledger: FaultLedger, tmp_path: Path, hapi_server: HapiServer
) -> None:
    if hapi_server.pid is None:
        pytest.skip(
            "kills the server: needs the one this session started (FHIR_CYCLO_TEST_HAPI set)"
        )
    journal = tmp_path / "journal.jsonl"
    sbx = hapi_server
    sbx.reset()
    url = sbx.base_url
    proc = start_push(cohort.push_args(url, journal), tmp_path)
    try:
        wait_for_acks(journal, KILL_AT, proc)
        sbx.kill()
        acked_at_kill = journal_lines(journal)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout = (tmp_path / "stderr.txt").read_text()  # diagnostics and summary
    first = parse_summary(stdout)
    acked = journal_keys(journal)

    restarted = sbx.restart()
    # Everything the journal says was acknowledged must have survived the kill.
    present = {key_of(t) for t, n in patients_by_identifier(restarted).items() if n}
    lost_acknowledged = len(acked - present)
    second = run_cli(*cohort.push_args(restarted, journal, "--resume"))
    state = end_state(restarted, cohort.tokens, cohort.clean_counts)
    ledger.record(
        "server SIGKILL mid-export",
        {"server SIGKILL": 1},
        state,
        absorbed=0,
        reported_cases=first.failed,
        lost_acknowledged=lost_acknowledged,
    )

    assert code == 1, stdout
    assert first.pushed >= acked_at_kill >= KILL_AT and first.failed > 0
    assert first.pushed + first.failed == CASES
    failed_lines = [
        line for line in stdout.splitlines() if line.startswith("fhir-cyclo: failed: case ")
    ]
    assert len(failed_lines) == first.failed  # every case that did not make it is named
    assert len(acked) == first.pushed  # one journal line per acknowledged case
    assert restarted == url
    assert lost_acknowledged == 0
    assert second.returncode == 0, second.stdout + second.stderr
    assert parse_summary(second.stderr) == Summary(
        pushed=CASES - first.pushed, skipped=first.pushed, failed=0
    )
    assert state.counts == cohort.clean_counts
    assert state.lost_cases == 0 and state.duplicate_patients == 0


def test_cli_killed_mid_export_then_resume_gives_the_clean_end_state(
    cohort: Cohort, ledger: FaultLedger, tmp_path: Path, hapi_server: HapiServer
) -> None:
    journal = tmp_path / "journal.jsonl"
    sbx = hapi_server
    sbx.reset()
    proc = start_push(cohort.push_args(sbx.base_url, journal), tmp_path)
    try:
        wait_for_acks(journal, KILL_AT, proc)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    acked = journal_lines(journal)
    # The worst moment to die is mid-line: leave a torn last line behind as well.
    with journal.open("ab") as f:
        f.write(b'{"v":1,"server":"' + sbx.base_url.encode() + b'","case":"3f')
    second = run_cli(*cohort.push_args(sbx.base_url, journal, "--resume"))
    state = end_state(sbx.base_url, cohort.tokens, cohort.clean_counts)
    ledger.record(
        "CLI kill -9 mid-export + torn journal line",
        {"CLI SIGKILL": 1, "torn journal line": 1},
        state,
        absorbed=0,
        reported_cases=CASES - acked,
    )

    assert code == -signal.SIGKILL
    assert KILL_AT <= acked < CASES
    assert second.returncode == 0, second.stdout + second.stderr
    assert parse_summary(second.stderr) == Summary(pushed=CASES - acked, skipped=acked, failed=0)
    raw = journal.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == CASES  # the fragment was cut off
    assert state.counts == cohort.clean_counts
    assert state.lost_cases == 0 and state.duplicate_patients == 0
