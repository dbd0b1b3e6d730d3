"""Command line: export, validate, push, score, sandbox. Exit codes are decided here only."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from fhir_cyclo.errors import FhirCycloError, InputError, TransportError

log = logging.getLogger("fhir_cyclo")

EXIT_OK = 0
EXIT_FAILED_ITEMS = 1  # some cases/files failed; the others went through
EXIT_USAGE = 2  # argparse's own code for bad arguments
EXIT_TRANSPORT = 3  # server unreachable, not FHIR R4, TLS, refused redirect
EXIT_INTERNAL = 70  # a bug: reported in one line, never a traceback


def _err(message: str) -> None:
    print(f"fhir-cyclo: {message}", file=sys.stderr)


# --- export / validate --------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from fhir_cyclo.export import export

    summary = export(
        args.paths,
        Path(args.out),
        ndjson=args.ndjson,
        validate=not args.no_validate,
        deidentify_keys=Path(args.key_file) if args.deidentify else None,
        on_error=lambda e: _err(f"error: {e}"),
    )
    print(
        f"exported {summary.cases} case(s), {summary.resources} resource(s) to {args.out}"
        + (f"; {len(summary.failed)} failed" if summary.failed else "")
    )
    return EXIT_FAILED_ITEMS if summary.failed else EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    if getattr(args, "server", None):  # the server's $validate (issue 9): server_validate.py
        from fhir_cyclo import server_validate

        return server_validate.run(args)
    from fhir_cyclo.validate import validate_paths

    problems, checked = validate_paths(args.paths)
    for problem in problems:
        print(problem)
    print(f"checked {checked} item(s): {len(problems)} problem(s)", file=sys.stderr)
    return EXIT_FAILED_ITEMS if problems else EXIT_OK


# --- parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fhir-cyclo",
        description="FHIR R4 adapter for cyclosporine-treated cases: export, push, score.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (may show PHI)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="case files / cohort CSV folders -> transaction Bundles")
    p.add_argument("paths", nargs="+", help="case files, cohort folders, or folders of them")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--ndjson", action="store_true", help="also write per-type NDJSON (Bulk Data)")
    p.add_argument("--no-validate", action="store_true", help="skip fhir.resources R4B validation")
    p.add_argument(
        "--deidentify",
        action="store_true",
        help="drop names/telecom/address, keep birth year, shift dates, pseudonymise ids",
    )
    p.add_argument(
        "--key-file",
        default="fhir-cyclo-deid-key.json",
        help="secret + date offsets for --deidentify (created if missing; keep it private)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("validate", help="check case files and FHIR Bundles; list every problem")
    p.add_argument("paths", nargs="+")
    from fhir_cyclo.server_validate import add_arguments as add_server_validate_arguments

    add_server_validate_arguments(p)
    p.set_defaults(func=cmd_validate)

    _register_optional(sub)
    return parser


def _register_optional(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Commands that live in their own modules (push, score, sandbox)."""
    from fhir_cyclo import commands

    commands.register(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except InputError as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED_ITEMS
    except TransportError as exc:
        _err(f"error: {exc}")
        return EXIT_TRANSPORT
    except FhirCycloError as exc:
        _err(f"error: {exc}")
        return EXIT_FAILED_ITEMS
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as exc:
        _err(f"internal error: {type(exc).__name__}: {exc} (rerun with -v and report it)")
        if args.verbose:
            raise
        return EXIT_INTERNAL
    return code


if __name__ == "__main__":
    sys.exit(main())
