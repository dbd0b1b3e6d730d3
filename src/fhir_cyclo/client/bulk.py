"""FHIR Bulk Data Access (IG v2) client: kick-off, status polling, resumable download, cleanup.

Flow (https://hl7.org/fhir/uv/bulkdata/export.html): GET `[base]/Patient/$export` (or
`Group/[id]/$export`) with `Prefer: respond-async` -> 202 + Content-Location (the status URL);
poll it (202 + X-Progress / Retry-After) until 200 with the manifest; download every `output`
and `error` file; DELETE the status URL. The output folder gets the standard layout: one NDJSON
file per manifest entry plus `manifest.json` whose `url`s name those files.

Resuming: `.fhir-cyclo-bulk.json` in the output folder records the job (status URL, manifest)
and each finished file (name, lines, bytes), fsynced after every file. A re-run with the same
request skips the kick-off and the finished files; a different request starts over.

Servers differ and some are hostile (issue 25): the request is fitted to the CapabilityStatement,
a refused or ignored `_typeFilter` is applied here, transient and rate-limited status answers are
waited out, error files and count mismatches on them are warnings, and nothing in a manifest
chooses a local path: file names come from a fixed pattern over validated FHIR R4 type names.
"""

from __future__ import annotations

import contextlib
import dataclasses
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
from urllib.parse import parse_qs, urljoin, urlsplit, urlunsplit

import orjson
import requests
import urllib3
from tqdm import tqdm

from fhir_cyclo.client.http import HttpResponse, Transport, origin, parse_retry_after
from fhir_cyclo.client.resource_types import R4_RESOURCE_TYPES
from fhir_cyclo.core.errors import (
    FatalTransportError,
    FhirCycloError,
    NotFound,
    OperationOutcome,
    ServerError,
    TemporaryTransportError,
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
# Manifest fields are the server's word: bounded before use (issue 25).
_MAX_URL = 4096
_MAX_COUNT = 10**12
_MAX_TEXT = 200  # transactionTime / request copied into the local manifest
DEFAULT_MAX_FILE_BYTES = 256 * 1024**3  # one file, unpacked: a gzip bomb stops here
# The kinds of manifest entries and the fixed local name stem / resource type of each.
_KINDS = ("output", "error", "deleted")
_SHOWN_ISSUES = 10  # error-file issues printed one per line; the rest are counted


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
    deleted: list[dict[str, Any]] = field(default_factory=list)  # manifest deleted entries
    rejected: list[str] = field(default_factory=list)  # manifest entries refused, one line each
    missing_types: list[str] = field(default_factory=list)  # asked for, not in the export
    notes: list[str] = field(default_factory=list)  # how the request was adapted

    @property
    def partial(self) -> bool:
        """Asked types missing or nothing at all exported (a warning; --strict fails on it)."""
        return bool(self.missing_types) or self.resources == 0


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


def supported_types(capability: Any) -> frozenset[str] | None:
    """The resource types a CapabilityStatement's server part lists; None when it lists none
    (a minimal CapabilityStatement says nothing about types, so nothing is narrowed)."""
    found: set[str] = set()
    rests = capability.get("rest") if isinstance(capability, dict) else None
    for rest in rests if isinstance(rests, list) else []:
        if not isinstance(rest, dict) or rest.get("mode", "server") != "server":
            continue
        resources = rest.get("resource")
        for res in resources if isinstance(resources, list) else []:
            if isinstance(res, dict) and isinstance(res.get("type"), str):
                found.add(res["type"])
    return frozenset(found) or None


def fit_request(request: BulkRequest, capability: Any) -> tuple[BulkRequest, list[str]]:
    """The request narrowed to the types the server lists, and a note naming those it lacks."""
    supported = supported_types(capability)
    if supported is None:
        return request, []
    lacking = [t for t in request.types if t not in supported]
    if not lacking:
        return request, []
    types = tuple(t for t in request.types if t in supported)
    if not types:
        raise BulkExportError(
            f"the server's CapabilityStatement lists none of the types asked for "
            f"({', '.join(request.types)}); nothing to export"
        )
    filters = tuple(f for f in request.type_filters if f.partition("?")[0] in types)
    note = (
        f"the server's CapabilityStatement lacks {', '.join(lacking)}; "
        f"asking for {', '.join(types)}"
    )
    return dataclasses.replace(request, types=types, type_filters=filters), [note]


def export_definition(capability: Any, request: BulkRequest) -> str | None:
    """The OperationDefinition the CapabilityStatement names for this export: the operation on
    the Patient or Group resource first, then the system-level one; None when absent."""
    rests = capability.get("rest") if isinstance(capability, dict) else None
    level = "Group" if request.group is not None else "Patient"
    found: list[str] = []
    for rest in rests if isinstance(rests, list) else []:
        if not isinstance(rest, dict):
            continue
        resources = rest.get("resource")
        places = [
            r.get("operation")
            for r in (resources if isinstance(resources, list) else [])
            if isinstance(r, dict) and r.get("type") == level
        ]
        for operations in [*places, rest.get("operation")]:
            for op in operations if isinstance(operations, list) else []:
                if not isinstance(op, dict) or not isinstance(op.get("definition"), str):
                    continue
                if op.get("name") in ("export", f"{level.lower()}-export"):
                    found.append(op["definition"])
    return found[0][:_MAX_URL] if found else None


def definition_parameters(doc: Any) -> frozenset[str] | None:
    """The input parameter names of an OperationDefinition; None when `doc` is not one."""
    if not isinstance(doc, dict) or doc.get("resourceType") != "OperationDefinition":
        return None
    params = doc.get("parameter")
    if not isinstance(params, list):
        return None
    return frozenset(
        p["name"]
        for p in params
        if isinstance(p, dict) and isinstance(p.get("name"), str) and p.get("use", "in") == "in"
    )


class _LocalFilter:
    """A `_typeFilter` of the form fhir-cyclo sends (`Type?code=system|code,...`), applied here
    when the server refuses or ignores it."""

    def __init__(self, filters: Sequence[str]) -> None:
        self.codes: dict[str, set[tuple[str, str]]] = {}
        for text in filters:
            rtype, _, query = text.partition("?")
            for token in ",".join(parse_qs(query).get("code", [])).split(","):
                system, bar, code = token.partition("|")
                if bar:
                    self.codes.setdefault(rtype, set()).add((system, code))

    def keeps(self, resource: dict[str, Any]) -> bool:
        wanted = self.codes.get(str(resource.get("resourceType")))
        if wanted is None:
            return True
        code = resource.get("code")
        codings = code.get("coding") if isinstance(code, dict) else None
        for coding in codings if isinstance(codings, list) else []:
            if isinstance(coding, dict) and (coding.get("system"), coding.get("code")) in wanted:
                return True
        return False


@dataclass
class _Tally:
    """Per-run counters over the downloaded lines (local filtering, duplicate ids)."""

    dropped: dict[str, int] = field(default_factory=dict)  # type -> lines filtered out here
    ids: dict[str, set[str]] = field(default_factory=dict)  # type -> ids seen
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # type -> "file line n"

    def add_ids(self, name: str, ids: Sequence[tuple[str, str, int]]) -> None:
        """Record (type, id, line) of one output file; an id seen before is a duplicate."""
        for rtype, rid, line in ids:
            seen = self.ids.setdefault(rtype, set())
            if rid in seen:
                self.duplicates.setdefault(rtype, []).append(f"{name} line {line}")
            seen.add(rid)


class _PollError(ServerError):
    """A status answer that is not 2xx, with its Retry-After."""

    def __init__(self, base: ServerError, retry_after: float | None) -> None:
        super().__init__(base.status, base.outcome, url=base.url, method=base.method)
        self.retry_after = retry_after


class _PollTransport(Transport):
    """The client's transport for status polls: no generic retry of 429/5xx (the poll loop
    reads their OperationOutcome and Retry-After itself)."""

    def server_error(self, response: HttpResponse, method: str, url: str) -> ServerError:
        base = super().server_error(response, method, url)
        return _PollError(base, parse_retry_after(response.headers.get("Retry-After")))


class _KickOffRefused(BulkExportError):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Resumable(BulkExportError):
    """A download failure that keeps the job and the state file: the same command resumes."""


def _short(text: str, limit: int = 48) -> str:
    """Long server-issued strings (signed client ids, tokens, URLs) shortened for messages."""
    return text if len(text) <= limit else f"{text[:24]}...{text[-8:]} ({len(text)} chars)"


def _credentials_refused(exc: ServerError, what: str) -> FatalTransportError:
    return FatalTransportError(
        f"{what} refused our credentials (HTTP {exc.status}): "
        f"{_short(exc.outcome.message or 'no diagnostics', 300)}",
        url=exc.url,
        status=exc.status,
    )


def _next_wait(retry_after: float | None, delay: float) -> tuple[float, float]:
    """(this wait, the next default delay): Retry-After when given, else 1, 2, 4 ... 30 s."""
    if retry_after is not None:
        return retry_after, delay
    return delay, min(delay * 2, 30.0)


def _is_transient(outcome: OperationOutcome) -> bool:
    return any(i.code == "transient" for i in outcome.issues) and not any(
        i.severity == "fatal" for i in outcome.issues
    )


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
        max_rate_limit_wait: float = 120.0,
        max_transient: int = 30,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
        on_notice: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.folder = folder
        self.sleep = sleep or client.sleep
        self.progress = progress
        self.max_wait = max_wait
        self.max_poll_interval = max_poll_interval
        self.max_rate_limit_wait = max_rate_limit_wait
        self.max_transient = max_transient
        self.max_file_bytes = max_file_bytes
        self.on_notice = on_notice or (lambda text: log.warning("%s", text))
        self.clock = clock
        self.status_requests = 0  # polls made, for tests
        t = client.transport
        self._poll_transport = _PollTransport(
            t.session,
            auth=t.auth,
            redact=t.redact,
            server=t.server,
            policy=dataclasses.replace(t.policy, statuses=frozenset({408}), sleep=self.sleep),
        )

    # --- the job ---------------------------------------------------------------------------

    def run(
        self, request: BulkRequest, *, capability: Any = None, fit_types: bool = True
    ) -> BulkResult:
        """Export (or resume exporting) into the folder; returns what is there.

        With the server's CapabilityStatement, the request is first narrowed to the types it
        lists (unless `fit_types` is False, as for `--type`), and the export OperationDefinition
        it points to on this server is read for `_typeFilter` support.
        """
        notes: list[str] = []
        if capability is not None and fit_types:
            request, notes = fit_request(request, capability)
        for note in notes:
            self.on_notice(note)
        self.folder.mkdir(parents=True, exist_ok=True)
        base = self.client.base_url
        state = _State(self.folder, request.key(base))
        try:
            if state.data.get("manifest") is None:
                if state.data.get("status_url") is None:
                    state.data["status_url"], how = self._start(request, capability)
                    # Applied here too: a server may ignore _typeFilter (or refuse it).
                    state.data["local_filters"] = list(request.type_filters)
                    state.data["filter_how"] = how
                    state.data["files"] = {}
                    state.save()
                else:
                    log.info("bulk: resuming the export job in %s", state.path)
                state.data["manifest"] = self._poll(state.data["status_url"])
                state.save()
            manifest = state.data["manifest"]
            result = BulkResult(folder=self.folder, notes=notes)
            tally = _Tally()
            counters: dict[str, int] = {}
            self._download_all(manifest, state, result, tally, counters)
            self._fallback(request, state, result, tally, counters)
        except (_Resumable, TemporaryTransportError):
            raise  # the job and the state file stay: the same command resumes
        except KeyboardInterrupt:
            if state.data.get("manifest") is not None:
                self.on_notice(
                    "interrupted after the export was ready: the export job is kept on the "
                    "server; the same command resumes it"
                )
                raise
            self._abandon(state)
            raise
        except BaseException:
            self._abandon(state)
            raise
        self._report(request, result, tally, how=state.data.get("filter_how"))
        self._write_manifest(manifest, result)
        for status_url in _status_urls(state):
            self._delete_job(status_url)
        state.remove()
        return result

    def _fallback(
        self,
        request: BulkRequest,
        state: _State,
        result: BulkResult,
        tally: _Tally,
        counters: dict[str, int],
    ) -> None:
        """Asked types missing after an export the server filtered: ask for them again without
        `_typeFilter` (applied here). A server may misapply the filter to the other types: the
        SMART reference server leaves out Patient, Observation and Procedure (issue 25)."""
        fallback = state.data.get("fallback")
        if fallback is None:
            if not request.type_filters or state.data.get("filter_how"):
                return  # no filter reached the server: nothing it could have misapplied
            missing = _missing(request, result)
            if not missing:
                return
            self.on_notice(
                f"the export with _typeFilter came back without {', '.join(missing)}; asking "
                "for them again without _typeFilter (the server may misapply it), filtered here"
            )
            plain = dataclasses.replace(request, types=tuple(missing), type_filters=())
            fallback = {"types": missing, "status_url": self._kick_off(plain)}
            state.data["fallback"] = fallback
            state.save()
        if fallback.get("manifest") is None:
            fallback["manifest"] = self._poll(fallback["status_url"])
            state.save()
        self._download_all(fallback["manifest"], state, result, tally, counters, phase="fallback")
        state.data["filter_how"] = state.data.get("filter_how") or "misapplied"

    def _abandon(self, state: _State) -> None:
        """A way out other than success: the jobs are deleted on the server, the state removed."""
        for status_url in _status_urls(state):
            self._delete_job(status_url)
        state.remove()

    def _start(self, request: BulkRequest, capability: Any) -> tuple[str, str | None]:
        """Kick off. `_typeFilter` is not sent when the export OperationDefinition lacks it, and
        a 400 on a request with it is asked again without it (the filter is applied here).
        Returns the status URL and, when the filter did not reach the server, why."""
        if request.type_filters and capability is not None:
            params = self._definition_parameters(capability, request)
            if params is not None and "_typeFilter" not in params:
                self.on_notice(
                    "the server's export OperationDefinition has no _typeFilter parameter; not "
                    "sent, the resources are filtered here"
                )
                plain = dataclasses.replace(request, type_filters=())
                return self._kick_off(plain), "not supported"
        try:
            return self._kick_off(request), None
        except _KickOffRefused as exc:
            if not (request.type_filters and exc.status == 400):
                raise
            self.on_notice(
                f"the server refused _typeFilter ({exc}); asked again without it, the "
                "resources are filtered here"
            )
        plain = dataclasses.replace(request, type_filters=())
        return self._kick_off(plain), "refused"

    def _definition_parameters(
        self, capability: Any, request: BulkRequest
    ) -> frozenset[str] | None:
        """The export OperationDefinition's parameters when the CapabilityStatement points to
        one on this server and it can be read; None otherwise (absence is no error)."""
        ref = export_definition(capability, request)
        if ref is None:
            return None
        base = str(self.client.base_url)
        url = urljoin(base + "/", ref)
        if origin(url) != origin(base):
            log.info("bulk: export OperationDefinition %s is not on this server; not read", ref)
            return None
        try:
            response = self.client.transport.request(
                "GET", url, headers={"Accept": "application/fhir+json"}
            )
            doc = response.json()
        except (FhirCycloError, ValueError) as exc:
            log.info("bulk: export OperationDefinition %s not read: %s", url, exc)
            return None
        params = definition_parameters(doc)
        if params is None:
            log.info("bulk: %s is not an OperationDefinition; not used", url)
        return params

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
            if exc.status in (401, 403):
                raise _credentials_refused(exc, "export kick-off") from None
            raise _KickOffRefused(
                f"export kick-off refused (HTTP {exc.status}): "
                f"{_short(exc.outcome.message or 'no diagnostics', 300)}",
                exc.status,
            ) from None
        location = response.headers.get("Content-Location")
        if response.status != 202 or not location:
            raise BulkExportError(
                f"export kick-off at {url} answered HTTP {response.status} without a "
                "Content-Location status URL (expected 202 Accepted)"
            )
        status_url = urljoin(url, location[:_MAX_URL])
        if origin(status_url) != origin(self.client.base_url):
            # The status URL gets our token: it must live on the server we were pointed at. The
            # job is still deleted, at the same path on the server we were given (often the
            # same server under another name: localhost / 127.0.0.1).
            self._delete_job(self._on_our_origin(status_url))
            raise FatalTransportError(
                f"export status URL {_short(status_url, 200)} is on another server than "
                f"{self.client.base_url}; refusing to send credentials there",
                url=status_url,
            )
        log.info("bulk: export job accepted, status at %s", status_url)
        return str(status_url)

    def _on_our_origin(self, url: str) -> str:
        ours = urlsplit(str(self.client.base_url))
        theirs = urlsplit(url)
        return urlunsplit((ours.scheme, ours.netloc, theirs.path, theirs.query, ""))

    def _poll(self, status_url: str) -> dict[str, Any]:
        started = self.clock()
        delay = 1.0
        transient = 0  # consecutive transient answers
        other_5xx = 0  # consecutive 5xx without a transient OperationOutcome
        said_rate_limit = said_transient = False
        bar = self._bar(total=100, unit="%", desc="export")
        try:
            while True:
                self.status_requests += 1
                try:
                    response = self._poll_transport.request(
                        "GET", status_url, headers={"Accept": "application/json"}
                    )
                except _PollError as exc:
                    if exc.status in (404, 410):
                        raise BulkExportError(
                            f"the export job expired or was deleted on the server (HTTP "
                            f"{exc.status} from its status URL); run the command again to start "
                            "a new export"
                        ) from None
                    if exc.status in (401, 403):
                        raise _credentials_refused(exc, "the export status URL") from None
                    text = _short(exc.outcome.message or "no diagnostics", 300)
                    if exc.status == 429:
                        wait, delay = _next_wait(exc.retry_after, delay)
                        if wait > self.max_rate_limit_wait and not said_rate_limit:
                            said_rate_limit = True
                            self.on_notice(
                                f"the server limits status requests (HTTP 429) and asks to wait "
                                f"{wait:.0f} s; waiting {self.max_rate_limit_wait:.0f} s "
                                "between polls instead"
                            )
                        wait = min(wait, self.max_rate_limit_wait)
                    elif exc.status >= 500 and _is_transient(exc.outcome):
                        transient += 1
                        if transient > self.max_transient:
                            raise BulkExportError(
                                f"the export status URL answered a transient error "
                                f"{transient} times in a row (HTTP {exc.status}): {text}"
                            ) from None
                        if not said_transient:
                            said_transient = True
                            self.on_notice(
                                f"the server reports a transient error (HTTP {exc.status}: "
                                f"{text}); the job goes on, polling again"
                            )
                        wait, delay = _next_wait(exc.retry_after, delay)
                    elif exc.status >= 500 and not any(
                        i.severity == "fatal" for i in exc.outcome.issues
                    ):
                        # A proxy's 502/503 or a bare 500: the generic bounded retry.
                        other_5xx += 1
                        if other_5xx > self.client.transport.policy.retries:
                            raise BulkExportError(
                                f"the export job failed (HTTP {exc.status}): {text}"
                            ) from None
                        wait, delay = _next_wait(exc.retry_after, delay)
                    else:
                        raise BulkExportError(
                            f"the export job failed (HTTP {exc.status}): {text}"
                        ) from None
                    wait = min(wait, self.max_poll_interval)
                    if self.clock() - started + wait > self.max_wait:
                        raise BulkExportError(
                            f"the export did not finish within {self.max_wait:.0f} s"
                        ) from None
                    self.sleep(wait)
                    continue
                transient = other_5xx = 0
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
                asked = parse_retry_after(response.headers.get("Retry-After"))
                if asked is None:
                    asked, delay = delay, min(delay * 2, 30.0)
                wait = asked
                wait = min(wait, self.max_poll_interval)
                if self.clock() - started + wait > self.max_wait:
                    raise _Resumable(
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

    def _entries(
        self, manifest: dict[str, Any], result: BulkResult, label: str = "manifest"
    ) -> list[tuple[str, int, dict[str, Any], str]]:
        """The manifest's entries that are safe to fetch, with their checked type; each other
        entry is a rejected line naming it. No manifest field is trusted (issue 25)."""
        found: list[tuple[str, int, dict[str, Any], str]] = []
        for kind in _KINDS:
            entries = manifest.get(kind)
            if entries is None:
                continue
            if not isinstance(entries, list):
                result.rejected.append(f"{label} {kind}: not a list")
                continue
            for i, entry in enumerate(entries):
                where = f"{label} {kind}[{i}]"
                reason = _bad_entry(entry, kind)
                if reason is not None:
                    result.rejected.append(f"{where}: {reason}; not downloaded")
                    continue
                rtype = entry.get("type")
                if not isinstance(rtype, str):
                    rtype = "OperationOutcome" if kind == "error" else "Bundle"
                count = entry.get("count")
                if count is not None and not (
                    isinstance(count, int)
                    and not isinstance(count, bool)
                    and 0 <= count <= _MAX_COUNT
                ):
                    self.on_notice(
                        f"{where}.count {_short(repr(count), 40)} is not a count; ignored"
                    )
                    found.append((kind, i, {k: v for k, v in entry.items() if k != "count"}, rtype))
                    continue
                found.append((kind, i, entry, rtype))
        return found

    def _download_all(
        self,
        manifest: dict[str, Any],
        state: _State,
        result: BulkResult,
        tally: _Tally,
        counters: dict[str, int],
        *,
        phase: str = "",
    ) -> None:
        """Fetch one job's files; `counters` numbers the local names across jobs, `phase` keeps
        a second job's entries apart from the first's in the state file."""
        # Anything but an explicit false sends the token (to our own origin only).
        token = manifest.get("requiresAccessToken") is not False
        label = f"{phase} manifest" if phase else "manifest"
        entries = self._entries(manifest, result, label)
        local_filter = _LocalFilter(state.data.get("local_filters") or [])
        done: dict[str, Any] = state.data["files"]
        bar = self._bar(total=len(entries), unit="file", desc="download")
        try:
            for kind, i, entry, rtype in entries:
                stem = rtype if kind == "output" else kind
                number = counters.get(stem, 0)
                counters[stem] = number + 1
                name = f"{stem}.{number:03d}.ndjson"
                target = self.folder / name
                if target.resolve().parent != self.folder.resolve():
                    raise BulkExportError(f"internal: {name} is not inside {self.folder}")
                url = entry["url"]
                key = f"{phase}:{url}" if phase else url
                finished = done.get(key)
                if not (
                    finished
                    and finished.get("name") == name
                    and target.is_file()
                    and target.stat().st_size == finished.get("bytes")
                ):
                    check = _FileCheck(
                        kind=kind,
                        rtype=rtype,
                        url=url,
                        name=name,
                        keep=local_filter.keeps if kind == "output" else None,
                        tally=tally,
                        limit=self.max_file_bytes,
                    )
                    try:
                        self._download(check, target, entry.get("count"), token)
                    except _Rejected as exc:
                        result.rejected.append(f"{label} {kind}[{i}] ({name}): {exc}")
                        continue
                    check.commit()
                    finished = {"name": name, "lines": check.kept, "bytes": target.stat().st_size}
                    if check.dropped:
                        finished["dropped"] = check.dropped
                    if check.foreign:
                        finished["foreign"] = (
                            f"{check.foreign} line(s) whose resourceType is not {rtype} (first: "
                            f"line {check.foreign_first}); not kept"
                        )
                    done[key] = finished
                    state.save()
                    result.fetched += 1
                elif kind == "output":
                    # Finished in an earlier run: its ids and dropped lines still count.
                    tally.add_ids(name, _ids_in(target))
                    if finished.get("dropped"):
                        tally.dropped[rtype] = tally.dropped.get(rtype, 0) + finished["dropped"]
                if finished.get("foreign"):
                    result.rejected.append(f"{label} {kind}[{i}] ({name}): {finished['foreign']}")
                local = {"type": rtype, "url": name, "count": finished["lines"]}
                if kind == "error":
                    result.errors.append(local)
                    for severity, line in _issues(target):
                        result.issues.append(line)
                        result.failed_issues += severity in ("error", "fatal")
                elif kind == "deleted":
                    result.deleted.append(local)
                else:
                    result.files.append(local)
                    result.resources += int(finished["lines"])
                bar.update(1)
        finally:
            bar.close()

    def _report(
        self, request: BulkRequest, result: BulkResult, tally: _Tally, *, how: str | None
    ) -> None:
        """One line per kind of gap: rejected entries, error issues, deleted, missing types."""
        for line in result.rejected:
            self.on_notice(f"export error: {line}")
        for line in result.issues[:_SHOWN_ISSUES]:
            self.on_notice(f"export error: {line}")
        if len(result.issues) > _SHOWN_ISSUES:
            names = ", ".join(e["url"] for e in result.errors)
            self.on_notice(
                f"export error: ... and {len(result.issues) - _SHOWN_ISSUES} more issue(s) "
                f"in {names}"
            )
        for rtype, dropped in sorted(tally.dropped.items()):
            why = {"not supported": "does not support", None: "ignored"}.get(how, how)
            self.on_notice(
                f"{dropped} {rtype}(s) outside _typeFilter dropped here (the server {why} it)"
            )
        for rtype, where in sorted(tally.duplicates.items()):
            self.on_notice(
                f"{rtype}: {len(where)} id(s) on more than one line (first: {where[0]}); "
                "a reader keeps one or counts both"
            )
        if result.deleted:
            count = sum(int(d["count"]) for d in result.deleted)
            self.on_notice(
                f"{count} deleted resource(s) listed by the server (in "
                f"{', '.join(d['url'] for d in result.deleted)}); scoring skips them"
            )
        result.missing_types = _missing(request, result)
        if result.resources == 0:
            what = f"Group {request.group}" if request.group else "the server"
            self.on_notice(
                f"the export is empty: {what} gave no resources (for a Group: no members, or "
                "no such Group)"
            )
        elif result.missing_types:
            self.on_notice(
                f"asked for but not in the export: {', '.join(result.missing_types)} (the "
                "server has none, or did not export them)"
            )

    def _download(self, check: _FileCheck, target: Path, count: Any, token: bool) -> None:
        """Stream one file to `target` (atomically), gunzipping if needed."""
        base = self.client.base_url
        url = check.url
        if token and origin(url) != origin(base):
            raise BulkExportError(
                f"the manifest asks for the access token on {_short(url, 200)}, another server "
                f"than {base}; refusing to send credentials there"
            )
        policy = self.client.transport.policy
        attempts = policy.retries + 1
        renewed = False
        for attempt in range(attempts):
            try:
                self._fetch(check, target, count, token)
                return
            except _RetryFile as exc:
                if exc.status in (401, 403) and not (exc.renew and not renewed):
                    raise FatalTransportError(
                        f"download of {_short(url, 200)} refused our credentials "
                        f"(HTTP {exc.status})",
                        url=url,
                        status=exc.status,
                    ) from None
                renewed = renewed or exc.renew
                if attempt == attempts - 1:
                    raise _Resumable(
                        f"download of {_short(url, 200)} failed after {attempts} attempts: {exc}"
                    ) from None
                wait = exc.wait if exc.wait is not None else policy.backoff * (2**attempt)
                log.warning("bulk: %s: %s; retrying in %.1fs", url, exc, wait)
                self.sleep(min(wait, policy.max_retry_after))
        raise AssertionError("unreachable")  # pragma: no cover

    def _fetch(self, check: _FileCheck, target: Path, count: Any, token: bool) -> None:
        transport = self.client.transport
        url = check.url
        part = target.with_name(target.name + ".part")
        try:
            response = self.client.session.get(
                url,
                headers={"Accept": NDJSON, "Accept-Encoding": "gzip"},
                auth=self.client.auth if token else None,
                timeout=transport.timeout,
                verify=transport.verify,
                stream=True,
                allow_redirects=False,  # a redirect could carry the token elsewhere
            )
        except requests.exceptions.RequestException as exc:
            raise _RetryFile(type(exc).__name__) from None
        with response:
            if response.status_code == 401 and token and hasattr(self.client.auth, "invalidate"):
                self.client.auth.invalidate()
                raise _RetryFile("HTTP 401 (token renewed)", 0.0, renew=True, status=401)
            if response.status_code in (401, 403):
                raise _RetryFile(f"HTTP {response.status_code}", status=response.status_code)
            if response.status_code in transport.policy.statuses:
                raise _RetryFile(
                    f"HTTP {response.status_code}",
                    parse_retry_after(response.headers.get("Retry-After")),
                )
            if response.status_code in (404, 410):
                raise BulkExportError(
                    f"export file {_short(url, 200)} is gone (HTTP {response.status_code}): the "
                    "server expired the export; run the command again"
                )
            if response.status_code != 200:
                outcome = OperationOutcome.from_json(_safe_json(response.content[:65536]))
                text = outcome.message if outcome else f"HTTP {response.status_code}"
                raise _Rejected(f"download refused: {_short(text, 300)}")
            check.reset()
            try:
                raw_bytes = self._write(response, part, check)
            except _Rejected:
                part.unlink(missing_ok=True)
                raise
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
        if count is not None and count != check.lines:
            message = (
                f"{_short(url, 200)}: the manifest says {count} resource(s), the file has "
                f"{check.lines} line(s)"
            )
            if check.kind == "output":
                part.unlink(missing_ok=True)
                raise BulkExportError(message)
            # Error and deleted files are reports about the export, not its data: kept.
            self.on_notice(f"{message} ({check.name} kept)")
        part.replace(target)
        log.info("bulk: %s -> %s (%d line(s))", url, target.name, check.kept)

    def _write(self, response: requests.Response, part: Path, check: _FileCheck) -> int:
        """Write the body, gunzipping a gzip file body; every line must be a JSON object."""
        tail = b""
        inflate: Any = None
        with part.open("wb") as handle:
            for i, chunk in enumerate(response.raw.stream(1 << 16, decode_content=True)):
                if i == 0 and chunk.startswith(_GZIP_MAGIC):
                    # A .ndjson.gz file served as is (no Content-Encoding): unpack it here.
                    inflate = zlib.decompressobj(wbits=31)
                # Bounded: a small gzip body must not unpack into an unbounded buffer.
                data = inflate.decompress(chunk, check.limit + 1) if inflate is not None else chunk
                check.grow(len(data))
                tail = check.lines_of(tail + data, handle)
            if inflate is not None:
                rest = inflate.flush()
                check.grow(len(rest))
                tail = check.lines_of(tail + rest, handle)
            if tail.strip():
                check.lines_of(tail + b"\n", handle)
            handle.flush()
            os.fsync(handle.fileno())
        return int(response.raw.tell())

    def _write_manifest(self, manifest: dict[str, Any], result: BulkResult) -> None:
        def text(key: str) -> str | None:
            value = manifest.get(key)
            return value if isinstance(value, str) and len(value) <= _MAX_TEXT else None

        local: dict[str, Any] = {
            "transactionTime": text("transactionTime"),
            "request": text("request"),
            # The files are local now: reading them needs no token.
            "requiresAccessToken": False,
            "output": result.files,
            "error": result.errors,
        }
        if result.deleted:
            local["deleted"] = result.deleted
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


def _bad_entry(entry: Any, kind: str) -> str | None:
    """Why a manifest entry cannot be fetched safely, or None."""
    if not isinstance(entry, dict):
        return "not an object"
    rtype = entry.get("type")
    if rtype is None and kind == "output":
        return "no type"
    if rtype is not None and (not isinstance(rtype, str) or rtype not in R4_RESOURCE_TYPES):
        return f"type {_short(repr(rtype), 60)} is not a FHIR R4 resource type"
    url = entry.get("url")
    if not isinstance(url, str) or not url:
        return "no url"
    bad = f"url {_short(repr(url), 80)} is not an http(s) URL"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        return bad
    if len(url) > _MAX_URL or parts.scheme.lower() not in ("http", "https") or not host:
        return bad
    return None


class _Rejected(Exception):
    """A file that cannot be accepted (not NDJSON of resources, too large, refused): its entry
    is named as an error and the export goes on."""


class _RetryFile(Exception):
    """A download failure worth another attempt (network, 429/5xx, truncated body)."""

    def __init__(
        self, message: str, wait: float | None = None, *, renew: bool = False, status: int = 0
    ) -> None:
        super().__init__(message)
        self.wait = wait
        self.renew = renew
        self.status = status


@dataclass
class _FileCheck:
    """Checks one file's lines as they stream: JSON objects with a resourceType; filtered here
    (output files under a refused/ignored _typeFilter); ids seen twice; a size bound."""

    kind: str
    rtype: str
    url: str
    name: str
    keep: Callable[[dict[str, Any]], bool] | None
    tally: _Tally
    limit: int
    lines: int = 0
    kept: int = 0
    size: int = 0
    dropped: int = 0
    foreign: int = 0  # lines of another resourceType than the manifest entry's
    foreign_first: str = ""
    ids: list[tuple[str, str, int]] = field(default_factory=list)

    def reset(self) -> None:
        self.lines = self.kept = self.size = self.dropped = self.foreign = 0
        self.foreign_first = ""
        self.ids = []

    def grow(self, size: int) -> None:
        self.size += size
        if self.size > self.limit:
            raise _Rejected(f"larger than the {self.limit:,} byte limit (unpacked); not kept")

    def lines_of(self, data: bytes, handle: IO[bytes]) -> bytes:
        """Write the complete lines of `data` that pass; return the incomplete rest."""
        cut = data.rfind(b"\n")
        if cut < 0:
            return data
        for raw in data[: cut + 1].splitlines(keepends=True):
            if not raw.strip():
                continue
            self.lines += 1
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise BulkExportError(
                    f"{_short(self.url, 200)}: line {self.lines} is not valid JSON"
                ) from None
            if not isinstance(doc, dict) or "resourceType" not in doc:
                raise BulkExportError(
                    f"{_short(self.url, 200)}: line {self.lines} is not a FHIR resource"
                )
            if self.kind == "output" and doc["resourceType"] != self.rtype:
                # Not mixed into a file its manifest entry says holds only self.rtype.
                self.foreign += 1
                if not self.foreign_first:
                    other = _short(repr(doc["resourceType"]), 60)
                    self.foreign_first = f"{self.lines}, resourceType {other}"
                continue
            if self.keep is not None and not self.keep(doc):
                self.dropped += 1
                continue
            if self.kind == "output" and isinstance(doc.get("id"), str):
                self.ids.append((str(doc["resourceType"]), doc["id"], self.lines))
            self.kept += 1
            handle.write(raw if raw.endswith(b"\n") else raw + b"\n")
        return data[cut + 1 :]

    def commit(self) -> None:
        """Count this file's dropped lines and duplicate ids (once it is accepted)."""
        if self.dropped:
            self.tally.dropped[self.rtype] = self.tally.dropped.get(self.rtype, 0) + self.dropped
        self.tally.add_ids(self.name, self.ids)


def _safe_json(content: bytes) -> Any:
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        return None


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


def _ids_in(path: Path) -> list[tuple[str, str, int]]:
    """(type, id, line) of a finished local output file (checked when it was written)."""
    found: list[tuple[str, str, int]] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            doc = _safe_json(raw)
            if isinstance(doc, dict) and isinstance(doc.get("id"), str):
                found.append((str(doc.get("resourceType")), doc["id"], number))
    return found


def _missing(request: BulkRequest, result: BulkResult) -> list[str]:
    """Asked types with no resource in the export so far."""
    received = {f["type"] for f in result.files if f["count"]}
    return [t for t in request.types if t not in received]


def _status_urls(state: _State) -> list[str]:
    """The export jobs of this run on the server: the first and, if asked, the second."""
    fallback = state.data.get("fallback")
    urls = [state.data.get("status_url"), fallback.get("status_url") if fallback else None]
    return [u for u in urls if isinstance(u, str) and u]
