"""Validation by a server's $validate: every issue, per file, NDJSON line and Bundle entry."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from fhir_cyclo.core.errors import (
    FatalTransportError,
    InputError,
    Issue,
    OperationOutcome,
    ServerError,
)
from fhir_cyclo.core.terminology import terminology
from fhir_cyclo.fhir.bundle import transaction_bundle
from fhir_cyclo.readers.case_files import COHORT_PATIENTS, discover, load, read_structured

if TYPE_CHECKING:
    from fhir_cyclo.client.fhir import FhirClient

DEFAULT_WORKERS = 2  # the server validates ~0.1-1 s per Bundle; 2 keeps a 2-core box usable
SEVERITIES = ("fatal", "error", "warning", "information")
# HAPI writes the entry's Type/id as a comment into Bundle paths:
# "Bundle.entry[1].resource/*Condition/86cd...*/.code" -> "Bundle.entry[1].resource.code".
_COMMENT = re.compile(r"/\*.*?\*/")
_ENTRY = re.compile(r"^Bundle\.entry\[(\d+)\]")
_LINE_COL = re.compile(r"^Line\[\d+\] Col\[\d+\]$")


@dataclass(frozen=True)
class Target:
    """One resource to send to $validate, and where it came from."""

    source: str  # the file, "file:LINE" for NDJSON, or the case's source
    resource_type: str
    body: bytes | dict[str, Any]  # file bytes as they are, or a mapped Bundle
    entries: tuple[str, ...] = ()  # a label per Bundle entry: "Observation/<id>"
    label: str = ""  # what the target is when it is not a Bundle ("Observation/<id>")


@dataclass(frozen=True)
class Finding:
    """One issue: where (file, entry, FHIRPath) and what (severity, message, validator id)."""

    source: str
    severity: str
    location: str
    message: str
    entry: str = ""
    message_id: str = ""

    @property
    def is_error(self) -> bool:
        return self.severity in ("fatal", "error")

    def line(self) -> str:
        where = f"{self.source} {self.entry}" if self.entry else self.source
        location = f"{self.location}: " if self.location else ""
        return f"{where}: {self.severity}: {location}{self.message}"


def fhirpath(issue: Issue) -> str:
    """issue.expression, else the first non line/column location, without HAPI's comments."""
    candidates = list(issue.expression) + [
        loc for loc in issue.location if not _LINE_COL.match(loc)
    ]
    return _COMMENT.sub("", candidates[0]) if candidates else ""


def findings(target: Target, outcome: OperationOutcome) -> list[Finding]:
    """The outcome's issues as Findings, duplicates dropped (HAPI lists a Bundle's issues twice)."""
    out: list[Finding] = []
    seen: set[tuple[str, str, str]] = set()
    for issue in outcome.issues:
        location = fhirpath(issue)
        message = issue.diagnostics or issue.details or issue.code
        key = (issue.severity, location, message)
        if key in seen:
            continue
        seen.add(key)
        entry = target.label
        match = _ENTRY.match(location)
        if match and int(match.group(1)) < len(target.entries):
            entry = f"entry[{match.group(1)}] {target.entries[int(match.group(1))]}"
        out.append(
            Finding(
                source=target.source,
                severity=issue.severity or "error",
                location=location,
                message=message,
                entry=entry,
                message_id=issue.message_id,
            )
        )
    return out


def _local(source: str, message: str, location: str = "") -> Finding:
    """A problem found before anything was sent (unreadable file, bad JSON, unmappable case)."""
    return Finding(source=source, severity="error", location=location, message=message)


def _label(resource: Any) -> str:
    if not isinstance(resource, dict):
        return ""
    rtype, rid = resource.get("resourceType", "?"), resource.get("id")
    return f"{rtype}/{rid}" if rid else str(rtype)


def target_for(source: str, resource: dict[str, Any], body: bytes | None = None) -> Target:
    """A Target for a parsed resource; `body` (its original bytes) is what gets sent, if given."""
    entries: tuple[str, ...] = ()
    if resource.get("resourceType") == "Bundle":
        labels = []
        for entry in resource.get("entry") or []:
            inner = entry.get("resource") if isinstance(entry, dict) else None
            label = _label(inner)
            if isinstance(inner, dict) and not inner.get("id") and entry.get("fullUrl"):
                label = f"{label} {entry['fullUrl']}"
            labels.append(label)
        entries = tuple(labels)
    return Target(
        source=source,
        resource_type=str(resource.get("resourceType", "")),
        body=body if body is not None else resource,
        entries=entries,
        label="" if entries else _label(resource) if resource.get("id") else "",
    )


# --- reading the paths --------------------------------------------------------------------------


def _is_fhir_json(path: Path) -> bool:
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        head = json.loads(path.read_bytes())
    except (ValueError, OSError):
        return False
    return isinstance(head, dict) and "resourceType" in head


def _kinds(paths: Iterable[str | Path]) -> Iterator[tuple[str, Path]]:
    """("ndjson" | "fhir" | "case", path) for every input under `paths`, in a stable order."""

    def kind(path: Path) -> str:
        if path.is_file() and path.suffix == ".ndjson":
            return "ndjson"
        return "fhir" if _is_fhir_json(path) else "case"

    for raw in paths:
        path = Path(raw)
        if path.is_dir() and not (path / COHORT_PATIENTS).is_file():
            for child in discover([path]):
                yield kind(child), child
            for child in sorted(path.rglob("*.ndjson")):
                yield "ndjson", child
        else:
            yield kind(path), path


def _ndjson_targets(path: Path) -> Iterator[Target | Finding]:
    try:
        raw_lines = path.read_bytes().splitlines()
    except OSError as exc:
        yield _local(str(path), f"cannot read: {exc.strerror}")
        return
    for number, line in enumerate(raw_lines, start=1):
        if not line.strip():
            continue
        source = f"{path}:{number}"
        try:
            resource = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield _local(source, f"invalid JSON: {exc}")
            continue
        if not isinstance(resource, dict) or "resourceType" not in resource:
            yield _local(source, "not a FHIR resource (no resourceType)")
            continue
        yield target_for(source, resource, line)


def collect(paths: Iterable[str | Path]) -> Iterator[Target | Finding]:
    """Targets for every file, NDJSON line and case under `paths`; local problems as Findings."""
    case_paths: list[Path] = []
    for kind, path in _kinds(paths):
        if kind == "ndjson":
            yield from _ndjson_targets(path)
        elif kind == "fhir":
            try:
                resource = read_structured(path)
            except InputError as exc:
                yield _local(str(path), exc.message)
                continue
            yield target_for(str(path), resource, path.read_bytes())
        else:
            case_paths.append(path)
    if not case_paths:
        return
    terms = terminology()
    for loaded in load(case_paths, terms):
        if loaded.error is not None:
            yield _local(loaded.source, loaded.error.message, loaded.error.path)
            continue
        assert loaded.case is not None
        try:
            bundle = transaction_bundle(loaded.case, terms)
        except InputError as exc:
            yield _local(loaded.source, exc.message, exc.path)
            continue
        yield target_for(loaded.source, bundle)


# --- asking the server --------------------------------------------------------------------------


def validate_target(client: Any, target: Target) -> list[Finding]:
    """$validate one target; the server's refusal to validate (404, 500) is an error Finding."""
    try:
        outcome = client.validate_resource(target.body)
    except InputError as exc:
        return [_local(target.source, exc.message)]
    except ServerError as exc:
        if exc.status in (401, 403):
            raise FatalTransportError(str(exc), url=exc.url, status=exc.status) from None
        return [_local(target.source, f"the server could not validate it: {exc}")]
    return findings(target, outcome)


def validate_all(
    client: Any, items: Iterable[Target | Finding], *, workers: int = DEFAULT_WORKERS
) -> Iterator[tuple[Target | None, list[Finding]]]:
    """(target, its findings) in input order; local problems come as (None, [finding])."""

    def one(item: Target | Finding) -> tuple[Target | None, list[Finding]]:
        if isinstance(item, Finding):
            return None, [item]
        return item, validate_target(client, item)

    if workers <= 1:
        yield from map(one, items)
        return
    client.ensure_pool_size(workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="validate") as pool:
        yield from pool.map(one, items)


# --- the whole run -----------------------------------------------------------------------------


@dataclass
class ServerValidation:
    """Counts of one `validate --server` run, by severity."""

    sent: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEVERITIES, 0))

    @property
    def errors(self) -> int:
        return self.counts["fatal"] + self.counts["error"]


def validate_paths_on_server(
    client: FhirClient,
    paths: Iterable[str | Path],
    *,
    workers: int = DEFAULT_WORKERS,
    on_finding: Callable[[Finding], None] = lambda _: None,
) -> ServerValidation:
    """$validate everything under `paths` with `client`; each finding goes to `on_finding`.

    The server is asked for its CapabilityStatement first: not reachable or not R4 raises
    (FatalTransportError) before anything is sent.
    """
    summary = ServerValidation()
    client.capabilities()
    for target, found in validate_all(client, collect(paths), workers=workers):
        summary.sent += target is not None
        for finding in found:
            severity = finding.severity if finding.severity in summary.counts else "error"
            summary.counts[severity] += 1
            on_finding(finding)
    return summary
