"""Markdown tables for docs/performance.md from bench/load.py's JSON files (no number retyped).

python bench/load_report.py [--matrix F] [--ablation F] [--cpus1 F --cpus2 F] [--ratio F]
                            [--tenk F [F ...]]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import orjson


def mmm(values: list[float], digits: int = 1) -> str:
    lo, med, hi = min(values), statistics.median(values), max(values)
    return f"{lo:.{digits}f} / {med:.{digits}f} / {hi:.{digits}f}"


def read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data


def matrix(data: dict[str, Any]) -> list[str]:
    runs = data["runs"]
    out = [
        f"Push, resources/s by client workers (min / median / max of {len(runs)} runs; "
        f"{data['cases_per_slice']} cases per slice); HAPI and PostgreSQL CPU s per 1,000 "
        "resources (median over worker counts and runs):",
        "",
        "| configuration | 1 worker | 2 workers | 4 workers | 8 workers "
        "| HAPI CPU s/1,000 | PostgreSQL CPU s/1,000 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in runs[0]["push"]:
        cells = []
        for w in ("1", "2", "4", "8"):
            if w in runs[0]["push"][name]:
                cells.append(mmm([r["push"][name][w]["resources_per_s"] for r in runs]))
            else:
                cells.append("-")
        every = [m for r in runs for m in r["push"][name].values()]
        hapi = statistics.median(m["hapi_cpu_s_per_1000"] for m in every)
        pg = statistics.median(m["postgres_cpu_s_per_1000"] for m in every)
        out.append(f"| {name} | {' | '.join(cells)} | {hapi:.2f} | {pg:.2f} |")
    if "import_pg_load" in runs[0]:
        imp = [r["import_pg_load"] for r in runs]
        out += [
            "",
            f"`$import` (`fhir-cyclo load`, PostgreSQL, loading profile, "
            f"{imp[0]['resources']} resources per run): "
            f"{mmm([m['resources_per_s'] for m in imp])} resources/s; HAPI CPU s/1,000 "
            f"{mmm([m['hapi_cpu_s_per_1000'] for m in imp], 2)}; PostgreSQL "
            f"{mmm([m['postgres_cpu_s_per_1000'] for m in imp], 2)}.",
        ]
    out += ["", "| key | min / median / max |", "|---|---|"]
    for key, s in data["summary"].items():
        out.append(f"| `{key}` | {s['min']} / {s['median']} / {s['max']} |")
    return out


def ablation(data: dict[str, Any]) -> list[str]:
    runs = data["runs"]
    names = list(runs[0]["push_4w"])
    base = [r["push_4w"]["loading profile"]["resources_per_s"] for r in runs]
    out = [
        f"Push at 4 workers on PostgreSQL, the loading profile with one setting left at the "
        f"everyday value ({len(runs)} runs, min / median / max; ratio = this run's rate / the "
        "same run's whole loading profile):",
        "",
        "| server | resources/s | vs whole profile | HAPI CPU s/1,000 |",
        "|---|---|---|---|",
    ]
    for n in names:
        rates = [r["push_4w"][n]["resources_per_s"] for r in runs]
        ratios = [x / b for x, b in zip(rates, base, strict=True)]
        cpu = [r["push_4w"][n]["hapi_cpu_s_per_1000"] for r in runs]
        out.append(f"| {n} | {mmm(rates)} | {mmm(ratios, 2)} | {mmm(cpu, 2)} |")
    return out


def cpus(one: dict[str, Any], two: dict[str, Any]) -> list[str]:
    out = [
        "HAPI and PostgreSQL pinned with `taskset` (the client unpinned), PostgreSQL loading "
        "profile (min / median / max):",
        "",
        "| server CPUs | push 4 workers, resources/s | `$import`, resources/s "
        "| HAPI CPU s/1,000 (push) |",
        "|---|---|---|---|",
    ]
    for label, data in (("1 (`taskset -c 0`)", one), ("2 (`taskset -c 0,1`)", two)):
        runs = data["runs"]
        push = [r["push"]["pg_load"]["4"] for r in runs]
        imp = [r["import_pg_load"]["resources_per_s"] for r in runs if "import_pg_load" in r]
        out.append(
            f"| {label} | {mmm([m['resources_per_s'] for m in push])} | "
            f"{mmm(imp) if imp else '-'} | {mmm([m['hapi_cpu_s_per_1000'] for m in push], 2)} |"
        )
    return out


def ratio(data: dict[str, Any]) -> list[str]:
    runs = data["runs"]
    out = [
        f"`fhir-cyclo push` / bare requests loop (bench/run.py's push part, interleaved slices) "
        f"on PostgreSQL, loading profile ({len(runs)} runs):",
        "",
        "| workers | push_ratio_by_workers_pg (min / median / max) | push cases/s | bare cases/s |",
        "|---|---|---|---|",
    ]
    for w in runs[0]["push_ratio_by_workers_pg"]:
        r = [x["push_ratio_by_workers_pg"][w] for x in runs]
        ours = [x["runpy"][w]["push_cases_per_s_by_workers"][w] for x in runs]
        bare = [x["runpy"][w]["push_bare_cases_per_s_by_workers"][w] for x in runs]
        out.append(f"| {w} | {mmm(r, 3)} | {mmm(ours)} | {mmm(bare)} |")
    return out


def tenk(runs: list[dict[str, Any]]) -> list[str]:
    """The 10,000-case loads: one row per path, min / median / max over the runs that measured
    it (`--paths` lets a run measure one path)."""
    first = runs[0]
    out = [
        f"{first['cases']:,} cases ({first['resources']:,} resources), PostgreSQL, loading "
        "profile, fresh server and database each (min / median / max):",
        "",
        "| path | runs | seconds | resources/s | HAPI CPU s/1,000 | PostgreSQL CPU s/1,000 "
        "| client CPU s/1,000 |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label in (("push_pg_load_4w", "push, 4 workers"), ("import_pg_load", "`$import`")):
        ms = [r[key] for r in runs if key in r]
        if not ms:
            continue
        out.append(
            f"| {label} | {len(ms)} | {mmm([m['seconds'] for m in ms])} | "
            f"{mmm([m['resources_per_s'] for m in ms])} | "
            f"{mmm([m['hapi_cpu_s_per_1000'] for m in ms], 2)} | "
            f"{mmm([m['postgres_cpu_s_per_1000'] for m in ms], 2)} | "
            f"{mmm([m.get('client_cpu_s_per_1000', 0.0) for m in ms], 2)} |"
        )
    for i, r in enumerate(runs, 1):
        chunks = r.get("push_pg_load_4w", {}).get("per_1000_cases", [])
        if chunks:
            rates = ", ".join(str(c["resources_per_s"]) for c in chunks)
            out += [
                "",
                f"Run {i} ({r.get('started') or '?'}), push resources/s per 1,000 cases: {rates}.",
            ]
        failed = r.get("import_pg_load_failed")
        if failed:
            first = next((x for x in failed if "error" in x), failed[0])
            out += ["", f"Run {i} ({r.get('started') or '?'}), `$import` FAILED: `{first[:220]}`"]
        said = r.get("import_pg_load", {}).get("load_said")
        if said:
            out += ["", f"Run {i} ({r.get('started') or '?'}), `load` said: {said}"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("matrix", "ablation", "cpus1", "cpus2", "ratio"):
        ap.add_argument(f"--{name}", type=Path)
    ap.add_argument("--tenk", type=Path, nargs="+", help="one file per --load-10k run")
    args = ap.parse_args()
    lines: list[str] = []
    if args.matrix:
        lines += [*matrix(read(args.matrix)), ""]
    if args.ablation:
        lines += [*ablation(read(args.ablation)), ""]
    if args.cpus1 and args.cpus2:
        lines += [*cpus(read(args.cpus1), read(args.cpus2)), ""]
    if args.ratio:
        lines += [*ratio(read(args.ratio)), ""]
    if args.tenk:
        lines += [*tenk([read(f) for f in args.tenk]), ""]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
