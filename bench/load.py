"""Registry load on a real engine: push on H2 vs PostgreSQL, and `$import` vs push (issue 22).

    python bench/load.py [--cases 150] [--runs 1] [--out bench/results/load.json]

SYNTHETIC cases (bench/synthetic.py) exported once (`export --ndjson`); then, per run, each on a
fresh server and database:
  h2_push_4w       push at 4 workers, HAPI on H2 (file), everyday (validating) profile
  pg_push_4w       push at 4 workers, HAPI on PostgreSQL, everyday profile
  pg_load_push_4w  push at 4 workers, HAPI on PostgreSQL, loading profile
  pg_load_import   `fhir-cyclo load` ($import), HAPI on PostgreSQL, loading profile
Each: wall seconds, resources/s, and the server's CPU seconds per 1,000 resources (/proc).
Keys: pg_vs_h2_push_4w, import_resources_per_s, import_vs_push (vs pg_load_push_4w).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench.synthetic import write_case_files  # noqa: E402
from fhir_cyclo.cli.app import main as cli  # noqa: E402
from fhir_cyclo.client import FhirClient  # noqa: E402
from fhir_cyclo.fhir.bundle import transaction_bundle  # noqa: E402
from fhir_cyclo.readers.case_files import load  # noqa: E402
from fhir_cyclo.server.hapi import HapiServer  # noqa: E402
from fhir_cyclo.server.push import push_bundles  # noqa: E402

PGCTL = ROOT / "hapi" / "pg" / "pgctl.sh"
TICKS = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    print(f"[load-bench] {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def pg_cpu_seconds() -> float:
    """CPU of every postgres process (the database's share of a load)."""
    total = 0.0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == "postgres":
                    total += cpu_seconds(int(proc.name))
            except (OSError, IndexError, ValueError):
                continue
    return total


def measure(server: HapiServer, resources: int, work: Callable[[], None]) -> dict[str, float]:
    assert server.pid is not None
    cpu0, pg0, t0 = cpu_seconds(server.pid), pg_cpu_seconds(), time.monotonic()
    work()
    wall = time.monotonic() - t0
    cpu, pg = cpu_seconds(server.pid) - cpu0, pg_cpu_seconds() - pg0
    return {
        "seconds": round(wall, 2),
        "resources": resources,
        "resources_per_s": round(resources / wall, 1),
        "hapi_cpu_s_per_1000": round(1000 * cpu / resources, 2),
        "postgres_cpu_s_per_1000": round(1000 * pg / resources, 2),
    }


def start(tmp: Path, label: str, *, database: str | None, profile: str) -> HapiServer:
    data = None if database else tmp / f"h2-{label}"
    server = HapiServer(
        data_dir=data,
        database_url=database,
        profile=profile,
        log_path=tmp / f"hapi-{label}.log",
        heap="2g",
    )
    server.start()
    log(f"{label}: HAPI started in {server.started_in:.0f}s")
    return server


def push(server: HapiServer, bundles: list[tuple[str, Any]]) -> None:
    with FhirClient(server.base_url) as client:
        summary = push_bundles(client, iter(bundles), workers=4)
    assert summary.failed == 0, [f.error for f in summary.failures][:3]


def import_(server: HapiServer, export: Path) -> None:
    code = cli(["load", str(export), "--server", server.base_url, "--max-poll-wait", "1", "-q"])
    assert code == 0, code


def one_run(
    tmp: Path, pg_dir: Path, export: Path, bundles: list[tuple[str, Any]]
) -> dict[str, Any]:
    resources = sum(len(b["entry"]) for _, b in bundles)
    out: dict[str, Any] = {}
    h2 = start(tmp, "h2", database=None, profile="everyday")
    with h2:
        out["h2_push_4w"] = measure(h2, resources, lambda: push(h2, bundles))
    log(f"h2_push_4w {out['h2_push_4w']}")
    for label, profile, what in (
        ("pg_push_4w", "everyday", "push"),
        ("pg_load_push_4w", "load", "push"),
        ("pg_load_import", "load", "import"),
    ):
        db = label.replace("_4w", "")
        url = subprocess.run(
            [str(PGCTL), "createdb", str(pg_dir), db], capture_output=True, text=True, check=True
        ).stdout.strip()
        server = start(tmp, label, database=url, profile=profile)
        with server:
            work = (
                (lambda s=server: push(s, bundles))
                if what == "push"
                else (lambda s=server: import_(s, export))
            )
            out[label] = measure(server, resources, work)
            counts = sum(server.counts().values())
            assert counts == resources, (label, counts, resources)
        log(f"{label} {out[label]}")
    out["pg_vs_h2_push_4w"] = round(
        out["pg_push_4w"]["resources_per_s"] / out["h2_push_4w"]["resources_per_s"], 3
    )
    out["import_resources_per_s"] = out["pg_load_import"]["resources_per_s"]
    out["import_vs_push"] = round(
        out["pg_load_import"]["resources_per_s"] / out["pg_load_push_4w"]["resources_per_s"], 3
    )
    return out


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=150)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fhir-cyclo-load-bench-") as raw:
        tmp = Path(raw)
        cases = tmp / "cases"
        write_case_files(cases, args.cases)
        export = tmp / "export"
        assert cli(["export", str(cases), "--out", str(export), "--ndjson", "-q"]) == 0
        bundles = []
        for loaded in load([cases]):
            assert loaded.case is not None, loaded.error
            bundles.append((loaded.case.identifier.token, transaction_bundle(loaded.case)))
        # Directly under /tmp: the cluster's owner (postgres) must enter every parent folder.
        pg_dir = Path(tempfile.mkdtemp(prefix="fhir-cyclo-pg-bench-", dir="/tmp"))
        port = 18000 + os.getpid() % 900
        subprocess.run(
            [str(PGCTL), "start", str(pg_dir), str(port)], check=True, capture_output=True
        )
        runs = []
        try:
            for i in range(args.runs):
                log(f"run {i + 1}/{args.runs}: {args.cases} cases")
                runs.append(one_run(tmp, pg_dir, export, bundles))
        finally:
            subprocess.run([str(PGCTL), "stop", str(pg_dir)], check=False)
    keys = ("pg_vs_h2_push_4w", "import_resources_per_s", "import_vs_push")
    result = {
        "cases": args.cases,
        "resources": sum(len(b["entry"]) for _, b in bundles),
        "runs": runs,
        "summary": {k: spread([r[k] for r in runs]) for k in keys},
        "machine": {"cores": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(orjson.dumps(result["summary"], option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
