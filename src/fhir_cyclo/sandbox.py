"""Start, stop, kill and restart the bundled FHIR R4 test server (sandbox/server.mjs, Medplum)."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO
from urllib.parse import urlsplit

import requests

from fhir_cyclo.errors import FhirCycloError

_LISTENING = "LISTENING "
_ENV_DIR = "FHIR_CYCLO_SANDBOX_DIR"


class SandboxError(FhirCycloError):
    """The sandbox server could not be started, stopped or reached."""


def default_sandbox_dir() -> Path:
    """The repo's sandbox/ folder, or $FHIR_CYCLO_SANDBOX_DIR when set."""
    override = os.environ.get(_ENV_DIR)
    if override:
        return Path(override).resolve()
    return Path(__file__).resolve().parents[2] / "sandbox"


class Sandbox:
    """A sandbox FHIR server process on 127.0.0.1; use as a context manager.

    >>> with Sandbox() as sbx:  # doctest: +SKIP
    ...     requests.get(f"{sbx.base_url}/metadata")

    The store lives in memory unless `data_dir` is given: then every committed write is logged
    and fsynced there before it is acknowledged, and replayed on start, so `kill()` followed by
    `restart()` (same port, same base URL) keeps everything a client was told was stored.
    """

    def __init__(
        self,
        port: int = 0,
        node: str = "node",
        sandbox_dir: Path | None = None,
        data_dir: Path | None = None,
    ) -> None:
        self.port = port
        self.node = node
        self.sandbox_dir = sandbox_dir.resolve() if sandbox_dir else default_sandbox_dir()
        self.data_dir = data_dir.resolve() if data_dir else None
        self._bound_port: int | None = None
        self._process: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._base_url: str | None = None
        self._session: requests.Session | None = None
        self._pump: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """Base URL like http://127.0.0.1:PORT/fhir; only valid after start()."""
        if self._base_url is None:
            raise SandboxError("sandbox is not running: call start() first")
        return self._base_url

    def __enter__(self) -> Sandbox:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _check_install(self) -> list[str]:
        node = shutil.which(self.node)
        if node is None:
            raise SandboxError(
                f"Node.js executable {self.node!r} not found on PATH; the sandbox needs Node >= 20"
            )
        server = self.sandbox_dir / "server.mjs"
        if not server.is_file():
            raise SandboxError(f"sandbox server not found at {server} (set {_ENV_DIR})")
        if not (self.sandbox_dir / "node_modules" / "@medplum" / "fhir-router").is_dir():
            raise SandboxError(
                f"sandbox dependencies are not installed in {self.sandbox_dir / 'node_modules'}; "
                "run: npm ci --prefix sandbox"
            )
        argv = [node, str(server), "--port", str(self.port), "--exit-with-parent"]
        if self.data_dir is not None:
            argv += ["--data", str(self.data_dir)]
        return argv

    def _stderr_tail(self, limit: int = 4000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()[-limit:].strip()

    @property
    def pid(self) -> int | None:
        """Process id of the running server, None when it is not running."""
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = 30.0) -> str:
        """Start the server and wait for its LISTENING line; returns the base URL."""
        return self._start(timeout, self.port)

    def restart(self, timeout: float = 30.0) -> str:
        """Start again on the port of the previous run, so clients keep the same base URL.

        Stops the server first if it is still running. With `data_dir`, the store comes back
        as it was at the last acknowledged write.
        """
        if self._bound_port is None:
            raise SandboxError("restart() needs a previous start()")
        self.stop()
        return self._start(timeout, self._bound_port)

    def _start(self, timeout: float, port: int) -> str:
        if self._process is not None and self._process.poll() is None:
            return self.base_url
        argv = self._check_install()
        argv[argv.index("--port") + 1] = str(port)
        # stderr goes to a temp file: an unread pipe could fill up and block the server.
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                argv,
                cwd=self.sandbox_dir,
                # The server exits when this pipe closes (--exit-with-parent), even on SIGKILL.
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                text=True,
                encoding="utf-8",
            )
        except OSError as exc:
            self._close_files()
            raise SandboxError(f"cannot run {argv[0]}: {exc}") from exc
        lines: queue.Queue[str | None] = queue.Queue()
        stdout = self._process.stdout
        assert stdout is not None

        def pump() -> None:
            # Drains stdout for the life of the process (readline blocks, hence a thread).
            for line in stdout:
                lines.put(line)
            lines.put(None)

        self._pump = threading.Thread(target=pump, name="sandbox-stdout", daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tail = self._stderr_tail() or "(empty)"
                self.stop()
                raise SandboxError(
                    f"sandbox did not print LISTENING within {timeout:.0f}s; stderr: {tail}"
                )
            try:
                line = lines.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            if line is None:
                code = self._process.wait()
                tail = self._stderr_tail()
                self.stop()
                raise SandboxError(
                    f"sandbox exited with code {code} before listening; stderr: {tail}"
                )
            if line.startswith(_LISTENING):
                self._base_url = line[len(_LISTENING) :].strip()
                self._bound_port = urlsplit(self._base_url).port
                self._session = requests.Session()
                return self._base_url

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s); safe to call twice."""
        self._shutdown(graceful=True)

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: no shutdown code runs. Safe to call twice."""
        self._shutdown(graceful=False)

    def _shutdown(self, *, graceful: bool) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            if graceful:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
            else:
                process.kill()
                process.wait(timeout=5)
        if self._pump is not None:
            self._pump.join(timeout=5)  # it ends at EOF; closing stdout under it would raise
            self._pump = None
        if process is not None:
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    stream.close()
        if self._session is not None:
            self._session.close()
            self._session = None
        self._base_url = None
        self._close_files()

    def _close_files(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _request(self, method: str, path: str) -> requests.Response:
        if self._session is None:
            raise SandboxError("sandbox is not running: call start() first")
        url = f"{self.base_url}/{path}"
        try:
            response = self._session.request(method, url, timeout=60)
        except requests.RequestException as exc:
            raise SandboxError(f"{method} {url} failed: {exc}") from exc
        if response.status_code != 200:
            raise SandboxError(
                f"{method} {url} -> HTTP {response.status_code}: {response.text[:500]}"
            )
        return response

    def reset(self) -> None:
        """Delete every resource in the sandbox (POST [base]/$reset)."""
        self._request("POST", "$reset")

    def counts(self) -> dict[str, int]:
        """Current resources per type (GET [base]/_admin/count); types with 0 are omitted."""
        data = self._request("GET", "_admin/count").json()
        if not isinstance(data, dict):
            raise SandboxError(f"unexpected _admin/count response: {data!r}")
        return {str(k): int(v) for k, v in data.items()}
