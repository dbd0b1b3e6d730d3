"""Real-world FHIR written by others: every file reads; derived patients score as worked by hand."""

from __future__ import annotations

import filecmp
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from fhir_cyclo.core.errors import InputError
from fhir_cyclo.readers.fhir import read_paths
from fhir_cyclo.report import to_json
from fhir_cyclo.scoring.extract import extract
from fhir_cyclo.scoring.rules import score

DATA = Path(__file__).parent / "data"
EXPECTED: dict[str, Any] = yaml.safe_load((DATA / "expected.yaml").read_text(encoding="utf-8"))
PATIENTS: dict[str, Any] = EXPECTED["patients"]
ORIGINALS = sorted(p for p in (DATA / "original").rglob("*") if p.is_file())


def run(*paths: Path) -> tuple[dict[str, Any], list[str], list[str]]:
    """The --json document of scoring `paths`, the read errors and the read notices."""
    errors: list[str] = []
    notices: list[str] = []

    def bad(error: InputError) -> None:
        errors.append(str(error))

    items = read_paths([str(p) for p in paths], on_error=bad, on_notice=notices.append)
    document = to_json(score(extract(items)))
    return document, errors, notices


def only_patient(document: dict[str, Any]) -> dict[str, Any]:
    assert document["accounting"]["scored"] == 1, document["accounting"]
    (patient,) = document["patients"]
    assert patient["start"]["source"].split("/")[0] in ("MedicationRequest", "MedicationStatement")
    return patient


def check_answer(patient: dict[str, Any], want: dict[str, Any]) -> None:
    """The scored patient equals the hand-worked row of expected.yaml, field by field."""
    assert patient["disease"] == want["disease"]
    assert patient["start"]["date"] == want["start"]["date"]
    assert patient["start"]["source"].startswith(want["start"]["kind"] + "/")
    base = want["baseline"]
    assert (patient["baseline"]["date"], patient["baseline"]["value"]) == (
        base["date"],
        pytest.approx(base["value"], abs=5e-5),
    )
    assert patient["baseline"]["source"] == base["source"]
    got = {a["month"]: a for a in patient["assessments"]}
    assert sorted(got) == sorted(want["timepoints"])
    for month, row in want["timepoints"].items():
        a = got[month]
        assert a["response"] == row["response"], (month, a["reasons"])
        assert a["target"] == row["target"]
        assert [a["window"]["start"], a["window"]["end"]] == row["window"]
        used = row["used"]
        if used is None:
            assert a["used"] is None
            assert a["reasons"][0]["kind"] in ("no_value_in_window", "no_baseline")
        else:
            assert a["date"] == used["date"]
            assert a["value"] == pytest.approx(used["value"], abs=5e-5)
            assert a["used"]["source"] == used["source"]
        missing = {r["text"] for r in a["reasons"] if r["kind"] == "marker_missing"}
        assert bool(missing) == bool(row.get("missing_markers")), a["reasons"]


@pytest.mark.parametrize("path", ORIGINALS, ids=lambda p: str(p.relative_to(DATA)))
def test_every_original_file_reads_without_error(path: Path) -> None:
    # Real files only ever give notices (a client's log, a Bundle entry object), never errors.
    _, errors, _ = run(path)
    assert errors == []


@pytest.mark.parametrize("folder", sorted({p.parent for p in ORIGINALS}), ids=lambda p: p.name)
def test_every_original_folder_reads_without_error(folder: Path) -> None:
    document, errors, _ = run(folder)
    assert errors == []
    assert document["accounting"]["patients_read"] >= (1 if "synthea" in folder.name else 0)


@pytest.mark.parametrize("name", sorted(PATIENTS))
def test_derived_patient_scores_as_worked_by_hand(name: str) -> None:
    want = PATIENTS[name]
    document, errors, _ = run(DATA / want["file"])
    assert errors == []
    check_answer(only_patient(document), want)


@pytest.mark.parametrize("variant", PATIENTS["d1-damion-itp"]["variants"])
def test_every_variant_of_d1_gives_d1s_answer(variant: str) -> None:
    want = PATIENTS["d1-damion-itp"]
    document, errors, _ = run(DATA / variant)
    assert errors == []
    check_answer(only_patient(document), want)


def test_d1_variants_cover_every_layout_and_spelling() -> None:
    # The list in expected.yaml is the test: nothing in variants/ may escape it.
    listed = set(PATIENTS["d1-damion-itp"]["variants"])
    on_disk = {
        str(p.relative_to(DATA))
        for p in (DATA / "variants" / "d1-damion-itp").iterdir()
        if p.name != "units"
    } | {
        str(p.relative_to(DATA)) for p in (DATA / "variants" / "d1-damion-itp" / "units").iterdir()
    }
    assert on_disk == listed


def test_derived_files_regenerate_byte_for_byte(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root))
    try:
        from tools.realworld import make_derived
    finally:
        sys.path.remove(str(root))
    make_derived.main(tmp_path)
    for sub in ("derived", "variants"):
        made = sorted(p.relative_to(tmp_path) for p in (tmp_path / sub).rglob("*") if p.is_file())
        kept = sorted(p.relative_to(DATA) for p in (DATA / sub).rglob("*") if p.is_file())
        assert made == kept
        for rel in made:
            assert filecmp.cmp(tmp_path / rel, DATA / rel, shallow=False), rel


def test_every_data_file_has_a_sources_row() -> None:
    sources = (DATA / "SOURCES.md").read_text(encoding="utf-8")
    for path in ORIGINALS:
        assert f"`{path.relative_to(DATA)}`" in sources, path
    for path in sorted((DATA / "derived").iterdir()):
        assert f"`{path.relative_to(DATA)}`" in sources, path
