"""The one output helper and the one exit-code mapping of every command.

Data (score's JSON and table, push --dry-run's plan) goes to stdout; every diagnostic, warning,
"wrote ..." line and summary goes to stderr, one line each, prefixed "fhir-cyclo:".
"""

from __future__ import annotations

import sys

from fhir_cyclo.core.errors import (
    FhirCycloError,
    InputError,
    ServerError,
    TransportError,
    UsageError,
)

PREFIX = "fhir-cyclo"
EXIT_OK = 0
EXIT_FAILED_ITEMS = 1  # some cases/files failed; the others went through
EXIT_USAGE = 2  # bad or conflicting options, missing configuration, unusable paths
EXIT_TRANSPORT = 3  # server unreachable, refused, not FHIR R4, TLS, refused redirect
EXIT_INTERNAL = 70  # a bug: reported in one line, never a traceback
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports it

_quiet = False
_verbose = False


def set_verbose(verbose: bool) -> None:
    """`-v`: repeated warnings listed one by one instead of one line per kind."""
    global _verbose  # noqa: PLW0603 - one process, one verbosity, set once by cli.app.main
    _verbose = verbose


def is_verbose() -> bool:
    return _verbose


def set_quiet(quiet: bool) -> None:
    """`-q`: only errors reach stderr (summaries, "wrote ..." lines and warnings do not)."""
    global _quiet  # noqa: PLW0603 - one process, one verbosity, set once by cli.app.main
    _quiet = quiet


def say(message: str) -> None:
    """One summary or progress line on stderr (dropped by -q)."""
    if not _quiet:
        print(f"{PREFIX}: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    say(f"warning: {message}")


def error(message: str) -> None:
    """One error line on stderr; shown even with -q."""
    print(f"{PREFIX}: error: {message}", file=sys.stderr, flush=True)


def problem(message: str) -> None:
    """A line about a failed item in its own form ("FILE: error: ..."); shown even with -q."""
    print(f"{PREFIX}: {message}", file=sys.stderr, flush=True)


def wrote(what: str, where: object) -> None:
    """The line each output option prints once its file or folder is complete."""
    say(f"wrote {what} to {where}")


def data(text: str) -> None:
    """Data for stdout (a table, a JSON document, a plan)."""
    sys.stdout.write(text)
    sys.stdout.flush()  # a line a user waits for (sandbox) must not sit in a buffer


def exit_code(exc: BaseException) -> int:
    """The one mapping from an exception to an exit code."""
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    if isinstance(exc, TransportError | ServerError):
        return EXIT_TRANSPORT
    if isinstance(exc, InputError | FhirCycloError):
        return EXIT_FAILED_ITEMS
    return EXIT_INTERNAL
