"""Start, stop, kill, restart and reset the HAPI FHIR JPA test server built from `hapi/`."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import requests

from fhir_cyclo.core.errors import TransportError

PACKAGE = Path(__file__).resolve().parents[1]  # fhir_cyclo/
REPO = PACKAGE.parents[1]  # the checkout (src/fhir_cyclo -> repo), or site-packages' parent
JAR_ENV = "FHIR_CYCLO_HAPI_JAR"
DEFINITIONS_ENV = "FHIR_CYCLO_DEFINITIONS"
CACHE_ENV = "XDG_CACHE_HOME"
JAR_NAME = "fhir-cyclo-hapi.jar"
# The repo's files: built by `make hapi`, loaded at start (see README "The test server").
DEFAULT_JAR = REPO / "hapi" / "target" / JAR_NAME
DEFAULT_DEFINITIONS = REPO / "profiles"
# In a wheel the server's sources and profiles/ ship as package data (pyproject force-include).
SHIPPED_HAPI = PACKAGE / "_hapi"
SHIPPED_DEFINITIONS = PACKAGE / "_profiles"
MVN_FLAGS = ("-B", "-q", "-Denforcer.skip=true", "-DskipTests")
# Measured here: 40-95 s to start on 2 busy cores; a cold JVM on a slower CI machine gets slack.
START_TIMEOUT = 300.0
HEAP = "1g"
# fhircyclo.profile of the server (README "Scale"): the validating everyday server, or the
# loading profile (mass ingestion, no server-side validation, placeholder references).
PROFILES = ("everyday", "load")


class HapiError(TransportError):
    """The HAPI test server could not be started, stopped or reached (CLI exit 3).

    The message is one line; `log_tail` holds the end of the server's log when there is one.
    """

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


def in_checkout() -> bool:
    """Running from the source tree (editable install or PYTHONPATH), not from a wheel."""
    return (REPO / "hapi" / "pom.xml").is_file() and (REPO / "pyproject.toml").is_file()


def hapi_sources() -> Path:
    """The folder holding the server's pom.xml and src/: the checkout's hapi/ or the wheel's."""
    return REPO / "hapi" if in_checkout() else SHIPPED_HAPI


def cache_dir() -> Path:
    """Where an installed package builds its jar: $XDG_CACHE_HOME (or ~/.cache)/fhir-cyclo/."""
    base = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache")
    try:
        version = metadata.version("fhir-cyclo")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return Path(base) / "fhir-cyclo" / f"hapi-{version}"


def jar_path(jar: Path | str | None = None) -> Path:
    """The jar to run: `jar` (--jar), $FHIR_CYCLO_HAPI_JAR, the checkout's hapi/target, or the
    user cache (which `find_jar` fills on first use)."""
    if jar:
        return Path(jar).resolve()
    override = os.environ.get(JAR_ENV)
    if override:
        return Path(override).resolve()
    if in_checkout():
        return DEFAULT_JAR
    return cache_dir() / JAR_NAME


def definitions_dir() -> Path:
    override = os.environ.get(DEFINITIONS_ENV)
    if override:
        return Path(override).resolve()
    return DEFAULT_DEFINITIONS if DEFAULT_DEFINITIONS.is_dir() else SHIPPED_DEFINITIONS


def find_jar(jar: Path | str | None = None, *, notice: Callable[[str], None] | None = None) -> Path:
    """The jar to run, built into the user cache with Maven first when an installed package
    has none yet. Every failure is one HapiError line naming the fix."""
    path = jar_path(jar)
    if path.is_file():
        return path
    if jar or os.environ.get(JAR_ENV):
        where = "--jar" if jar else f"${JAR_ENV}"
        raise HapiError(
            f"HAPI test server jar {path} (from {where}) is missing: give the path of a built "
            f"jar, or leave {where} out to use the checkout's `make hapi` build or the user cache"
        )
    if in_checkout():
        raise HapiError(
            f"HAPI test server not built ({path} is missing): run `make hapi`"
            " (needs Maven and Maven Central once; offline afterwards)"
        )
    return build_jar(path.parent, notice=notice)


def build_jar(cache: Path, *, notice: Callable[[str], None] | None = None) -> Path:
    """Build the shipped server sources with Maven into `cache` (once per version)."""
    sources = hapi_sources()
    if not (sources / "pom.xml").is_file():
        raise HapiError(
            f"the HAPI server sources are not in this installation ({sources}): reinstall "
            f"fhir-cyclo, or set ${JAR_ENV} to a built jar"
        )
    found: dict[str, str] = {}
    for tool, fix in (
        ("java", "install a JDK 17+ (Debian: apt-get install openjdk-17-jdk-headless)"),
        ("mvn", "install Maven 3.8+ (Debian: apt-get install maven)"),
    ):
        found[tool] = shutil.which(tool) or ""
        if not found[tool]:
            raise HapiError(
                f"building the HAPI test server needs {tool}, which is not on PATH: {fix}; "
                f"or set ${JAR_ENV} to a built jar"
            )
    cache.mkdir(parents=True, exist_ok=True)
    work = cache / "build"
    shutil.rmtree(work, ignore_errors=True)
    # Only the sources: a checkout's hapi/target (hundreds of MB) is no input to the build.
    shutil.copytree(sources, work, ignore=shutil.ignore_patterns("target"))
    log = cache / "build.log"
    if notice is not None:
        notice(
            f"building the HAPI test server into {cache} with Maven (first use only; a few "
            f"minutes, needs Maven Central once); log {log}"
        )
    with log.open("wb") as out:
        done = subprocess.run(
            [found["mvn"], *MVN_FLAGS, "-f", str(work / "pom.xml"), "package"],
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    built = work / "target" / JAR_NAME
    if done.returncode != 0 or not built.is_file():
        raise HapiError(
            f"the Maven build of the HAPI test server failed (exit {done.returncode}; log {log}):"
            " check network access to Maven Central, or set "
            f"${JAR_ENV} to a built jar"
        )
    final = cache / JAR_NAME
    os.replace(built, final)
    shutil.rmtree(work, ignore_errors=True)
    return final


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux), even by SIGKILL, so a
    killed test run or `fhir-cyclo sandbox` never leaves a JVM holding the port."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class HapiServer:
    """One HAPI JPA server process on 127.0.0.1; use as a context manager.

    >>> with HapiServer() as hapi:  # doctest: +SKIP
    ...     requests.get(f"{hapi.base_url}/metadata")

    The database is H2 in memory unless `data_dir` is given: then it is an H2 file there, written
    at every commit (or `database_url`, a JDBC URL of PostgreSQL), so `kill()` (SIGKILL) followed
    by `restart()` (same port, same base URL) keeps
    every write the server acknowledged. The server answers 503 until the project's definitions
    (`profiles/`) are stored, so "ready" means /metadata answers 200.
    """

    def __init__(
        self,
        port: int | None = None,
        data_dir: Path | None = None,
        log_path: Path | None = None,
        java: str = "java",
        heap: str = HEAP,
        *,
        lenient: bool = False,
        database_url: str | None = None,
        profile: str = "everyday",
    ) -> None:
        if data_dir is not None and database_url is not None:
            raise HapiError("give data_dir (H2 file) or database_url (JDBC), not both")
        if profile not in PROFILES:
            raise HapiError(f"profile {profile!r}: use one of {', '.join(PROFILES)}")
        self.port = port
        # A JDBC URL (jdbc:postgresql://127.0.0.1:PORT/DB?user=U, as hapi/pg/pgctl.sh prints it).
        self.database_url = database_url
        self.profile = profile
        # Set after construction (sandbox --jar; the CLI's stderr): the jar to run, None = the
        # one `find_jar` finds; where "building the jar ..." is said on a first-use build.
        self.jar: Path | None = None
        self.notice: Callable[[str], None] | None = None
        # Lenient: HAPI's production defaults (unknown extensions allowed, terminology it cannot
        # check as warnings) so real-world records load; strict (default) is what the tests of
        # the project's own output run against.
        self.lenient = lenient
        self.data_dir = data_dir.resolve() if data_dir else None
        self.java = java
        self.heap = heap
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self._bound_port: int | None = None
        self.started_in: float | None = None  # seconds the last start took
        self._peak_rss_kb = 0

    @classmethod
    def attach(cls, base_url: str) -> HapiServer:
        """A handle on a test server started elsewhere (reset and counts work; start does not)."""
        port = urlsplit(base_url).port
        if port is None:
            raise HapiError(f"{base_url}: no port")
        server = cls(port=port)
        server._bound_port = port
        return server

    # --- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> HapiServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._bound_port is None:
            raise HapiError("HAPI test server is not running: call start() first")
        return f"http://127.0.0.1:{self._bound_port}/fhir"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def log_path(self) -> Path:
        if self._log_path is None:
            self._log_path = Path(tempfile.mkdtemp(prefix="fhir-cyclo-hapi-")) / "hapi.log"
        return self._log_path

    def _argv(self) -> list[str]:
        java = shutil.which(self.java)
        if java is None:
            raise HapiError(
                f"Java not found ({self.java!r} is not on PATH): the HAPI test server needs a"
                " Java 17+ runtime (Debian: apt-get install openjdk-17-jdk-headless)"
            )
        jar = find_jar(self.jar, notice=self.notice)
        return [
            java,
            f"-Xmx{self.heap}",
            # Two cores: a serial collector leaves the CPU to the request threads.
            "-XX:+UseSerialGC",
            f"-Dfhircyclo.lenient={'true' if self.lenient else 'false'}",
            "-jar",
            str(jar),
        ]

    def _env(self, port: int) -> dict[str, str]:
        env = dict(os.environ)
        env["FHIR_CYCLO_HAPI_PORT"] = str(port)
        env[DEFINITIONS_ENV] = str(definitions_dir())
        env["FHIR_CYCLO_HAPI_PROFILE"] = self.profile
        if self.database_url is not None:
            env["FHIR_CYCLO_HAPI_DB"] = self.database_url
        elif self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            # WRITE_DELAY=0: every commit reaches the file before HAPI answers, so a SIGKILL
            # loses nothing that was acknowledged (H2's default flushes once a second).
            env["FHIR_CYCLO_HAPI_DB"] = f"jdbc:h2:file:{self.data_dir / 'hapi'};WRITE_DELAY=0"
        else:
            env.pop("FHIR_CYCLO_HAPI_DB", None)
        return env

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start the server and wait until it is ready; returns the base URL."""
        if self.port is not None and _port_busy(self.port):
            raise HapiError(
                f"port {self.port} on 127.0.0.1 is busy: stop what uses it or pick --port"
            )
        return self._start(self.port or _free_port(), timeout)

    def restart(self, timeout: float = START_TIMEOUT) -> str:
        """Start again on the previous port (same base URL); with `data_dir`, same data."""
        if self._bound_port is None:
            raise HapiError("restart() needs a previous start()")
        port = self._bound_port
        self.stop()
        return self._start(port, timeout)

    def _start(self, port: int, timeout: float) -> str:
        if self._process is not None and self._process.poll() is None:
            return self.base_url
        argv = self._argv()
        if not definitions_dir().is_dir():
            raise HapiError(f"project definitions folder {definitions_dir()} is missing")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            try:
                self._process = subprocess.Popen(
                    argv,
                    env=self._env(port),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no Python state
                )
            except OSError as exc:
                raise HapiError(f"cannot run {argv[0]}: {exc}") from exc
        self._bound_port = port
        self._wait_ready(timeout)
        self.started_in = time.monotonic() - began
        return self.base_url

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"{self.base_url}/metadata"
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise HapiError(
                    f"HAPI test server exited with code {code} while starting"
                    f" (log {self.log_path})",
                    log_tail=self.log_tail(),
                )
            try:
                if requests.get(url, timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise HapiError(
                    f"HAPI test server not ready within {timeout:.0f}s (log {self.log_path})",
                    log_tail=tail,
                )
            self._sample_rss()
            time.sleep(1.0)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def wait(self) -> int:
        """Block until the server process exits by itself; its exit code.

        Signals interrupt the wait (PEP 475 retries `waitpid` only when the handler returns), so a
        Ctrl-C or a SIGTERM handler that raises reaches the caller at once.
        """
        proc = self._process
        if proc is None:
            raise HapiError("the HAPI test server is not running")
        code = proc.wait()
        self._process = None
        return code

    def stop(self, grace: float = 20.0) -> None:
        """Stop gracefully (SIGTERM), then SIGKILL after `grace` seconds."""
        proc = self._process
        if proc is None:
            return
        self._sample_rss()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed or closed by the server."""
        proc = self._process
        if proc is None:
            return
        self._sample_rss()
        proc.kill()
        proc.wait()
        self._process = None

    # --- measurements and test helpers -----------------------------------------------------------

    def _sample_rss(self) -> None:
        if self._process is None:
            return
        try:
            status = Path(f"/proc/{self._process.pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):  # the kernel's high-water mark of resident memory
                self._peak_rss_kb = max(self._peak_rss_kb, int(line.split()[1]))

    @property
    def peak_rss_mb(self) -> float:
        self._sample_rss()
        return self._peak_rss_kb / 1024

    def reset(self) -> None:
        """Delete every clinical resource, keeping the project's definitions.

        `$expunge` with expungeEverything would also drop the StructureDefinitions, and HAPI 8.8
        refuses to store them again over REST (its validator cannot snapshot them: "Unable to
        resolve package id hl7.fhir.r4.core#null"), so the server loads them itself at start and a
        reset deletes the clinical data with `_cascade=delete` instead.
        """
        reset_clinical_data(self.base_url)

    def counts(self, types: tuple[str, ...] = ()) -> dict[str, int]:
        """Resources stored per type (types with none left out); all clinical types by default."""
        wanted = types or CLINICAL_TYPES
        return resource_counts(self.base_url, wanted)


CLINICAL_TYPES = (
    "Patient",
    "Condition",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationAdministration",
    "Medication",
    "Observation",
    "Procedure",
    "AdverseEvent",
    "DiagnosticReport",
)


def resource_counts(base_url: str, types: tuple[str, ...] = CLINICAL_TYPES) -> dict[str, int]:
    out: dict[str, int] = {}
    with requests.Session() as session:
        for rtype in types:
            response = session.get(
                f"{base_url}/{rtype}",
                params={"_summary": "count"},
                headers={"Cache-Control": "no-cache"},
                timeout=60,
            )
            response.raise_for_status()
            total = int(response.json().get("total", 0))
            if total:
                out[rtype] = total
    return out


def jdbc_url(database: str) -> str:
    """A JDBC URL for HAPI from `jdbc:postgresql://...` or `postgresql://[user[:pw]@]host[:port]/db`.

    The user and password of a postgresql:// URL become JDBC query parameters (the driver reads
    `user` and `password` there); anything else is refused with the accepted spellings.
    """
    if database.startswith("jdbc:postgresql://"):
        return database
    parts = urlsplit(database)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or not parts.path[1:]:
        raise HapiError(
            f"database {_without_password(database)!r}: give jdbc:postgresql://HOST:PORT/DB or "
            "postgresql://USER@HOST:PORT/DB"
        )
    query = parse_qsl(parts.query)
    if parts.username:
        query.append(("user", unquote(parts.username)))
    if parts.password:
        query.append(("password", unquote(parts.password)))
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{host}:{parts.port}" if parts.port else host
    tail = f"?{urlencode(query)}" if query else ""
    return f"jdbc:postgresql://{netloc}/{quote(parts.path[1:])}{tail}"


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


def reset_clinical_data(base_url: str, rounds: int = 5) -> None:
    """Cascade-delete every Patient (and what refers to it), then whatever is left, by type.

    One cascading delete can meet a resource twice (a Condition citing an Observation of the same
    Patient) and give up with a version conflict (HAPI-0550); a further round finishes the rest.
    """
    with requests.Session() as session:
        for _ in range(rounds):
            left = resource_counts(base_url)
            if not left:
                return
            for rtype in ("Patient", *left):
                session.delete(
                    f"{base_url}/{rtype}",
                    params={"_lastUpdated": "ge1900-01-01", "_cascade": "delete"},
                    timeout=300,
                )
    left = resource_counts(base_url)
    if left:
        raise HapiError(f"reset: resources left after {rounds} rounds: {left}")
