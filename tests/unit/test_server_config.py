"""Where `push`/`score` find their server when --server is not given."""

from __future__ import annotations

from pathlib import Path

import pytest

from fhir_cyclo.cli.app import main
from fhir_cyclo.cli.options import default_server


def test_env_var_wins_over_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('server = "https://from-config.example/fhir"\n')
    monkeypatch.setenv("FHIR_CYCLO_CONFIG", str(config))
    monkeypatch.delenv("FHIR_CYCLO_SERVER", raising=False)
    assert default_server() == "https://from-config.example/fhir"
    monkeypatch.setenv("FHIR_CYCLO_SERVER", "https://from-env.example/fhir")
    assert default_server() == "https://from-env.example/fhir"


def test_bad_config_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("server = \n")
    monkeypatch.setenv("FHIR_CYCLO_CONFIG", str(config))
    monkeypatch.delenv("FHIR_CYCLO_SERVER", raising=False)
    assert main(["push", "fixtures/cases", "--no-progress"]) == 2  # configuration: usage error
    err = capsys.readouterr().err
    assert str(config) in err and "not valid TOML" in err


def test_no_server_anywhere_names_every_option(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FHIR_CYCLO_SERVER", raising=False)
    monkeypatch.setenv("FHIR_CYCLO_CONFIG", str(tmp_path / "missing.toml"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["push", str(Path(__file__).parents[2] / "fixtures" / "cases")]) == 2
    err = capsys.readouterr().err
    assert "--server" in err and "FHIR_CYCLO_SERVER" in err and "hapi.fhir.org/baseR4" in err
