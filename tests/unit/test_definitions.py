"""profiles/ (loaded by the HAPI test server) is current and defines every extension URL and local
code the mappers and the write-back write; nothing project-local goes out undefined."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from fhir_cyclo.core.case import Case
from fhir_cyclo.core.terminology import LOCAL_BASE
from fhir_cyclo.fhir.bundle import transaction_bundle
from fhir_cyclo.readers.fhir import read_paths
from fhir_cyclo.scoring.extract import extract
from fhir_cyclo.scoring.rules import score
from fhir_cyclo.scoring.writeback import to_bundle
from tests.conftest import ROOT
from tests.unit.strategies import cases
from tools.definitions import all_definitions, file_name, render

PROFILES = ROOT / "profiles"
SCORING_DATA = Path(__file__).parent / "scoring_data"
# Extensions of published specifications: FHIR core, and two IGs whose packages need a download
# (the server is told to accept their domains; see hapi/src/main/resources/application.yaml).
EXTERNAL_EXTENSIONS = {
    "http://hl7.org/fhir/StructureDefinition/condition-dueTo",
    "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-histology-morphology-behavior",
    "http://hl7.org/fhir/uv/ae-research-backport-ig/StructureDefinition/ae-grade",
}


def stored() -> list[dict[str, Any]]:
    return [orjson.loads(p.read_bytes()) for p in sorted(PROFILES.glob("*.json"))]


def defined_extensions() -> set[str]:
    return {d["url"] for d in stored() if d["resourceType"] == "StructureDefinition"}


def defined_codes() -> set[tuple[str, str]]:
    return {
        (d["url"], c["code"])
        for d in stored()
        if d["resourceType"] == "CodeSystem"
        for c in d["concept"]
    }


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """(kind, value) for every extension URL and every coding in a resource tree."""
    if isinstance(node, dict):
        if "url" in node and any(k.startswith("value") for k in node):
            yield "extension", node["url"]
        if "system" in node and "code" in node:
            yield "coding", (node["system"], node["code"])
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def undefined(bundle: dict[str, Any]) -> list[str]:
    extensions, codes = defined_extensions(), defined_codes()
    problems = []
    for kind, value in walk(bundle):
        if kind == "extension" and value not in extensions and value not in EXTERNAL_EXTENSIONS:
            problems.append(f"extension {value}")
        elif kind == "coding" and value[0].startswith(LOCAL_BASE) and value not in codes:
            problems.append(f"code {value[0]}#{value[1]}")
    return problems


def test_profiles_folder_is_generated_from_the_tables() -> None:
    expected = {file_name(d): render(d) for d in all_definitions()}
    on_disk = {p.name: p.read_bytes() for p in PROFILES.glob("*.json")}
    assert on_disk == expected, "stale: run `python -m tools.definitions profiles`"


def test_every_fixture_bundle_uses_only_defined_extensions_and_codes(
    all_fixture_cases: list[Case],
) -> None:
    for case in all_fixture_cases:
        assert undefined(transaction_bundle(case)) == [], case.identifier.token


def test_write_back_uses_only_defined_codes() -> None:
    bundle = to_bundle(score(extract(read_paths([SCORING_DATA / "cohort"]))))
    assert bundle["entry"]
    assert undefined(bundle) == []


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_generated_cases_use_only_defined_extensions_and_codes(case: Case) -> None:
    assert undefined(transaction_bundle(case)) == []


@pytest.mark.parametrize(
    ("mutation", "found"),
    [
        ({"url": f"{LOCAL_BASE}/StructureDefinition/not-defined", "valueString": "x"}, "extension"),
        ({"system": f"{LOCAL_BASE}/CodeSystem/cyclo-local", "code": "no-such-code"}, "code"),
    ],
)
def test_an_undefined_extension_or_code_is_caught(
    case_report: Case, mutation: dict[str, str], found: str
) -> None:
    bundle = transaction_bundle(case_report)
    bundle["entry"][0]["resource"].setdefault("extension", []).append(mutation)
    problems = undefined(bundle)
    assert len(problems) == 1 and problems[0].startswith(found)
