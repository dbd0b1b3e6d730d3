"""No output option may ever overwrite an input: every option, pointed at an input, is a usage
error (exit 2) before any work, and the input is byte-identical afterwards."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from fhir_cyclo.cli.app import main

ROOT = Path(__file__).resolve().parents[2]
CASE = ROOT / "fixtures" / "cases" / "thymoma-prca-isshiki.yaml"


def _snapshot(root: Path) -> dict[str, bytes]:
    if root.is_file():
        return {root.name: root.read_bytes()}
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "b"
    assert main(["export", str(CASE), "--out", str(out)]) == 0
    return out


SERVER = ["--server", "http://127.0.0.1:9/fhir"]

# (name, argv given the input folder of Bundles `b`, a case file copy `c`, and which input)
CASES: list[tuple[str, Callable[[Path, Path], list[str]], str]] = [
    (
        "export --out = input folder",
        lambda b, c: ["export", str(c.parent), "--out", str(c.parent)],
        "c",
    ),
    (
        "export --out inside input",
        lambda b, c: ["export", str(c.parent), "--out", str(c.parent / "o")],
        "c",
    ),
    ("export --out = input file", lambda b, c: ["export", str(c), "--out", str(c)], "c"),
    (
        "export --out holds input",
        lambda b, c: ["export", str(c), "--out", str(c.parent.parent)],
        "c",
    ),
    (
        "export --key-file = input",
        lambda b, c: [
            "export",
            str(c),
            "--out",
            str(c.parent.parent / "o"),
            "--deidentify",
            "--key-file",
            str(c),
        ],
        "c",
    ),
    (
        "score --json = input file",
        lambda b, c: ["score", str(b), "--json", str(next(b.glob("*.json")))],
        "b",
    ),
    (
        "score --json swallowing a path",
        lambda b, c: ["score", "--json", *map(str, sorted(b.glob("*.json")))],
        "b",
    ),
    (
        "score --json inside input",
        lambda b, c: ["score", str(b), "--json", str(b / "scores.json")],
        "b",
    ),
    (
        "score --report = input",
        lambda b, c: ["score", str(b), "--report", str(next(b.glob("*.json")))],
        "b",
    ),
    (
        "score --report inside input",
        lambda b, c: ["score", str(b), "--report", str(b / "r.html")],
        "b",
    ),
    ("score --plot = input folder", lambda b, c: ["score", str(b), "--plot", str(b)], "b"),
    ("score --plot holds input", lambda b, c: ["score", str(b), "--plot", str(b.parent)], "b"),
    ("push --journal = input", lambda b, c: ["push", str(c), *SERVER, "--journal", str(c)], "c"),
    (
        "push --journal = input Bundle",
        lambda b, c: ["push", str(b), *SERVER, "--journal", str(next(b.glob("*.json")))],
        "b",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_output_option_pointed_at_an_input_is_refused_and_input_unchanged(
    tmp_path: Path,
    bundles: Path,
    case: tuple[str, Callable[[Path, Path], list[str]], str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, argv, which = case
    b = tmp_path / "bundles"
    shutil.copytree(bundles, b)
    c = tmp_path / "cases" / "case.yaml"
    c.parent.mkdir()
    shutil.copy(CASE, c)
    root = b if which == "b" else c.parent
    before = _snapshot(root)
    code = main(argv(b, c))
    err = capsys.readouterr().err
    assert code == 2, (name, err)
    assert "Traceback" not in err
    assert _snapshot(root) == before, name


def test_existing_file_that_score_did_not_write_is_not_replaced(
    tmp_path: Path, bundles: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    assert main(["score", str(bundles), "--report", str(notes)]) == 2
    assert main(["score", str(bundles), "--json", str(notes)]) == 2
    assert notes.read_text() == "my notes\n"


def test_rerun_replaces_what_score_wrote_and_creates_missing_folders(
    tmp_path: Path, bundles: Path
) -> None:
    json_out, report = tmp_path / "new" / "s.json", tmp_path / "other" / "r.html"
    argv = ["score", str(bundles), "--json", str(json_out), "--report", str(report)]
    assert main(argv) == 0
    first = json_out.read_bytes()
    assert main(argv) == 0  # what score wrote itself may be replaced
    assert json_out.read_bytes() == first
    assert report.read_text().startswith("<!DOCTYPE html>")


def test_two_outputs_on_stdout_are_a_usage_error(
    bundles: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["score", str(bundles), "--json", "-", "--table"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "both write to stdout" in captured.err
