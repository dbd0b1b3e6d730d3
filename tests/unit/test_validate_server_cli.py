"""`validate --server` exit codes without a FHIR server: 2 before any work, 3 for a bad server."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fhir_cyclo.cli.app import main
from tests.conftest import CASE_REPORT


class _Handler(BaseHTTPRequestHandler):
    """A server that answers /metadata with a FHIR R5 CapabilityStatement and counts requests."""

    requests: list[str] = []  # noqa: RUF012 - shared log of paths, reset by the fixture

    def do_GET(self) -> None:
        self.requests.append(self.path)
        body = json.dumps(
            {"resourceType": "CapabilityStatement", "fhirVersion": "5.0.0", "status": "active"}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self.requests.append(self.path)
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def r5_server() -> Iterator[str]:
    _Handler.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/fhir"
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_non_r4_server_is_exit_3_and_nothing_is_validated(
    r5_server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "--server", r5_server, str(CASE_REPORT)]) == 3
    err = capsys.readouterr().err
    assert "FHIR 5.0.0" in err and "R4" in err
    assert _Handler.requests == ["/fhir/metadata"]  # no $validate was sent


def test_unreachable_server_is_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/fhir"
    assert main(["validate", "--server", url, str(CASE_REPORT)]) == 3
    assert "cannot reach FHIR server" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workers", "0"], "--workers must be 1 or more"),
        (["missing-file.json"], "missing-file.json: no such file or folder"),
    ],
)
def test_usage_errors_are_exit_2_before_contacting_the_server(
    r5_server: str, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["validate", "--server", r5_server, str(CASE_REPORT), *extra]) == 2
    assert message in capsys.readouterr().err
    assert _Handler.requests == []  # before any work


def test_bad_server_url_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    """Not http(s): a command-line mistake."""
    assert main(["validate", "--server", "ftp://example.org/fhir", str(CASE_REPORT)]) == 2
    err = capsys.readouterr().err  # one line, the CLI's usage-error form (cli.check_validate)
    assert err.startswith("fhir-cyclo") and "error:" in err and len(err.splitlines()) == 1


def test_plain_http_off_loopback_is_refused_with_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    """The http guard refuses as it does for push and score: exit 3, naming --allow-http."""
    assert main(["validate", "--server", "http://example.org/fhir", str(CASE_REPORT)]) == 3
    err = capsys.readouterr().err
    assert "--allow-http" in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_without_server_validate_stays_local() -> None:
    """No --server: the local checks, unchanged (no request, no server options needed)."""
    assert main(["validate", str(CASE_REPORT)]) == 0
