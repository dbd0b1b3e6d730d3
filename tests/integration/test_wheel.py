"""The package works when installed: build the wheel, install it into a fresh venv outside the
repository, and run every command from a folder outside it (the sandbox from the user cache).

The venv gets the wheel with `--no-deps` and sees the project's dependencies through a .pth line
naming this interpreter's site-packages: offline, a few seconds, and the same dependency versions
the rest of the suite tests. A .pth path line does not run the .pth files in that folder, so the
editable install of the checkout there stays invisible; the test asserts the code it runs is the
wheel's.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from fhir_cyclo.core.case import Case
from tests.conftest import FIXTURES, ROOT, load_cases

pytestmark = [pytest.mark.integration, pytest.mark.wheel]

JAR = ROOT / "hapi" / "target" / "fhir-cyclo-hapi.jar"
TIMINGS: dict[str, float] = {}


@dataclass(frozen=True)
class Installed:
    venv: Path
    work: Path  # the current folder of every command: outside the repository
    cache: Path  # $XDG_CACHE_HOME

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("FHIR_CYCLO_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
        }
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["XDG_CACHE_HOME"] = str(self.cache)
        env["HOME"] = str(self.work)  # no config file of the developer's is read
        env.update(extra)
        return env

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        began = time.monotonic()
        done = subprocess.run(
            [str(self.venv / "bin" / "fhir-cyclo"), *args],
            cwd=self.work,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        TIMINGS[args[0]] = time.monotonic() - began
        return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("wheel")
    assert ROOT not in base.parents
    began = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"), ROOT],
        check=True,
        capture_output=True,
        timeout=300,
    )
    TIMINGS["build wheel"] = time.monotonic() - began
    (wheel,) = (base / "dist").glob("fhir_cyclo-*.whl")
    began = time.monotonic()
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )  # fmt: skip
    purelib = Path(
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    (purelib / "_fhir_cyclo_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    TIMINGS["install"] = time.monotonic() - began
    work = base / "work"
    work.mkdir()
    yield Installed(venv, work, base / "cache")
    print("\nwheel test timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in TIMINGS.items()))


def test_the_installed_code_is_the_wheel_and_finds_its_data(installed: Installed) -> None:
    probe = (
        "import fhir_cyclo, fhir_cyclo.core.tables as t, fhir_cyclo.server.hapi as h; "
        "print(fhir_cyclo.__file__); print(t.mappings_dir()); print(h.definitions_dir()); "
        "print(h.hapi_sources()); print(h.jar_path()); print(h.in_checkout())"
    )
    done = subprocess.run(
        [str(installed.venv / "bin" / "python"), "-c", probe],
        cwd=installed.work,
        env=installed.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    module, mappings, definitions, sources, jar, checkout = done.stdout.splitlines()
    for path in (module, mappings, definitions, sources):
        assert Path(path).is_relative_to(installed.venv), path
    assert (Path(sources) / "pom.xml").is_file()
    assert (Path(sources) / "src" / "main" / "java").is_dir()
    assert sorted(p.name for p in Path(definitions).iterdir()) == sorted(
        p.name for p in (ROOT / "profiles").iterdir()
    )
    assert Path(jar) == installed.cache / "fhir-cyclo" / "hapi-0.1.0" / "fhir-cyclo-hapi.jar"
    assert checkout == "False"


def test_commands_run_from_outside_the_repository(
    installed: Installed, all_fixture_cases: list[Case]
) -> None:
    done = installed.run("--version")
    assert (done.returncode, done.stdout.strip()) == (0, "fhir-cyclo 0.1.0")

    done = installed.run("export", str(FIXTURES), "--out", "bundles", "--ndjson")
    assert done.returncode == 0, done.stderr
    assert "exported 14 case(s)" in done.stderr

    done = installed.run("validate", str(FIXTURES), "bundles")
    assert done.returncode == 0, done.stderr
    assert ": 0 problem(s)" in done.stderr

    done = installed.run("score", "bundles", "--report", "report.html", "--json", "scores.json")
    assert done.returncode == 0, done.stderr
    report = (installed.work / "report.html").read_text()
    assert 'content="fhir-cyclo score report"' in report
    assert '"fhir-cyclo-score/' in (installed.work / "scores.json").read_text()

    done = installed.run("import", "bundles", "--out", "cases")
    assert done.returncode == 0, done.stderr
    assert "imported 14 case(s)" in done.stderr
    imported = load_cases(installed.work / "cases")
    key = lambda c: c.identifier.token  # noqa: E731
    assert sorted(imported, key=key) == sorted(all_fixture_cases, key=key)


def test_sandbox_without_java_tools_is_one_line_with_the_fix(
    installed: Installed, tmp_path: Path
) -> None:
    # An empty cache and a PATH with java but no mvn: the first-use build cannot run.
    java = shutil.which("java")
    if java is None:
        pytest.fail("the wheel test needs a Java runtime (apt-get install openjdk-17-jdk-headless)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(java)
    done = installed.run(
        "sandbox", "--port", str(_free_port()), PATH=str(bin_dir), XDG_CACHE_HOME=str(tmp_path)
    )
    assert done.returncode == 3
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "needs mvn" in lines[0] and "apt-get install maven" in lines[0]
    assert "FHIR_CYCLO_HAPI_JAR" in lines[0]


def _free_port() -> int:
    for port in range(18420, 18480):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise AssertionError("no free port in 18420-18479")


def test_sandbox_runs_from_the_user_cache(installed: Installed) -> None:
    if not JAR.is_file():
        pytest.fail(f"{JAR} is missing: run `make hapi` first (make test does)")
    # The jar as the first-use build would leave it, so CI does not build it twice.
    cached = installed.cache / "fhir-cyclo" / "hapi-0.1.0" / "fhir-cyclo-hapi.jar"
    cached.parent.mkdir(parents=True, exist_ok=True)
    if not cached.exists():
        cached.symlink_to(JAR)
    port = _free_port()
    began = time.monotonic()
    # 900 s: HAPI took up to 415 s to start here while other agents loaded the 2 cores.
    argv = ["sandbox", "--port", str(port), "--start-timeout", "900"]
    proc = subprocess.Popen(
        [str(installed.venv / "bin" / "fhir-cyclo"), *argv],
        cwd=installed.work,
        env=installed.env(PYTHONFAULTHANDLER="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # printed once the server answers /metadata
        assert f"HAPI FHIR R4 test server at http://127.0.0.1:{port}/fhir" in line, line + (
            proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
        )
        TIMINGS["sandbox start"] = time.monotonic() - began
        meta = requests.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=30)
        assert meta.status_code == 200
        assert meta.json()["fhirVersion"] == "4.0.1"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # Where it hangs: faulthandler (PYTHONFAULTHANDLER=1) prints every thread's stack on
            # SIGABRT, and the failure shows it.
            proc.send_signal(signal.SIGABRT)
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"the sandbox did not stop within 60 s of SIGINT; its stderr:\n{err}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # the server went with it
