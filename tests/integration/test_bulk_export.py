"""Integration: the cohort pushed to the server, Bulk-exported (Group/$export), scored from the
folder == scored from the files; a client killed (SIGKILL) mid-download resumes without
fetching its finished files again, with the same result."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from fhir_cyclo.cli.app import main
from fhir_cyclo.client.bulk import MANIFEST, STATE_FILE
from tests.conftest import FIXTURES
from tests.integration.conftest import Server
from tests.unit.test_score_end_to_end import without_warning_sources

pytestmark = pytest.mark.integration
# HAPI answers every status poll with Retry-After: 120 while its batch job takes ~1-2 minutes.
FAST = ("--max-poll-wait", "5")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhir_cyclo.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=900,
    )


def scores(*paths: Path) -> list[dict[str, Any]]:
    result = cli("score", *map(str, paths), "--json", "-")
    assert result.returncode == 0, result.stderr
    # Patient warnings name the Patient by id or by a hash depending on the input form.
    doc = without_warning_sources(json.loads(result.stdout))
    patients: list[dict[str, Any]] = doc["patients"]
    return patients


class SlowFiles:
    """A proxy to the server that slows file downloads (so a client can be killed between
    files), rewrites the server's own address in answers to its own, and logs every path."""

    def __init__(self, upstream: str, delay: float = 1.5) -> None:
        self.upstream = urlsplit(upstream)
        self.delay = delay
        self.paths: list[str] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.upstream.path}"

    def __enter__(self) -> SlowFiles:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self
        up = self.upstream
        up_origin = f"{up.scheme}://{up.netloc}"

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def _forward(self) -> None:
                own_origin = f"http://127.0.0.1:{proxy.port}"
                proxy.paths.append(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "accept-encoding", "connection")
                }
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=300)
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read().replace(up_origin.encode(), own_origin.encode())
                if "/Binary/" in self.path:
                    time.sleep(proxy.delay)
                conn.close()
                # The client may have been killed meanwhile (that is the test): a broken pipe.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.send_response(answer.status)
                    for key, value in answer.getheaders():
                        if key.lower() in ("transfer-encoding", "content-length", "connection"):
                            continue
                        self.send_header(key, value.replace(up_origin, own_origin))
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            do_GET = do_DELETE = do_POST = _forward

        return Handler


def _patient_ids(server: Server, bundles: Path) -> list[str]:
    ids = []
    with server.client() as client:
        for path in sorted(bundles.glob("*.json")):
            bundle = json.loads(path.read_text())
            patient = next(
                e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
            )
            ident = patient["identifier"][0]
            found = list(
                client.search("Patient", {"identifier": f"{ident['system']}|{ident['value']}"})
            )
            assert len(found) == 1, path
            ids.append(found[0]["id"])
    return ids


@pytest.fixture(scope="module")
def pushed_cohort(
    fhir_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """The fixtures exported and pushed once; a Group of their Patients (the export's scope, so a
    shared server's other data stays out)."""
    fhir_server.reset()
    bundles = tmp_path_factory.mktemp("bundles")
    assert main(["export", str(FIXTURES), "--out", str(bundles)]) == 0
    pushed = cli(
        "push",
        str(bundles),
        "--server",
        fhir_server.base_url,
        "--no-progress",
        "--no-journal",
    )
    assert pushed.returncode == 0, pushed.stderr
    members = [
        {"entity": {"reference": f"Patient/{pid}"}} for pid in _patient_ids(fhir_server, bundles)
    ]
    group = {"resourceType": "Group", "type": "person", "actual": True, "member": members}
    with fhir_server.client() as client:
        created = client.create(group)
    assert created.id
    return bundles, created.id


def test_bulk_export_scores_like_the_files(
    fhir_server: Server, pushed_cohort: tuple[Path, str], tmp_path: Path
) -> None:
    bundles, group = pushed_cohort
    folder = tmp_path / "bulk"
    result = cli(
        "bulk-export",
        "--server",
        fhir_server.base_url,
        "--group",
        group,
        "--out",
        str(folder),
        "--no-progress",
        *FAST,
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((folder / MANIFEST).read_text())
    assert {o["type"] for o in manifest["output"]} >= {"Patient", "Condition", "Observation"}
    assert not (folder / STATE_FILE).exists()
    from_files = scores(bundles)
    assert len(from_files) == 14
    assert scores(folder) == from_files
    # score --bulk does the same in one command.
    one = cli(
        "score",
        "--server",
        fhir_server.base_url,
        "--bulk",
        "--group",
        group,
        "--bulk-dir",
        str(tmp_path / "b2"),
        "--json",
        "-",
        "--no-progress",
        *FAST,
    )
    assert one.returncode == 0, one.stderr
    assert without_warning_sources(json.loads(one.stdout))["patients"] == from_files


def test_killed_download_resumes_without_refetching(
    fhir_server: Server, pushed_cohort: tuple[Path, str], tmp_path: Path
) -> None:
    bundles, group = pushed_cohort
    folder = tmp_path / "bulk"
    with SlowFiles(fhir_server.base_url) as proxy:
        argv = [
            sys.executable,
            "-m",
            "fhir_cyclo.cli.app",
            "bulk-export",
            "--server",
            proxy.base_url,
            "--group",
            group,
            "--out",
            str(folder),
            "--no-progress",
            *FAST,
        ]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        state_path = folder / STATE_FILE
        deadline = time.monotonic() + 600
        finished: dict[str, Any] = {}
        while time.monotonic() < deadline and process.poll() is None:
            if state_path.is_file():
                try:
                    finished = json.loads(state_path.read_text()).get("files") or {}
                except json.JSONDecodeError:
                    finished = {}  # caught between write and rename: look again
                if finished:
                    break
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL

        state = json.loads(state_path.read_text())
        outputs = state["manifest"]["output"] + (state["manifest"].get("error") or [])
        done = set(state["files"])
        assert 1 <= len(done) < len(outputs)  # killed in the middle
        assert not (folder / MANIFEST).exists()

        proxy.paths.clear()
        again = cli(
            "bulk-export",
            "--server",
            proxy.base_url,
            "--group",
            group,
            "--out",
            str(folder),
            "--no-progress",
            *FAST,
        )
        assert again.returncode == 0, again.stderr
        refetched = [
            p
            for p in proxy.paths
            if any(
                urlsplit(u).path + ("?" + urlsplit(u).query if urlsplit(u).query else "") == p
                for u in done
            )
        ]
        assert refetched == []
        # The job is resumed, not started again; the one new kick-off allowed is the second
        # export for types the first lacked, which goes without _typeFilter (issue 25).
        jobs = [p for p in proxy.paths if p.split("?")[0].endswith("/$export")]
        assert len(jobs) <= 1 and not any("_typeFilter" in p for p in jobs), jobs
        assert (
            f"({len(outputs) - len(done)} downloaded now, {len(done)} already there)"
            in again.stderr
        )
    assert scores(folder) == scores(bundles)
