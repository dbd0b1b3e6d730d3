"""The `bulk-export` command and the export step of `score --bulk` (Bulk Data into a folder)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEFAULT_BULK_DIR = Path(".fhir-cyclo") / "bulk-export"


def bulk_request(args: argparse.Namespace) -> Any:
    """The BulkRequest from the command line: Observations narrowed to the scoring codes."""
    from fhir_cyclo.client.bulk import DEFAULT_TYPES, BulkRequest, observation_filter
    from fhir_cyclo.core.scoring_config import load_config

    cfg = load_config()
    types = tuple(args.type) if getattr(args, "type", None) else DEFAULT_TYPES
    codes = [code for analyte in cfg.analytes.values() for code in analyte.loinc]
    filters = (observation_filter(cfg.loinc, codes),) if "Observation" in types else ()
    if getattr(args, "no_type_filter", False):
        filters = ()
    return BulkRequest(
        group=getattr(args, "group", None),
        types=types,
        type_filters=filters,
        since=getattr(args, "since", None),
    )


def export(args: argparse.Namespace, client: Any, folder: Path) -> Any:
    """Run (or resume) the export into `folder`; prints a summary line; returns the BulkResult."""
    from fhir_cyclo.client.bulk import BulkExporter

    capability = client.capabilities()  # exit 3 early when the server is not there or not R4
    exporter = BulkExporter(
        client,
        folder,
        progress=not getattr(args, "no_progress", False),
        max_poll_interval=float(getattr(args, "max_poll_wait", 300.0)),
        on_notice=lambda text: print(f"fhir-cyclo: warning: {text}", file=sys.stderr),
    )
    # --type is the user's choice: sent as given; the default is fitted to the server's types.
    given = bool(getattr(args, "type", None))
    result = exporter.run(bulk_request(args), capability=capability, fit_types=not given)
    before = len(result.files) + len(result.errors) + len(result.deleted) - result.fetched
    print(
        f"bulk export: {len(result.files)} file(s), {result.resources} resource(s) in {folder} "
        f"({result.fetched} downloaded now, {before} already there); "
        f"{len(result.errors)} error file(s), {result.failed_issues} error issue(s)"
        + (f"; {len(result.deleted)} deleted file(s)" if result.deleted else "")
        + (f"; {len(result.rejected)} manifest entr(ies) refused" if result.rejected else ""),
        file=sys.stderr,
    )
    return result


def cmd_bulk_export(args: argparse.Namespace) -> int:
    from fhir_cyclo.cli.commands import make_client

    with make_client(args) as client:
        result = export(args, client, Path(args.out))
    # Error files and refused manifest entries mean resources that did not come: the rest is
    # there. A partial export (asked types missing, or nothing) fails only with --strict.
    strict = bool(getattr(args, "strict", False)) and result.partial
    return 1 if result.failed_issues or result.rejected or strict else 0


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
        default=300.0,
        metavar="SECONDS",
        help="longest wait between status polls, whatever Retry-After asks (default 300)",
    )
    p.add_argument(
        "--no-type-filter",
        action="store_true",
        help="do not send _typeFilter (for servers that refuse it; all Observations come)",
    )


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    server_options: Any,
) -> None:
    """Add `bulk-export` to the parser."""
    p = sub.add_parser(
        "bulk-export", help="FHIR Bulk Data $export into a folder (manifest.json + NDJSON)"
    )
    server_options(p)
    add_bulk_options(p)
    p.add_argument("--out", required=True, help="output folder (an interrupted run resumes)")
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when the export is empty or lacks a type asked for (default: a warning)",
    )
    p.set_defaults(func=cmd_bulk_export)
