"""Integration: push the fixtures to the HAPI test server, then `import --server` gives them back
as case files equal to the originals (by identifier, by Patient id, by system, and all)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_cyclo.cli import main
from fhir_cyclo.core.case import Case
from fhir_cyclo.importing.canonical import dump_case, file_name
from fhir_cyclo.importing.readback import find_patients
from tests.conftest import FIXTURES, load_cases
from tests.integration.conftest import Server

pytestmark = pytest.mark.integration

COHORT_SYSTEM = "http://fhir-cyclo.example.org/fhir/sid/synthetic-cohort"


def key(case: Case) -> str:
    return case.identifier.token


def test_import_from_the_server_gives_the_fixtures_back(
    server: Server,
    all_fixture_cases: list[Case],
    case_report: Case,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = server.base_url
    push = ["push", str(FIXTURES), "--server", url, "--no-journal", "--no-progress"]
    assert main(push) == 0

    # Every Patient on the (reset) server: the 14 fixture cases, byte-equal to import's own form.
    assert main(["import", "--server", url, "--out", str(tmp_path / "all")]) == 0
    err = capsys.readouterr().err
    assert "imported 14 case(s)" in err and "not carried back" not in err
    assert sorted(load_cases(tmp_path / "all"), key=key) == sorted(all_fixture_cases, key=key)
    for case in all_fixture_cases:
        assert (tmp_path / "all" / file_name(case)).read_bytes() == dump_case(case)
        assert case.identifier.value not in err  # identifiers are PHI: never in a log line

    token = case_report.identifier.token
    out = tmp_path / "one"
    assert main(["import", "--server", url, "--identifier", token, "--out", str(out)]) == 0
    assert load_cases(out) == [case_report]

    with server.client() as client:
        (patient,) = find_patients(client, token)
    out = tmp_path / "by-id"
    assert main(["import", "--server", url, "--patient", f"Patient/{patient['id']}",
                 "--out", str(out)]) == 0  # fmt: skip
    assert load_cases(out) == [case_report]

    out = tmp_path / "cohort"
    assert main(["import", "--server", url, "--system", COHORT_SYSTEM, "--out", str(out)]) == 0
    cohort = [c for c in all_fixture_cases if c.identifier.system == COHORT_SYSTEM]
    assert len(cohort) == 13
    assert sorted(load_cases(out), key=key) == sorted(cohort, key=key)


def test_an_unknown_identifier_fails_without_echoing_it(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["import", "--server", server.base_url, "--out", str(tmp_path / "o")]
    assert main([*args, "--identifier", "http://example.org/sid/x|secret-mrn-4711"]) == 1
    err = capsys.readouterr().err
    assert "no Patient found for the identifier given" in err
    assert "secret-mrn-4711" not in err
    assert list((tmp_path / "o").iterdir()) == []


def test_an_unreachable_server_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["import", "--server", "http://127.0.0.1:9/fhir", "--out", str(tmp_path / "o")]
    assert main(args) == 3
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
