"""Push one transaction Bundle per case, in parallel; one failing case never stops the others."""

from __future__ import annotations

import logging
import random
import sys
from collections.abc import Callable, Iterable, Mapping, Sized
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from typing import Any

import orjson
from tqdm import tqdm

from fhir_cyclo.client.fhir import FhirClient
from fhir_cyclo.client.results import TransactionResult
from fhir_cyclo.errors import Conflict, FhirCycloError, InputError, ServerError

log = logging.getLogger("fhir_cyclo.push")

Bundle = Mapping[str, Any] | bytes

# A 409 on a transaction is HAPI-0550: two workers raced the same conditional create on the
# HFJ_RES_SEARCH_URL unique index. The loser was rolled back whole (transactions are atomic),
# and re-posting it once makes its ifNoneExist match the winner's resource instead of creating.
# Only once: a second 409 is a real conflict (e.g. an If-Match version) and needs a human.
CONFLICT_BACKOFF = 1.0


@dataclass(frozen=True)
class CaseResult:
    """The outcome of pushing one case; `entries` is the number of Bundle entries."""

    label: str
    ok: bool
    status: int | None
    entries: int
    error: str | None = None
    created: int = 0
    updated: int = 0
    result: TransactionResult | None = field(default=None, repr=False, compare=False)


@dataclass
class PushSummary:
    """Counts over all cases plus the failed ones (in completion order)."""

    pushed: int = 0
    failed: int = 0
    created: int = 0
    updated: int = 0
    failures: list[CaseResult] = field(default_factory=list)
    dry_run: bool = False

    @property
    def total(self) -> int:
        return self.pushed + self.failed

    @property
    def ok(self) -> bool:
        return self.failed == 0

    def add(self, case: CaseResult) -> None:
        if case.ok:
            self.pushed += 1
            self.created += case.created
            self.updated += case.updated
        else:
            self.failed += 1
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


def _transaction(
    client: FhirClient, label: str, bundle: Bundle, rng: random.Random
) -> TransactionResult:
    """One transaction, re-posted once after a 409 (see CONFLICT_BACKOFF); other 4xx propagate."""
    try:
        return client.transaction(bundle)
    except Conflict as exc:
        # The random part spreads the racing workers apart so they do not collide again.
        delay = CONFLICT_BACKOFF + rng.uniform(0, CONFLICT_BACKOFF)
        log.info("case %s: HTTP 409 %s; retrying once in %.1fs", label, exc.hapi_codes, delay)
        client.sleep(delay)
        return client.transaction(bundle)


def _push_one(client: FhirClient, label: str, bundle: Bundle, rng: random.Random) -> CaseResult:
    try:
        result = _transaction(client, label, bundle, rng)
    except Exception as exc:  # one bad case, even a bug, must not stop the others
        if not isinstance(exc, FhirCycloError):
            log.exception("case %s: unexpected error", label)
        return CaseResult(
            label=label,
            ok=False,
            status=getattr(exc, "status", None),
            entries=_safe_count(bundle),
            error=_describe(label, exc),
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
    items: Iterable[tuple[str, Bundle]],
    *,
    workers: int = 1,
    dry_run: bool = False,
    progress: bool = False,
    on_result: Callable[[CaseResult], None] | None = None,
) -> PushSummary:
    """POST each (label, transaction Bundle) as its own transaction and summarise.

    `on_result` runs on the calling thread, in completion order. Items are pulled lazily, at
    most 2 x workers at a time, so a generator of bundles is never held in memory whole.
    """
    if workers < 1:
        raise InputError(f"workers must be >= 1, got {workers}", source="push_bundles")
    summary = PushSummary(dry_run=dry_run)
    total = len(items) if isinstance(items, Sized) else None
    bar = tqdm(
        total=total,
        unit="case",
        desc="dry run" if dry_run else "push",
        file=sys.stderr,
        disable=not (progress and sys.stderr.isatty()),
    )
    rng = random.Random()  # noqa: S311 - jitter only, not security

    def record(case: CaseResult) -> None:
        summary.add(case)
        if not case.ok:
            log.error("%s", case.error)
        bar.update(1)
        if summary.failed:
            bar.set_postfix(failed=summary.failed, refresh=False)
        if on_result is not None:
            on_result(case)

    try:
        if dry_run:
            for label, bundle in items:
                record(_dry_one(label, bundle))
        elif workers == 1:
            for label, bundle in items:
                record(_push_one(client, label, bundle, rng))
        else:
            client.ensure_pool_size(workers)
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fhir-push") as pool:
                pending: set[Future[CaseResult]] = set()
                for label, bundle in items:
                    pending.add(pool.submit(_push_one, client, label, bundle, rng))
                    if len(pending) >= 2 * workers:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for future in done:
                            record(future.result())
                for future in as_completed(pending):
                    record(future.result())
    finally:
        bar.close()
    return summary
