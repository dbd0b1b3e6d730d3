"""`fhir-cyclo export`: case files and cohort folders -> one transaction Bundle per case."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_cyclo.cli import output, preflight
from fhir_cyclo.cli.options import HelpFormatter, add_verbosity
from fhir_cyclo.core.errors import UsageError

NAME = "export"


@dataclass(frozen=True)
class ExportOptions:
    paths: tuple[str, ...]
    out: Path
    ndjson: bool = False
    validate: bool = True
    key_file: Path | None = None  # set only with --deidentify


def register(sub: argparse._SubParsersAction[Any], help_line: str) -> None:
    p = sub.add_parser(
        NAME,
        help=help_line,
        description="Map case files (YAML/JSON) and cohort CSV folders to one FHIR R4 transaction "
        "Bundle per case, written atomically to --out.",
        formatter_class=HelpFormatter,
    )
    add_verbosity(p, top=False)
    p.add_argument(
        "paths", nargs="+", metavar="PATH", help="case files, cohort folders, or folders of them"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument(
        "--ndjson", action="store_true", help="also write per-type NDJSON (Bulk Data) in DIR/ndjson"
    )
    p.add_argument("--no-validate", action="store_true", help="skip fhir.resources R4B validation")
    p.add_argument(
        "--deidentify",
        action="store_true",
        help="drop names/telecom/address, keep birth year, shift dates, pseudonymise ids",
    )
    p.add_argument(
        "--key-file",
        metavar="FILE",
        help="required with --deidentify: secret + date offsets (created if missing, mode 0600, "
        "never inside --out)",
    )


def parse(ns: argparse.Namespace) -> ExportOptions:
    """Every usage error of `export`, before any work."""
    preflight.inputs_exist(ns.paths)
    preflight.output_folder(ns.out, "--out", ns.paths)
    if ns.key_file:
        preflight.not_an_input(ns.key_file, "--key-file", ns.paths, folder=False)
    if ns.key_file and not ns.deidentify:
        raise UsageError("--key-file is only used with --deidentify")
    if ns.deidentify:
        if not ns.key_file:
            raise UsageError(
                "--deidentify needs --key-file FILE (the secret and date offsets; kept private, "
                "outside --out; created if missing)"
            )
        from fhir_cyclo.export.deidentify import check_key_file

        check_key_file(Path(ns.key_file), Path(ns.out))
    return ExportOptions(
        paths=tuple(ns.paths),
        out=Path(ns.out),
        ndjson=bool(ns.ndjson),
        validate=not ns.no_validate,
        key_file=Path(ns.key_file) if ns.deidentify else None,
    )


def run(opts: ExportOptions) -> int:
    from fhir_cyclo.export.writer import export

    new_key = opts.key_file is not None and not opts.key_file.exists()
    skipped: list[str] = []
    summary = export(
        list(opts.paths),
        opts.out,
        ndjson=opts.ndjson,
        validate=opts.validate,
        deidentify_keys=opts.key_file,
        on_error=lambda e: output.error(str(e)),
        skipped=skipped,
    )
    if skipped:
        output.say(f"skipped {len(skipped)} file(s) that are not case files: {', '.join(skipped)}")
    if new_key:
        output.say(
            f"created key file {opts.key_file} (mode 0600): keep it private; it re-identifies dates"
        )
    output.say(
        f"exported {summary.cases} case(s), {summary.resources} resource(s) to {opts.out}"
        + (f"; {len(summary.failed)} failed" if summary.failed else "")
    )
    return output.EXIT_FAILED_ITEMS if summary.failed else output.EXIT_OK
