"""Benchmark: mapping, import, push, export memory and scoring, each beside its baseline."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # helpers beside this script, also when run from elsewhere

from baseline import PlainBuilder, case_ids  # noqa: E402
from synthetic import case_data, scoring_resources, searchset_pages, write_case_files  # noqa: E402

# Targets of the performance issue; every ratio is "higher is better" except memory.
TARGETS = {
    "mapping_ratio": (">=", 0.03),
    "import_ratio": (">=", 0.3),
    "push_ratio": (">=", 0.9),
    "memory_ratio": ("<=", 1.2),
}
# Case indices for warm-up runs, far from the measured ones so no value is shared.
WARM_BASE = 5_000_000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def best_of(rounds: int, *runs: Callable[[], object]) -> list[float]:
    """Fastest wall time of each run over `rounds`, the runs interleaved round by round so a
    slow patch of the (shared, 2-core) machine hits every side alike."""
    best = [float("inf")] * len(runs)
    for _ in range(rounds):
        for i, run in enumerate(runs):
            start = time.perf_counter()
            run()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


# --- mapping ------------------------------------------------------------------------------------


def bench_mapping(n_cases: int, rounds: int) -> dict[str, Any]:
    """Case -> validated resources -> Bundle bytes, against the plain-dict builder + orjson."""
    from fhir_cyclo import r4b
    from fhir_cyclo.bundle import dumps, transaction_bundle
    from fhir_cyclo.case import Case
    from fhir_cyclo.export import map_case
    from fhir_cyclo.terminology import terminology

    terms = terminology()
    builder = PlainBuilder(terms)
    raw = [case_data(i) for i in range(n_cases)]
    cases = [Case.model_validate(r) for r in raw]
    ids = [case_ids(r) for r in raw]

    def ours(batch: list[Any]) -> int:
        count = 0
        for case in batch:
            resources = map_case(case, terms)
            count += len(resources)
            dumps(transaction_bundle(case, terms, resources))
        return count

    def plain() -> None:
        for r in raw:
            builder.bundle_bytes(r)

    def plain_ids_free() -> None:
        for r, known in zip(raw, ids, strict=True):
            builder.bundle_bytes(r, ids=known)

    # First pass with a fresh validator: what the first cases of an export pay to learn shapes.
    r4b._shared = None
    start = time.perf_counter()
    resources = ours(cases[: min(20, n_cases)])
    cold = resources / (time.perf_counter() - start)
    # Steady state: warm on other cases (other values), then check that both sides produce the
    # very same bytes for every timed case before timing anything.
    ours([Case.model_validate(case_data(WARM_BASE + i)) for i in range(20)])
    for case, r in zip(cases, raw, strict=True):
        expected = dumps(transaction_bundle(case, terms, map_case(case, terms)))
        if builder.bundle_bytes(r) != expected:
            raise SystemExit(f"baseline bytes differ from the export for {r['identifier']}")
    total = sum(len(map_case(c, terms, validate=False)) for c in cases)
    t_ours, t_plain, t_plain_ids = best_of(rounds, lambda: ours(cases), plain, plain_ids_free)

    # Context: the same cases through fhir.resources as it is usually used.
    from fhir.resources.R4B import get_fhir_model_class

    sample = cases[: min(30, n_cases)]
    sample_raw = raw[: len(sample)]
    sample_total = sum(len(map_case(c, terms, validate=False)) for c in sample)
    bundle_model = get_fhir_model_class("Bundle")

    def model_validate_path() -> None:
        for case in sample:
            resources = map_case(case, terms, validate=False)
            for res in resources:
                get_fhir_model_class(res["resourceType"]).model_validate(res)
            dumps(transaction_bundle(case, terms, resources))

    def model_dump_path() -> None:
        for case in sample:
            bundle = transaction_bundle(case, terms, map_case(case, terms, validate=False))
            bundle_model.model_validate(bundle).model_dump_json(indent=2)

    def plain_sample() -> None:
        for r in sample_raw:
            builder.bundle_bytes(r)

    t_validate, t_dump, t_plain_sample = best_of(
        1, model_validate_path, model_dump_path, plain_sample
    )
    return {
        "cases": n_cases,
        "resources": total,
        "resources_per_s": total / t_ours,
        "baseline_resources_per_s": total / t_plain,
        "baseline_ids_free_resources_per_s": total / t_plain_ids,
        "ratio": t_plain / t_ours,
        "ratio_vs_ids_free_baseline": t_plain_ids / t_ours,
        "cold_resources_per_s": cold,
        "shapes_learned": r4b.shape_validator().plan_count(),
        "fhir_resources_validate_ratio": t_plain_sample / t_validate,
        "fhir_resources_dump_ratio": t_plain_sample / t_dump,
        "fhir_resources_validate_resources_per_s": sample_total / t_validate,
    }


# --- import -------------------------------------------------------------------------------------


class _PagedStub:
    """A SearchClient whose Observation search parses searchset pages as FhirClient does
    (orjson, then the client's own `iter_resources`); other searches find nothing."""

    def __init__(self, pages: list[bytes]) -> None:
        self.pages = pages

    def search(self, resource_type: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        from fhir_cyclo.client.paging import iter_resources

        if resource_type != "Observation":
            return iter(())
        return iter_resources(orjson.loads(page) for page in self.pages)


def bench_import(n_obs: int, rounds: int) -> dict[str, Any]:
    """Searchset pages -> scoring inputs (iter_from_server + extract), against orjson.loads."""
    from fhir_cyclo.scoring.extract import extract
    from fhir_cyclo.scoring.sources import iter_from_server

    pages = searchset_pages(n_obs)
    stub = _PagedStub(pages)

    def loads() -> None:
        # The baseline gets the same GC pause as extract (see _gc_paused there): only parsing.
        gc.disable()
        try:
            for page in pages:
                orjson.loads(page)
        finally:
            gc.enable()

    def ours() -> Any:
        return extract(iter_from_server(stub))

    got = ours()
    measured = sum(len(v) for p in got.patients for v in p.labs.values())
    if measured != n_obs or got.notes:
        raise SystemExit(f"import read {measured} of {n_obs} Observations ({len(got.notes)} notes)")

    def loads_default_gc() -> None:
        for page in pages:
            orjson.loads(page)

    t_loads, t_ours, t_loads_gc = best_of(rounds, loads, ours, loads_default_gc)
    (t_strict,) = best_of(1, lambda: extract(iter_from_server(stub), strict=True))
    return {
        "observations": n_obs,
        "pages": len(pages),
        "megabytes": sum(map(len, pages)) / 1e6,
        "observations_per_s": n_obs / t_ours,
        "loads_observations_per_s": n_obs / t_loads,
        "ratio": t_loads / t_ours,
        "ratio_vs_default_gc_loads": t_loads_gc / t_ours,
        "strict_observations_per_s": n_obs / t_strict,
        "strict_ratio": t_loads / t_strict,
    }


# --- push ---------------------------------------------------------------------------------------


def _bare_post(base_url: str, bodies: list[bytes], workers: int) -> None:
    """POST each pre-serialized Bundle with requests (one Session per thread), as bytes."""
    import requests

    local = threading.local()
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}

    def post(body: bytes) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        response = session.post(base_url, data=body, headers=headers, timeout=120)
        if response.status_code != 200:
            raise SystemExit(f"bare POST -> HTTP {response.status_code}: {response.text[:300]}")
        _ = response.content

    if workers == 1:
        for body in bodies:
            post(body)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(post, bodies))


def _cli_push(folder: Path, base_url: str, workers: int, journal: Path) -> None:
    from fhir_cyclo.cli import main

    out = io.StringIO()
    argv = ["push", str(folder), "--server", base_url, "--workers", str(workers)]
    argv += ["--no-progress", "--journal", str(journal)]
    with contextlib.redirect_stdout(out):
        code = main(argv)
    if code != 0:
        raise SystemExit(f"fhir-cyclo push exited {code}: {out.getvalue()[-500:]}")


def bench_push(n_cases: int, workers_list: list[int], rounds: int, tmp: Path) -> dict[str, Any]:
    """`fhir-cyclo push` (in this process) against a bare requests loop, same sandbox, same run."""
    from fhir_cyclo.bundle import dumps, transaction_bundle
    from fhir_cyclo.case import Case
    from fhir_cyclo.export import map_case
    from fhir_cyclo.sandbox import Sandbox, SandboxError
    from fhir_cyclo.terminology import terminology

    terms = terminology()
    folder = tmp / "push-cases"
    write_case_files(folder, n_cases, seed=23)
    # Exactly the bytes `fhir-cyclo push` sends for these case files.
    bodies = []
    for path in sorted(folder.glob("*.json")):
        case = Case.model_validate(orjson.loads(path.read_bytes()))
        bodies.append(dumps(transaction_bundle(case, terms, map_case(case, terms)), pretty=False))
    out: dict[str, Any] = {"cases": n_cases, "rounds": rounds, "workers": {}}
    try:
        sandbox = Sandbox()
        sandbox.start(timeout=60)
    except SandboxError as exc:
        return {**out, "skipped": str(exc)}
    runs = 0
    try:
        base = sandbox.base_url
        # Warm both sides (connections, the server's JIT, this process's imports and shapes).
        sandbox.reset()
        _bare_post(base, bodies[:3], 1)
        sandbox.reset()
        _cli_push(folder, base, 1, tmp / "journal-warm.jsonl")
        for workers in workers_list:
            best_bare = best_push = float("inf")
            for r in range(rounds):

                def bare(w: int = workers) -> None:
                    _bare_post(base, bodies, w)

                def push(w: int = workers, n: int = runs) -> None:
                    _cli_push(folder, base, w, tmp / f"journal-{w}-{n}.jsonl")

                # Alternate which side goes first; each starts on an emptied store.
                order = [("bare", bare), ("push", push)]
                if r % 2:
                    order.reverse()
                for side, run in order:
                    sandbox.reset()
                    start = time.perf_counter()
                    run()
                    took = time.perf_counter() - start
                    runs += 1
                    stored = sandbox.counts().get("Patient", 0)
                    if stored != n_cases:
                        raise SystemExit(f"{side} run left {stored} Patients, not {n_cases}")
                    if side == "bare":
                        best_bare = min(best_bare, took)
                    else:
                        best_push = min(best_push, took)
            out["workers"][str(workers)] = {
                "cases_per_s": n_cases / best_push,
                "bare_cases_per_s": n_cases / best_bare,
                "ratio": best_bare / best_push,
            }
            log(f"  push workers={workers}: {out['workers'][str(workers)]}")
    finally:
        sandbox.stop()
    return out


# --- memory -------------------------------------------------------------------------------------


# Peak RSS must be read for the export process alone. Linux carries a process's high-water mark
# across exec, so a child forked straight from this (large) benchmark process would report this
# process's RSS as its own minimum; a small wrapper forks the export and reports its wait4 usage.
_RSS_WRAPPER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""


def _export_peak_rss(folder: Path, out_dir: Path, report: Path) -> tuple[float, float]:
    """Peak RSS (MB) and wall time of one `fhir-cyclo export --ndjson` child process."""
    argv = [sys.executable, "-m", "fhir_cyclo.cli", "export", str(folder)]
    argv += ["--out", str(out_dir), "--ndjson"]
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _RSS_WRAPPER, str(report), *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - start
    maxrss_kib, code = (int(x) for x in report.read_text().split())
    if done.returncode != 0 or code != 0:
        raise SystemExit(f"export failed ({code}): {done.stderr[-500:]}")
    return maxrss_kib / 1024, took  # ru_maxrss is in KiB on Linux


def bench_memory(small: int, large: int, tmp: Path) -> dict[str, Any]:
    """Peak RSS of `fhir-cyclo export` for `small` and `large` cases (one case file each)."""
    out: dict[str, Any] = {"small_cases": small, "large_cases": large}
    for label, count in (("small", small), ("large", large)):
        folder = tmp / f"export-{label}"
        write_case_files(folder, count)
        target = tmp / f"export-{label}-out"
        rss, took = _export_peak_rss(folder, target, tmp / f"rss-{label}.txt")
        files = sum(1 for _ in target.glob("*.json"))
        if files != count:
            raise SystemExit(f"export wrote {files} Bundles for {count} cases")
        shutil.rmtree(target)
        shutil.rmtree(folder)
        out[f"{label}_rss_mb"] = rss
        out[f"{label}_cases_per_s"] = count / took
        log(f"  export {count} cases: {rss:.1f} MB peak RSS, {took:.1f} s")
    out["ratio"] = out["large_rss_mb"] / out["small_rss_mb"]
    return out


# --- scoring ------------------------------------------------------------------------------------


def bench_scoring(n_patients: int) -> dict[str, Any]:
    """Patients scored per second: extract + score over resources already in memory."""
    from fhir_cyclo.scoring.extract import extract
    from fhir_cyclo.scoring.rules import score

    resources = list(scoring_resources(n_patients))
    start = time.perf_counter()
    cohort = score(extract(resources))
    took = time.perf_counter() - start
    if len(cohort.patients) != n_patients:
        raise SystemExit(f"scored {len(cohort.patients)} of {n_patients} patients")
    return {
        "patients": n_patients,
        "resources": len(resources),
        "patients_per_s": n_patients / took,
    }


# --- report -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    node = shutil.which("node")
    node_version = None
    if node:
        node_version = subprocess.run(
            [node, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "node": node_version,
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def table(result: dict[str, Any]) -> str:
    m, i, p, mem, s = (result[k] for k in ("mapping", "import", "push", "memory", "scoring"))
    rows = [
        (
            "mapping: resources/s (case -> validated -> Bundle bytes)",
            f"{m['resources_per_s']:,.0f}",
        ),
        ("mapping: plain dicts + orjson, resources/s", f"{m['baseline_resources_per_s']:,.0f}"),
        ("mapping: first 20 cases of a process, resources/s", f"{m['cold_resources_per_s']:,.0f}"),
        ("mapping ratio (ours/plain throughput, higher better)", f"{m['ratio']:.3f}"),
        ("  same, baseline given precomputed ids", f"{m['ratio_vs_ids_free_baseline']:.3f}"),
        (
            "  fhir.resources model_validate per resource (ratio)",
            f"{m['fhir_resources_validate_ratio']:.4f}",
        ),
        (
            "  fhir.resources Bundle model_dump_json (ratio)",
            f"{m['fhir_resources_dump_ratio']:.4f}",
        ),
        ("import: Observations/s (pages -> scoring inputs)", f"{i['observations_per_s']:,.0f}"),
        ("import: orjson.loads only, Observations/s", f"{i['loads_observations_per_s']:,.0f}"),
        ("import ratio (t loads / t ours, higher better)", f"{i['ratio']:.3f}"),
        ("  same, loads run with the GC on", f"{i['ratio_vs_default_gc_loads']:.3f}"),
        ("  strict (R4B-validated) import ratio", f"{i['strict_ratio']:.3f}"),
    ]
    for w, v in (p.get("workers") or {}).items():
        rows.append(
            (
                f"push {w} worker(s): cases/s ours / bare (ratio, higher better)",
                f"{v['cases_per_s']:.1f} / {v['bare_cases_per_s']:.1f} ({v['ratio']:.3f})",
            )
        )
    if p.get("skipped"):
        rows.append(("push", f"skipped: {p['skipped']}"))
    rows += [
        (
            f"export peak RSS {mem['small_cases']:,} / {mem['large_cases']:,} cases (MB)",
            f"{mem['small_rss_mb']:.1f} / {mem['large_rss_mb']:.1f}",
        ),
        ("memory ratio (large/small, lower better)", f"{mem['ratio']:.3f}"),
        (f"scoring: patients/s ({s['patients']:,} patients)", f"{s['patients_per_s']:,.0f}"),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: under a minute")
    parser.add_argument("--n-cases", type=int, help="cases for mapping and push (memory: N, 10N)")
    parser.add_argument("--observations", type=int, help="Observations for the import benchmark")
    parser.add_argument("--patients", type=int, help="patients for the scoring benchmark")
    parser.add_argument("--workers", default="1,2,4", help="push worker counts (default 1,2,4)")
    parser.add_argument("--no-push", action="store_true", help="skip the sandbox push benchmark")
    args = parser.parse_args(argv)

    quick = args.quick
    n_cases = args.n_cases or (40 if quick else 300)
    push_cases = args.n_cases or (20 if quick else 150)
    memory = (n_cases, 10 * n_cases) if args.n_cases else ((100, 1000) if quick else (1000, 10000))
    observations = args.observations or (5000 if quick else 20000)
    patients = args.patients or (1000 if quick else 10000)
    rounds = 1 if quick else 3
    workers = [int(w) for w in args.workers.split(",") if w]

    result: dict[str, Any] = {"machine": machine(), "quick": quick}
    with tempfile.TemporaryDirectory(prefix="fhir-cyclo-bench-") as raw_tmp:
        tmp = Path(raw_tmp)
        gc.collect()
        log(f"mapping: {n_cases} cases")
        result["mapping"] = bench_mapping(n_cases, rounds)
        gc.collect()
        log(f"import: {observations} Observations")
        result["import"] = bench_import(observations, rounds)
        if args.no_push:
            result["push"] = {"skipped": "--no-push"}
        else:
            log(f"push: {push_cases} cases, workers {workers}")
            result["push"] = bench_push(push_cases, workers, 1 if quick else 3, tmp)
        log(f"memory: export {memory[0]} vs {memory[1]} cases")
        result["memory"] = bench_memory(*memory, tmp)
        log(f"scoring: {patients} patients")
        gc.collect()
        result["scoring"] = bench_scoring(patients)

    push_workers = result["push"].get("workers") or {}
    summary: dict[str, Any] = {
        "mapping_ratio": round(result["mapping"]["ratio"], 4),
        "import_ratio": round(result["import"]["ratio"], 4),
        "push_ratio": (
            round(min(v["ratio"] for v in push_workers.values()), 4) if push_workers else None
        ),
        "memory_ratio": round(result["memory"]["ratio"], 4),
        "scoring_patients_per_s": round(result["scoring"]["patients_per_s"], 1),
        "mapping_resources_per_s": round(result["mapping"]["resources_per_s"]),
        "mapping_baseline_resources_per_s": round(result["mapping"]["baseline_resources_per_s"]),
        "mapping_ratio_vs_ids_free_baseline": round(
            result["mapping"]["ratio_vs_ids_free_baseline"], 4
        ),
        "import_observations_per_s": round(result["import"]["observations_per_s"]),
        "import_loads_observations_per_s": round(result["import"]["loads_observations_per_s"]),
        "import_strict_ratio": round(result["import"]["strict_ratio"], 4),
        "import_ratio_vs_default_gc_loads": round(result["import"]["ratio_vs_default_gc_loads"], 4),
        "push_cases_per_s": {w: round(v["cases_per_s"], 2) for w, v in push_workers.items()},
        "push_bare_cases_per_s": {
            w: round(v["bare_cases_per_s"], 2) for w, v in push_workers.items()
        },
        "push_ratio_by_workers": {w: round(v["ratio"], 4) for w, v in push_workers.items()},
        "memory_small_rss_mb": round(result["memory"]["small_rss_mb"], 1),
        "memory_large_rss_mb": round(result["memory"]["large_rss_mb"], 1),
        "memory_cases": [result["memory"]["small_cases"], result["memory"]["large_cases"]],
        "ratio_directions": "mapping/import/push: ours vs baseline throughput, higher is better; "
        "memory: large/small peak RSS, lower is better",
    }
    summary["targets_met"] = {
        key: (
            None
            if summary[key] is None
            else (summary[key] >= bound if op == ">=" else summary[key] <= bound)
        )
        for key, (op, bound) in TARGETS.items()
    }
    summary["machine"] = result["machine"]
    print(table(result))
    print(json.dumps(summary, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
