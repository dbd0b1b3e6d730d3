"""`fhir-cyclo import`: FHIR (files, NDJSON, Bulk folders or a server) -> YAML case files."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_cyclo.cli import options, output, preflight
from fhir_cyclo.cli.options import HelpFormatter, ServerOptions, add_verbosity
from fhir_cyclo.core.errors import UsageError

if TYPE_CHECKING:
    from fhir_cyclo.importing.run import ImportOptions

NAME = "import"


@dataclass(frozen=True)
class ImportCommand:
    """The typed options of `import` (the Namespace stops at `parse`)."""

    out: Path
    paths: tuple[str, ...] = ()
    server: ServerOptions = field(default_factory=ServerOptions)  # url None: files only
    identifier: str | None = None
    patient: str | None = None
    system: str | None = None

    def feature(self) -> ImportOptions:
        from fhir_cyclo.importing.run import ImportOptions

        return ImportOptions(
            out=self.out,
            paths=self.paths,
            identifier=self.identifier,
            patient=self.patient,
            system=self.system,
        )


def register(sub: argparse._SubParsersAction[Any], help_line: str) -> None:
    p = sub.add_parser(
        NAME,
        help=help_line,
        description="Rebuild one YAML case file per Patient from FHIR R4 Bundle / NDJSON files, "
        "Bulk Data folders (manifest.json) or a server (--server), into --out as "
        "case-<hash>.yaml. What the FHIR data held that a case file cannot is listed per case "
        "on stderr.",
        formatter_class=HelpFormatter,
    )
    add_verbosity(p, top=False)
    p.add_argument("paths", nargs="*", metavar="PATH", help="Bundle JSON / NDJSON files or folders")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    options.add_server_options(p)
    p.add_argument("--identifier", metavar="SYSTEM|VALUE", help="server: one Patient by identifier")
    p.add_argument("--patient", metavar="Patient/ID", help="server: one Patient by id")
    p.add_argument(
        "--system",
        metavar="SYSTEM",
        help="server: every Patient with an identifier in SYSTEM (default: every Patient)",
    )


def parse(ns: argparse.Namespace) -> ImportCommand:
    """Every usage error of `import`, before any work."""
    from fhir_cyclo.importing.run import foreign_files

    preflight.inputs_exist(ns.paths)
    chosen = (("--identifier", ns.identifier), ("--patient", ns.patient), ("--system", ns.system))
    selections = [option for option, value in chosen if value]
    if len(selections) > 1:
        raise UsageError(f"give one of --identifier, --patient, --system, not {selections}")
    if ns.paths and ns.server:
        raise UsageError("give FHIR files/folders or --server, not both")
    if ns.identifier is not None and "|" not in ns.identifier:
        raise UsageError("--identifier takes SYSTEM|VALUE")
    if ns.paths and selections:
        raise UsageError(f"{selections[0]} selects on a server: give --server and no files")
    server = options.server_options(ns, required=False)
    if not ns.paths and not server.url:
        raise UsageError(
            "nothing to import: give Bundle/NDJSON files, Bulk Data folders, or --server URL"
        )
    preflight.output_folder(ns.out, "--out", ns.paths)
    foreign = foreign_files(Path(ns.out))
    if foreign:
        raise UsageError(
            f"--out {ns.out}: {foreign[0].name} exists and was not written by import; "
            "remove it or choose another folder"
        )
    return ImportCommand(
        out=Path(ns.out),
        paths=tuple(ns.paths),
        server=server,
        identifier=ns.identifier,
        patient=ns.patient,
        system=ns.system,
    )


def run(opts: ImportCommand) -> int:
    from fhir_cyclo.importing.run import run_import

    client = None
    if not opts.paths:
        client = options.make_client(opts.server)
        client.capabilities()  # fail fast (exit 3) before anything is read or written
    summary = run_import(
        opts.feature(),
        client=client,
        on_error=output.error,
        on_notice=lambda m: output.say(f"not carried back: {m}" if m.startswith("case #") else m),
    )
    parts = [f"{len(summary.written)} written", f"{summary.unchanged} unchanged"]
    if summary.with_losses:
        parts.append(f"{summary.with_losses} with data FHIR did not carry back")
    if summary.skipped_patients:
        parts.append(f"{summary.skipped_patients} Patient(s) without a case identifier skipped")
    if summary.failed:
        parts.append(f"{summary.failed} failed")
    output.say(f"imported {summary.cases} case(s) to {opts.out}: {', '.join(parts)}")
    return output.EXIT_FAILED_ITEMS if summary.failed else output.EXIT_OK
