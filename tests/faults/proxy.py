"""A fault-injecting HTTP proxy on 127.0.0.1 for transaction POSTs: scripted 429/503/400, resets, delays."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

# Faults, applied to transaction POSTs ([base] only; /metadata and reads always pass):
PASS = "pass"
TOO_MANY = "429"  # answered by the proxy with Retry-After, nothing forwarded
UNAVAILABLE = "503"  # answered by the proxy, nothing forwarded
REJECT = "400"  # answered by the proxy with an OperationOutcome, nothing forwarded
RESET = "reset"  # connection reset (RST) before forwarding: the server never saw it
RESET_AFTER = "reset-after"  # forwarded and committed, then RST instead of the answer
SLOW = "slow"  # forwarded and committed, answer held back beyond the client's read timeout
FAULTS = (TOO_MANY, UNAVAILABLE, REJECT, RESET, RESET_AFTER, SLOW)

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}


@dataclass
class _Rule:
    """Faults for the transactions whose body contains `contains`: `actions` one by one, then
    `forever` (None: pass). `hits` counts the matching transactions received."""

    contains: bytes
    actions: list[str]
    forever: str | None = None
    hits: int = 0


class FaultProxy:
    """Forwards to `upstream` (a FHIR base URL) and injects faults into transactions.

    `script(...)`: one-shot faults, each used by the next transaction that arrives. `for_case(...)`:
    faults for the first attempts of the transactions whose body contains a marker (one case), so
    concurrent workers cannot steal each other's faults. `always(...)`: a fault for every matching
    transaction, until `clear()`. Counters:
    `received`/`forwarded` transactions and `injected[action]`. Bounded: at most
    `max_connections` client connections at once, idle ones time out, and the whole proxy shuts
    itself down after `lifetime` seconds if a test forgets to.
    """

    def __init__(
        self,
        upstream: str,
        *,
        slow_seconds: float = 1.5,
        retry_after: int = 1,
        max_connections: int = 16,
        lifetime: float = 300.0,
    ) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port, upstream
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.base_path = parts.path.rstrip("/")
        self.slow_seconds = slow_seconds
        self.retry_after = retry_after
        self.received = 0
        self.forwarded = 0
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._script: list[str] = []
        self._rules: list[_Rule] = []
        self._stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._timer = threading.Timer(lifetime, self.stop)
        self._timer.daemon = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.base_path}"

    @property
    def injected_total(self) -> int:
        return sum(self.injected.values())

    def script(self, actions: Iterable[str]) -> None:
        with self._lock:
            self._script.extend(actions)

    def for_case(self, contains: bytes, actions: Iterable[str]) -> _Rule:
        rule = _Rule(contains, list(actions))
        with self._lock:
            self._rules.append(rule)
        return rule

    def always(self, action: str, contains: bytes = b"") -> _Rule:
        rule = _Rule(contains, [], forever=action)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._script.clear()
            self._rules.clear()

    def pending(self) -> int:
        """One-shot and per-case faults not yet used."""
        with self._lock:
            left = self._script + [a for rule in self._rules for a in rule.actions]
            return sum(a != PASS for a in left)

    def _next_action(self, body: bytes) -> str:
        with self._lock:
            self.received += 1
            for rule in self._rules:
                if rule.contains in body:
                    rule.hits += 1
                    action = rule.actions.pop(0) if rule.actions else (rule.forever or PASS)
                    break
            else:
                action = self._script.pop(0) if self._script else PASS
            if action != PASS:
                self.injected[action] += 1
            return action

    def start(self) -> FaultProxy:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()  # wakes handlers holding back a slow answer
        self._timer.cancel()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
        # Bounded: the accept loop waits for a free slot instead of spawning without limit.
        self.proxy._slots.acquire()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.proxy._slots.release()
            raise

    def process_request_thread(self, request, client_address):  # type: ignore[no-untyped-def]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.proxy._slots.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real server behind requests' pool
    timeout = 30  # idle keep-alive connections end; the thread with them
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def setup(self) -> None:
        super().setup()
        self._upstream: http.client.HTTPConnection | None = None

    def finish(self) -> None:
        # The socket may have been reset on purpose, or the client went away.
        with contextlib.suppress(OSError, ValueError):
            super().finish()
        if self._upstream is not None:
            self._upstream.close()

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

    def _handle(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        is_transaction = (
            self.command == "POST" and urlsplit(self.path).path.rstrip("/") == proxy.base_path
        )
        action = proxy._next_action(body) if is_transaction else PASS
        if action == TOO_MANY:
            self._answer(
                429, "FAULT-0429: too many requests", {"Retry-After": str(proxy.retry_after)}
            )
        elif action == UNAVAILABLE:
            self._answer(503, "FAULT-0503: service unavailable")
        elif action == REJECT:
            self._answer(400, "FAULT-0400: scripted rejection of this transaction")
        elif action == RESET:
            self._reset()
        else:
            response = self._forward(body, is_transaction)
            if response is None:
                self._reset()  # the server is gone: the client sees what a dead server gives
            elif action == RESET_AFTER:
                self._reset()
            elif action == SLOW:
                proxy._stopping.wait(proxy.slow_seconds)
                self._relay(*response)
                self.close_connection = True
            else:
                self._relay(*response)

    def _forward(
        self, body: bytes, is_transaction: bool
    ) -> tuple[int, str, list[tuple[str, str]], bytes] | None:
        proxy = self.server.proxy
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        for attempt in range(2):
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=30
                )
            try:
                self._upstream.request(self.command, self.path, body=body or None, headers=headers)
                if is_transaction and attempt == 0:
                    with proxy._lock:
                        proxy.forwarded += 1
                raw = self._upstream.getresponse()
                return raw.status, raw.reason, raw.getheaders(), raw.read()
            except (OSError, http.client.HTTPException):
                self._upstream.close()
                self._upstream = None
                if attempt == 1 or is_transaction:
                    # Never re-send a transaction here: the client's own retries are under test.
                    return None
        return None

    def _relay(
        self, status: int, reason: str | None, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        try:
            self.send_response(status, reason)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client gave up (read timeout): nothing to do

    def _answer(self, status: int, text: str, extra: dict[str, str] | None = None) -> None:
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "transient", "diagnostics": text}],
        }
        body = json.dumps(outcome).encode()
        headers = [("Content-Type", "application/fhir+json"), *(extra or {}).items()]
        self._relay(status, None, headers, body)

    def _reset(self) -> None:
        # SO_LINGER 0 makes close() send RST: the client sees "connection reset by peer".
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        self.close_connection = True
