"""Every file in tests/bad_input/ gets its exact message, a non-zero exit and no traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).parent
EXPECTED = yaml.safe_load((HERE / "expected.yaml").read_text(encoding="utf-8"))


def export(*paths: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhir_cyclo.cli", "export", *map(str, paths), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_corpus_is_complete() -> None:
    on_disk = {p.name for p in (HERE / "cases").iterdir()} | {
        p.name for p in (HERE / "cohorts").iterdir()
    }
    assert on_disk == set(EXPECTED["cases"]) | set(EXPECTED["cohorts"])
    fhir = {p.name for p in (HERE / "fhir").iterdir()}
    assert fhir == set(EXPECTED["fhir"])
    assert {p.name for p in (HERE / "manifest").iterdir()} == set(EXPECTED["manifest"])
    assert len(on_disk) + len(fhir) >= 30


@pytest.mark.parametrize("name", sorted(k for k, v in EXPECTED["cases"].items() if v))
def test_bad_case_file(name: str, tmp_path: Path) -> None:
    # A duplicate case id is only bad next to its first occurrence.
    first = [HERE / "cases" / "dup-case-a.yaml"] if name == "dup-case-b.yaml" else []
    result = export(*first, HERE / "cases" / name, out=tmp_path)
    assert result.returncode == 1
    assert EXPECTED["cases"][name] in result.stderr, result.stderr
    assert name in result.stderr  # the message names the file
    assert "Traceback" not in result.stderr + result.stdout
    assert len(list(tmp_path.glob("*.json"))) == len(first)  # nothing half-written


@pytest.mark.parametrize("name", sorted(EXPECTED["cohorts"]))
def test_bad_cohort(name: str, tmp_path: Path) -> None:
    result = export(HERE / "cohorts" / name, out=tmp_path)
    assert result.returncode == 1
    assert EXPECTED["cohorts"][name] in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_whole_corpus_in_one_run_keeps_the_valid_cases(tmp_path: Path) -> None:
    result = export(HERE / "cases", HERE / "cohorts", out=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("fhir-cyclo: error:")]
    bad = sum(1 for v in EXPECTED["cases"].values() if v) + len(EXPECTED["cohorts"])
    assert len(errors) == bad, result.stderr
    # valid companions still went through: dup-case-a and, in cohorts, patients whose rows are fine
    assert "exported" in result.stderr
    assert len(list(tmp_path.glob("*.json"))) >= 1
    assert "Traceback" not in result.stderr


def score(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhir_cyclo.cli", "score", *map(str, paths), "--json", "-"],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("name", sorted(EXPECTED["fhir"]))
def test_bad_fhir_input_to_score(name: str, tmp_path: Path) -> None:
    kind, message = EXPECTED["fhir"][name]
    # A good export beside the bad file: it must still be scored.
    good = tmp_path / "good"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "fhir_cyclo.cli.app",
            "export",
            str(HERE.parents[1] / "fixtures" / "cases"),
            "--out",
            str(good),
        ],
        check=True,
        capture_output=True,
    )
    result = score(HERE / "fhir" / name, good)
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    scored = __import__("json").loads(result.stdout)["patients"]
    assert any("isshiki-thymoma-prca" in p["patient"] for p in scored)
    if kind == "error":
        assert result.returncode == 1
    else:
        assert result.returncode == 0
        baseline = re.search(r"(\d+) resource\(s\) skipped", score(good).stderr)
        assert baseline
        assert f"{int(baseline[1]) + 1} resource(s) skipped" in result.stderr  # counted


@pytest.mark.parametrize("name", sorted(EXPECTED["manifest"]))
def test_bad_manifest(name: str) -> None:
    from fhir_cyclo.core.errors import InputError
    from fhir_cyclo.readers.fhir import read_manifest

    path = HERE / "manifest" / name
    with pytest.raises(InputError) as info:
        read_manifest(path)
    assert EXPECTED["manifest"][name] in str(info.value)
    assert str(info.value).startswith(str(path))
