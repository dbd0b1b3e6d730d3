"""`fhir-cyclo import`: parse and check the options, then run importing.run with typed options."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_cyclo.cli import preflight
from fhir_cyclo.cli.app import EXIT_FAILED_ITEMS, EXIT_OK, HelpFormatter, say
from fhir_cyclo.core.errors import UsageError

if TYPE_CHECKING:
    from fhir_cyclo.importing.run import ImportOptions


def options(args: argparse.Namespace) -> ImportOptions:
    """The typed options (the Namespace stops here)."""
    from fhir_cyclo.importing.run import ImportOptions

    return ImportOptions(
        out=Path(args.out),
        paths=tuple(args.paths),
        identifier=args.identifier,
        patient=args.patient,
        system=args.system,
    )


def check_import(args: argparse.Namespace) -> None:
    from fhir_cyclo.cli.commands import check_server_options, resolve_server

    preflight.inputs_exist(args.paths)
    chosen = (
        ("--identifier", args.identifier),
        ("--patient", args.patient),
        ("--system", args.system),
    )
    selections = [option for option, value in chosen if value]
    if len(selections) > 1:
        raise UsageError(f"give one of --identifier, --patient, --system, not {selections}")
    if args.paths and args.server:
        raise UsageError("give FHIR files/folders or --server, not both")
    if args.identifier is not None and "|" not in args.identifier:
        raise UsageError("--identifier takes SYSTEM|VALUE")
    if args.paths and selections:
        raise UsageError(f"{selections[0]} selects on a server: give --server and no files")
    check_server_options(args)
    if not args.paths and not resolve_server(args, required=False):
        raise UsageError(
            "nothing to import: give Bundle/NDJSON files, Bulk Data folders, or --server URL"
        )
    preflight.output_folder(args.out, "--out", args.paths)
    from fhir_cyclo.importing.run import foreign_files

    foreign = foreign_files(Path(args.out))
    if foreign:
        raise UsageError(
            f"--out {args.out}: {foreign[0].name} exists and was not written by import; "
            "remove it or choose another folder"
        )


def cmd_import(args: argparse.Namespace) -> int:
    from fhir_cyclo.importing.run import run_import

    client = None
    if not args.paths:
        from fhir_cyclo.cli.commands import make_client

        client = make_client(args)
        client.capabilities()  # fail fast (exit 3) before anything is read or written
    summary = run_import(
        options(args),
        client=client,
        on_error=lambda m: say(f"error: {m}"),
        on_notice=lambda m: say(f"not carried back: {m}" if m.startswith("case #") else m),
    )
    parts = [f"{len(summary.written)} written", f"{summary.unchanged} unchanged"]
    if summary.with_losses:
        parts.append(f"{summary.with_losses} with data FHIR did not carry back")
    if summary.skipped_patients:
        parts.append(f"{summary.skipped_patients} Patient(s) without a case identifier skipped")
    if summary.failed:
        parts.append(f"{summary.failed} failed")
    say(f"imported {summary.cases} case(s) to {args.out}: {', '.join(parts)}")
    return EXIT_FAILED_ITEMS if summary.failed else EXIT_OK


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add `import` to the parser."""
    from fhir_cyclo.cli.commands import _server_options

    p = sub.add_parser(
        "import",
        help="FHIR Bundles / NDJSON / Bulk folders or a server -> YAML case files",
        description="Rebuild one YAML case file per Patient from FHIR R4 Bundle / NDJSON files, "
        "Bulk Data folders (manifest.json) or a server (--server), into --out as "
        "case-<hash>.yaml. What the FHIR data held that a case file cannot is listed per case "
        "on stderr.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="Bundle JSON / NDJSON files or folders")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    _server_options(p)
    p.add_argument("--identifier", metavar="SYSTEM|VALUE", help="server: one Patient by identifier")
    p.add_argument("--patient", metavar="Patient/ID", help="server: one Patient by id")
    p.add_argument(
        "--system",
        metavar="SYSTEM",
        help="server: every Patient with an identifier in SYSTEM (default: every Patient)",
    )
    p.set_defaults(func=cmd_import, check=check_import)
