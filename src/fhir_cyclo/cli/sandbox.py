"""`fhir-cyclo sandbox`: the project's HAPI FHIR JPA R4 test server on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import argparse
import signal
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from fhir_cyclo.cli import output, preflight
from fhir_cyclo.cli.options import HelpFormatter, add_verbosity
from fhir_cyclo.core.errors import UsageError

NAME = "sandbox"


@dataclass(frozen=True)
class SandboxOptions:
    port: int = 8080
    data: Path | None = None  # None: in memory
    log: Path | None = None  # None: a temporary folder
    jar: Path | None = None  # None: $FHIR_CYCLO_HAPI_JAR, the checkout, or the user cache
    start_timeout: float = 300.0
    lenient: bool = True  # production HAPI's defaults, so real-world records load
    database: str | None = None  # a JDBC URL (PostgreSQL); None: H2 (--data or in memory)
    profile: str = "everyday"  # or "load" (README "Scale")


def register(sub: argparse._SubParsersAction[Any], help_line: str) -> None:
    p = sub.add_parser(
        NAME,
        help=help_line,
        description="Run the project's HAPI FHIR JPA R4 test server on 127.0.0.1 until Ctrl-C.",
        formatter_class=HelpFormatter,
    )
    add_verbosity(p, top=False)
    p.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1")
    p.add_argument(
        "--data",
        metavar="DIR",
        help="keep the data in an H2 file database in DIR (default: in memory, lost on exit)",
    )
    p.add_argument(
        "--database",
        metavar="URL",
        help="keep the data in PostgreSQL: jdbc:postgresql://HOST:PORT/DB?user=U or "
        "postgresql://USER[:PASSWORD]@HOST:PORT/DB (the database must exist; HAPI creates its "
        "tables)",
    )
    p.add_argument(
        "--profile",
        choices=("everyday", "load"),
        default="everyday",
        help="everyday: validates every write; load: bulk loading (mass ingestion, no "
        "server-side validation, placeholder references for $import; README 'Scale')",
    )
    p.add_argument("--log", metavar="FILE", help="server log file (default: a temporary folder)")
    p.add_argument(
        "--strict-validation",
        action="store_true",
        help="refuse what the project's own tests refuse (unknown extensions, unchecked codes); "
        "default: lenient, as a production HAPI server, so real-world records load",
    )
    p.add_argument(
        "--jar",
        metavar="PATH",
        help="the server jar (default: $FHIR_CYCLO_HAPI_JAR, the checkout's hapi/target, or "
        "~/.cache/fhir-cyclo/hapi-VERSION/, built there with Maven on first use)",
    )
    p.add_argument(
        "--start-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="give up when the server is not ready by then (a busy 2-core machine needs more)",
    )


def parse(ns: argparse.Namespace) -> SandboxOptions:
    """Every usage error of `sandbox`, before the server starts."""
    if not 1 <= ns.port <= 65535:
        raise UsageError(f"--port must be 1-65535, got {ns.port}")
    database = None
    if ns.database:
        if ns.data:
            raise UsageError("give --data (H2 file) or --database (PostgreSQL), not both")
        from fhir_cyclo.server.hapi import HapiError, jdbc_url

        try:
            database = jdbc_url(ns.database)
        except HapiError as exc:
            raise UsageError(f"--database: {exc}") from None
    if ns.data:
        preflight.output_folder(ns.data, "--data")
    if ns.log:
        preflight.output_file(ns.log, "--log")
    if ns.jar:
        preflight.readable_file(ns.jar, "--jar")
    preflight.positive(ns.start_timeout, "--start-timeout")
    return SandboxOptions(
        port=ns.port,
        data=Path(ns.data) if ns.data else None,
        log=Path(ns.log) if ns.log else None,
        jar=Path(ns.jar) if ns.jar else None,
        start_timeout=ns.start_timeout,
        lenient=not ns.strict_validation,
        database=database,
        profile=ns.profile,
    )


def run(opts: SandboxOptions) -> int:
    """Run the server in the foreground until Ctrl-C or SIGTERM; exit 3 if the server dies."""
    from fhir_cyclo.server.hapi import HapiError, HapiServer

    hapi = HapiServer(
        port=opts.port,
        data_dir=opts.data,
        log_path=opts.log,
        lenient=opts.lenient,
        database_url=opts.database,
        profile=opts.profile,
    )
    hapi.jar = opts.jar
    hapi.notice = output.say  # "building the server jar ... (first use)"
    # `kill`, `docker stop` and systemd send SIGTERM: stop the server as Ctrl-C does, instead of
    # leaving it to the kernel's parent-death signal with no word said.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        hapi.start(timeout=opts.start_timeout)
        try:
            # The address is data a user copies (stdout), as before.
            output.data(
                f"HAPI FHIR R4 test server at {hapi.base_url} (started in {hapi.started_in:.0f}s; "
                f"{'lenient' if opts.lenient else 'strict'} validation; "
                f"{_where(opts)}; profile {opts.profile}; log {hapi.log_path}; "
                "Ctrl-C stops it)\n"
            )
            # Wait on the server itself, not a timer: a server that dies (out of memory, the
            # database gone) ends the command with its log named instead of a silent hang.
            code = hapi.wait()
        except KeyboardInterrupt:
            return output.EXIT_OK
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
        raise HapiError(f"the HAPI test server stopped by itself ({how}; log {hapi.log_path})")
    finally:
        hapi.stop()
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _where(opts: SandboxOptions) -> str:
    """Where the data is, without a password the database URL may hold."""
    if opts.database:
        return "data in PostgreSQL " + opts.database.split("?", 1)[0]
    return f"data in {opts.data}" if opts.data else "in memory"
