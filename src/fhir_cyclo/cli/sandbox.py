"""`fhir-cyclo sandbox`: the project's HAPI FHIR JPA R4 test server on 127.0.0.1 until Ctrl-C."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
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
    p.add_argument("--log", metavar="FILE", help="server log file (default: a temporary folder)")


def parse(ns: argparse.Namespace) -> SandboxOptions:
    """Every usage error of `sandbox`, before the server starts."""
    if not 1 <= ns.port <= 65535:
        raise UsageError(f"--port must be 1-65535, got {ns.port}")
    if ns.data:
        preflight.output_folder(ns.data, "--data")
    if ns.log:
        preflight.output_file(ns.log, "--log")
    return SandboxOptions(
        port=ns.port,
        data=Path(ns.data) if ns.data else None,
        log=Path(ns.log) if ns.log else None,
    )


def run(opts: SandboxOptions) -> int:
    """Run the server in the foreground until Ctrl-C."""
    from fhir_cyclo.server.hapi import HapiServer

    with HapiServer(port=opts.port, data_dir=opts.data, log_path=opts.log) as hapi:
        # The address is data a user copies (stdout), as before.
        output.data(
            f"HAPI FHIR R4 test server at {hapi.base_url} (started in {hapi.started_in:.0f}s; "
            f"{'data in ' + str(opts.data) if opts.data else 'in memory'}; log {hapi.log_path}; "
            "Ctrl-C stops it)\n"
        )
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return output.EXIT_OK
