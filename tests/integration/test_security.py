"""Security: no PHI in logs at the default level, tokens never printed, TLS/http guards on the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CASE_REPORT
from tests.integration.conftest import Server

pytestmark = pytest.mark.integration

NAME, BIRTH, MRN = "Mario Rossi", "1957-03-14", "MRN-77-1234"
TOKEN = "s3cr3t-bearer-token-value"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhir_cyclo.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def phi_cases(folder: Path) -> None:
    text = CASE_REPORT.read_text(encoding="utf-8")
    good = text.replace("value: isshiki-thymoma-prca", f"value: {MRN}").replace(
        "  sex: female\n",
        f'  sex: female\n  name: {NAME}\n  birth_date: "{BIRTH}"\n  telecom: ["+39 02 5555 0101"]\n  address: via F. Sforza 35, Milano\n',
    )
    (folder / "phi.yaml").write_text(good, encoding="utf-8")
    # a second, broken case with PHI, so error lines are printed too
    broken = good.replace(f"value: {MRN}", f"value: {MRN}-2").replace("value: 4.6", "value: 460")
    (folder / "phi-broken.yaml").write_text(broken, encoding="utf-8")


def test_no_phi_in_logs_of_a_full_run(server: Server, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    phi_cases(src)
    runs = [
        cli("export", str(src), "--out", str(tmp_path / "out")),
        cli("validate", str(src)),
        cli("push", str(src), "--server", server.base_url, "--no-progress", "--no-journal"),
        cli("score", "--server", server.base_url, "--table"),
        cli("score", str(tmp_path / "out"), "--table"),
    ]
    logs = "\n".join(r.stderr for r in runs)
    assert "error" in logs  # the broken case was reported...
    for secret in (NAME, "Rossi", BIRTH, MRN, "5555 0101", "Sforza"):
        assert secret not in logs, secret  # ...without naming the patient


def test_bearer_token_never_printed(server: Server, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    runs = [
        cli(
            "-v",
            "push",
            str(CASE_REPORT),
            "--server",
            server.base_url,
            "--no-progress",
            "--no-journal",
            env={"FHIR_CYCLO_TOKEN": TOKEN},
        ),
        cli(
            "-v",
            "push",
            str(CASE_REPORT),
            "--server",
            "http://127.0.0.1:9/fhir",
            "--timeout",
            "1",
            "--token-file",
            str(token_file),
            "--no-journal",
        ),
        cli(
            "-v",
            "score",
            "--server",
            server.base_url,
            "--json",
            "-",
            env={"FHIR_CYCLO_TOKEN": TOKEN},
        ),
    ]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[1].returncode == 3
    for r in runs:
        assert TOKEN not in r.stdout + r.stderr


def test_plain_http_needs_allow_http() -> None:
    refused = cli(
        "push",
        str(CASE_REPORT),
        "--server",
        "http://fhir.example.invalid/fhir",
        "--no-progress",
        "--no-journal",
    )
    assert refused.returncode == 3 and "refusing plain http" in refused.stderr
    allowed = cli(
        "push",
        str(CASE_REPORT),
        "--server",
        "http://fhir.example.invalid/fhir",
        "--allow-http",
        "--timeout",
        "1",
        "--no-progress",
        "--no-journal",
    )
    assert "refusing plain http" not in allowed.stderr  # now it tries (and cannot resolve the host)
    assert allowed.returncode == 3
