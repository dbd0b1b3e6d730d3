"""Shared fixtures: repository paths and the loaded fixture cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_cyclo.case import Case
from fhir_cyclo.inputs import load

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
CASE_REPORT = FIXTURES / "cases" / "thymoma-prca-isshiki.yaml"
COHORT = FIXTURES / "cohort"


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
