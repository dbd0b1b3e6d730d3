"""Command line: export, validate, push, score, sandbox. The error contract is enforced here only.

Exit codes: 0 success; 1 some inputs or cases failed (each named once), the others done; 2 usage
errors, found by each command's `check` before any work; 3 server unreachable, refused or not
FHIR R4; 70 a bug. Data (score's JSON and table, push --dry-run's plan) goes to stdout; every
diagnostic, warning and summary goes to stderr, one line each, prefixed "fhir-cyclo:".
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

from fhir_cyclo.cli import preflight
from fhir_cyclo.core.errors import (
    FhirCycloError,
    InputError,
    ServerError,
    TransportError,
    UsageError,
)

log = logging.getLogger("fhir_cyclo")

EXIT_OK = 0
EXIT_FAILED_ITEMS = 1  # some cases/files failed; the others went through
EXIT_USAGE = 2  # bad or conflicting options, missing configuration, unusable paths
EXIT_TRANSPORT = 3  # server unreachable, refused, not FHIR R4, TLS, refused redirect
EXIT_INTERNAL = 70  # a bug: reported in one line, never a traceback


def say(message: str) -> None:
    """One diagnostic line on stderr (the only way commands report anything but data)."""
    print(f"fhir-cyclo: {message}", file=sys.stderr, flush=True)


def version() -> str:
    try:
        return metadata.version("fhir-cyclo")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "unknown"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors that become UsageError (exit 2) instead of usage dumps."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default where it has a meaningful one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and "%(default)" not in text
            and default not in (None, False, argparse.SUPPRESS)
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


# --- export / validate --------------------------------------------------------------------------


def check_export(args: argparse.Namespace) -> None:
    preflight.inputs_exist(args.paths)
    preflight.output_folder(args.out, "--out", args.paths)
    if args.key_file:
        preflight.not_an_input(args.key_file, "--key-file", args.paths, folder=False)
    if args.key_file and not args.deidentify:
        raise UsageError("--key-file is only used with --deidentify")
    if args.deidentify:
        if not args.key_file:
            raise UsageError(
                "--deidentify needs --key-file FILE (the secret and date offsets; kept private, "
                "outside --out; created if missing)"
            )
        from fhir_cyclo.export.deidentify import check_key_file

        check_key_file(Path(args.key_file), Path(args.out))


def cmd_export(args: argparse.Namespace) -> int:
    from fhir_cyclo.export.writer import export

    key_file = Path(args.key_file) if args.deidentify else None
    new_key = key_file is not None and not key_file.exists()
    skipped: list[str] = []
    summary = export(
        args.paths,
        Path(args.out),
        ndjson=args.ndjson,
        validate=not args.no_validate,
        deidentify_keys=key_file,
        on_error=lambda e: say(f"error: {e}"),
        skipped=skipped,
    )
    if skipped:
        say(f"skipped {len(skipped)} file(s) that are not case files: {', '.join(skipped)}")
    if new_key:
        say(f"created key file {key_file} (mode 0600): keep it private; it re-identifies dates")
    say(
        f"exported {summary.cases} case(s), {summary.resources} resource(s) to {args.out}"
        + (f"; {len(summary.failed)} failed" if summary.failed else "")
    )
    return EXIT_FAILED_ITEMS if summary.failed else EXIT_OK


def check_validate(args: argparse.Namespace) -> None:
    preflight.inputs_exist(args.paths)
    if getattr(args, "server", None):  # server_validate.run repeats these for its own callers
        if args.workers < 1:
            raise UsageError(f"--workers must be 1 or more, got {args.workers}")
        preflight.server_url(args.server)
        if args.token_file:
            preflight.readable_file(args.token_file, "--token-file")


def cmd_validate(args: argparse.Namespace) -> int:
    if getattr(args, "server", None):  # the server's $validate (issue 9): server_validate.py
        from fhir_cyclo.validation import server as server_validate

        return server_validate.run(args)
    from fhir_cyclo.validation.local import validate_paths

    # Local checks (model, tables, Bundle rules, R4B). A server-side `$validate` mode plugs in
    # here as another source of problems in the same "file: where: message" form.
    found = validate_paths(args.paths)
    for problem in found.problems:
        say(f"error: {problem}")
    for note in found.notes:
        say(f"note: {note}")
    if found.skipped:
        listed = ", ".join(found.skipped)
        say(f"skipped {len(found.skipped)} file(s) that are not case, cohort or FHIR: {listed}")
    say(found.summary())
    return EXIT_FAILED_ITEMS if found.problems else EXIT_OK


# --- parser -------------------------------------------------------------------------------------


def build_parser() -> Parser:
    parser = Parser(
        prog="fhir-cyclo",
        description="FHIR R4 adapter for cyclosporine-treated cases: export, push, score.",
        epilog="Exit codes: 0 ok; 1 some inputs/cases failed; 2 usage error; 3 server "
        "unreachable/refused/not R4; 70 internal error.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (may show PHI)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "export",
        help="case files / cohort CSV folders -> transaction Bundles",
        description="Map case files (YAML/JSON) and cohort CSV folders to one FHIR R4 transaction "
        "Bundle per case, written atomically to --out.",
        formatter_class=HelpFormatter,
    )
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
    p.set_defaults(func=cmd_export, check=check_export)

    p = sub.add_parser(
        "validate",
        help="check case files, cohort folders and FHIR Bundles; list every problem",
        description="Check case files, cohort folders and FHIR Bundle files without writing "
        "anything; print every problem as FILE: WHERE: MESSAGE on stderr.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="case files, cohort folders, Bundle JSON, or folders of them",
    )
    from fhir_cyclo.validation.server import add_arguments as add_server_validate_arguments

    add_server_validate_arguments(p)
    p.set_defaults(func=cmd_validate, check=check_validate)

    from fhir_cyclo.cli import commands

    commands.register(sub)
    return parser


class _LogFormat(logging.Formatter):
    """Log lines look like every other diagnostic: "fhir-cyclo: warning: ..."."""

    def __init__(self, *, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        where = f" [{record.name}]" if self.verbose else ""
        return f"fhir-cyclo: {record.levelname.lower()}{where}: {record.getMessage()}"


def _exit_code(exc: BaseException) -> int:
    """The one mapping from an exception to an exit code."""
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, TransportError | ServerError):
        return EXIT_TRANSPORT
    if isinstance(exc, InputError | FhirCycloError):
        return EXIT_FAILED_ITEMS
    return EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> int:
    verbose = "-v" in (argv if argv is not None else sys.argv[1:]) or "--verbose" in (
        argv if argv is not None else sys.argv[1:]
    )
    args: Any = None
    try:
        args = build_parser().parse_args(argv)
        handler = logging.StreamHandler()
        handler.setFormatter(_LogFormat(verbose=args.verbose))
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING, handlers=[handler]
        )
        check = getattr(args, "check", None)
        if check is not None:
            check(args)  # every usage error is found here, before any work
        return int(args.func(args))
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except FhirCycloError as exc:
        say(f"error: {exc}")
        return _exit_code(exc)
    except Exception as exc:
        say(f"internal error: {type(exc).__name__}: {exc} (rerun with -v and report it)")
        if verbose:
            raise
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
