"""`fhir-cyclo validate`: local checks of case files, cohorts and Bundles; `--server`: $validate."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from fhir_cyclo.cli import options, output, preflight
from fhir_cyclo.cli.options import HelpFormatter, ServerOptions, add_verbosity
from fhir_cyclo.core.errors import UsageError

NAME = "validate"
DEFAULT_WORKERS = 2  # the server validates ~0.1-1 s per Bundle; 2 keeps a 2-core box usable
SEVERITIES = ("fatal", "error", "warning", "information")


@dataclass(frozen=True)
class ValidateOptions:
    paths: tuple[str, ...]
    server: ServerOptions | None = None  # None: local checks only
    workers: int = DEFAULT_WORKERS
    information: bool = False  # --server: list information issues too


def register(sub: argparse._SubParsersAction[Any], help_line: str) -> None:
    p = sub.add_parser(
        NAME,
        help=help_line,
        description="Check case files, cohort folders and FHIR Bundle files without writing "
        "anything; print every problem as FILE: WHERE: MESSAGE on stderr. With --server, also "
        "send each to the server's $validate and list its issues.",
        formatter_class=HelpFormatter,
    )
    add_verbosity(p, top=False)
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="case files, cohort folders, Bundle JSON, or folders of them",
    )
    options.add_server_options(
        p,
        url_help="also validate with this FHIR R4 server's $validate (never taken from "
        "$FHIR_CYCLO_SERVER or the config file: validate is local unless asked)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"parallel $validate requests (default {DEFAULT_WORKERS})",
    )
    p.add_argument(
        "--information",
        action="store_true",
        help="with --server: list information issues too (errors and warnings always are)",
    )


def parse(ns: argparse.Namespace) -> ValidateOptions:
    """Every usage error of `validate`, before any work."""
    preflight.inputs_exist(ns.paths)
    server = None
    if ns.server:
        if ns.workers < 1:
            raise UsageError(f"--workers must be 1 or more, got {ns.workers}")
        server = options.server_options(ns, required=True, from_environment=False)
    elif ns.information:
        raise UsageError("--information lists the server's issues: give --server URL")
    return ValidateOptions(
        paths=tuple(ns.paths), server=server, workers=ns.workers, information=ns.information
    )


def run(opts: ValidateOptions) -> int:
    if opts.server is not None:
        return _run_on_server(opts, opts.server)
    from fhir_cyclo.validation.local import validate_paths

    # Local checks (model, tables, Bundle rules, R4B), as "file: where: message".
    found = validate_paths(list(opts.paths))
    for problem in found.problems:
        output.error(str(problem))
    for note in found.notes:
        output.say(f"note: {note}")
    if found.skipped:
        listed = ", ".join(found.skipped)
        output.say(
            f"skipped {len(found.skipped)} file(s) that are not case, cohort or FHIR: {listed}"
        )
    output.say(found.summary())
    return output.EXIT_FAILED_ITEMS if found.problems else output.EXIT_OK


def _run_on_server(opts: ValidateOptions, server: ServerOptions) -> int:
    """`validate --server`: every issue and a summary on stderr; exit 0, 1 or 3."""
    from fhir_cyclo.validation.server import Finding, validate_paths_on_server

    shown = set(SEVERITIES) if opts.information else set(SEVERITIES[:3])

    def show(finding: Finding) -> None:
        if finding.is_error or finding.severity not in SEVERITIES:
            output.problem(finding.line())
        elif finding.severity in shown:
            output.say(finding.line())

    with options.make_client(server) as client:
        summary = validate_paths_on_server(
            client, opts.paths, workers=opts.workers, on_finding=show
        )
    counts = summary.counts
    output.say(
        f"validated {summary.sent} resource(s) with {client.base_url}/$validate: "
        f"{summary.errors} error(s), {counts['warning']} warning(s), "
        f"{counts['information']} information"
    )
    return output.EXIT_FAILED_ITEMS if summary.errors else output.EXIT_OK
