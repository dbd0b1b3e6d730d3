"""`fhir-cyclo push`: one transaction per case (case files, cohorts, Bundles) to a server."""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_cyclo.cli import options, output, preflight
from fhir_cyclo.cli.options import HelpFormatter, ServerOptions, add_verbosity
from fhir_cyclo.core.errors import FhirCycloError, UsageError

if TYPE_CHECKING:
    from fhir_cyclo.server.push import CaseResult, Outgoing

NAME = "push"
# The journal's default place; server.journal.DEFAULT_JOURNAL is the same path (not imported:
# it would load the push machinery for every `--help`).
DEFAULT_JOURNAL = Path(".fhir-cyclo") / "push-journal.jsonl"


@dataclass(frozen=True)
class PushOptions:
    paths: tuple[str, ...]
    server: ServerOptions  # url is None only with dry_run
    workers: int = 1
    dry_run: bool = False
    progress: bool = True
    journal: Path | None = DEFAULT_JOURNAL  # None: --no-journal
    resume: bool = False


def register(sub: argparse._SubParsersAction[Any], help_line: str) -> None:
    p = sub.add_parser(
        NAME,
        help=help_line,
        description="Send one transaction per case (case files, cohort folders or exported "
        "Bundles) to a FHIR R4 server. Failures and the summary go to stderr.",
        formatter_class=HelpFormatter,
    )
    add_verbosity(p, top=False)
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="case files, cohort folders, or exported Bundle JSON",
    )
    options.add_server_options(p)
    p.add_argument("--workers", type=int, default=1, metavar="N", help="parallel transactions")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="map and check; print each transaction it would send (stdout); send nothing",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--journal",
        metavar="FILE",
        help="record each case the server acknowledged here (JSONL, fsynced once a second; default "
        ".fhir-cyclo/push-journal.jsonl in the current folder)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip cases the journal holds for this server with the same Bundle (an edited case "
        "is pushed again); use after a failed or interrupted run",
    )
    p.add_argument("--no-journal", action="store_true", help="do not read or write a journal")


def parse(ns: argparse.Namespace) -> PushOptions:
    """Every usage error of `push`, before any work."""
    preflight.inputs_exist(ns.paths)
    if ns.workers < 1:
        raise UsageError(f"--workers must be 1 or more, got {ns.workers}")
    if ns.resume and ns.no_journal:
        raise UsageError("--resume reads the journal, so it cannot be combined with --no-journal")
    if ns.journal and ns.no_journal:
        raise UsageError("--journal and --no-journal contradict each other")
    journal = None if ns.no_journal else Path(ns.journal) if ns.journal else DEFAULT_JOURNAL
    if journal is not None and not ns.dry_run:
        if journal.is_dir():
            raise UsageError(f"--journal {journal}: is a folder; give a file name")
        preflight.output_file(str(journal), "--journal", ns.paths)
    server = options.server_options(ns, required=not ns.dry_run)
    return PushOptions(
        paths=tuple(ns.paths),
        server=server,
        workers=ns.workers,
        dry_run=bool(ns.dry_run),
        progress=not ns.no_progress,
        journal=journal,
        resume=bool(ns.resume),
    )


def _bundles(paths: list[str], failures: list[str], skipped: list[str]) -> Iterator[Outgoing]:
    """(label, transaction bytes[, identifier]) per case; bad inputs reported once, skipped."""
    import hashlib

    from fhir_cyclo.core.terminology import terminology
    from fhir_cyclo.export.writer import map_case
    from fhir_cyclo.fhir.bundle import dumps, transaction_bundle
    from fhir_cyclo.readers.case_files import load
    from fhir_cyclo.server.journal import bundle_identifier
    from fhir_cyclo.server.push import Outgoing

    terms = terminology()
    # One pass, each file read once: a Bundle file is sent as it is, a case file is mapped.
    for loaded in load(paths, terms, skipped, bundles=True):
        if loaded.bundle is not None:
            data = dumps(loaded.bundle, pretty=False)
            yield Outgoing(loaded.source, data, bundle_identifier(loaded.bundle))
            continue
        if loaded.case is None:
            failures.append(str(loaded.error))
            output.error(f"invalid input: {loaded.error}")
            continue
        try:
            resources = map_case(loaded.case, terms)
        except FhirCycloError as exc:
            failures.append(f"{loaded.source}: {exc}")
            output.error(f"invalid input: {loaded.source}: {exc}")
            continue
        # Logs name the file and a hash, never the identifier value (PHI, e.g. an MRN).
        digest = hashlib.sha256(loaded.case.identifier.token.encode()).hexdigest()[:10]
        label = f"{loaded.source} [case #{digest}]"
        data = dumps(transaction_bundle(loaded.case, terms, resources), pretty=False)
        yield Outgoing(label, data, loaded.case.identifier.token)


def _plan(items: Iterator[Outgoing]) -> Iterator[Outgoing]:
    """--dry-run: print what each transaction would send (data, so stdout), pass it on."""
    import orjson

    for item in items:
        label, data = item.label, item.bundle
        bundle = orjson.loads(data) if isinstance(data, bytes) else data
        kinds = Counter(
            (e.get("request") or {}).get("method", "?")
            + " "
            + str((e.get("resource") or {}).get("resourceType", "?"))
            for e in bundle.get("entry") or []
            if isinstance(e, dict)
        )
        detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        output.data(
            f"would send {label}: transaction of {sum(kinds.values())} entries ({detail})\n"
        )
        yield item


def run(opts: PushOptions) -> int:
    from fhir_cyclo.server.journal import PushJournal
    from fhir_cyclo.server.push import push_bundles

    input_failures: list[str] = []
    skipped_files: list[str] = []
    client = None if opts.dry_run else options.make_client(opts.server)
    if client is not None:
        client.capabilities()  # fail fast (exit 3) before anything is sent or journaled
    journal = None
    if client is not None and opts.journal is not None:
        journal = PushJournal(opts.journal, client.base_url)

    def report(case: CaseResult) -> None:
        if not case.ok:
            # Each failed case once, as it happens; "not sent" ones too, so every case the
            # summary counts as failed is named (the journal and --resume send them later).
            output.problem(f"failed: {case.error}")

    items = _bundles(list(opts.paths), input_failures, skipped_files)
    try:
        summary = push_bundles(
            client,  # type: ignore[arg-type]
            _plan(items) if opts.dry_run else items,
            workers=opts.workers,
            dry_run=opts.dry_run,
            progress=opts.progress,
            journal=journal,
            resume=opts.resume,
            on_result=report,
        )
    finally:
        if journal is not None:
            journal.close()
    if skipped_files:
        output.say(
            f"skipped {len(skipped_files)} file(s) that are not cases or Bundles: "
            + ", ".join(skipped_files)
        )
    if summary.not_sent:
        output.say(f"not sent: {summary.not_sent} case(s), the server had gone away")
    # summary.gave_up was logged once by push_bundles as it happened.
    failed = summary.failed + len(input_failures)
    if summary.failed and journal is not None:
        output.say(f"journal: {opts.journal}; run the same command with --resume to send the rest")
    parts = []
    if summary.failed - summary.not_sent:
        parts.append(f"{summary.failed - summary.not_sent} rejected or unreachable")
    if summary.not_sent:
        parts.append(f"{summary.not_sent} not sent")
    if input_failures:
        parts.append(f"{len(input_failures)} invalid input")
    verb = "would push" if opts.dry_run else "pushed"
    tail = ""
    if not opts.dry_run:
        unchanged = summary.unchanged_cases
        tail = (
            f"; {summary.created} resource(s) created, {summary.updated} updated, "
            f"{summary.unchanged} unchanged"
            + (f" ({unchanged} case(s) already up to date)" if unchanged else "")
        )
    output.say(
        f"{verb} {summary.pushed} case(s), skipped {summary.skipped} (already there), "
        f"failed {failed}" + (f" ({', '.join(parts)})" if parts else "") + tail
    )
    return output.EXIT_FAILED_ITEMS if failed else output.EXIT_OK
