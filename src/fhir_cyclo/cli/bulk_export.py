"""`fhir-cyclo bulk-export` and the export step of `score --bulk` (Bulk Data into a folder)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_cyclo.cli import options, output, preflight
from fhir_cyclo.cli.options import HelpFormatter, ServerOptions, add_verbosity

if TYPE_CHECKING:
    from fhir_cyclo.client.bulk import BulkRequest, BulkResult
    from fhir_cyclo.client.fhir import FhirClient

NAME = "bulk-export"
DEFAULT_BULK_DIR = Path(".fhir-cyclo") / "bulk-export"
DEFAULT_MAX_POLL_WAIT = 300.0


@dataclass(frozen=True)
class BulkOptions:
    """What to export and how to wait (shared by `bulk-export` and `score --bulk`)."""

    group: str | None = None
    since: str | None = None
    types: tuple[str, ...] = ()  # empty: the types scoring reads
    type_filter: bool = True
    max_poll_wait: float = DEFAULT_MAX_POLL_WAIT
    progress: bool = True


@dataclass(frozen=True)
class BulkExportOptions:
    server: ServerOptions
    bulk: BulkOptions
    out: Path
    strict: bool = False  # a partial export (asked types missing, or nothing) exits 1


def add_bulk_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `bulk-export` and `score --bulk`."""
    p.add_argument("--group", help="export Group/ID/$export instead of Patient/$export")
    p.add_argument("--since", metavar="INSTANT", help="_since: only resources changed after it")
    p.add_argument(
        "--type",
        action="append",
        metavar="TYPE",
        help="resource type to export (repeatable; default: the types scoring reads)",
    )
    p.add_argument(
        "--max-poll-wait",
        type=float,
        default=DEFAULT_MAX_POLL_WAIT,
        metavar="SECONDS",
        help="longest wait between status polls, whatever Retry-After asks (default 300)",
    )
    p.add_argument(
        "--no-type-filter",
        action="store_true",
        help="do not send _typeFilter (for servers that refuse it; all Observations come)",
    )


def bulk_options(ns: argparse.Namespace) -> BulkOptions:
    preflight.positive(ns.max_poll_wait, "--max-poll-wait")
    return BulkOptions(
        group=ns.group,
        since=ns.since,
        types=tuple(ns.type or ()),
        type_filter=not ns.no_type_filter,
        max_poll_wait=float(ns.max_poll_wait),
        progress=not ns.no_progress,
    )


def register(sub: argparse._SubParsersAction[Any], help_line: str) -> None:
    p = sub.add_parser(
        NAME,
        help=help_line,
        description="Run (or resume) a FHIR Bulk Data $export from --server into --out.",
        formatter_class=HelpFormatter,
    )
    add_verbosity(p, top=False)
    options.add_server_options(p)
    add_bulk_options(p)
    p.add_argument("--out", required=True, help="output folder (an interrupted run resumes)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when the export is empty or lacks a type asked for (default: a warning)",
    )


def parse(ns: argparse.Namespace) -> BulkExportOptions:
    """Every usage error of `bulk-export`, before any work."""
    bulk = bulk_options(ns)
    preflight.output_folder(ns.out, "--out")
    return BulkExportOptions(
        server=options.server_options(ns, required=True),
        bulk=bulk,
        out=Path(ns.out),
        strict=bool(ns.strict),
    )


def bulk_request(bulk: BulkOptions) -> BulkRequest:
    """The BulkRequest: Observations narrowed to the scoring codes unless --no-type-filter."""
    from fhir_cyclo.client.bulk import DEFAULT_TYPES, BulkRequest, observation_filter
    from fhir_cyclo.core.scoring_config import load_config

    types = bulk.types or DEFAULT_TYPES
    filters: tuple[str, ...] = ()
    if bulk.type_filter and "Observation" in types:
        cfg = load_config()
        codes = [code for analyte in cfg.analytes.values() for code in analyte.loinc]
        filters = (observation_filter(cfg.loinc, codes),)
    return BulkRequest(group=bulk.group, types=types, type_filters=filters, since=bulk.since)


def export(bulk: BulkOptions, client: FhirClient, folder: Path) -> BulkResult:
    """Run (or resume) the export into `folder`; says a summary line; returns the BulkResult."""
    from fhir_cyclo.client.bulk import BulkExporter

    capability = client.capabilities()  # exit 3 early when the server is not there or not R4
    exporter = BulkExporter(
        client,
        folder,
        progress=bulk.progress,
        max_poll_interval=bulk.max_poll_wait,
        on_notice=output.warn,
    )
    # --type is the user's choice: sent as given; the default is fitted to the server's types.
    result = exporter.run(bulk_request(bulk), capability=capability, fit_types=not bulk.types)
    before = len(result.files) + len(result.errors) + len(result.deleted) - result.fetched
    output.say(
        f"bulk export: {len(result.files)} file(s), {result.resources} resource(s) in {folder} "
        f"({result.fetched} downloaded now, {before} already there); "
        f"{len(result.errors)} error file(s), {result.failed_issues} error issue(s)"
        + (f"; {len(result.deleted)} deleted file(s)" if result.deleted else "")
        + (f"; {len(result.rejected)} manifest entr(ies) refused" if result.rejected else "")
    )
    return result


def run(opts: BulkExportOptions) -> int:
    with options.make_client(opts.server) as client:
        result = export(opts.bulk, client, opts.out)
    # Error files and refused manifest entries mean resources that did not come: the rest is
    # there. A partial export (asked types missing, or nothing) fails only with --strict.
    failed = result.failed_issues or result.rejected or (opts.strict and result.partial)
    return output.EXIT_FAILED_ITEMS if failed else output.EXIT_OK
