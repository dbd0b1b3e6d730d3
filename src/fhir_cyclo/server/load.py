"""Bulk Data `$import` of the NDJSON `export --ndjson` writes: serve, kick off, poll, report."""

from __future__ import annotations

import dataclasses
import logging
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from fhir_cyclo.client.http import HttpResponse, Transport, origin_str, parse_retry_after
from fhir_cyclo.core.errors import (
    FatalTransportError,
    InputError,
    ServerError,
    TransportError,
)

log = logging.getLogger(__name__)

NDJSON_TYPE = "application/fhir+ndjson"
# HAPI answers every poll with `Retry-After: 120` whatever the job's size (hapi-recordings/):
# waits are capped so a one-minute job is not reported two minutes late.
DEFAULT_MAX_POLL_INTERVAL = 5.0
DEFAULT_MAX_WAIT = 24 * 3600.0
_REPORT_SOURCE = re.compile(r"^Source:\s*(\S+)\s*$")
_REPORT_MSG = re.compile(r'"reportMsg"\s*:\s*"(.*)', re.DOTALL)
_REPORT_COUNT = re.compile(r"^\*\s*([A-Z_]+):\s*(\d+)\s*$")
# Waves: the types other resources point at are stored in jobs of their own, first. Within one
# job HAPI stores its files' chunks in parallel, and a reference whose target sits in a chunk not
# yet written makes a placeholder (the loading profile) that the target's own write then races:
# HAPI-0550/0825 "client-assigned ID constraint failure", the job FAILED. Seen in 2 of 3
# 10,000-case loads with every type in one job, on Patient, the target of nearly every reference
# (bench/results/load-10k-2.log, -3.log); 0 of 3 in waves.
WAVES: tuple[frozenset[str], ...] = (
    # Shared targets that point at no patient (Patient.managingOrganization, ...).
    frozenset({"Organization", "Location", "Practitioner", "PractitionerRole", "Medication"}),
    frozenset({"Patient"}),  # the compartment owner
)
# What is left to chance (references between the last wave's own types, e.g. Condition.evidence
# -> Observation) is retried: the ids are the resources' own, so a second run only updates.
CONFLICT_RETRIES = 2
_CONFLICT = re.compile(r"HAPI-0825|HAPI-0550|client-assigned ID constraint")


@dataclass(frozen=True)
class PollLimits:
    max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL  # cap on the server's Retry-After
    max_wait: float = DEFAULT_MAX_WAIT  # give up polling (the job goes on) after this


@dataclass(frozen=True)
class NdjsonFile:
    path: Path
    resource_type: str
    count: int  # resources (non-empty lines)


@dataclass
class FileOutcome:
    """What the server's report says about one file."""

    outcomes: dict[str, int] = field(default_factory=dict)  # SUCCESSFUL_UPDATE_AS_CREATE: 12
    errors: list[str] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.outcomes.get("FAILURE", 0) + (0 if self.outcomes else len(self.errors))


@dataclass
class LoadResult:
    files: list[NdjsonFile]
    job_url: str
    seconds: float
    completed: bool  # False: the job ended FAILED (HTTP 500)
    message: str = ""  # the server's one-line verdict when it failed
    by_file: dict[str, FileOutcome] = field(default_factory=dict)  # file name -> outcome
    report: str = ""
    jobs: int = 1  # $import jobs run (one per wave, and one per retry)
    retried: int = 0  # jobs run again after a conflict between the server's own chunks
    not_sent: list[NdjsonFile] = field(default_factory=list)  # later waves, after a failure

    @property
    def resources(self) -> int:
        return sum(f.count for f in self.files)

    @property
    def failed(self) -> int:
        return sum(o.failed for o in self.by_file.values())

    @property
    def ok(self) -> bool:
        return self.completed and self.failed == 0


# --- the input files ----------------------------------------------------------------------------


def find_ndjson(folder: Path) -> list[NdjsonFile]:
    """The NDJSON files of `folder/ndjson/` (what `export --ndjson` writes) or of `folder`.

    Every line must be one resource of the file's type with an id: `$import` stores each under
    its own id, which is what makes a re-run update instead of duplicate.
    """
    where = folder / "ndjson" if (folder / "ndjson").is_dir() else folder
    paths = sorted(where.glob("*.ndjson"))
    if not paths:
        raise InputError("no *.ndjson files (in it or in its ndjson/)", source=str(folder))
    files = []
    for path in paths:
        checked = _check_file(path)
        if checked.count:
            files.append(checked)
    if not files:
        raise InputError("every *.ndjson file is empty", source=str(where))
    return files


def _check_file(path: Path) -> NdjsonFile:
    rtype = ""
    count = 0
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                resource = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"not JSON ({exc})", source=where) from None
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                raise InputError("resourceType: missing", source=where)
            rtype = rtype or resource["resourceType"]
            if resource["resourceType"] != rtype:
                raise InputError(
                    f"resourceType: {resource['resourceType']} in a file of {rtype}"
                    " (one type per file)",
                    source=where,
                )
            if not isinstance(resource.get("id"), str) or not resource["id"]:
                raise InputError(
                    "id: missing ($import stores each resource under its own id)",
                    source=where,
                )
            count += 1
    return NdjsonFile(path=path, resource_type=rtype, count=count)


# --- serving them on loopback -------------------------------------------------------------------


class FileServer:
    """The NDJSON files over http on 127.0.0.1 while the job runs; nothing else is served.

    The paths carry a random token, so another local process cannot guess them; every file goes
    out as `application/fhir+ndjson` (HAPI refuses `application/octet-stream`).
    """

    def __init__(self, files: list[NdjsonFile], host: str = "127.0.0.1") -> None:
        self.token = secrets.token_urlsafe(16)
        self._by_path = {f"/{self.token}/{quote(f.path.name)}": f.path for f in files}
        self.requests: list[str] = []  # file names fetched, in order (tests, progress)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = owner._by_path.get(self.path.split("?", 1)[0])
                if path is None:
                    self.send_error(404)
                    return
                owner.requests.append(path.name)
                self.send_response(200)
                self.send_header("Content-Type", NDJSON_TYPE)
                self.send_header("Content-Length", str(path.stat().st_size))
                self.end_headers()
                with path.open("rb") as body:
                    shutil.copyfileobj(body, self.wfile)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                log.debug("file server: " + format, *args)

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://{host}:{self._httpd.server_address[1]}/{self.token}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def file_urls(files: list[NdjsonFile], base_url: str) -> list[str]:
    """Each file's URL under `base_url` (the loopback server's, or where the user serves them)."""
    return [f"{base_url.rstrip('/')}/{quote(f.path.name)}" for f in files]


@dataclasses.dataclass(frozen=True)
class StorageDetail:
    """HAPI's `storageDetail` part of the kick-off (its extension of the Bulk import proposal):
    resources per work chunk (`maxBatchResourceCount`), and `chunkByCompartmentName` (a chunk
    holds whole Patient compartments, so a Patient's resources are stored together). None: the
    server's default; other servers ignore the part."""

    batch_size: int | None = None
    by_patient: bool = False

    def part(self) -> dict[str, Any] | None:
        parts: list[dict[str, Any]] = []
        if self.batch_size is not None:
            parts.append({"name": "maxBatchResourceCount", "valueString": str(self.batch_size)})
        if self.by_patient:
            parts.append({"name": "chunkByCompartmentName", "valueString": "Patient"})
        return {"name": "storageDetail", "part": parts} if parts else None


def import_parameters(
    files: list[NdjsonFile], urls: list[str], storage: StorageDetail | None = None
) -> dict[str, Any]:
    """The kick-off Parameters: `inputFormat`, one `input` (type, url) per file, and HAPI's
    `storageDetail` when asked for."""
    params: list[dict[str, Any]] = [{"name": "inputFormat", "valueCode": NDJSON_TYPE}]
    detail = storage.part() if storage else None
    if detail:
        params.append(detail)
    for f, url in zip(files, urls, strict=True):
        params.append(
            {
                "name": "input",
                "part": [
                    {"name": "type", "valueCode": f.resource_type},
                    {"name": "url", "valueUri": url},
                ],
            }
        )
    return {"resourceType": "Parameters", "parameter": params}


# --- the job ------------------------------------------------------------------------------------


class _PollError(ServerError):
    """A non-2xx poll answer, with its body (a FAILED job's report is in it)."""

    def __init__(self, base: ServerError, body: Any) -> None:
        super().__init__(base.status, base.outcome, url=base.url, method=base.method)
        self.body = body


class _PollTransport(Transport):
    """Status polls: a 500 is the job's FAILED verdict, read once, never retried."""

    def server_error(self, response: HttpResponse, method: str, url: str) -> ServerError:
        return _PollError(super().server_error(response, method, url), response.json())


def parse_report(text: str, names_by_url: dict[str, str]) -> dict[str, FileOutcome]:
    """HAPI's "Bulk Import Report": per `Source: URL`, its outcome counts and `Errors:` lines."""
    out: dict[str, FileOutcome] = {}
    current: FileOutcome | None = None
    in_errors = False
    for raw in text.splitlines():
        line = raw.strip()
        source = _REPORT_SOURCE.match(line)
        if source:
            name = names_by_url.get(source.group(1), source.group(1))
            current = out.setdefault(name, FileOutcome())
            in_errors = False
            continue
        if current is None:
            continue
        if line == "Errors:":
            in_errors = True
        elif line == "Outcomes:":
            in_errors = False
        elif line.startswith("*"):
            count = _REPORT_COUNT.match(line)
            if in_errors or count is None:
                current.errors.append(line.lstrip("* ").strip())
            else:
                current.outcomes[count.group(1)] = current.outcomes.get(count.group(1), 0) + int(
                    count.group(2)
                )
    return out


def _report_text(body: Any) -> str:
    """The report string of a poll answer: an issue whose diagnostics is `{"reportMsg": ...}`."""
    if not isinstance(body, dict):
        return ""
    for issue in body.get("issue") or []:
        text = issue.get("diagnostics") if isinstance(issue, dict) else None
        if isinstance(text, str) and "reportMsg" in text:
            try:
                report = orjson.loads(text)
            except orjson.JSONDecodeError:
                # A report cut short (a proxy's or a log's limit): its lines are still readable.
                cut = _REPORT_MSG.search(text)
                return _unescape(cut.group(1)) if cut else ""
            if isinstance(report, dict) and isinstance(report.get("reportMsg"), str):
                return str(report["reportMsg"])
    return ""


def _unescape(text: str) -> str:
    return text.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def waves_of(files: list[NdjsonFile]) -> list[list[NdjsonFile]]:
    """The files in the order they are loaded: each WAVES set that has files, then the rest."""
    waves = [[f for f in files if f.resource_type in wave] for wave in WAVES]
    rest = [f for f in files if not any(f.resource_type in wave for wave in WAVES)]
    return [wave for wave in (*waves, rest) if wave]


def _conflict(result: LoadResult) -> bool:
    """The job failed on two of the server's chunks writing the same id (nothing wrong in the
    files): the failure message or a file's errors say HAPI-0825/0550."""
    if result.completed and not result.failed:
        return False
    texts = [result.message, *(e for o in result.by_file.values() for e in o.errors)]
    return any(_CONFLICT.search(t) for t in texts)


class Loader:
    """Runs one `$import` with a FhirClient's transport (auth, TLS, retries of the kick-off)."""

    def __init__(  # noqa: PLR0913 - keyword-only; sleep and clock are the tests' seams
        self,
        client: Any,  # FhirClient
        *,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        limits: PollLimits | None = None,
        progress: Callable[[str], None] | None = None,
        storage: StorageDetail | None = None,
    ) -> None:
        self.client = client
        self.storage = storage
        self.sleep = sleep or client.sleep
        self.clock = clock
        self.limits = limits or PollLimits()
        self.progress = progress or (lambda text: log.info("%s", text))
        self.polls = 0  # status requests made (tests)
        t = client.transport
        self._poll = _PollTransport(
            t.session,
            auth=t.auth,
            redact=t.redact,
            server=t.server,
            policy=dataclasses.replace(t.policy, statuses=frozenset({408, 429}), sleep=self.sleep),
        )

    def run(self, files: list[NdjsonFile], urls: list[str]) -> LoadResult:
        """Every file, in waves (WAVES first), each wave one job, run again on a conflict."""
        began = self.clock()
        waves = waves_of(files)
        url_of = {f.path: url for f, url in zip(files, urls, strict=True)}
        total = LoadResult(files=files, job_url="", seconds=0.0, completed=True, jobs=0)
        for n, wave in enumerate(waves, 1):
            if len(waves) > 1:
                names = ", ".join(f.path.name for f in wave)
                self.progress(f"wave {n} of {len(waves)}: {names}")
            for attempt in range(CONFLICT_RETRIES + 1):
                result = self.run_job(wave, [url_of[f.path] for f in wave])
                total.jobs += 1
                if result.ok or attempt == CONFLICT_RETRIES or not _conflict(result):
                    break
                total.retried += 1
                self.progress(
                    "$import failed on a conflict between the server's own work chunks "
                    "(HAPI-0825); running the same files again (it only updates)"
                )
            total.by_file.update(result.by_file)
            total.report = "\n".join(x for x in (total.report, result.report) if x)
            total.job_url = result.job_url
            if not result.completed:
                total.completed, total.message = False, result.message
                total.not_sent = [f for later in waves[n:] for f in later]
                break
        total.seconds = self.clock() - began
        return total

    def run_job(self, files: list[NdjsonFile], urls: list[str]) -> LoadResult:
        """One `$import` job of these files: kick off, poll to the end, parse the report."""
        began = self.clock()
        job_url = self.kick_off(files, urls)
        self.progress(
            f"$import started: {sum(f.count for f in files)} resources in {len(files)} files; "
            f"polling {job_url}"
        )
        completed, body, message = self._wait(job_url, began)
        report = _report_text(body)
        names = {url: f.path.name for f, url in zip(files, urls, strict=True)}
        return LoadResult(
            files=files,
            job_url=job_url,
            seconds=self.clock() - began,
            completed=completed,
            message=message,
            by_file=parse_report(report, names),
            report=report,
        )

    def kick_off(self, files: list[NdjsonFile], urls: list[str]) -> str:
        url = f"{self.client.base_url}/$import"
        response = self.client.transport.request(
            "POST",
            url,
            body=orjson.dumps(import_parameters(files, urls, self.storage)),
            headers={"Prefer": "respond-async"},
        )
        location = response.headers.get("Content-Location")
        if response.status != 202 or not location:
            raise FatalTransportError(
                f"POST {url} -> HTTP {response.status} without a Content-Location: the server "
                "did not start an asynchronous $import (does it support Bulk Data import?)",
                url=url,
                status=response.status,
            )
        if origin_str(location) != origin_str(self.client.base_url):
            # The poll carries the client's credentials: only to the server it was given.
            raise FatalTransportError(
                f"$import status URL {location} is on another origin than {self.client.base_url}",
                url=location,
            )
        return str(location)

    def _wait(self, job_url: str, began: float) -> tuple[bool, Any, str]:
        """(completed, the final answer's body, the failure message)."""
        said = ""
        while True:
            self.polls += 1
            try:
                response = self._poll.request("GET", job_url)
            except _PollError as exc:
                if exc.status == 500:
                    first = exc.outcome.issues[0].text if exc.outcome.issues else str(exc)
                    return False, exc.body, first
                raise
            if response.status == 200:
                return True, response.json(), ""
            progress = response.headers.get("X-Progress", "")
            if progress and progress != said:
                self.progress(progress)
                said = progress
            waited = self.clock() - began
            if waited > self.limits.max_wait:
                raise TransportError(
                    f"$import not finished after {waited:.0f}s (job {job_url}); it goes on on "
                    "the server: poll it, or run the same load again later (it only updates)",
                    url=job_url,
                )
            asked = parse_retry_after(response.headers.get("Retry-After"))
            self.sleep(min(asked if asked is not None else 1.0, self.limits.max_poll_interval))


@contextmanager
def served(files: list[NdjsonFile], base_url: str | None) -> Iterator[list[str]]:
    """The files' URLs: under `base_url` (served by the user), or served here on loopback."""
    if base_url:
        yield file_urls(files, base_url)
        return
    with FileServer(files) as server:
        yield file_urls(files, server.base_url)


def outcome_summary(result: LoadResult) -> dict[str, dict[str, int]]:
    """File name -> outcome counts (for --json and tests)."""
    return {name: dict(o.outcomes) for name, o in sorted(result.by_file.items())}


__all__ = [
    "FileServer",
    "LoadResult",
    "Loader",
    "NdjsonFile",
    "PollLimits",
    "StorageDetail",
    "find_ndjson",
    "import_parameters",
    "outcome_summary",
    "parse_report",
    "served",
    "waves_of",
]
