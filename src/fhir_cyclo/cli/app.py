"""Command line: the parser, did-you-mean, verbosity, and the dispatch to one module per command.

Each command module (export, validate, push, score, bulk_export, import_cmd, load, sandbox) has
`register` (its subparser), `parse` (Namespace -> its frozen options; every usage error, exit 2,
before any work) and `run` (options -> exit code). Exit codes and output: cli/output.py.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

from fhir_cyclo.cli import options, output
from fhir_cyclo.core.errors import FhirCycloError, UsageError

log = logging.getLogger("fhir_cyclo")

# Re-exported for callers that knew them here.
EXIT_OK = output.EXIT_OK
EXIT_FAILED_ITEMS = output.EXIT_FAILED_ITEMS
EXIT_USAGE = output.EXIT_USAGE
EXIT_TRANSPORT = output.EXIT_TRANSPORT
EXIT_INTERNAL = output.EXIT_INTERNAL
say = output.say

# Each command: its line in `fhir-cyclo --help`. Its module is imported only when it runs (or
# shows its own --help): `--version` and `--help` load no command module at all.
COMMANDS: dict[str, str] = {
    "export": "case files / cohort CSV folders -> transaction Bundles",
    "validate": "check case files, cohort folders and FHIR Bundles; list every problem",
    "push": "push one transaction Bundle per case to a FHIR R4 server",
    "score": "score cyclosporine response from FHIR files or a server",
    "bulk-export": "FHIR Bulk Data $export into a folder (manifest.json + NDJSON)",
    "import": "FHIR Bundles / NDJSON / Bulk folders or a server -> YAML case files",
    "load": "NDJSON from export --ndjson -> a server, through Bulk Data $import",
    "sandbox": "run the project's HAPI FHIR JPA R4 test server on 127.0.0.1",
}


# Command name -> its module in fhir_cyclo.cli (one module per command).
_MODULES = {
    "export": "export",
    "validate": "validate",
    "push": "push",
    "score": "score",
    "bulk-export": "bulk_export",
    "import": "import_cmd",
    "load": "load",
    "sandbox": "sandbox",
}


def command_module(name: str) -> ModuleType:
    """The module of one command (imported here, not at the top: see COMMANDS)."""
    if name not in _MODULES:
        raise _unknown_command(name)
    return importlib.import_module(f"fhir_cyclo.cli.{_MODULES[name]}")


def version() -> str:
    from importlib import metadata  # email, csv, zipfile...: only --version pays for them

    try:
        return metadata.version("fhir-cyclo")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "unknown"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors that become UsageError (exit 2) instead of usage dumps."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


class _Version(argparse.Action):
    """--version, reading the installed metadata only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> NoReturn:
        print(f"{parser.prog} {version()}")
        parser.exit()


def build_parser(command: str | None = None) -> Parser:
    """The parser; with `command`, only that subcommand gets its options (the others: their
    name and help line, which is all `fhir-cyclo --help` shows): less start-up for every run."""
    parser = Parser(
        prog="fhir-cyclo",
        description="FHIR R4 adapter for cyclosporine-treated cases: export, push, score.",
        epilog="Exit codes: 0 ok; 1 some inputs/cases failed; 2 usage error; 3 server "
        "unreachable/refused/not R4; 70 internal error. -v/-q go before or after the command.",
        formatter_class=options.HelpFormatter,
    )
    parser.add_argument("--version", action=_Version)
    options.add_verbosity(parser, top=True)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    for name, help_line in COMMANDS.items():
        if command is None or name == command:
            command_module(name).register(sub, help_line)
        else:
            sub.add_parser(name, help=help_line)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    """The first argument that is not an option: the subcommand (top-level options take no
    value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _unknown_command(name: str) -> UsageError:
    close = difflib.get_close_matches(name, list(COMMANDS), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?" if close else f"commands: {', '.join(COMMANDS)}"
    return UsageError(f"unknown command '{name}'; {hint} (see `fhir-cyclo --help`)")


def _unrecognized(parser: Parser, command: str, extras: list[str]) -> UsageError:
    """Unknown options of a subcommand point at that subcommand's help, with a close match."""
    subparser = next(
        a.choices[command]
        for a in parser._actions
        if isinstance(a, argparse._SubParsersAction) and command in a.choices
    )
    known = [s for a in subparser._actions for s in a.option_strings]
    hints = []
    for extra in extras:
        if extra.startswith("-"):
            close = difflib.get_close_matches(extra.split("=", 1)[0], known, n=1)
            if close:
                hints.append(f"did you mean {close[0]}?")
    hint = f" {' '.join(hints)}" if hints else ""
    return UsageError(
        f"unrecognized arguments: {' '.join(extras)};{hint} (see `fhir-cyclo {command} --help`)"
        if hints
        else f"unrecognized arguments: {' '.join(extras)} (see `fhir-cyclo {command} --help`)"
    )


class _LogFormat(logging.Formatter):
    """Log lines look like every other diagnostic: "fhir-cyclo: warning: ..."."""

    def __init__(self, *, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        where = f" [{record.name}]" if self.verbose else ""
        return f"fhir-cyclo: {record.levelname.lower()}{where}: {record.getMessage()}"


def _configure(verbosity: options.Verbosity) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormat(verbose=verbosity.verbose))
    level = (
        logging.DEBUG
        if verbosity.verbose
        else logging.ERROR
        if verbosity.quiet
        else logging.WARNING
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    output.set_quiet(verbosity.quiet)
    output.set_verbose(verbosity.verbose)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in arguments or "--verbose" in arguments
    output.set_quiet(False)
    try:
        command = _command_of(arguments)
        if command is not None and command not in COMMANDS:
            raise _unknown_command(command)
        # No command (--help, --version, or none given): names and help lines are enough.
        parser = build_parser(command or "")
        ns, extras = parser.parse_known_args(arguments)
        if extras:
            raise _unrecognized(parser, ns.command, extras)
        _configure(options.verbosity(ns))
        module = command_module(ns.command)
        opts = module.parse(ns)  # every usage error is found here, before any work
        return int(module.run(opts))
    except SystemExit as exc:  # --help and --version
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    except KeyboardInterrupt:
        output.error("interrupted")
        return output.EXIT_INTERRUPTED
    except FhirCycloError as exc:
        output.error(str(exc))
        return output.exit_code(exc)
    except Exception as exc:
        output.error(f"internal error: {type(exc).__name__}: {exc} (rerun with -v and report it)")
        if verbose:
            raise
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
