"""Shared fixtures: repository paths and the loaded fixture cases."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_cyclo.core.case import Case
from fhir_cyclo.readers.case_files import load
from fhir_cyclo.server.hapi import HapiError, HapiServer

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
CASE_REPORT = FIXTURES / "cases" / "thymoma-prca-isshiki.yaml"
COHORT = FIXTURES / "cohort"
ARTIFACTS = ROOT / "out" / "test-artifacts"


def load_cases(*paths: Path) -> list[Case]:
    out = []
    for loaded in load(paths):
        assert loaded.error is None, str(loaded.error)
        assert loaded.case is not None
        out.append(loaded.case)
    return out


@pytest.fixture(scope="session")
def case_report() -> Case:
    (case,) = load_cases(CASE_REPORT)
    return case


@pytest.fixture(scope="session")
def all_fixture_cases() -> list[Case]:
    return load_cases(FIXTURES)


@pytest.fixture(scope="session")
def hapi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HapiServer]:
    """The project's HAPI FHIR JPA server, started once for the whole session.

    On an H2 file database, so the fault tests can SIGKILL and restart it with its data; the log
    goes to out/test-artifacts/hapi.log (its tail is in the error if it fails to start).
    $FHIR_CYCLO_TEST_HAPI=URL reuses a test server started by `fhir-cyclo sandbox` instead (its
    data is deleted between tests): saves the start-up minute while developing.
    """
    reuse = os.environ.get("FHIR_CYCLO_TEST_HAPI")
    if reuse:
        yield HapiServer.attach(reuse)
        return
    data = tmp_path_factory.mktemp("hapi-data")
    hapi = HapiServer(data_dir=data, log_path=ARTIFACTS / "hapi.log")
    try:
        hapi.start()
    except HapiError as exc:
        pytest.fail(f"{exc}\n--- end of the server log ---\n{exc.log_tail}", pytrace=False)
    with hapi:
        HAPI_STATS["started in"] = f"{hapi.started_in:.0f} s"
        yield hapi
        HAPI_STATS["peak RSS"] = f"{hapi.peak_rss_mb:.0f} MB"
        HAPI_STATS["log"] = str(hapi.log_path)


HAPI_STATS: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line on the session's HAPI server (start-up time, peak memory), for the README."""
    if HAPI_STATS:
        stats = ", ".join(f"{k} {v}" for k, v in HAPI_STATS.items())
        terminalreporter.write_line(f"HAPI test server: {stats}")
