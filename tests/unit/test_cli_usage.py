"""The error contract for usage errors: every subcommand x each kind of usage error -> exit 2,
one line on stderr, nothing on stdout, nothing written, and found before any work starts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fhir_cyclo.cli.app import main

REPO = Path(__file__).resolve().parents[2]
CASE = REPO / "fixtures" / "cases" / "thymoma-prca-isshiki.yaml"
COHORT = REPO / "fixtures" / "cohort"

# (command, kind, argv builder given the workspace). Paths are made inside the workspace.
Argv = Callable[[Path], list[str]]
MATRIX: list[tuple[str, str, Argv]] = [
    # export
    ("export", "unknown option", lambda w: ["export", str(CASE), "--out", "o", "--bogus"]),
    ("export", "missing argument", lambda w: ["export", str(CASE)]),
    ("export", "bad value", lambda w: ["export", str(CASE), "--out", "o", "--ndjson=yes"]),
    (
        "export",
        "conflicting options",
        lambda w: ["export", str(CASE), "--out", "o", "--key-file", "k"],
    ),
    (
        "export",
        "missing configuration",
        lambda w: ["export", str(CASE), "--out", "o", "--deidentify"],
    ),
    ("export", "unusable output", lambda w: ["export", str(CASE), "--out", str(w / "a-file")]),
    (
        "export",
        "unusable output",
        lambda w: ["export", str(CASE), "--out", str(w / "a-file" / "sub")],
    ),
    (
        "export",
        "unusable output",
        lambda w: ["export", str(CASE), "--out", "o", "--deidentify", "--key-file", "o/k.json"],
    ),
    (
        "export",
        "unusable output",
        lambda w: [
            "export",
            str(CASE),
            "--out",
            "o",
            "--deidentify",
            "--key-file",
            str(w / "nodir" / "k.json"),
        ],
    ),
    ("export", "missing input", lambda w: ["export", "nope.yaml", "--out", "o"]),
    # import
    ("import", "unknown option", lambda w: ["import", str(w / "b.json"), "--out", "o", "--bogus"]),
    ("import", "missing argument", lambda w: ["import", str(w / "b.json")]),
    (
        "import",
        "bad value",
        lambda w: ["import", "--server", "ftp://example.org/fhir", "--out", "o"],
    ),
    (
        "import",
        "conflicting options",
        lambda w: ["import", str(w / "b.json"), "--out", "o", "--patient", "Patient/1"],
    ),
    ("import", "missing configuration", lambda w: ["import", "--out", "o"]),
    (
        "import",
        "unusable output",
        lambda w: ["import", str(w / "b.json"), "--out", str(w / "a-file")],
    ),
    ("import", "unusable output", lambda w: ["import", str(w / "b.json"), "--out", str(w)]),
    ("import", "missing input", lambda w: ["import", "nope.json", "--out", "o"]),
    # validate
    ("validate", "unknown option", lambda w: ["validate", str(CASE), "--bogus"]),
    ("validate", "missing argument", lambda w: ["validate"]),
    ("validate", "missing input", lambda w: ["validate", "nope.yaml"]),
    (
        "validate",
        "bad value",
        lambda w: ["validate", str(CASE), "--server", "http://127.0.0.1:9/fhir", "--workers", "0"],
    ),
    (
        "validate",
        "bad value",
        lambda w: ["validate", str(CASE), "--server", "ftp://example.org/fhir"],
    ),
    (
        "validate",
        "missing configuration",
        lambda w: [
            "validate",
            str(CASE),
            "--server",
            "http://127.0.0.1:9/fhir",
            "--token-file",
            "no-token",
        ],
    ),
    # push
    (
        "push",
        "unknown option",
        lambda w: ["push", str(CASE), "--server", "http://127.0.0.1:9/fhir", "--bogus"],
    ),
    ("push", "missing argument", lambda w: ["push", "--server", "http://127.0.0.1:9/fhir"]),
    (
        "push",
        "bad value",
        lambda w: ["push", str(CASE), "--server", "http://127.0.0.1:9/fhir", "--workers", "0"],
    ),
    (
        "push",
        "bad value",
        lambda w: ["push", str(CASE), "--server", "http://127.0.0.1:9/fhir", "--workers", "two"],
    ),
    (
        "push",
        "bad value",
        lambda w: ["push", str(CASE), "--server", "http://127.0.0.1:9/fhir", "--timeout", "0"],
    ),
    ("push", "bad value", lambda w: ["push", str(CASE), "--server", "not a url"]),
    ("push", "bad value", lambda w: ["push", str(CASE), "--server", "https://[bad"]),
    (
        "push",
        "conflicting options",
        lambda w: [
            "push",
            str(CASE),
            "--server",
            "http://127.0.0.1:9/fhir",
            "--resume",
            "--no-journal",
        ],
    ),
    (
        "push",
        "conflicting options",
        lambda w: [
            "push",
            str(CASE),
            "--server",
            "http://127.0.0.1:9/fhir",
            "--journal",
            "j",
            "--no-journal",
        ],
    ),
    ("push", "missing configuration", lambda w: ["push", str(CASE)]),
    (
        "push",
        "missing configuration",
        lambda w: [
            "push",
            str(CASE),
            "--server",
            "http://127.0.0.1:9/fhir",
            "--token-file",
            "no-token",
        ],
    ),
    (
        "push",
        "unusable output",
        lambda w: [
            "push",
            str(CASE),
            "--server",
            "http://127.0.0.1:9/fhir",
            "--journal",
            str(w / "a-file" / "j.jsonl"),
        ],
    ),
    (
        "push",
        "missing input",
        lambda w: ["push", "nope.yaml", "--server", "http://127.0.0.1:9/fhir"],
    ),
    # score
    ("score", "unknown option", lambda w: ["score", str(w / "b.json"), "--bogus"]),
    ("score", "missing argument", lambda w: ["score"]),
    (
        "score",
        "bad value",
        lambda w: ["score", "--server", "http://127.0.0.1:9/fhir", "--timeout", "-1"],
    ),
    (
        "score",
        "conflicting options",
        lambda w: ["score", str(w / "b.json"), "--server", "http://127.0.0.1:9/fhir"],
    ),
    (
        "score",
        "conflicting options",
        lambda w: [
            "score",
            "--server",
            "http://127.0.0.1:9/fhir",
            "--patient",
            "Patient/1",
            "--identifier",
            "s|v",
        ],
    ),
    ("score", "missing configuration", lambda w: ["score", str(w / "b.json"), "--write-back"]),
    ("score", "unusable output", lambda w: ["score", str(w), "--json", str(w / "b.json")]),
    ("score", "unusable output", lambda w: ["score", str(w / "b.json"), "--json", str(w)]),
    (
        "score",
        "unusable output",
        lambda w: ["score", str(w / "b.json"), "--plot", str(w / "a-file")],
    ),
    ("score", "missing input", lambda w: ["score", "nope.json"]),
    ("score", "wrong input", lambda w: ["score", str(CASE)]),
    ("score", "wrong input", lambda w: ["score", str(COHORT)]),
    # sandbox
    ("sandbox", "unknown option", lambda w: ["sandbox", "--bogus"]),
    ("sandbox", "missing argument", lambda w: ["sandbox", "--port"]),
    ("sandbox", "bad value", lambda w: ["sandbox", "--port", "0"]),
    ("sandbox", "bad value", lambda w: ["sandbox", "--port", "http"]),
    ("sandbox", "unusable output", lambda w: ["sandbox", "--data", str(w / "a-file")]),
    ("sandbox", "unusable output", lambda w: ["sandbox", "--log", str(w / "a-file" / "hapi.log")]),
    ("sandbox", "bad value", lambda w: ["sandbox", "--database", "mysql://u@h/db"]),
    ("sandbox", "bad value", lambda w: ["sandbox", "--profile", "fast"]),
    (
        "sandbox",
        "conflicting options",
        lambda w: ["sandbox", "--data", str(w / "d"), "--database", "postgresql://u@h/db"],
    ),
    # load
    (
        "load",
        "unknown option",
        lambda w: ["load", str(w), "--server", "http://127.0.0.1:9/fhir", "--bogus"],
    ),
    ("load", "missing argument", lambda w: ["load", str(w), "--server"]),
    (
        "load",
        "missing input",
        lambda w: ["load", str(w / "nope"), "--server", "http://127.0.0.1:9/fhir"],
    ),
    ("load", "missing configuration", lambda w: ["load", str(w)]),
    (
        "load",
        "bad value",
        lambda w: ["load", str(w), "--server", "http://127.0.0.1:9/fhir", "--max-poll-wait", "0"],
    ),
    (
        "load",
        "conflicting options",
        lambda w: ["load", str(w), "--server", "https://fhir.example.org/r4"],
    ),
    # bulk-export
    (
        "bulk-export",
        "unknown option",
        lambda w: ["bulk-export", "--out", "o", "--server", "http://127.0.0.1:9/fhir", "--bogus"],
    ),
    (
        "bulk-export",
        "missing argument",
        lambda w: ["bulk-export", "--server", "http://127.0.0.1:9/fhir"],
    ),
    (
        "bulk-export",
        "bad value",
        lambda w: [
            "bulk-export",
            "--out",
            "o",
            "--server",
            "http://127.0.0.1:9/fhir",
            "--max-poll-wait",
            "0",
        ],
    ),
    ("bulk-export", "missing configuration", lambda w: ["bulk-export", "--out", "o"]),
    (
        "bulk-export",
        "unusable output",
        lambda w: [
            "bulk-export",
            "--out",
            str(w / "a-file"),
            "--server",
            "http://127.0.0.1:9/fhir",
        ],
    ),
    ("score", "conflicting options", lambda w: ["score", str(w / "b.json"), "--bulk"]),
    (
        "score",
        "unusable output",
        lambda w: [
            "score",
            "--server",
            "http://127.0.0.1:9/fhir",
            "--bulk",
            "--bulk-dir",
            str(w / "a-file"),
        ],
    ),
    # no subcommand at all
    ("(none)", "missing argument", lambda w: []),
    ("(none)", "unknown option", lambda w: ["--bogus"]),
]


def _ids() -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for command, kind, _ in MATRIX:
        key = f"{command}-{kind.replace(' ', '-')}"
        seen[key] = seen.get(key, 0) + 1
        out.append(f"{key}-{seen[key]}")
    return out


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated folder as cwd and HOME, no server configured, and every entry point that
    does work (reading inputs, exporting, scoring, sending, starting a server) booby-trapped."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("FHIR_CYCLO_SERVER", raising=False)
    monkeypatch.delenv("FHIR_CYCLO_TOKEN", raising=False)
    monkeypatch.setenv("FHIR_CYCLO_CONFIG", str(tmp_path / "no-config.toml"))
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "b.json").write_text('{"resourceType": "Bundle", "type": "collection"}\n')

    def work_started(*_: Any, **__: Any) -> Any:
        raise AssertionError("work started before the usage error was found")

    import fhir_cyclo.cli.bulk_export
    import fhir_cyclo.cli.push
    import fhir_cyclo.cli.score
    import fhir_cyclo.client
    import fhir_cyclo.export.writer
    import fhir_cyclo.importing.run
    import fhir_cyclo.readers.case_files
    import fhir_cyclo.server.hapi
    import fhir_cyclo.server.load
    import fhir_cyclo.server.push
    import fhir_cyclo.validation.local
    import fhir_cyclo.validation.server

    for module, name in [
        (fhir_cyclo.export.writer, "export"),
        (fhir_cyclo.validation.local, "validate_paths"),
        (fhir_cyclo.readers.case_files, "load"),
        (fhir_cyclo.readers.case_files, "discover"),
        (fhir_cyclo.server.push, "push_bundles"),
        (fhir_cyclo.cli.push, "_bundles"),
        (fhir_cyclo.cli.score, "run"),
        (fhir_cyclo.server.hapi, "HapiServer"),
        (fhir_cyclo.client, "FhirClient"),
        (fhir_cyclo.cli.bulk_export, "export"),
        (fhir_cyclo.validation.server, "validate_paths_on_server"),
        (fhir_cyclo.importing.run, "run_import"),
        (fhir_cyclo.server.load, "find_ndjson"),
    ]:
        monkeypatch.setattr(module, name, work_started)
    return tmp_path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("command", "kind", "argv"), MATRIX, ids=_ids())
def test_usage_error_exit_2_one_line_nothing_written(
    workspace: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    kind: str,
    argv: Argv,
) -> None:
    before = _snapshot(workspace)
    code = main(argv(workspace))
    out, err = capsys.readouterr()
    assert code == 2, (command, kind, err)
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("fhir-cyclo: error: "), err
    assert out == ""
    assert _snapshot(workspace) == before  # nothing written, nothing created
    assert sorted(p.name for p in workspace.iterdir()) == ["a-file", "b.json"]


def test_matrix_covers_every_subcommand_and_kind() -> None:
    kinds_by_command: dict[str, set[str]] = {}
    for command, kind, _ in MATRIX:
        kinds_by_command.setdefault(command, set()).add(kind)
    from fhir_cyclo.cli.app import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) <= set(kinds_by_command)  # type: ignore[arg-type]
    common = {"unknown option", "missing argument"}
    for command, kinds in kinds_by_command.items():
        assert common <= kinds, command
    every = {kind for _, kind, _ in MATRIX}
    assert every >= {
        "unknown option",
        "missing argument",
        "bad value",
        "conflicting options",
        "missing configuration",
        "unusable output",
        "missing input",
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["score", "--json", "nodir/x.json", "fixtures/cases"],
        ["push", "fixtures/cases", "--workers", "0", "--server", "http://127.0.0.1:9/fhir"],
        ["export", "fixtures/cases", "--out", "README.md"],
    ],
)
def test_real_entry_point_prints_one_line(argv: list[str]) -> None:
    """The installed command, in a subprocess: no logging noise, no usage dump, exit 2."""
    result = subprocess.run(
        [sys.executable, "-m", "fhir_cyclo.cli", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""


def test_help_lists_arguments_with_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    for command, expected in [
        ("push", ["--workers N", "(default: 1)", "--timeout SECONDS", "(default: 60.0)"]),
        ("sandbox", ["--port PORT", "(default: 8080)"]),
        ("validate", ["PATH", "case files, cohort folders, Bundle JSON"]),
        ("export", ["--out DIR", "--key-file FILE", "required with --deidentify"]),
        ("score", ["--json FILE", "--plot DIR", "--write-back"]),
    ]:
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        for text in expected:
            assert text in " ".join(out.split()), (command, text, out)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fhir-cyclo {version('fhir-cyclo')}"
