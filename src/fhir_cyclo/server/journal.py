"""Push journal: a JSONL line per case a server acknowledged (fsynced in groups), for --resume."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote

import orjson

from fhir_cyclo.core.errors import FhirCycloError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock, the journal still works
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("fhir_cyclo.server.journal")

DEFAULT_JOURNAL = Path(".fhir-cyclo") / "push-journal.jsonl"
FORMAT_VERSION = 1
# Lines are written one by one as cases are acknowledged (a killed process loses none: the kernel
# holds them) but fsynced at most once per interval and on close. A line lost to a power cut
# only means that case is sent again on --resume, which updates it in place (deterministic ids):
# durability per line bought nothing but a disk flush per case beside the server's own writes.
SYNC_INTERVAL_S = 1.0
_PATIENT_CONDITIONAL = "Patient?identifier="


class JournalError(FhirCycloError):
    """The journal cannot be opened, locked or appended to."""


def bundle_digest(data: bytes) -> str:
    """sha256 of the exact bytes sent: an edited case gets a new digest and is pushed again."""
    return hashlib.sha256(data).hexdigest()


def case_key(label: str, data: bytes, identifier: str | None = None) -> str:
    """sha256 of the case identifier token (system|value), so the journal holds no identifier.

    The token is read from the Bundle itself (its Patient), which gives the same key whether the
    case was pushed from a case file, a cohort folder or an exported Bundle. A Bundle without a
    Patient identifier falls back to its label (the file path). `identifier`: the token, when
    the caller built the Bundle from it (`bundle.transaction_bundle` puts exactly that token in
    the Patient's conditional URL), which spares parsing the Bundle again.
    """
    token = identifier if identifier is not None else _identifier_token(data)
    material = f"identifier:{token}" if token is not None else f"label:{label}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _identifier_token(data: bytes) -> str | None:
    try:
        bundle = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return bundle_identifier(bundle)


def bundle_identifier(bundle: Any) -> str | None:
    """The identifier token of a transaction Bundle's Patient (None: none found)."""
    # Any JSON can arrive here (a Bundle file is only checked by the server): wrong shapes mean
    # "no identifier", never an exception.
    entries = bundle.get("entry") if isinstance(bundle, Mapping) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping):
            continue
        resource = entry.get("resource")
        if not isinstance(resource, Mapping) or resource.get("resourceType") != "Patient":
            continue
        request = entry.get("request")
        url = request.get("url") if isinstance(request, Mapping) else None
        # The conditional URL is how the server itself recognises the case; prefer it.
        if isinstance(url, str) and url.startswith(_PATIENT_CONDITIONAL):
            return unquote(url[len(_PATIENT_CONDITIONAL) :].split("&", 1)[0])
        idents = resource.get("identifier")
        for ident in idents if isinstance(idents, list) else []:
            if isinstance(ident, Mapping) and ident.get("value"):
                return f"{ident.get('system', '')}|{ident['value']}"
    return None


def _parse_lines(raw: bytes, path: Path) -> list[dict[str, Any]]:
    """Complete JSON lines; an unparsable line only costs a re-push of that case, so skip it."""
    records: list[dict[str, Any]] = []
    lines = raw.split(b"\n")
    # Text after the last newline is a line whose write was cut short (kill -9, power loss).
    complete, torn = lines[:-1], lines[-1]
    if torn:
        log.warning("%s: ignoring a torn last line (%d bytes)", path, len(torn))
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("%s:%d: not JSON, ignored (that case will be pushed again)", path, number)
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


class PushJournal:
    """The acknowledged cases of one server, loaded from and appended to a JSONL file.

    Each line: {"v": 1, "server": base URL, "case": case_key, "bundle": bundle_digest,
    "entries": n, "at": UTC timestamp}. Lines of other servers are kept and ignored. The file is
    locked for the lifetime of the object so two pushes cannot interleave repairs and appends.
    """

    def __init__(self, path: Path, server: str) -> None:
        self.path = path
        self.server = server
        self._acked: set[tuple[str, str]] = set()
        self._fd: int | None = None
        self._synced_at = time.monotonic()
        self._unsynced = 0  # lines written since the last fsync
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # 0600: case keys are hashes of identifiers, still not something to share.
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot open the push journal {path}: {exc}") from None
        try:
            self._lock()
            self._load_and_repair()
        except BaseException:
            self.close()
            raise

    def _lock(self) -> None:
        if fcntl is None or self._fd is None:  # pragma: no cover - Windows
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JournalError(
                f"the push journal {self.path} is in use by another fhir-cyclo push; "
                "wait for it, or give this run its own --journal FILE"
            ) from None

    def _load_and_repair(self) -> None:
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        raw = os.pread(self._fd, size, 0) if size else b""
        for record in _parse_lines(raw, self.path):
            if record.get("server") == self.server and record.get("v") == FORMAT_VERSION:
                case, digest = record.get("case"), record.get("bundle")
                if isinstance(case, str) and isinstance(digest, str):
                    self._acked.add((case, digest))
        end = raw.rfind(b"\n") + 1
        if end < len(raw):
            # Cut the torn fragment off, or the next append would glue onto it.
            os.ftruncate(self._fd, end)
            os.fsync(self._fd)

    def __len__(self) -> int:
        """Acknowledged (case, bundle) pairs for this server."""
        return len(self._acked)

    def acknowledged(self, key: str, digest: str) -> bool:
        """True when this server acknowledged exactly this Bundle of this case before."""
        return (key, digest) in self._acked

    def record(self, key: str, digest: str, *, entries: int) -> None:
        """Append one acknowledged case; fsync when SYNC_INTERVAL_S has passed since the last."""
        if self._fd is None:
            raise JournalError(f"the push journal {self.path} is closed")
        line = orjson.dumps(
            {
                "v": FORMAT_VERSION,
                "server": self.server,
                "case": key,
                "bundle": digest,
                "entries": entries,
                "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            }
        )
        try:
            # One write per line (O_APPEND): a crash leaves at most a torn last line.
            data = memoryview(line + b"\n")
            while data:
                data = data[os.write(self._fd, data) :]
            self._unsynced += 1
            if time.monotonic() - self._synced_at >= SYNC_INTERVAL_S:
                self.sync()
        except OSError as exc:
            raise JournalError(f"cannot write the push journal {self.path}: {exc}") from None
        self._acked.add((key, digest))

    def sync(self) -> None:
        """fsync the lines written so far (record does it at most once per SYNC_INTERVAL_S)."""
        if self._fd is not None and self._unsynced:
            os.fsync(self._fd)
            self._unsynced = 0
        self._synced_at = time.monotonic()

    def close(self) -> None:
        """fsync what is left, release the lock and the file; safe to call twice."""
        try:
            self.sync()
        except OSError as exc:
            log.warning("cannot fsync the push journal %s: %s", self.path, exc)
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor also drops the flock

    def __enter__(self) -> PushJournal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
