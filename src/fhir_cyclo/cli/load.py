"""`fhir-cyclo load`: NDJSON from `export --ndjson` into a server through Bulk Data $import."""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fhir_cyclo.cli import options, output, preflight
from fhir_cyclo.cli.options import HelpFormatter, ServerOptions, add_verbosity
from fhir_cyclo.core.errors import UsageError

NAME = "load"
DEFAULT_MAX_POLL_WAIT = 5.0


@dataclass(frozen=True)
class LoadOptions:
    server: ServerOptions
    folder: Path
    base_url: str | None = None  # None: the files are served here on 127.0.0.1
    max_poll_wait: float = DEFAULT_MAX_POLL_WAIT
    batch_size: int | None = None  # HAPI storageDetail maxBatchResourceCount; None: its default
    # patient: HAPI storageDetail chunkByCompartmentName=Patient; server: no storageDetail sent
    chunks: str = "patient"


def register(sub: argparse._SubParsersAction[Any], help_line: str) -> None:
    p = sub.add_parser(
        NAME,
        help=help_line,
        description=(
            "Load the NDJSON files that `export --ndjson` wrote (DIR/ndjson/*.ndjson, or a folder "
            "of *.ndjson, one resource type per file) through the server's Bulk Data $import. "
            "The files are served on 127.0.0.1 while the job runs (the server must be on this "
            "machine), or from --base-url where you serve them. Every resource keeps its id, so "
            "running the same load again updates and never duplicates. The types others point at "
            "(Organization, Practitioner, Medication, ...; then Patient) go first, each wave one "
            "job, and a job failed on a conflict between the server's own work chunks "
            "(HAPI-0825) runs again, twice at most. The server must accept "
            "references to resources of a later file (HAPI: `sandbox --profile load`)."
        ),
        formatter_class=HelpFormatter,
    )
    add_verbosity(p, top=False)
    p.add_argument("folder", metavar="DIR", help="export --ndjson output, or a folder of *.ndjson")
    options.add_server_options(p)
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="where the server fetches the files (URL/NAME.ndjson), served by you; default: "
        "served by this command on 127.0.0.1",
    )
    p.add_argument(
        "--max-poll-wait",
        type=float,
        default=DEFAULT_MAX_POLL_WAIT,
        metavar="SECONDS",
        help="longest wait between status polls, whatever Retry-After asks (HAPI asks 120)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="resources per work chunk on the server (HAPI: storageDetail maxBatchResourceCount; "
        "default: the server's)",
    )
    p.add_argument(
        "--chunks",
        choices=("patient", "server"),
        default="patient",
        help="patient (default): each work chunk holds whole Patient compartments (HAPI: "
        "storageDetail chunkByCompartmentName=Patient), so a Patient's resources are stored "
        "together and no two chunks race to create the same reference target; server: the "
        "server's own chunking, nothing HAPI-specific sent",
    )


def parse(ns: argparse.Namespace) -> LoadOptions:
    """Every usage error of `load`, before any work."""
    folder = Path(ns.folder)
    if not folder.is_dir():
        raise UsageError(f"{ns.folder}: no such folder")
    preflight.positive(ns.max_poll_wait, "--max-poll-wait")
    if ns.batch_size is not None:
        preflight.positive(ns.batch_size, "--batch-size")
    server = options.server_options(ns, required=True)
    if ns.base_url:
        preflight.server_url(ns.base_url, "--base-url")
    elif server.url and not _loopback(urlsplit(server.url).hostname or ""):
        raise UsageError(
            f"the files would be served on 127.0.0.1, which the server at "
            f"{urlsplit(server.url).hostname} cannot reach: serve them where it can and give "
            "--base-url"
        )
    return LoadOptions(
        server=server,
        folder=folder,
        base_url=ns.base_url,
        max_poll_wait=ns.max_poll_wait,
        batch_size=ns.batch_size,
        chunks=ns.chunks,
    )


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(opts: LoadOptions) -> int:
    from fhir_cyclo.server.load import Loader, PollLimits, StorageDetail, find_ndjson, served

    files = find_ndjson(opts.folder)  # a bad line: exit 1 naming the file, before any request
    with options.make_client(opts.server) as client, served(files, opts.base_url) as urls:
        loader = Loader(
            client,
            limits=PollLimits(max_poll_interval=opts.max_poll_wait),
            progress=output.say,
            storage=StorageDetail(opts.batch_size, by_patient=opts.chunks == "patient"),
        )
        result = loader.run(files, urls)
    for name, outcome in sorted(result.by_file.items()):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(outcome.outcomes.items()))
        output.say(f"{name}: {counts or 'no outcome reported'}")
        for error in outcome.errors:
            output.problem(f"{name}: error: {error}")
    if not result.completed:
        output.error(f"$import failed on the server: {result.message}")
    if result.not_sent:
        names = ", ".join(f.path.name for f in result.not_sent)
        output.problem(f"not sent (a later wave; run the same load again): {names}")
    output.say(
        f"$import of {result.resources} resources in {len(result.files)} files "
        f"{'done' if result.ok else 'ended with failures'} in {result.seconds:.0f}s "
        f"({result.resources / max(result.seconds, 1e-9):.0f} resources/s; {result.jobs} "
        f"job{'s' if result.jobs != 1 else ''}"
        f"{f', {result.retried} run again after a conflict' if result.retried else ''})"
    )
    return output.EXIT_OK if result.ok else output.EXIT_FAILED_ITEMS
