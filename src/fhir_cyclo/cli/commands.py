"""CLI subcommands that talk to servers or score: push, score, sandbox (wired into cli.py).

Each has a `check_*` that cli.main runs before any work: every usage error (exit 2) is found there.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_cyclo.cli import preflight
from fhir_cyclo.cli.app import HelpFormatter, say
from fhir_cyclo.core.errors import FhirCycloError, InputError, UsageError

if TYPE_CHECKING:
    from fhir_cyclo.server.push import Outgoing

PUBLIC_HAPI = "https://hapi.fhir.org/baseR4"
# What an existing --json / --report file must hold to be replaced: only what score wrote.
JSON_MARKER = b'"fhir-cyclo-score/'
REPORT_MARKER = b'<meta name="generator" content="fhir-cyclo score report">'
SERVER_ENV = "FHIR_CYCLO_SERVER"
CONFIG_ENV = "FHIR_CYCLO_CONFIG"


def config_data() -> dict[str, Any]:
    """The first config file found ($FHIR_CYCLO_CONFIG, ./fhir-cyclo.toml, ~/.config/..)."""
    candidates = [Path(os.environ[CONFIG_ENV])] if os.environ.get(CONFIG_ENV) else []
    candidates += [Path("fhir-cyclo.toml"), Path.home() / ".config" / "fhir-cyclo" / "config.toml"]
    for path in candidates:
        if path.is_file():
            try:
                return tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise InputError(f"not valid TOML: {exc}", source=str(path)) from None
    return {}


def default_server() -> str | None:
    """--server, else $FHIR_CYCLO_SERVER, else `server =` in the config file (TOML)."""
    if os.environ.get(SERVER_ENV):
        return os.environ[SERVER_ENV]
    server = config_data().get("server")
    return server if isinstance(server, str) and server else None


def resolve_server(
    args: argparse.Namespace, *, required: bool, why: str = "no server"
) -> str | None:
    """The server URL (option, env, config file), checked for shape; stored back in args."""
    try:
        server = args.server or default_server()
    except InputError as exc:  # a broken config file is configuration, not input data
        raise UsageError(str(exc)) from None
    if not server:
        if required:
            raise UsageError(
                f'{why}: give --server URL, set ${SERVER_ENV}, or `server = "..."` in '
                f"fhir-cyclo.toml (public test server: {PUBLIC_HAPI})"
            )
        return None
    preflight.server_url(server)
    args.server = server
    return server


def check_server_options(args: argparse.Namespace) -> None:
    preflight.positive(args.timeout, "--timeout")
    if args.token_file:
        preflight.readable_file(args.token_file, "--token-file")


def make_client(args: argparse.Namespace) -> Any:
    from fhir_cyclo.client import FhirClient

    server = resolve_server(args, required=True)
    assert server is not None
    from fhir_cyclo.client.smart import resolve_smart

    table = config_data().get("smart")
    smart = resolve_smart(
        client_id=getattr(args, "smart_client_id", None),
        key_file=getattr(args, "smart_key_file", None),
        kid=getattr(args, "smart_kid", None),
        scope=getattr(args, "smart_scope", None),
        token_url=getattr(args, "smart_token_url", None),
        config=table if isinstance(table, dict) else None,
    )
    return FhirClient(
        server,
        smart=smart,
        token_file=Path(args.token_file) if args.token_file else None,
        verify=not args.insecure,
        allow_http=args.allow_http,
        timeout=(5.0, args.timeout),
    )


def _server_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server", metavar="URL", help=f"FHIR R4 base URL (default: ${SERVER_ENV} or config file)"
    )
    p.add_argument(
        "--token-file", metavar="FILE", help="file holding a bearer token (or $FHIR_CYCLO_TOKEN)"
    )
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    p.add_argument("--allow-http", action="store_true", help="allow http:// to non-loopback hosts")
    p.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS", help="read timeout")
    g = p.add_argument_group("SMART Backend Services (instead of a static token; README)")
    g.add_argument("--smart-client-id", help="client id ($FHIR_CYCLO_SMART_CLIENT_ID, [smart])")
    g.add_argument(
        "--smart-key-file", help="private key, PEM or JWK(S) ($FHIR_CYCLO_SMART_KEY_FILE)"
    )
    g.add_argument("--smart-kid", help="key id of the registered public key (default: JWK kid)")
    g.add_argument("--smart-scope", help="scopes (default system/*.rs; v1 servers system/*.read)")
    g.add_argument("--smart-token-url", help="token endpoint (default: discovered)")


# --- push ---------------------------------------------------------------------------------------


def _bundles(paths: list[str], failures: list[str], skipped: list[str]) -> Iterator[Outgoing]:
    """(label, transaction bytes[, identifier]) per case; bad inputs reported once, skipped."""
    from fhir_cyclo.core.terminology import terminology
    from fhir_cyclo.export.writer import map_case
    from fhir_cyclo.fhir.bundle import dumps, transaction_bundle
    from fhir_cyclo.readers.case_files import load
    from fhir_cyclo.server.journal import bundle_identifier
    from fhir_cyclo.server.push import Outgoing

    terms = terminology()
    # One pass, each file read once: a Bundle file is sent as it is, a case file is mapped.
    for loaded in load(paths, terms, skipped, bundles=True):
        if loaded.bundle is not None:
            data = dumps(loaded.bundle, pretty=False)
            yield Outgoing(loaded.source, data, bundle_identifier(loaded.bundle))
            continue
        if loaded.case is None:
            failures.append(str(loaded.error))
            say(f"error: invalid input: {loaded.error}")
            continue
        try:
            resources = map_case(loaded.case, terms)
        except FhirCycloError as exc:
            failures.append(f"{loaded.source}: {exc}")
            say(f"error: invalid input: {loaded.source}: {exc}")
            continue
        # Logs name the file and a hash, never the identifier value (PHI, e.g. an MRN).
        digest = hashlib.sha256(loaded.case.identifier.token.encode()).hexdigest()[:10]
        label = f"{loaded.source} [case #{digest}]"
        data = dumps(transaction_bundle(loaded.case, terms, resources), pretty=False)
        yield Outgoing(label, data, loaded.case.identifier.token)


def check_push(args: argparse.Namespace) -> None:
    preflight.inputs_exist(args.paths)
    if args.workers < 1:
        raise UsageError(f"--workers must be 1 or more, got {args.workers}")
    if args.resume and args.no_journal:
        raise UsageError("--resume reads the journal, so it cannot be combined with --no-journal")
    if args.journal and args.no_journal:
        raise UsageError("--journal and --no-journal contradict each other")
    if not args.no_journal and not args.dry_run:
        from fhir_cyclo.server.journal import DEFAULT_JOURNAL

        journal = Path(args.journal) if args.journal else DEFAULT_JOURNAL
        if journal.is_dir():
            raise UsageError(f"--journal {journal}: is a folder; give a file name")
        preflight.output_file(str(journal), "--journal", args.paths)
    check_server_options(args)
    resolve_server(args, required=not args.dry_run)


def _plan(items: Iterator[Outgoing]) -> Iterator[Outgoing]:
    """--dry-run: print what each transaction would send (data, so stdout), pass it on."""
    from collections import Counter

    import orjson

    for item in items:
        label, data = item.label, item.bundle
        bundle = orjson.loads(data) if isinstance(data, bytes) else data
        kinds = Counter(
            (e.get("request") or {}).get("method", "?")
            + " "
            + str((e.get("resource") or {}).get("resourceType", "?"))
            for e in bundle.get("entry") or []
            if isinstance(e, dict)
        )
        detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        print(f"would send {label}: transaction of {sum(kinds.values())} entries ({detail})")
        yield item


def cmd_push(args: argparse.Namespace) -> int:
    from fhir_cyclo.server.journal import DEFAULT_JOURNAL, PushJournal
    from fhir_cyclo.server.push import CaseResult, push_bundles

    journal_path = Path(args.journal) if args.journal else DEFAULT_JOURNAL
    input_failures: list[str] = []
    skipped_files: list[str] = []
    client = None if args.dry_run else make_client(args)
    if client is not None:
        client.capabilities()  # fail fast (exit 3) before anything is sent or journaled
    journal = None
    if client is not None and not args.no_journal:
        journal = PushJournal(journal_path, client.base_url)

    def report(case: CaseResult) -> None:
        if not case.ok:
            # Each failed case once, as it happens; "not sent" ones too, so every case the
            # summary counts as failed is named (the journal and --resume send them later).
            say(f"failed: {case.error}")

    items = _bundles(args.paths, input_failures, skipped_files)
    try:
        summary = push_bundles(
            client,  # type: ignore[arg-type]
            _plan(items) if args.dry_run else items,
            workers=args.workers,
            dry_run=args.dry_run,
            progress=not args.no_progress,
            journal=journal,
            resume=args.resume,
            on_result=report,
        )
    finally:
        if journal is not None:
            journal.close()
    if skipped_files:
        say(
            f"skipped {len(skipped_files)} file(s) that are not cases or Bundles: "
            + ", ".join(skipped_files)
        )
    if summary.not_sent:
        say(f"not sent: {summary.not_sent} case(s), the server had gone away")
    # summary.gave_up was logged once by push_bundles as it happened.
    failed = summary.failed + len(input_failures)
    if summary.failed and journal is not None:
        say(f"journal: {journal_path}; run the same command with --resume to send the rest")
    parts = []
    if summary.failed - summary.not_sent:
        parts.append(f"{summary.failed - summary.not_sent} rejected or unreachable")
    if summary.not_sent:
        parts.append(f"{summary.not_sent} not sent")
    if input_failures:
        parts.append(f"{len(input_failures)} invalid input")
    verb = "would push" if args.dry_run else "pushed"
    tail = ""
    if not args.dry_run:
        unchanged = summary.unchanged_cases
        tail = (
            f"; {summary.created} resource(s) created, {summary.updated} updated, "
            f"{summary.unchanged} unchanged"
            + (f" ({unchanged} case(s) already up to date)" if unchanged else "")
        )
    say(
        f"{verb} {summary.pushed} case(s), skipped {summary.skipped} (already there), "
        f"failed {failed}" + (f" ({', '.join(parts)})" if parts else "") + tail
    )
    return 1 if failed else 0


# --- score --------------------------------------------------------------------------------------


def check_score(args: argparse.Namespace) -> None:
    preflight.inputs_exist(args.paths)
    preflight.not_case_input(args.paths)
    check_server_options(args)
    if args.bulk and args.paths:
        raise UsageError("--bulk reads from a server: give --server and no files")
    if args.bulk:
        preflight.positive(args.max_poll_wait, "--max-poll-wait")
        preflight.output_folder(args.bulk_dir, "--bulk-dir")
    if args.patient and args.identifier:
        raise UsageError("give --patient or --identifier, not both")
    if args.paths and args.server and not args.write_back:
        raise UsageError(
            "give FHIR files/folders or --server, not both (with files, --server is only used "
            "by --write-back)"
        )
    if not args.paths and not resolve_server(args, required=False):
        raise UsageError(
            "nothing to score: give Bundle/NDJSON files or folders, or --server URL (or set "
            f"${SERVER_ENV})"
        )
    resolve_server(args, required=bool(args.write_back), why="--write-back needs a server")
    preflight.one_stdout([("--json -", args.json == "-"), ("--table", args.table)])
    inputs = [*args.paths, *([args.bulk_dir] if args.bulk else [])]  # --bulk-dir is read back
    outputs = [(o, v) for o, v in (("--json", args.json), ("--report", args.report)) if v]
    if args.json and args.json != "-":
        preflight.output_file(args.json, "--json", inputs, marker=JSON_MARKER)
    if args.plot:
        preflight.output_folder(args.plot, "--plot", inputs)
        outputs.append(("--plot", args.plot))
    if args.report:
        preflight.output_file(args.report, "--report", inputs, marker=REPORT_MARKER)
    for i, (option, value) in enumerate(outputs):
        for other, other_value in outputs[i + 1 :]:
            if value != "-" and Path(value).resolve() == Path(other_value).resolve():
                raise UsageError(f"{option} and {other} name the same path {value}")


def cmd_score(args: argparse.Namespace) -> int:
    from fhir_cyclo.cli import score as scoring_cli

    client = None
    if not args.paths or args.write_back or args.bulk:
        client = make_client(args)
        client.capabilities()  # fail fast (exit 3, "cannot reach FHIR server ...") before work
    if args.bulk:
        from fhir_cyclo.cli import bulk_export as bulk_command

        folder = Path(args.bulk_dir)
        bulk_command.export(args, client, folder)
        args.paths = [str(folder)]  # then scored like any Bulk Data folder
    return scoring_cli.run(args, client)


# --- sandbox ------------------------------------------------------------------------------------


def check_bulk_export(args: argparse.Namespace) -> None:
    check_server_options(args)
    preflight.positive(args.max_poll_wait, "--max-poll-wait")
    preflight.output_folder(args.out, "--out")
    resolve_server(args, required=True)


def check_sandbox(args: argparse.Namespace) -> None:
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be 1-65535, got {args.port}")
    if args.data:
        preflight.output_folder(args.data, "--data")
    if args.log:
        preflight.output_file(args.log, "--log")


def cmd_sandbox(args: argparse.Namespace) -> int:
    """Run the project's HAPI FHIR JPA test server in the foreground until Ctrl-C."""
    import time

    from fhir_cyclo.server.hapi import HapiServer

    data = Path(args.data) if args.data else None
    log = Path(args.log) if args.log else None
    lenient = not args.strict_validation
    with HapiServer(port=args.port, data_dir=data, log_path=log, lenient=lenient) as hapi:
        print(
            f"HAPI FHIR R4 test server at {hapi.base_url} (started in {hapi.started_in:.0f}s; "
            f"{'lenient' if lenient else 'strict'} validation; "
            f"{'data in ' + str(data) if data else 'in memory'}; log {hapi.log_path}; "
            "Ctrl-C stops it)",
            flush=True,
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add the server-facing subcommands to the parser."""
    p = sub.add_parser(
        "push",
        help="push one transaction Bundle per case to a FHIR R4 server",
        description="Send one transaction per case (case files, cohort folders or exported "
        "Bundles) to a FHIR R4 server. Failures and the summary go to stderr.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="case files, cohort folders, or exported Bundle JSON",
    )
    _server_options(p)
    p.add_argument("--workers", type=int, default=1, metavar="N", help="parallel transactions")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="map and check; print each transaction it would send (stdout); send nothing",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--journal",
        metavar="FILE",
        help="record each case the server acknowledged here (JSONL, fsynced once a second; default "
        ".fhir-cyclo/push-journal.jsonl in the current folder)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip cases the journal holds for this server with the same Bundle (an edited case "
        "is pushed again); use after a failed or interrupted run",
    )
    p.add_argument("--no-journal", action="store_true", help="do not read or write a journal")
    p.set_defaults(func=cmd_push, check=check_push)

    p = sub.add_parser(
        "score",
        help="score cyclosporine response from FHIR files or a server",
        description="Score response to cyclosporine (mappings/scoring.yaml) from FHIR Bundle / "
        "NDJSON files or folders, or from a server (--server). Data (--json -, --table) goes to "
        "stdout; warnings and the summary to stderr. Case files are not FHIR: export them first.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="Bundle JSON / NDJSON files or folders")
    _server_options(p)
    p.add_argument(
        "--patient", metavar="Patient/ID", help="one Patient (server: searched; files: kept)"
    )
    p.add_argument(
        "--identifier", metavar="SYSTEM|VALUE", help="one Patient by identifier (as --patient)"
    )
    p.add_argument(
        "--json",
        metavar="FILE",
        help="JSON result to FILE, or `--json -` for stdout",
    )
    p.add_argument(
        "--table", action="store_true", help="Table 2 style summary (the default output)"
    )
    p.add_argument("--plot", metavar="DIR", help="one PNG per patient in DIR (created if missing)")
    p.add_argument(
        "--report", metavar="FILE", help="one self-contained HTML report (summary, plots, reasons)"
    )
    p.add_argument(
        "--write-back",
        action="store_true",
        help="store one response Observation per patient and timepoint on the server",
    )
    p.add_argument(
        "--strict", action="store_true", help="also validate each resource with fhir.resources R4B"
    )
    from fhir_cyclo.cli import bulk_export as bulk_command

    p.add_argument("--bulk", action="store_true", help="server mode: read via Bulk Data $export")
    p.add_argument(
        "--bulk-dir",
        default=str(bulk_command.DEFAULT_BULK_DIR),
        help="--bulk: export folder (kept; an interrupted export resumes)",
    )
    p.add_argument("--no-progress", action="store_true", help="--bulk: no progress display")
    bulk_command.add_bulk_options(p)
    p.set_defaults(func=cmd_score, check=check_score)
    bulk_command.register(sub, _server_options)
    sub.choices["bulk-export"].set_defaults(check=check_bulk_export)

    p = sub.add_parser(
        "sandbox",
        help="run the project's HAPI FHIR JPA R4 test server (built by `make hapi`) on 127.0.0.1",
        description="Run the project's HAPI FHIR JPA R4 test server on 127.0.0.1 until Ctrl-C.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1")
    p.add_argument(
        "--data",
        metavar="DIR",
        help="keep the data in an H2 file database in DIR (default: in memory, lost on exit)",
    )
    p.add_argument("--log", metavar="FILE", help="server log file (default: a temporary folder)")
    p.add_argument(
        "--strict-validation",
        action="store_true",
        help="refuse what the project's own tests refuse (unknown extensions, unchecked codes); "
        "default: lenient, as a production HAPI server, so real-world records load",
    )
    p.set_defaults(func=cmd_sandbox, check=check_sandbox)
