"""FHIR Bulk Data Access (IG v2) client: kick-off, status polling, resumable download, cleanup.

Flow (https://hl7.org/fhir/uv/bulkdata/export.html): GET `[base]/Patient/$export` (or
`Group/[id]/$export`) with `Prefer: respond-async` -> 202 + Content-Location (the status URL);
poll it (202 + X-Progress / Retry-After) until 200 with the manifest; download every `output`
and `error` file; DELETE the status URL. The output folder gets the standard layout: one NDJSON
file per manifest entry plus `manifest.json` whose `url`s name those files.

Resuming: `.fhir-cyclo-bulk.json` in the output folder records the job (status URL, manifest)
and each finished file (name, lines, bytes), fsynced after every file. A re-run with the same
request skips the kick-off and the finished files; a different request starts over.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin

import orjson
import requests
import urllib3
from tqdm import tqdm

from fhir_cyclo.client.http import origin, parse_retry_after
from fhir_cyclo.core.errors import (
    FatalTransportError,
    FhirCycloError,
    NotFound,
    OperationOutcome,
    ServerError,
)

log = logging.getLogger("fhir_cyclo.client")

# The resources scoring reads (issue 10): Medication is not in the Patient compartment, so a
# Patient/Group export does not carry it; medicationReference users fall back to a warning.
DEFAULT_TYPES = (
    "Patient",
    "Condition",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationAdministration",
    "Observation",
    "Procedure",
)
STATE_FILE = ".fhir-cyclo-bulk.json"
MANIFEST = "manifest.json"
NDJSON = "application/fhir+ndjson"
_GZIP_MAGIC = b"\x1f\x8b"
_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*%")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class BulkExportError(FhirCycloError):
    """The export job failed, expired, or a file could not be fetched intact."""


@dataclass(frozen=True)
class BulkRequest:
    """What to export: the Group (None = all patients), types, type filters, since."""

    group: str | None = None
    types: tuple[str, ...] = DEFAULT_TYPES
    type_filters: tuple[str, ...] = ()
    since: str | None = None

    def path(self) -> str:
        if self.group is None:
            return "Patient/$export"
        if not _ID.match(self.group):
            raise BulkExportError(f"not a valid Group id: {self.group!r}")
        return f"Group/{self.group}/$export"

    def params(self) -> dict[str, str | list[str]]:
        params: dict[str, str | list[str]] = {
            "_outputFormat": NDJSON,
            "_type": ",".join(self.types),
        }
        if self.type_filters:
            params["_typeFilter"] = list(self.type_filters)
        if self.since:
            params["_since"] = self.since
        return params

    def key(self, base_url: str) -> str:
        """Identity of the request, to tell a resumable folder from a stale one."""
        text = orjson.dumps([base_url, self.path(), self.params()], option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(text).hexdigest()


def observation_filter(system: str, codes: Sequence[str]) -> str:
    """`_typeFilter` narrowing Observations to the given codes (the scoring LOINC codes)."""
    return "Observation?code=" + ",".join(f"{system}|{c}" for c in codes)


@dataclass
class BulkResult:
    """What a finished export left in the folder."""

    folder: Path
    files: list[dict[str, Any]] = field(default_factory=list)  # manifest output entries
    errors: list[dict[str, Any]] = field(default_factory=list)  # manifest error entries
    issues: list[str] = field(default_factory=list)  # one line per error-file issue
    failed_issues: int = 0  # issues of severity error or fatal among them
    fetched: int = 0  # files downloaded in this run (the others were finished before)
    resources: int = 0


class _State:
    """The resume record in the output folder, rewritten atomically after every change."""

    def __init__(self, folder: Path, key: str) -> None:
        self.path = folder / STATE_FILE
        self.data: dict[str, Any] = {"key": key, "files": {}}
        if self.path.is_file():
            try:
                old = orjson.loads(self.path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                old = None
            if isinstance(old, dict) and old.get("key") == key:
                self.data = old
            else:
                log.info("bulk: %s is from another request; starting over", self.path)

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            handle.write(orjson.dumps(self.data, option=orjson.OPT_INDENT_2))
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(self.path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class BulkExporter:
    """Runs one export into `folder` with a FhirClient's transport, session and credentials."""

    def __init__(
        self,
        client: Any,  # FhirClient (Any: imported lazily by the CLI, avoids an import cycle)
        folder: Path,
        *,
        sleep: Callable[[float], None] | None = None,
        progress: bool = True,
        max_wait: float = 24 * 3600.0,
        max_poll_interval: float = 300.0,
        on_notice: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.folder = folder
        self.sleep = sleep or client.sleep
        self.progress = progress
        self.max_wait = max_wait
        self.max_poll_interval = max_poll_interval
        self.on_notice = on_notice or (lambda text: log.warning("%s", text))
        self.clock = clock
        self.status_requests = 0  # polls made, for tests

    # --- the job ---------------------------------------------------------------------------

    def run(self, request: BulkRequest) -> BulkResult:
        """Export (or resume exporting) into the folder; returns what is there."""
        self.folder.mkdir(parents=True, exist_ok=True)
        base = self.client.base_url
        state = _State(self.folder, request.key(base))
        if state.data.get("manifest") is None:
            if state.data.get("status_url") is None:
                state.data["status_url"] = self._kick_off(request)
                state.data["files"] = {}
                state.save()
            else:
                log.info("bulk: resuming the export job in %s", state.path)
            state.data["manifest"] = self._poll(state.data["status_url"])
            state.save()
        manifest = state.data["manifest"]
        result = BulkResult(folder=self.folder)
        self._download_all(manifest, state, result)
        self._write_manifest(manifest, result)
        self._delete_job(state.data["status_url"])
        state.remove()
        return result

    def _kick_off(self, request: BulkRequest) -> str:
        url = f"{self.client.base_url}/{request.path()}"
        try:
            response = self.client.transport.request(
                "GET",
                url,
                params=request.params(),
                headers={"Accept": "application/fhir+json", "Prefer": "respond-async"},
            )
        except NotFound as exc:
            raise BulkExportError(
                f"the server has no Bulk Data export at {url} (HTTP {exc.status}): "
                f"{exc.outcome.message or 'not found'}"
            ) from None
        except ServerError as exc:
            raise BulkExportError(
                f"export kick-off refused (HTTP {exc.status}): "
                f"{exc.outcome.message or 'no diagnostics'}"
            ) from None
        location = response.headers.get("Content-Location")
        if response.status != 202 or not location:
            raise BulkExportError(
                f"export kick-off at {url} answered HTTP {response.status} without a "
                "Content-Location status URL (expected 202 Accepted)"
            )
        status_url = urljoin(url, location)
        if origin(status_url) != origin(self.client.base_url):
            # The status URL gets our token: it must live on the server we were pointed at.
            raise FatalTransportError(
                f"export status URL {status_url} is on another server than "
                f"{self.client.base_url}; refusing to send credentials there",
                url=status_url,
            )
        log.info("bulk: export job accepted, status at %s", status_url)
        return str(status_url)

    def _poll(self, status_url: str) -> dict[str, Any]:
        started = self.clock()
        delay = 1.0
        bar = self._bar(total=100, unit="%", desc="export")
        try:
            while True:
                self.status_requests += 1
                try:
                    response = self.client.transport.request(
                        "GET", status_url, headers={"Accept": "application/json"}
                    )
                except NotFound as exc:
                    raise BulkExportError(
                        f"the export job expired or was deleted on the server (HTTP "
                        f"{exc.status} from its status URL); run the command again to start a "
                        f"new export (delete {self.folder / STATE_FILE} if it keeps pointing at "
                        "the old job)"
                    ) from None
                except ServerError as exc:
                    raise BulkExportError(
                        f"the export job failed (HTTP {exc.status}): "
                        f"{exc.outcome.message or 'no diagnostics'}"
                    ) from None
                if response.status == 200:
                    manifest = response.json()
                    if not isinstance(manifest, dict) or not isinstance(
                        manifest.get("output"), list
                    ):
                        raise BulkExportError(
                            f"the export status URL {status_url} answered 200 without a "
                            "manifest (no output list)"
                        )
                    bar.update(100 - bar.n)
                    return manifest
                progress = response.headers.get("X-Progress", "")
                if progress:
                    bar.set_postfix_str(progress[:60])
                    found = _PERCENT.search(progress)
                    if found:
                        bar.update(max(0.0, min(100.0, float(found.group(1))) - bar.n))
                    log.info("bulk: export in progress: %s", progress[:100])
                wait = parse_retry_after(response.headers.get("Retry-After"))
                if wait is None:
                    wait, delay = delay, min(delay * 2, 30.0)
                wait = min(wait, self.max_poll_interval)
                if self.clock() - started + wait > self.max_wait:
                    raise BulkExportError(
                        f"the export did not finish within {self.max_wait:.0f} s; run the "
                        "command again later to keep waiting for the same job"
                    )
                self.sleep(wait)
        finally:
            bar.close()

    def _delete_job(self, status_url: str) -> None:
        """Tell the server the files can go (the spec's DELETE on the status URL)."""
        try:
            self.client.transport.request("DELETE", status_url)
        except NotFound:
            pass  # already gone: nothing to clean up
        except FhirCycloError as exc:
            log.warning("bulk: could not delete the export job at %s: %s", status_url, exc)

    # --- files -----------------------------------------------------------------------------

    def _download_all(self, manifest: dict[str, Any], state: _State, result: BulkResult) -> None:
        token = bool(manifest.get("requiresAccessToken"))
        entries: list[tuple[str, int, dict[str, Any]]] = []
        for kind in ("output", "error"):
            for i, entry in enumerate(manifest.get(kind) or []):
                if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
                    raise BulkExportError(f"manifest {kind}[{i}] has no url")
                entries.append((kind, i, entry))
        done: dict[str, Any] = state.data["files"]
        counters: dict[str, int] = {}
        bar = self._bar(total=len(entries), unit="file", desc="download")
        try:
            for kind, _i, entry in entries:
                rtype = str(entry.get("type") or "unknown")
                stem = "error" if kind == "error" else rtype
                number = counters.get(stem, 0)
                counters[stem] = number + 1
                name = f"{stem}.{number:03d}.ndjson"
                url = entry["url"]
                finished = done.get(url)
                target = self.folder / name
                if not (
                    finished
                    and finished.get("name") == name
                    and target.is_file()
                    and target.stat().st_size == finished.get("bytes")
                ):
                    lines = self._download(url, target, rtype, entry.get("count"), token)
                    finished = {"name": name, "lines": lines, "bytes": target.stat().st_size}
                    done[url] = finished
                    state.save()
                    result.fetched += 1
                local = {"type": rtype, "url": name, "count": finished["lines"]}
                if kind == "error":
                    result.errors.append(local)
                    for severity, line in _issues(target):
                        result.issues.append(line)
                        result.failed_issues += severity in ("error", "fatal")
                else:
                    result.files.append(local)
                    result.resources += int(finished["lines"])
                bar.update(1)
        finally:
            bar.close()
        for line in result.issues:
            self.on_notice(f"export error: {line}")

    def _download(self, url: str, target: Path, rtype: str, count: Any, token: bool) -> int:
        """Stream one file to `target` (atomically), gunzipping if needed; returns its lines."""
        base = self.client.base_url
        if token and origin(url) != origin(base):
            raise BulkExportError(
                f"the manifest asks for the access token on {url}, another server than {base}; "
                "refusing to send credentials there"
            )
        policy = self.client.transport.policy
        attempts = policy.retries + 1
        for attempt in range(attempts):
            try:
                return self._fetch(url, target, rtype, count, token)
            except _RetryFile as exc:
                if attempt == attempts - 1:
                    raise BulkExportError(
                        f"download of {url} failed after {attempts} attempts: {exc}"
                    ) from None
                wait = exc.wait if exc.wait is not None else policy.backoff * (2**attempt)
                log.warning("bulk: %s: %s; retrying in %.1fs", url, exc, wait)
                self.sleep(min(wait, policy.max_retry_after))
        raise AssertionError("unreachable")  # pragma: no cover

    def _fetch(self, url: str, target: Path, rtype: str, count: Any, token: bool) -> int:
        transport = self.client.transport
        part = target.with_name(target.name + ".part")
        try:
            response = self.client.session.get(
                url,
                headers={"Accept": NDJSON, "Accept-Encoding": "gzip"},
                auth=self.client.auth if token else None,
                timeout=transport.timeout,
                verify=transport.verify,
                stream=True,
            )
        except requests.exceptions.RequestException as exc:
            raise _RetryFile(type(exc).__name__) from None
        with response:
            if response.status_code == 401 and token and hasattr(self.client.auth, "invalidate"):
                self.client.auth.invalidate()
                raise _RetryFile("HTTP 401 (token renewed)", 0.0)
            if response.status_code in transport.policy.statuses:
                raise _RetryFile(
                    f"HTTP {response.status_code}",
                    parse_retry_after(response.headers.get("Retry-After")),
                )
            if response.status_code in (404, 410):
                raise BulkExportError(
                    f"export file {url} is gone (HTTP {response.status_code}): the server "
                    f"expired the export; delete {self.folder / STATE_FILE} and run again"
                )
            if response.status_code != 200:
                outcome = OperationOutcome.from_json(_safe_json(response.content))
                text = outcome.message if outcome else f"HTTP {response.status_code}"
                raise BulkExportError(f"download of {url} refused: {text}")
            try:
                lines, raw_bytes = self._write(response, part, rtype, url)
            except (
                requests.exceptions.RequestException,
                urllib3.exceptions.HTTPError,  # raw.stream raises urllib3's own (truncation)
                OSError,
                zlib.error,
            ) as exc:
                part.unlink(missing_ok=True)
                raise _RetryFile(f"interrupted ({type(exc).__name__})") from None
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and raw_bytes != int(declared):
                part.unlink(missing_ok=True)
                raise _RetryFile(f"got {raw_bytes} of {declared} bytes")
        if isinstance(count, int) and not isinstance(count, bool) and count != lines:
            part.unlink(missing_ok=True)
            raise BulkExportError(
                f"{url}: the manifest says {count} resource(s), the file has {lines} line(s)"
            )
        part.replace(target)
        log.info("bulk: %s -> %s (%d line(s))", url, target.name, lines)
        return lines

    def _write(
        self, response: requests.Response, part: Path, rtype: str, url: str
    ) -> tuple[int, int]:
        """Write the body, gunzipping a gzip file body; every line must be a JSON object."""
        lines = 0
        tail = b""
        inflate: Any = None
        with part.open("wb") as handle:
            for i, chunk in enumerate(response.raw.stream(1 << 16, decode_content=True)):
                if i == 0 and chunk.startswith(_GZIP_MAGIC):
                    # A .ndjson.gz file served as is (no Content-Encoding): unpack it here.
                    inflate = zlib.decompressobj(wbits=31)
                data = inflate.decompress(chunk) if inflate is not None else chunk
                lines, tail = _check_lines(tail + data, lines, rtype, url, handle)
            if inflate is not None:
                lines, tail = _check_lines(tail + inflate.flush(), lines, rtype, url, handle)
            if tail.strip():
                lines, _ = _check_lines(tail + b"\n", lines, rtype, url, handle)
            handle.flush()
            os.fsync(handle.fileno())
        return lines, int(response.raw.tell())

    def _write_manifest(self, manifest: dict[str, Any], result: BulkResult) -> None:
        local = {
            "transactionTime": manifest.get("transactionTime"),
            "request": manifest.get("request"),
            # The files are local now: reading them needs no token.
            "requiresAccessToken": False,
            "output": result.files,
            "error": result.errors,
        }
        tmp = self.folder / (MANIFEST + ".tmp")
        tmp.write_bytes(orjson.dumps(local, option=orjson.OPT_INDENT_2) + b"\n")
        tmp.replace(self.folder / MANIFEST)

    def _bar(self, *, total: int, unit: str, desc: str) -> tqdm[Any]:
        return tqdm(
            total=total,
            unit=unit,
            desc=desc,
            file=sys.stderr,
            disable=not (self.progress and sys.stderr.isatty()),
        )


class _RetryFile(Exception):
    """A download failure worth another attempt (network, 429/5xx, truncated body)."""

    def __init__(self, message: str, wait: float | None = None) -> None:
        super().__init__(message)
        self.wait = wait


def _safe_json(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


def _check_lines(
    data: bytes, lines: int, rtype: str, url: str, handle: IO[bytes]
) -> tuple[int, bytes]:
    """Write the complete lines of `data` after checking each is a JSON object; keep the rest."""
    cut = data.rfind(b"\n")
    if cut < 0:
        return lines, data
    for raw in data[: cut + 1].splitlines():
        if not raw.strip():
            continue
        lines += 1
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BulkExportError(f"{url}: line {lines} is not valid JSON") from None
        if not isinstance(doc, dict) or "resourceType" not in doc:
            raise BulkExportError(f"{url}: line {lines} is not a FHIR resource")
    handle.write(data[: cut + 1])
    return lines, data[cut + 1 :]


def _issues(path: Path) -> list[tuple[str, str]]:
    """(severity, `severity code: diagnostics`) per issue of an error file (OperationOutcomes)."""
    found: list[tuple[str, str]] = []
    for raw in path.read_bytes().splitlines():
        outcome = OperationOutcome.from_json(_safe_json(raw))
        if outcome is None:
            continue
        for issue in outcome.issues:
            line = f"{issue.severity} {issue.code}: {issue.text[:300]} ({path.name})"
            found.append((issue.severity, line))
    return found
