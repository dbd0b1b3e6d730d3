"""A short atheris run of every reader's fuzz harness (the long one is `make fuzz`): only
fhir-cyclo's own errors may come out of any input the fuzzer makes from the seed corpus."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FUZZ = REPO / "fuzz"
TARGETS = ("case_file", "cohort_folder", "fhir_json", "ndjson", "manifest")
RUNS = 150  # per target: a smoke run; `make fuzz` runs each for minutes


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz-corpus")
    subprocess.run(
        [sys.executable, str(FUZZ / "seed.py"), str(root)], check=True, capture_output=True
    )
    return root


@pytest.mark.parametrize("target", TARGETS)
def test_short_fuzz_run_finds_no_crash(corpus: Path, target: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(FUZZ / "run.py"),
            target,
            f"-runs={RUNS}",
            "-seed=11",
            f"-artifact_prefix={tmp_path}/",
            str(corpus / target),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert re.search(rf"Done {RUNS} runs", log), log[-2000:]
    assert not list(tmp_path.glob("crash-*")), log[-4000:]


def test_harness_rejects_foreign_exceptions() -> None:
    """The harness lets a non-fhir-cyclo exception through (that is what makes it a crash)."""
    sys.path.insert(0, str(FUZZ))
    try:
        import harnesses
    finally:
        sys.path.remove(str(FUZZ))
    harnesses.check("manifest", b"{")  # an InputError: expected, swallowed
    harnesses.TARGETS["boom"] = int  # type: ignore[assignment]
    try:
        with pytest.raises(ValueError):
            harnesses.check("boom", b"x")
    finally:
        del harnesses.TARGETS["boom"]
