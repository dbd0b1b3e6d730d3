"""Push one transaction Bundle per case, in parallel; one failing case never stops the others.

With a PushJournal every acknowledged case is recorded as it arrives, and `resume` skips the
cases the journal already holds for this server and this exact Bundle.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from tqdm import tqdm

from fhir_cyclo.client.fhir import FhirClient
from fhir_cyclo.client.results import TransactionResult
from fhir_cyclo.core.errors import (
    FhirCycloError,
    InputError,
    ServerError,
    TemporaryTransportError,
)
from fhir_cyclo.server.journal import PushJournal, bundle_digest, case_key

log = logging.getLogger("fhir_cyclo.server.push")

Bundle = Mapping[str, Any] | bytes


class Outgoing(NamedTuple):
    """A case to push. `identifier`: its token (system|value) when the Bundle was built from
    it, so the journal keys the case without parsing the Bundle again; None: read from it."""

    label: str
    bundle: Bundle
    identifier: str | None = None


# A plain (label, bundle) pair is an Outgoing without a known identifier.
Item = Outgoing | tuple[str, Bundle]

# When this many cases in a row (at least one per worker) fail because the server is unreachable
# or overloaded, each after its own full retry cycle, the server is taken to be down: the cases
# not yet sent are reported "not sent" at once instead of each waiting out its retries against a
# dead server, and `push --resume` sends them later.
GIVE_UP_AFTER = 3
# Statuses that describe the server's state, not the case: 502/503/504 outage, 429 rate limit.
_UNAVAILABLE = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class CaseResult:
    """The outcome of pushing one case; `entries` is the number of Bundle entries.

    `skipped`: already acknowledged (journal), not sent again. `unreachable`: failed because the
    server was down or overloaded. `not_sent`: never sent because the server had gone away.
    """

    label: str
    ok: bool
    status: int | None
    entries: int
    error: str | None = None
    created: int = 0
    updated: int = 0
    result: TransactionResult | None = field(default=None, repr=False, compare=False)
    skipped: bool = False
    unreachable: bool = False
    not_sent: bool = False


@dataclass
class PushSummary:
    """Counts over all cases plus the failed ones (in completion order).

    `failed` includes `not_sent` (cases held back after the server went away).
    """

    pushed: int = 0
    skipped: int = 0
    failed: int = 0
    not_sent: int = 0
    created: int = 0
    updated: int = 0
    failures: list[CaseResult] = field(default_factory=list)
    dry_run: bool = False
    gave_up: str | None = None

    @property
    def total(self) -> int:
        return self.pushed + self.skipped + self.failed

    @property
    def ok(self) -> bool:
        return self.failed == 0

    unchanged: int = 0  # entries the server kept as they were (neither created nor updated)
    unchanged_cases: int = 0  # pushed cases with nothing created or updated

    def add(self, case: CaseResult) -> None:
        if case.skipped:
            self.skipped += 1
        elif case.ok:
            self.pushed += 1
            self.created += case.created
            self.updated += case.updated
            if not self.dry_run:
                same = max(case.entries - case.created - case.updated, 0)
                self.unchanged += same
                self.unchanged_cases += same == case.entries
        else:
            self.failed += 1
            self.not_sent += case.not_sent
            self.failures.append(case)


def _entry_count(bundle: Bundle) -> int:
    """Entries of a transaction Bundle, checked locally (dry runs and error messages)."""
    parsed: Any
    if isinstance(bundle, bytes):
        try:
            parsed = orjson.loads(bundle)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"the bundle is not valid JSON: {exc}") from None
    else:
        parsed = bundle
    if not isinstance(parsed, Mapping) or parsed.get("resourceType") != "Bundle":
        raise InputError("not a FHIR Bundle")
    if parsed.get("type") not in ("transaction", "batch"):
        raise InputError(f"Bundle.type is {parsed.get('type')!r}, expected transaction")
    entries = parsed.get("entry") or []
    return len(entries) if isinstance(entries, list) else 0


def _describe(label: str, exc: BaseException) -> str:
    if isinstance(exc, ServerError):
        codes = ", ".join(exc.hapi_codes)
        suffix = f" [{codes}]" if codes else ""
        return f"case {label}: {exc}{suffix}"
    if isinstance(exc, FhirCycloError):
        return f"case {label}: {exc}"
    return f"case {label}: unexpected {type(exc).__name__}: {exc}"


def _is_unreachable(exc: BaseException) -> bool:
    return isinstance(exc, TemporaryTransportError) or (
        isinstance(exc, ServerError) and exc.status in _UNAVAILABLE
    )


class _GiveUp:
    """Counts unreachable failures in a row (completion order); trips once at the threshold."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.streak = 0
        self.reason = ""
        # Read by the worker threads before each send; only the calling thread sets it.
        self.tripped = threading.Event()

    def observe(self, case: CaseResult) -> bool:
        """Update with one result; True when this result trips it."""
        if case.skipped or case.not_sent or self.tripped.is_set():
            return False
        self.streak = self.streak + 1 if case.unreachable else 0
        if self.threshold > 0 and self.streak >= self.threshold:
            self.reason = f"the server failed {self.streak} cases in a row ({case.error})"
            self.tripped.set()
            return True
        return False


def _not_sent(label: str, bundle: Bundle) -> CaseResult:
    # The reason (the failures that tripped _GiveUp) is reported once, in PushSummary.gave_up.
    return CaseResult(
        label=label,
        ok=False,
        status=None,
        entries=_safe_count(bundle),
        error=f"case {label}: not sent: the server had stopped answering",
        not_sent=True,
    )


def _push_one(client: FhirClient, label: str, bundle: Bundle, give_up: _GiveUp) -> CaseResult:
    if give_up.tripped.is_set():
        return _not_sent(label, bundle)
    try:
        # A 409 (workers racing on one conditional create) is retried inside transaction().
        result = client.transaction(bundle)
    except Exception as exc:  # one bad case, even a bug, must not stop the others
        if not isinstance(exc, FhirCycloError):
            log.exception("case %s: unexpected error", label)
        return CaseResult(
            label=label,
            ok=False,
            status=getattr(exc, "status", None),
            entries=_safe_count(bundle),
            error=_describe(label, exc),
            unreachable=_is_unreachable(exc),
        )
    return CaseResult(
        label=label,
        ok=True,
        status=200,
        entries=len(result),
        created=result.created,
        updated=result.updated,
        result=result,
    )


def _safe_count(bundle: Bundle) -> int:
    try:
        return _entry_count(bundle)
    except InputError:
        return 0


def _dry_one(label: str, bundle: Bundle) -> CaseResult:
    try:
        return CaseResult(label=label, ok=True, status=None, entries=_entry_count(bundle))
    except InputError as exc:
        return CaseResult(
            label=label, ok=False, status=None, entries=0, error=_describe(label, exc)
        )


def push_bundles(
    client: FhirClient,
    items: Iterable[Item],
    *,
    workers: int = 1,
    dry_run: bool = False,
    progress: bool = False,
    on_result: Callable[[CaseResult], None] | None = None,
    journal: PushJournal | None = None,
    resume: bool = False,
    give_up_after: int | None = None,
) -> PushSummary:
    """POST each (label, transaction Bundle) as its own transaction and summarise.

    `on_result` runs on the calling thread, in completion order. Items are pulled lazily, at
    most 2 x workers at a time, so a generator of bundles is never held in memory whole.

    `journal` records each acknowledged case (on the calling thread, written before
    `on_result`); with `resume`, cases it already holds for this exact Bundle are skipped.
    `give_up_after`: unreachable failures in a row after which the remaining cases are not sent
    (default max(GIVE_UP_AFTER, workers); 0 never gives up).
    """
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}", source="push_bundles")
    if resume and journal is None:
        raise InputError("resume needs a journal", source="push_bundles")
    summary = PushSummary(dry_run=dry_run)
    total = len(items) if isinstance(items, Sized) else None
    bar = tqdm(
        total=total,
        unit="case",
        desc="dry run" if dry_run else "push",
        file=sys.stderr,
        disable=not (progress and sys.stderr.isatty()),
    )
    give_up = _GiveUp(max(GIVE_UP_AFTER, workers) if give_up_after is None else give_up_after)
    # (case key, bundle digest) of each case in flight, by job number, for the journal.
    keys: dict[int, tuple[str, str]] = {}

    def record(case: CaseResult, job: int | None = None) -> None:
        key = keys.pop(job, None) if job is not None else None
        if case.ok and not case.skipped and key is not None and journal is not None:
            journal.record(*key, entries=case.entries)
        summary.add(case)
        if not case.ok and not case.not_sent:
            # INFO: the caller reports failures (the CLI prints each once, via on_result).
            log.info("%s", case.error)
        if give_up.observe(case):
            summary.gave_up = give_up.reason
            log.error("giving up on the cases not sent yet: %s", give_up.reason)
        bar.update(1)
        if summary.failed:
            bar.set_postfix(failed=summary.failed, refresh=False)
        if on_result is not None:
            on_result(case)

    def jobs() -> Iterator[tuple[int, str, Bundle]]:
        """(job number, label, bundle) for each case to send; skipped ones are recorded here."""
        for job, item in enumerate(items):
            label, bundle = item[0], item[1]
            if journal is not None and not dry_run:
                data = bundle if isinstance(bundle, bytes) else orjson.dumps(bundle)
                identifier = item.identifier if isinstance(item, Outgoing) else None
                key = (case_key(label, data, identifier), bundle_digest(data))
                if resume and journal.acknowledged(*key):
                    record(
                        CaseResult(
                            label=label,
                            ok=True,
                            status=None,
                            entries=_safe_count(data),
                            skipped=True,
                        )
                    )
                    continue
                keys[job] = key
                yield job, label, data  # send exactly the bytes that were hashed
            else:
                yield job, label, bundle

    try:
        if dry_run:
            for _, label, bundle in jobs():
                record(_dry_one(label, bundle))
        else:
            # Even one worker runs in the pool: the calling thread reads and maps the next case
            # while the current transaction is in flight (bench: 1-worker push ratio 0.83 -> ~0.9).
            client.ensure_pool_size(workers)
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fhir-push") as pool:
                pending: dict[Future[CaseResult], int] = {}
                for job, label, bundle in jobs():
                    pending[pool.submit(_push_one, client, label, bundle, give_up)] = job
                    if len(pending) >= 2 * workers:
                        done, _ = wait(pending, return_when=FIRST_COMPLETED)
                        # Several may finish together: record them in input order (stable logs).
                        for future in sorted(done, key=pending.__getitem__):
                            record(future.result(), pending.pop(future))
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in sorted(done, key=pending.__getitem__):
                        record(future.result(), pending.pop(future))
    finally:
        bar.close()
    return summary
