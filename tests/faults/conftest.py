"""Fault tests: the HAPI test server, the fault proxy, end-state checks, and a session fault ledger."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

from fhir_cyclo.client import FhirClient
from fhir_cyclo.core.case import Case
from fhir_cyclo.fhir.bundle import dumps, transaction_bundle
from fhir_cyclo.server.hapi import HapiServer, resource_counts
from tests.faults.proxy import FaultProxy

REPORT_ENV = "FHIR_CYCLO_FAULT_REPORT"  # optional: where to write the ledger as JSON


# --- end state ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndState:
    """What a server holds compared with a clean run: resource counts and Patients per case."""

    counts: dict[str, int]
    expected: dict[str, int]
    patients: dict[str, int]  # identifier token -> Patients on the server

    @property
    def lost_cases(self) -> int:
        return sum(1 for n in self.patients.values() if n == 0)

    @property
    def duplicate_patients(self) -> int:
        return sum(n - 1 for n in self.patients.values() if n > 1)

    @property
    def missing_resources(self) -> int:
        types = set(self.counts) | set(self.expected)
        return sum(max(0, self.expected.get(t, 0) - self.counts.get(t, 0)) for t in types)

    @property
    def extra_resources(self) -> int:
        types = set(self.counts) | set(self.expected)
        return sum(max(0, self.counts.get(t, 0) - self.expected.get(t, 0)) for t in types)

    @property
    def clean(self) -> bool:
        return self.counts == self.expected and all(n == 1 for n in self.patients.values())


def server_counts(base_url: str) -> dict[str, int]:
    return resource_counts(base_url)


def patients_by_identifier(base_url: str) -> Counter[str]:
    """Every Patient on the server, counted per identifier token (system|value)."""
    found: Counter[str] = Counter()
    with FhirClient(base_url) as client:
        for patient in client.search("Patient", {"_count": "500"}):
            for ident in patient.get("identifier") or []:
                found[f"{ident.get('system', '')}|{ident.get('value', '')}"] += 1
    return found


def end_state(base_url: str, tokens: Iterable[str], expected: Mapping[str, int]) -> EndState:
    found = patients_by_identifier(base_url)
    return EndState(
        counts=server_counts(base_url),
        expected=dict(expected),
        patients={token: found.get(token, 0) for token in tokens},
    )


def case_marker(token: str) -> bytes:
    """Bytes found only in this case's transaction: its Patient's conditional URL."""
    return f'"Patient?identifier={quote(token, safe=":/|._-~")}"'.encode()


# --- ledger -------------------------------------------------------------------------------------


@dataclass
class FaultLedger:
    """Faults injected over the session and what became of the data.

    A fault is survived when the scenario ended in the clean end state: either the run itself
    absorbed it (retries), or it outlasted the run (retries exhausted and the case reported, or
    the CLI killed) and a --resume or rerun completed the unfinished cases.
    """

    injected: Counter[str] = field(default_factory=Counter)
    survived: int = 0
    absorbed: int = 0
    reported_cases: int = 0
    lost_cases: int = 0
    missing_resources: int = 0
    duplicate_patients: int = 0
    extra_resources: int = 0
    tests: list[str] = field(default_factory=list)

    def record(
        self,
        test: str,
        injected: Mapping[str, int],
        state: EndState,
        *,
        absorbed: int,
        reported_cases: int = 0,
        lost_acknowledged: int = 0,
    ) -> None:
        """Book one scenario. Called before the test asserts, so a failing one is counted too.

        `lost_acknowledged`: cases the journal says the server acknowledged but it no longer has.
        """
        self.tests.append(test)
        self.injected.update(injected)
        self.lost_cases += state.lost_cases + lost_acknowledged
        self.missing_resources += state.missing_resources
        self.duplicate_patients += state.duplicate_patients
        self.extra_resources += state.extra_resources
        if state.clean and not lost_acknowledged:
            self.survived += sum(injected.values())
            self.absorbed += absorbed
            self.reported_cases += reported_cases

    def line(self) -> str:
        kinds = ", ".join(f"{k} x{n}" for k, n in sorted(self.injected.items()))
        total = sum(self.injected.values())
        return (
            f"faults injected {total} ({kinds}); survived {self.survived} "
            f"({self.absorbed} absorbed by retries within the run, "
            f"{self.survived - self.absorbed} outlasted the run and --resume completed its "
            f"{self.reported_cases} unfinished cases); "
            f"cases lost {self.lost_cases} (resources missing {self.missing_resources}); "
            f"duplicates {self.duplicate_patients} (extra resources {self.extra_resources}); "
            f"{len(self.tests)} scenarios"
        )


LEDGER = pytest.StashKey[FaultLedger]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[LEDGER] = FaultLedger()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    ledger = config.stash.get(LEDGER, None)
    if ledger is None or not ledger.tests:
        return
    terminalreporter.write_sep("-", "fault summary")
    terminalreporter.write_line(ledger.line())
    target = os.environ.get(REPORT_ENV)
    if target:
        data = {**ledger.__dict__, "injected": dict(ledger.injected)}
        Path(target).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


@pytest.fixture
def ledger(request: pytest.FixtureRequest) -> FaultLedger:
    return request.config.stash[LEDGER]


# --- servers ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fixture_bundles(all_fixture_cases: list[Case]) -> list[tuple[str, bytes]]:
    return [
        (c.identifier.token, dumps(transaction_bundle(c), pretty=False)) for c in all_fixture_cases
    ]


@pytest.fixture(scope="session")
def fixture_tokens(all_fixture_cases: list[Case]) -> list[str]:
    return [c.identifier.token for c in all_fixture_cases]


@pytest.fixture(scope="session")
def clean_counts(
    hapi_server: HapiServer, fixture_bundles: list[tuple[str, bytes]]
) -> dict[str, int]:
    """Resource counts after a clean push of the fixture cases (no proxy, no faults)."""
    hapi_server.reset()
    with FhirClient(hapi_server.base_url) as client:
        for _, bundle in fixture_bundles:
            client.transaction(bundle)
    counts = hapi_server.counts()
    hapi_server.reset()
    return counts


@dataclass(frozen=True)
class Scene:
    """The fixture cases, the server they go to, and the counts of a clean push of them."""

    server: HapiServer
    bundles: list[tuple[str, bytes]]
    tokens: list[str]
    clean_counts: dict[str, int]

    def state(self) -> EndState:
        return end_state(self.server.base_url, self.tokens, self.clean_counts)


@pytest.fixture
def scene(
    hapi_server: HapiServer,
    fixture_bundles: list[tuple[str, bytes]],
    fixture_tokens: list[str],
    clean_counts: dict[str, int],
) -> Scene:
    return Scene(hapi_server, fixture_bundles, fixture_tokens, clean_counts)


@pytest.fixture
def proxy(hapi_server: HapiServer) -> Iterator[FaultProxy]:
    hapi_server.reset()
    with FaultProxy(hapi_server.base_url, slow_seconds=4.0, retry_after=1) as fp:
        yield fp


class RecordingSleep:
    """Real sleeps (the faults are real), with the requested delays kept for assertions."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        time.sleep(seconds)


# --- CLI ----------------------------------------------------------------------------------------

SUMMARY = re.compile(
    r"^(?:fhir-cyclo: )?(?:would push|pushed) (\d+) case\(s\), skipped (\d+) \(already there\), failed (\d+)",
    re.M,
)


@dataclass(frozen=True)
class Summary:
    pushed: int
    skipped: int
    failed: int


def parse_summary(stdout: str) -> Summary:
    """The summary line, which must be the last line of the report (on stderr, like every
    diagnostic: the CLI's stdout carries data only)."""
    last = stdout.strip().splitlines()[-1]
    match = SUMMARY.match(last)
    assert match, f"no summary as the last line: {stdout[-2000:]}"
    return Summary(*(int(g) for g in match.groups()))


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "fhir_cyclo.cli", *args]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_argv(*args), capture_output=True, text=True, timeout=timeout, check=False
    )


def journal_lines(path: Path) -> int:
    """Complete lines in the journal (a torn last line does not count)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0
