"""The command layer of issue 21: did-you-mean, -v/-q anywhere, one prefix, a light --version."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from fhir_cyclo.cli import app
from fhir_cyclo.cli.app import main

REPO = Path(__file__).resolve().parents[2]
CASE = REPO / "fixtures" / "cases" / "thymoma-prca-isshiki.yaml"
BUNDLE = REPO / "tests" / "unit" / "scoring_data" / "case_report_transaction.json"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhir_cyclo.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_a_mistyped_command_gets_did_you_mean(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scroe", str(BUNDLE)]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'scroe'; did you mean 'score'?" in err
    assert err.count("\n") == 1
    assert main(["frobnicate"]) == 2
    assert (
        "commands: export, validate, push, score, bulk-export, import, load, sandbox"
        in capsys.readouterr().err
    )


def test_an_unknown_option_points_at_the_subcommand_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["score", "--tabel", str(BUNDLE)]) == 2
    err = capsys.readouterr().err
    assert "see `fhir-cyclo score --help`" in err
    assert "did you mean --table?" in err
    assert "see `fhir-cyclo --help`" not in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbosity_goes_before_or_after_the_command(
    where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["validate", str(CASE)]
    quiet = ["-q", *argv] if where == "before" else [*argv, "-q"]
    assert main(quiet) == 0
    assert capsys.readouterr().err == ""  # -q: the summary line is dropped
    verbose = ["-v", *argv] if where == "before" else [*argv, "--verbose"]
    assert main(verbose) == 0
    assert "fhir-cyclo: checked 1 item(s): 0 problem(s)" in capsys.readouterr().err
    assert main(["-v", *argv, "-q"]) == 2
    assert "-v and -q contradict each other" in capsys.readouterr().err


def test_validate_v_is_verbosity_and_information_needs_a_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["validate", "-v", str(CASE)]) == 0  # was `validate`'s own "information" flag
    capsys.readouterr()
    assert main(["validate", "--information", str(CASE)]) == 2
    assert "--information lists the server's issues" in capsys.readouterr().err


def test_every_stderr_line_is_prefixed(tmp_path: Path) -> None:
    # score's summary and "wrote ..." lines lacked the prefix (issue 21).
    done = _run("score", str(BUNDLE), "--json", str(tmp_path / "s.json"))
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any(line.startswith("fhir-cyclo: wrote the JSON result to ") for line in lines)
    assert lines and all(line.startswith("fhir-cyclo: ") for line in lines), lines
    done = _run("export", str(CASE), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert all(line.startswith("fhir-cyclo: ") for line in done.stderr.splitlines())


def test_version_and_help_load_no_model_or_feature() -> None:
    # --version took 0.56 s: it loaded pydantic and the case model (issue 21).
    code = (
        "import sys\n"
        "from fhir_cyclo.cli.app import main\n"
        "commands = ('export', 'validate', 'push', 'score', 'bulk_export', 'import_cmd', 'load', 'sandbox')\n"
        "for argv in (['--version'], ['--help'], ['score', '--help']):\n"
        "    if argv == ['score', '--help']:  # --version and --help load no command module\n"
        "        print('loaded:', [c for c in commands if f'fhir_cyclo.cli.{c}' in sys.modules])\n"
        "    main(argv)\n"
        "heavy = ('pydantic', 'fhir', 'fhir_core', 'requests', 'yaml', 'orjson', 'matplotlib')\n"
        "print('loaded:', sorted(m for m in sys.modules if m.split('.')[0] in heavy\n"
        "             or (m.startswith('fhir_cyclo.') and not m.startswith(('fhir_cyclo.cli',\n"
        "                 'fhir_cyclo.core.errors', 'fhir_cyclo.core')))\n"
        "             or m == 'fhir_cyclo.core.case'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = [line for line in done.stdout.splitlines() if line.startswith("loaded: ")]
    assert loaded == ["loaded: []", "loaded: []"]


def test_version_comes_from_the_installed_metadata() -> None:
    from importlib import metadata

    done = _run("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"fhir-cyclo {metadata.version('fhir-cyclo')}"


def test_push_default_journal_is_the_journal_modules() -> None:
    # cli.push repeats the default so that --help does not load the push machinery.
    from fhir_cyclo.cli.push import DEFAULT_JOURNAL
    from fhir_cyclo.server import journal

    assert DEFAULT_JOURNAL == journal.DEFAULT_JOURNAL


def test_below_cli_nothing_sees_argparse() -> None:
    # Options are parsed into typed objects at the edge: no Namespace, no getattr(args, ...).
    src = REPO / "src" / "fhir_cyclo"
    offenders = []
    for path in sorted(src.rglob("*.py")):
        if path.relative_to(src).parts[0] == "cli":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if "argparse" in names:
                offenders.append(f"{path.relative_to(src)}:{node.lineno}")
    assert offenders == []
    for module in map(app.command_module, app.COMMANDS):
        text = Path(str(module.__file__)).read_text(encoding="utf-8")
        assert "getattr(ns" not in text
        assert "getattr(args" not in text


def test_each_command_is_one_module() -> None:
    assert {name: app.command_module(name).__name__ for name in app.COMMANDS} == {
        "export": "fhir_cyclo.cli.export",
        "validate": "fhir_cyclo.cli.validate",
        "push": "fhir_cyclo.cli.push",
        "score": "fhir_cyclo.cli.score",
        "bulk-export": "fhir_cyclo.cli.bulk_export",
        "import": "fhir_cyclo.cli.import_cmd",
        "load": "fhir_cyclo.cli.load",
        "sandbox": "fhir_cyclo.cli.sandbox",
    }


class _Recorder:
    """Stands in for the FhirClient `options.make_client` builds; records what it was given."""

    base_url = "https://fhir.example.org/r4"
    given: ClassVar[list[object]] = []

    def __init__(self, server: object) -> None:
        _Recorder.given.append(server)

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def capabilities(self) -> dict[str, str]:
        return {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}

    def ensure_pool_size(self, workers: int) -> None:
        pass

    def validate_resource(self, body: object) -> object:
        from fhir_cyclo.core.errors import OperationOutcome

        return OperationOutcome(issues=())


def test_validate_server_builds_its_client_like_every_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It built its own client without SMART auth, config file or --timeout (issue 21).
    import fhir_cyclo.cli.options

    config = tmp_path / "c.toml"
    config.write_text('[smart]\nclient_id = "from-config"\n')
    monkeypatch.setattr(fhir_cyclo.cli.options, "make_client", _Recorder)
    argv = ["validate", str(CASE), "--server", _Recorder.base_url, "--timeout", "7"]
    assert main([*argv, "--smart-kid", "k1", "--config", str(config)]) == 0
    server = _Recorder.given[-1]
    assert isinstance(server, fhir_cyclo.cli.options.ServerOptions)
    assert (server.url, server.timeout, server.smart.kid) == (_Recorder.base_url, 7.0, "k1")
    assert server.config == {"smart": {"client_id": "from-config"}}
    assert "fhir-cyclo: validated 1 resource(s)" in capsys.readouterr().err
    assert main([*argv[:-1], "0"]) == 2  # --timeout 0: the shared check, before any work
    assert "--timeout must be greater than 0" in capsys.readouterr().err
