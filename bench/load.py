"""Registry load on a real engine: push on H2 vs PostgreSQL, by workers, and `$import` (issue 22).

    python bench/load.py [--cases 100] [--runs 3] [--workers 1,2,4,8]
                         [--configs h2_everyday,h2_load,pg_everyday,pg_load] [--no-import]
                         [--server-cpus 0] [--jfr DIR] [--out bench/results/load.json]
    python bench/load.py --load-10k [--cases 10000]   # one registry-sized load per path
    python bench/load.py --ablation [--runs 3]        # each loading-profile setting on and off
    python bench/load.py --ratio [--runs 3]           # push vs the bare loop on PostgreSQL

SYNTHETIC cases (bench/synthetic.py). Per run, each configuration gets a fresh HAPI and a fresh
database, a warm-up push that is not counted (JIT, pools), then one slice of `--cases` new cases
per worker count (the same synthetic cases under new identifiers: every slice creates, and all
slices hold the same content, so they compare across worker counts and configurations).
The worker counts run in one order on odd runs and the reverse on even runs, so a server that
slows as it fills does not always penalise the same count. `$import`: `fhir-cyclo load` of the
`export --ndjson` of one more slice, on a fresh PostgreSQL HAPI in the loading profile.
Each measure: wall seconds, resources/s, and the server's CPU seconds per 1,000 resources
(/proc of the JVM, and of every `postgres` process).

`--server-cpus` pins HAPI and PostgreSQL (`taskset -a`) to those CPUs; the client is not pinned.
`--jfr DIR` records a JDK Flight Recorder profile of each measured part (`bench/jfr_top.py`).
`--load-10k`: `--cases` cases (10,000 by default here) by each path on PostgreSQL (loading
profile): push at 4 workers, timed per 1,000 cases (does the server slow as it fills?), then
`$import` of the same cases into a fresh database.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from bench.synthetic import case_data  # noqa: E402
from fhir_cyclo.cli.app import main as cli  # noqa: E402
from fhir_cyclo.client import FhirClient  # noqa: E402
from fhir_cyclo.fhir.bundle import transaction_bundle  # noqa: E402
from fhir_cyclo.readers.case_files import load  # noqa: E402
from fhir_cyclo.server.hapi import HapiServer  # noqa: E402
from fhir_cyclo.server.push import push_bundles  # noqa: E402

PGCTL = ROOT / "hapi" / "pg" / "pgctl.sh"
TICKS = os.sysconf("SC_CLK_TCK")
# name -> (database, HAPI profile)
CONFIGS = {
    "h2_everyday": ("h2", "everyday"),
    "h2_load": ("h2", "load"),
    "pg_everyday": ("pg", "everyday"),
    "pg_load": ("pg", "load"),
}
Bundles = list[tuple[str, Any]]
# The loading profile's settings, by their hapi/ names (ServerConfig.LOAD_SETTINGS).
ABLATION = (
    "mass-ingestion",
    "index-storage-optimized",
    "no-text-tokens",
    "missing-fields-off",
    "no-validation",
    "match-url-cache",
)


def log(message: str) -> None:
    print(f"[load-bench] {message}", file=sys.stderr, flush=True)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def postgres_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == "postgres":
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def pg_cpu_seconds() -> float:
    """CPU of every postgres process (the database's share of a load)."""
    total = 0.0
    for pid in postgres_pids():
        try:
            total += cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            continue  # a backend that ended between the listing and the read
    return total


class Bench:
    """One bench invocation: its temp folder, PostgreSQL cluster, and the options."""

    def __init__(self, tmp: Path, pg_dir: Path, args: argparse.Namespace) -> None:
        self.tmp, self.pg_dir, self.args = tmp, pg_dir, args
        self.last_import_said = ""  # the last `load` run's closing line
        self.next_case = 0
        self.dbs = 0

    # --- inputs -------------------------------------------------------------------------------

    def new_cases(self, count: int) -> Path:
        """The first `count` synthetic cases under identifiers never used before in this
        invocation: every push creates, and every slice holds the same content (cases range
        from 6 to 300 resources, and HAPI's cost per resource with them), so slices compare."""
        folder = self.tmp / f"cases-{self.next_case:07d}"
        folder.mkdir()
        for i in range(count):
            case = case_data(i)
            case["identifier"]["value"] = f"load-{self.next_case + i:07d}"
            (folder / f"case-{i:07d}.json").write_bytes(orjson.dumps(case))
        self.next_case += count
        return folder

    @staticmethod
    def bundles(folder: Path) -> Bundles:
        out = []
        for loaded in load([folder]):
            assert loaded.case is not None, loaded.error
            out.append((loaded.case.identifier.token, transaction_bundle(loaded.case)))
        return out

    def ndjson(self, folder: Path) -> Path:
        export = folder.with_name(folder.name + "-ndjson")
        assert cli(["export", str(folder), "--out", str(export), "--ndjson", "-q"]) == 0
        return export

    # --- servers ------------------------------------------------------------------------------

    @contextmanager
    def server(
        self, label: str, database: str, profile: str, except_: str = ""
    ) -> Iterator[HapiServer]:
        url = None
        # Loading-profile settings left at their everyday value (hapi/: fhircyclo.load-except).
        os.environ["FHIR_CYCLO_HAPI_LOAD_EXCEPT"] = except_
        if database == "pg":
            self.dbs += 1
            url = subprocess.run(
                [str(PGCTL), "createdb", str(self.pg_dir), f"b{self.dbs}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        server = HapiServer(
            data_dir=self.tmp / f"h2-{label}-{self.dbs}-{time.monotonic_ns()}"
            if database == "h2"
            else None,
            database_url=url,
            profile=profile,
            log_path=self.tmp / f"hapi-{label}.log",
            heap="2g",
        )
        server.start()
        assert server.pid is not None
        log(f"{label}: HAPI started in {server.started_in:.0f}s")
        if self.args.server_cpus:
            # New PostgreSQL backends fork from the postmaster and inherit its affinity.
            for pid in [server.pid, *postgres_pids()]:
                subprocess.run(
                    ["taskset", "-a", "-p", "-c", self.args.server_cpus, str(pid)],
                    check=True,
                    capture_output=True,
                )
        try:
            yield server
        finally:
            server.stop()

    # --- measures -----------------------------------------------------------------------------

    def measure(
        self, server: HapiServer, label: str, resources: int, work: Callable[[], None]
    ) -> dict[str, float]:
        assert server.pid is not None
        jfr = self.args.jfr
        if jfr:
            jcmd = ["jcmd", str(server.pid)]
            subprocess.run(
                [*jcmd, "JFR.start", "name=bench", "settings=profile"],
                check=True,
                capture_output=True,
            )
        me0 = sum(os.times()[:4])  # this process (the client) and its children
        cpu0, pg0, t0 = cpu_seconds(server.pid), pg_cpu_seconds(), time.monotonic()
        work()
        wall = time.monotonic() - t0
        cpu, pg = cpu_seconds(server.pid) - cpu0, pg_cpu_seconds() - pg0
        me = sum(os.times()[:4]) - me0
        if jfr:
            jfr.mkdir(parents=True, exist_ok=True)
            target = jfr / f"{label}.jfr"
            subprocess.run(
                [*jcmd, "JFR.stop", "name=bench", f"filename={target}"],
                check=True,
                capture_output=True,
            )
        out = {
            "seconds": round(wall, 2),
            "resources": resources,
            "resources_per_s": round(resources / wall, 1),
            "hapi_cpu_s_per_1000": round(1000 * cpu / resources, 2),
            "postgres_cpu_s_per_1000": round(1000 * pg / resources, 2),
            "client_cpu_s_per_1000": round(1000 * me / resources, 2),
            # Share of the machine's cores busy in HAPI, PostgreSQL and the client together.
            "cpu_busy": round((cpu + pg + me) / (wall * (os.cpu_count() or 1)), 3),
        }
        log(f"  {label}: {out}")
        return out

    def push(self, server: HapiServer, bundles: Bundles, workers: int) -> None:
        with FhirClient(server.base_url) as client:
            summary = push_bundles(client, iter(bundles), workers=workers)
        assert summary.failed == 0, [f.error for f in summary.failures][:3]

    def import_(self, server: HapiServer, export: Path) -> None:
        argv = ["load", str(export), "--server", server.base_url, "--max-poll-wait", "1"]
        argv += self.args.load_args.split()
        said = io.StringIO()
        with contextlib.redirect_stderr(said):
            code = cli(argv)
        # The last line: "$import of N resources in F files done in S s (R resources/s; J jobs
        # [, K run again after a conflict])": kept with the measurement, so a retry shows.
        lines = said.getvalue().splitlines()
        self.last_import_said = lines[-1] if lines else ""
        log("  " + self.last_import_said)
        assert code == 0, said.getvalue()[-3000:]

    def warm(self, server: HapiServer) -> None:
        # Not measured: the first requests pay for the JIT, caches and connection pools.
        self.push(server, self.bundles(self.new_cases(self.args.warm_cases)), 2)

    # --- one run ------------------------------------------------------------------------------

    def one_run(self, index: int) -> dict[str, Any]:
        args = self.args
        workers = args.workers if index % 2 == 0 else list(reversed(args.workers))
        out: dict[str, Any] = {"order": workers, "push": {}}
        for name in args.configs:
            database, profile = CONFIGS[name]
            slices = [self.bundles(self.new_cases(args.cases)) for _ in workers]
            with self.server(name, database, profile) as server:
                self.warm(server)
                stored = sum(server.counts().values())
                by_workers = {}
                for w, bundles in zip(workers, slices, strict=True):
                    resources = sum(len(b["entry"]) for _, b in bundles)
                    by_workers[str(w)] = self.measure(
                        server,
                        f"{name}-push-{w}w-run{index + 1}",
                        resources,
                        lambda s=server, b=bundles, n=w: self.push(s, b, n),
                    )
                    stored += resources
                assert sum(server.counts().values()) == stored, name
            out["push"][name] = dict(sorted(by_workers.items(), key=lambda kv: int(kv[0])))
        if args.do_import:
            # A larger slice than push's: a job's fixed cost (creation, 2 s maintenance passes,
            # polls) would otherwise weigh on $import's rate.
            warm = self.ndjson(self.new_cases(args.warm_cases))
            export = self.ndjson(self.new_cases(args.import_cases))
            with self.server("pg_load_import", "pg", "load") as server:
                self.import_(server, warm)
                before = sum(server.counts().values())
                resources = sum(len(p.read_bytes().splitlines()) for p in export.rglob("*.ndjson"))
                out["import_pg_load"] = self.measure(
                    server,
                    f"pg_load-import-run{index + 1}",
                    resources,
                    lambda s=server: self.import_(s, export),
                )
                assert sum(server.counts().values()) == before + resources
        return out | keys(out)

    # --- each loading-profile setting on and off ---------------------------------------------

    def ablation(self, index: int) -> dict[str, Any]:
        """Push at 4 workers on PostgreSQL: the loading profile whole, then with each of its
        settings left at the everyday value (one at a time), each on a fresh server."""
        settings = ["", *ABLATION]
        if index % 2:
            settings.reverse()
        out: dict[str, Any] = {"order": settings, "push_4w": {}}
        for except_ in settings:
            name = f"without {except_}" if except_ else "loading profile"
            bundles = self.bundles(self.new_cases(self.args.cases))
            resources = sum(len(b["entry"]) for _, b in bundles)
            with self.server(f"pg_load_except_{except_ or 'none'}", "pg", "load", except_) as s:
                self.warm(s)
                out["push_4w"][name] = self.measure(
                    s,
                    f"ablation-{except_ or 'none'}-run{index + 1}",
                    resources,
                    lambda s=s, b=bundles: self.push(s, b, 4),
                )
        return out

    # --- push against the bare loop, on PostgreSQL --------------------------------------------

    def ratio(self) -> dict[str, Any]:
        """bench/run.py's push part (push vs a bare requests loop, interleaved slices on one
        server) against a PostgreSQL HAPI in the loading profile: a fresh server and database
        per worker count, since emptying one over REST (a cascading DELETE) took over 300 s."""
        out: dict[str, Any] = {"push_ratio_by_workers_pg": {}, "runpy": {}}
        for w in self.args.workers:
            with self.server(f"pg_load_ratio_{w}", "pg", "load") as server:
                argv = [sys.executable, str(ROOT / "bench" / "run.py"), "--only", "push"]
                argv += ["--server", server.base_url, "--workers", str(w), "--no-ceiling"]
                argv += ["--push-cases", str(self.args.cases)]
                done = subprocess.run(argv, capture_output=True, text=True, check=False)
                if done.returncode:
                    log("run.py failed:\n" + "\n".join(done.stderr.splitlines()[-25:]))
                    raise SystemExit(1)
                line = orjson.loads(done.stdout.strip().splitlines()[-1])
            out["runpy"][str(w)] = {k: v for k, v in line.items() if k.startswith("push_")}
            out["push_ratio_by_workers_pg"][str(w)] = line["push_ratio_by_workers"][str(w)]
            log(f"  push_ratio_by_workers_pg {w}: {line['push_ratio_by_workers'][str(w)]}")
        return out

    # --- 10,000 cases -------------------------------------------------------------------------

    def push_10k(self, cases: Path, journal: Path, resources: int, out: dict[str, Any]) -> None:
        with self.server("pg_load_10k_push", "pg", "load") as server:

            def push_all(s: HapiServer = server) -> None:
                # The user's path: `fhir-cyclo push` reads, maps and sends the case files.
                argv = ["push", str(cases), "--server", s.base_url, "--workers", "4"]
                assert cli([*argv, "--no-progress", "--journal", str(journal), "-q"]) == 0

            out["push_pg_load_4w"] = self.measure(server, "pg_load-10k-push", resources, push_all)
            out["push_pg_load_4w"]["per_1000_cases"] = journal_rates(journal, 1000)
            assert sum(server.counts().values()) == resources

    def load_10k(self) -> dict[str, Any]:
        cases = self.new_cases(self.args.cases)
        export = self.ndjson(cases)
        resources = sum(len(p.read_bytes().splitlines()) for p in export.rglob("*.ndjson"))
        out: dict[str, Any] = {"cases": self.args.cases, "resources": resources}
        journal = self.tmp / "push-10k-journal.jsonl"
        if "push" in self.args.paths:
            self.push_10k(cases, journal, resources, out)
        if "import" in self.args.paths:
            with self.server("pg_load_10k_import", "pg", "load") as server:
                try:
                    out["import_pg_load"] = self.measure(
                        server,
                        "pg_load-10k-import",
                        resources,
                        lambda s=server: self.import_(s, export),
                    )
                except AssertionError as exc:
                    # A failed load is a result too (the push half is kept): what `load` said.
                    out["import_pg_load_failed"] = str(exc).splitlines()
                else:
                    out["import_pg_load"]["load_said"] = self.last_import_said
                    assert sum(server.counts().values()) == resources
        out["load_10k_seconds"] = {
            k: out[k]["seconds"] for k in ("push_pg_load_4w", "import_pg_load") if k in out
        }
        return out


def journal_rates(journal: Path, every: int) -> list[dict[str, float]]:
    """Resources/s per `every` acknowledged cases, from the push journal's timestamps."""
    rows = [orjson.loads(line) for line in journal.read_bytes().splitlines() if line.strip()]
    stamps = [dt.datetime.fromisoformat(r["at"]).timestamp() for r in rows]
    out, prev = [], stamps[0]
    for i in range(0, len(rows), every):
        part = rows[i : i + every]
        end = stamps[min(i + every, len(rows)) - 1]
        n = sum(r["entries"] for r in part)
        out.append({"resources": n, "resources_per_s": round(n / max(end - prev, 1e-9), 1)})
        prev = end
    return out


def keys(run: dict[str, Any]) -> dict[str, Any]:
    """The issue's keys, from what one run measured (those it could)."""
    push = run["push"]
    out: dict[str, Any] = {}
    if "4" in push.get("pg_everyday", {}) and "4" in push.get("h2_everyday", {}):
        out["pg_vs_h2_push_4w"] = round(
            push["pg_everyday"]["4"]["resources_per_s"]
            / push["h2_everyday"]["4"]["resources_per_s"],
            3,
        )
    if "import_pg_load" in run:
        out["import_resources_per_s"] = run["import_pg_load"]["resources_per_s"]
        if "4" in push.get("pg_load", {}):
            out["import_vs_push"] = round(
                run["import_pg_load"]["resources_per_s"] / push["pg_load"]["4"]["resources_per_s"],
                3,
            )
    return out


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--cases", type=int, help="cases per slice (default 100; 10,000 with --load-10k)"
    )
    # 150: after 30, the 4-worker slice that came third ran 2x the one that came first (the JIT).
    ap.add_argument("--warm-cases", type=int, default=150)
    ap.add_argument(
        "--import-cases", type=int, help="cases in the $import slice (default 3x --cases)"
    )
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--no-import", dest="do_import", action="store_false")
    ap.add_argument("--server-cpus", help="taskset CPU list for HAPI and PostgreSQL, e.g. 0")
    ap.add_argument("--jfr", type=Path, help="record a JFR profile of each measured part here")
    ap.add_argument("--load-10k", action="store_true")
    ap.add_argument(
        "--paths", default="push,import", help="with --load-10k: push, import or both (default)"
    )
    ap.add_argument(
        "--load-args", default="", help="more `fhir-cyclo load` options, e.g. '--by-patient'"
    )
    ap.add_argument(
        "--ablation", action="store_true", help="each loading-profile setting on and off"
    )
    ap.add_argument(
        "--ratio", action="store_true", help="push vs the bare loop (bench/run.py) on PostgreSQL"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = ap.parse_args()
    args.cases = args.cases or (10_000 if args.load_10k else 200 if args.ratio else 100)
    args.import_cases = args.import_cases or 3 * args.cases
    args.workers = [int(w) for w in args.workers.split(",")]
    args.paths = {x for x in args.paths.split(",") if x}
    if not args.paths or args.paths - {"push", "import"}:
        ap.error("--paths: push, import or push,import")
    args.configs = [c for c in args.configs.split(",") if c]
    for c in args.configs:
        if c not in CONFIGS:
            ap.error(f"--configs: {c!r} is not one of {', '.join(CONFIGS)}")
    with tempfile.TemporaryDirectory(prefix="fhir-cyclo-load-bench-") as raw:
        # Directly under /tmp: the cluster's owner (postgres) must enter every parent folder.
        pg_dir = Path(tempfile.mkdtemp(prefix="fhir-cyclo-pg-bench-", dir="/tmp"))
        port = 18000 + os.getpid() % 900
        subprocess.run(
            [str(PGCTL), "start", str(pg_dir), str(port)], check=True, capture_output=True
        )
        bench = Bench(Path(raw), pg_dir, args)
        result: dict[str, Any] = {
            "cases_per_slice": args.cases,
            "server_cpus": args.server_cpus or "all",
            "load_args": args.load_args,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            if args.load_10k:
                result |= bench.load_10k()
            elif args.ablation:
                result["runs"] = [bench.ablation(i) for i in range(args.runs)]
                names = list(result["runs"][0]["push_4w"])
                result["summary"] = {
                    n: {
                        "resources_per_s": spread(
                            [r["push_4w"][n]["resources_per_s"] for r in result["runs"]]
                        ),
                        "hapi_cpu_s_per_1000": spread(
                            [r["push_4w"][n]["hapi_cpu_s_per_1000"] for r in result["runs"]]
                        ),
                    }
                    for n in names
                }
            elif args.ratio:
                result["runs"] = []
                for i in range(args.runs):
                    log(f"ratio run {i + 1}/{args.runs}: {args.cases} cases per worker count")
                    result["runs"].append(bench.ratio())
                result["summary"] = {
                    w: spread([r["push_ratio_by_workers_pg"][w] for r in result["runs"]])
                    for w in result["runs"][0]["push_ratio_by_workers_pg"]
                }
            else:
                runs = []
                for i in range(args.runs):
                    log(f"run {i + 1}/{args.runs}: {args.cases} cases per slice")
                    runs.append(bench.one_run(i))
                result["runs"] = runs
                names = sorted(
                    {k for r in runs for k in r if k not in ("order", "push")} - {"import_pg_load"}
                )
                result["summary"] = {k: spread([r[k] for r in runs]) for k in names}
                result["push_resources_per_s"] = {
                    name: {
                        w: spread([r["push"][name][w]["resources_per_s"] for r in runs])
                        for w in runs[0]["push"][name]
                    }
                    for name in runs[0]["push"]
                }
        finally:
            subprocess.run([str(PGCTL), "stop", str(pg_dir)], check=False)
    result["machine"] = {"cores": os.cpu_count(), "load_avg_at_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(orjson.dumps(result.get("summary", result.get("load_10k_seconds"))).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
