"""The HAPI launcher's failures are one clear line each (no Java, not built, busy port, a server
that does not come up), and `make hapi` names a missing Java or Maven."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fhir_cyclo.server import hapi
from fhir_cyclo.server.hapi import HapiError, HapiServer
from tests.conftest import ROOT


def test_no_java_is_one_line() -> None:
    with pytest.raises(HapiError) as info:
        HapiServer(java="no-such-java-here").start()
    message = str(info.value)
    assert "Java not found" in message and "\n" not in message


def test_not_built_in_a_checkout_says_make_hapi(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FHIR_CYCLO_HAPI_JAR", raising=False)
    monkeypatch.setattr(hapi, "DEFAULT_JAR", tmp_path / "target" / "missing.jar")
    with pytest.raises(HapiError) as info:
        HapiServer().start()
    assert "run `make hapi`" in str(info.value) and "\n" not in str(info.value)


def test_a_missing_jar_named_by_the_environment_or_option_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FHIR_CYCLO_HAPI_JAR", str(tmp_path / "missing.jar"))
    with pytest.raises(HapiError) as info:
        HapiServer().start()
    assert "from $FHIR_CYCLO_HAPI_JAR" in str(info.value) and "\n" not in str(info.value)
    server = HapiServer()
    server.jar = tmp_path / "other.jar"
    with pytest.raises(HapiError) as info:
        server.start()
    assert "other.jar (from --jar) is missing" in str(info.value)


def test_installed_package_uses_the_user_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FHIR_CYCLO_HAPI_JAR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(hapi, "in_checkout", lambda: False)
    path = hapi.jar_path()
    assert path.parent.parent == tmp_path / "xdg" / "fhir-cyclo"
    assert path.parent.name.startswith("hapi-") and path.name == "fhir-cyclo-hapi.jar"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hapi.jar_path().parents[2] == tmp_path / "home" / ".cache"
    # A jar already in the cache is used as it is (no build).
    cached = hapi.jar_path()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK")
    assert hapi.find_jar() == cached


def test_first_use_build_without_maven_is_one_line_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FHIR_CYCLO_HAPI_JAR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(hapi, "in_checkout", lambda: False)
    monkeypatch.setattr(hapi, "SHIPPED_HAPI", ROOT / "hapi")  # the sources a wheel ships
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = shutil.which("java")
    if java is not None:
        (bin_dir / "java").symlink_to(java)
    monkeypatch.setenv("PATH", str(bin_dir))
    notices: list[str] = []
    with pytest.raises(HapiError) as info:
        hapi.find_jar(notice=notices.append)
    message = str(info.value)
    assert "\n" not in message and "FHIR_CYCLO_HAPI_JAR" in message
    missing = "mvn" if java is not None else "java"
    assert f"needs {missing}, which is not on PATH" in message
    assert notices == []  # nothing announced that did not start


def test_first_use_build_failure_names_the_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FHIR_CYCLO_HAPI_JAR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(hapi, "in_checkout", lambda: False)
    broken = tmp_path / "sources"
    broken.mkdir()
    (broken / "pom.xml").write_text("<project>not a pom</project>")
    monkeypatch.setattr(hapi, "SHIPPED_HAPI", broken)
    if shutil.which("mvn") is None or shutil.which("java") is None:
        pytest.fail("this test needs java and mvn on PATH (make test's prerequisites)")
    notices: list[str] = []
    with pytest.raises(HapiError) as info:
        hapi.find_jar(notice=notices.append)
    message = str(info.value)
    assert "Maven build of the HAPI test server failed" in message and "\n" not in message
    assert "build.log" in message
    assert len(notices) == 1 and "first use only" in notices[0]


def test_busy_port_is_refused_before_starting() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(HapiError) as info:
            HapiServer(port=port).start()
    assert f"port {port}" in str(info.value) and "busy" in str(info.value)


def test_a_server_that_exits_shows_the_log_tail(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Any file that is not a jar: the JVM starts, fails to open it and exits non-zero.
    bogus = tmp_path / "bogus.jar"
    bogus.write_text("not a jar")
    monkeypatch.setenv("FHIR_CYCLO_HAPI_JAR", str(bogus))
    if shutil.which("java") is None:
        pytest.skip("needs a Java runtime to start")
    server = HapiServer(log_path=tmp_path / "hapi.log")
    with pytest.raises(HapiError) as info:
        server.start(timeout=60)
    assert "exited with code" in str(info.value) and "\n" not in str(info.value)
    assert "jarfile" in info.value.log_tail.lower()  # the JVM's own words, from the log
    assert server.pid is None


def test_cli_sandbox_on_a_busy_port_exits_3_with_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "fhir_cyclo.cli", "sandbox", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "busy" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("missing", ["mvn", "java"])
def test_make_hapi_names_a_missing_tool(tmp_path: Path, missing: str) -> None:
    # A PATH holding only what the recipe needs, minus one tool.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "find", "mvn", "java"):
        found = shutil.which(tool)
        if tool != missing and found:
            (bin_dir / tool).symlink_to(found)
    make = shutil.which("make")
    assert make is not None
    result = subprocess.run(
        [make, "--always-make", "-s", "hapi"],
        cwd=ROOT,
        env={**os.environ, "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    name = {"mvn": "Maven not found", "java": "Java not found"}[missing]
    assert name in result.stderr


def test_lenient_mode_is_the_system_property_the_server_reads() -> None:
    if shutil.which("java") is None or not (ROOT / "hapi" / "target").exists():
        pytest.skip("needs Java and the built jar (make hapi)")
    strict, lenient = HapiServer()._argv(), HapiServer(lenient=True)._argv()
    assert "-Dfhircyclo.lenient=false" in strict  # the tests' default: strict
    assert lenient.index("-Dfhircyclo.lenient=true") < lenient.index("-jar")
    config = ROOT / "hapi/src/main/java/org/example/fhircyclo/hapi/ServerConfig.java"
    assert '@Value("${fhircyclo.lenient:false}") boolean lenient' in config.read_text()


@pytest.mark.parametrize(("flags", "lenient"), [((), True), (("--strict-validation",), False)])
def test_sandbox_is_lenient_unless_strict_validation_is_asked(
    monkeypatch: pytest.MonkeyPatch, flags: tuple[str, ...], lenient: bool
) -> None:
    from fhir_cyclo.cli.app import main
    from fhir_cyclo.server import hapi

    seen: list[bool] = []

    class Recorder:
        def __init__(self, **kw: object) -> None:
            seen.append(bool(kw["lenient"]))

        def start(self, timeout: float) -> None:
            raise HapiError("stopped by the test")

        def stop(self) -> None:
            return None

    monkeypatch.setattr(hapi, "HapiServer", Recorder)
    assert main(["sandbox", "--port", "18725", *flags]) == 3
    assert seen == [lenient]


@pytest.mark.parametrize(
    ("given", "jdbc"),
    [
        (
            "jdbc:postgresql://127.0.0.1:5432/fhir?user=u",
            "jdbc:postgresql://127.0.0.1:5432/fhir?user=u",
        ),
        (
            "postgresql://u@db.example.org:5433/fhir",
            "jdbc:postgresql://db.example.org:5433/fhir?user=u",
        ),
        (
            "postgres://u:p%40ss@localhost/fhir",
            "jdbc:postgresql://localhost/fhir?user=u&password=p%40ss",
        ),
        ("postgresql://h/fhir?sslmode=require", "jdbc:postgresql://h/fhir?sslmode=require"),
    ],
)
def test_database_urls_become_jdbc_urls(given: str, jdbc: str) -> None:
    assert hapi.jdbc_url(given) == jdbc


@pytest.mark.parametrize(
    "bad", ["mysql://u@h/db", "postgresql://u:secret@h", "jdbc:h2:mem:x", "fhir"]
)
def test_other_database_urls_are_refused_without_the_password(bad: str) -> None:
    with pytest.raises(hapi.HapiError, match="jdbc:postgresql://HOST:PORT/DB") as caught:
        hapi.jdbc_url(bad)
    assert "secret" not in str(caught.value)


def test_database_and_profile_reach_the_server_environment(tmp_path: Path) -> None:
    server = hapi.HapiServer(database_url="jdbc:postgresql://127.0.0.1:1/x", profile="load")
    env = server._env(18999)
    assert env["FHIR_CYCLO_HAPI_DB"] == "jdbc:postgresql://127.0.0.1:1/x"
    assert env["FHIR_CYCLO_HAPI_PROFILE"] == "load"
    default = hapi.HapiServer()._env(18999)
    assert default["FHIR_CYCLO_HAPI_PROFILE"] == "everyday"
    assert "FHIR_CYCLO_HAPI_DB" not in default  # H2 in memory: the server's own default
    with pytest.raises(hapi.HapiError, match="not both"):
        hapi.HapiServer(data_dir=tmp_path, database_url="jdbc:postgresql://h/x")
    with pytest.raises(hapi.HapiError, match="everyday, load"):
        hapi.HapiServer(profile="fast")


class _FakeServer:
    """Stands in for HapiServer in `sandbox`: `wait` does what the test asks of the server."""

    def __init__(self, on_wait: Callable[[], int], **kw: object) -> None:
        self.on_wait = on_wait
        self.stopped = 0
        self.base_url = "http://127.0.0.1:18725/fhir"
        self.started_in = 1.0
        self.log_path = Path("/nonexistent/hapi.log")

    def start(self, timeout: float) -> None:
        return None

    def wait(self) -> int:
        return self.on_wait()

    def stop(self) -> None:
        self.stopped += 1


def _sandbox_with(
    monkeypatch: pytest.MonkeyPatch, on_wait: Callable[[], int]
) -> tuple[int, _FakeServer]:
    from fhir_cyclo.cli.app import main
    from fhir_cyclo.server import hapi

    made: list[_FakeServer] = []

    def factory(**kw: object) -> _FakeServer:
        made.append(_FakeServer(on_wait, **kw))
        return made[0]

    monkeypatch.setattr(hapi, "HapiServer", factory)
    code = main(["sandbox", "--port", "18725"])
    return code, made[0]


def test_sandbox_stops_the_server_on_sigterm_as_on_ctrl_c(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def terminated() -> int:
        os.kill(os.getpid(), signal.SIGTERM)  # `kill PID`, `docker stop`
        time.sleep(5)  # the handler interrupts this at once
        return 0

    # A recording handler stands in for the default (which would end pytest): were the sandbox to
    # leave SIGTERM alone, this would record it and the wait would run its 5 s.
    caught: list[int] = []

    def recorder(signum: int, frame: object) -> None:
        caught.append(signum)

    original = signal.signal(signal.SIGTERM, recorder)
    try:
        began = time.monotonic()
        code, server = _sandbox_with(monkeypatch, terminated)
        took = time.monotonic() - began
        assert signal.getsignal(signal.SIGTERM) is recorder  # the caller's handler is back
    finally:
        signal.signal(signal.SIGTERM, original)
    assert (code, server.stopped, caught) == (0, 1, [])
    assert took < 4
    assert "HAPI FHIR R4 test server at http://127.0.0.1:18725/fhir" in capsys.readouterr().out

    def ctrl_c() -> int:
        raise KeyboardInterrupt

    assert _sandbox_with(monkeypatch, ctrl_c)[0] == 0


def test_sandbox_exits_3_naming_the_log_when_the_server_dies(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, server = _sandbox_with(monkeypatch, lambda: -9)  # e.g. the kernel's OOM killer
    err = capsys.readouterr().err
    assert (code, server.stopped) == (3, 1)
    assert "stopped by itself (killed by SIGKILL; log /nonexistent/hapi.log)" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert _sandbox_with(monkeypatch, lambda: 1)[0] == 3
    assert "stopped by itself (exit 1;" in capsys.readouterr().err
