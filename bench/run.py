"""Benchmark: mapping, import, push, export memory and scoring, each beside its baseline."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # helpers beside this script, also when run from elsewhere

from baseline import PlainBuilder, case_ids  # noqa: E402
from synthetic import (  # noqa: E402
    case_data,
    scoring_resources,
    searchset_pages,
    write_case_files,
    write_scoring_export,
)

# Targets of the performance issue; every ratio is "higher is better" except memory.
TARGETS = {
    "export_vs_ceiling": (">=", 0.7),
    "export_rss_100k_over_1k": ("<=", 1.2),
    "score_rss_100k_over_10k": ("<=", 2.0),
    "push_ratio_by_workers": (">=", 0.95),  # at every worker count
    "cold_validate_vs_model_validate": (">=", 1.0),
    "mapping_ratio": (">=", 0.03),
    "import_ratio": (">=", 0.3),
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
    from fhir_cyclo.core.case import Case
    from fhir_cyclo.core.terminology import terminology
    from fhir_cyclo.export.writer import map_case
    from fhir_cyclo.fhir import r4b
    from fhir_cyclo.fhir.bundle import dumps, transaction_bundle

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
    from fhir_cyclo.readers.fhir import iter_from_server
    from fhir_cyclo.scoring.extract import extract

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


# --- subprocess measurement -----------------------------------------------------------------------


class BenchError(Exception):
    """A part that could not run or whose output is wrong: the run exits non-zero."""


# Peak RSS must be read for the measured process alone. Linux carries a process's high-water mark
# across exec, so a child forked straight from this (large) benchmark process would report this
# process's RSS as its own minimum; a small wrapper forks the command and reports its wait4 usage
# (peak RSS, CPU) and its wall time, measured around the child alone.
_RSS_WRAPPER = r"""
import os, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
err = proc.stderr.read()
_, status, usage = os.wait4(proc.pid, 0)
took = time.perf_counter() - start
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {os.waitstatus_to_exitcode(status)} {took} "
              f"{usage.ru_utime + usage.ru_stime}")
said = [line for line in err.splitlines() if line.startswith(b"fhir-cyclo: error")][:5]
sys.stderr.buffer.write(b"\n".join(said) + b"\n" + err[-2000:])
"""


def measured(argv: list[str], report: Path, ok_codes: tuple[int, ...] = (0,)) -> dict[str, float]:
    """Run `argv` in a child process: wall seconds, CPU seconds and peak RSS (MB)."""
    done = subprocess.run(
        [sys.executable, "-c", _RSS_WRAPPER, str(report), *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    fields = report.read_text().split()
    maxrss_kib, code, took, cpu = int(fields[0]), int(fields[1]), float(fields[2]), float(fields[3])
    if done.returncode != 0 or code not in ok_codes:
        errors = [line for line in done.stderr.splitlines() if line.startswith("fhir-cyclo: error")]
        said = (errors[-1] if errors else done.stderr.strip()[-300:]).strip()
        raise BenchError(f"`{' '.join(Path(a).name for a in argv[:3])} ...` exited {code}: {said}")
    return {"seconds": took, "cpu_seconds": cpu, "rss_mb": maxrss_kib / 1024}


def cli() -> list[str]:
    """The real `fhir-cyclo` entry point, as a user runs it (the console script beside Python)."""
    script = Path(sys.executable).with_name("fhir-cyclo")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fhir_cyclo.cli"]


def cached(cache: Path, name: str, make: Callable[[Path], object]) -> Path:
    """A synthetic input folder, made once per cache folder (the generators are deterministic)."""
    folder = cache / name
    done = cache / f"{name}.done"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        make(folder)
        done.touch()
    return folder


def same_tree(a: Path, b: Path) -> str | None:
    """None when both folders hold the same files with the same bytes, else the first difference."""
    names_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    names_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    if names_a != names_b:
        return f"file lists differ ({len(names_a)} vs {len(names_b)} files)"
    for name in names_a:
        if (a / name).read_bytes() != (b / name).read_bytes():
            return f"{name} differs"
    return None


# --- export end to end ---------------------------------------------------------------------------


def bench_export(n_cases: int, rounds: int, tmp: Path, cache: Path) -> dict[str, Any]:
    """`fhir-cyclo export DIR --out OUT --ndjson` against the ceiling (ceiling.py) and the
    ceiling with export's checks (ceiling.py --checks), each in its own process, same case
    files, same files written (checked byte for byte)."""
    folder = cached(cache, f"export-cases-{n_cases}", lambda f: write_case_files(f, n_cases))
    plain = [sys.executable, str(HERE / "ceiling.py")]
    sides = {
        "ours": [*cli(), "export", str(folder), "--out", str(tmp / "export-ours"), "--ndjson"],
        "ceiling": [*plain, str(folder), str(tmp / "export-ceiling")],
        "checked": [*plain, "--checks", str(folder), str(tmp / "export-checked")],
    }
    outs = {side: tmp / f"export-{side}" for side in sides}
    times: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for r in range(rounds):
        # Each side takes each place in turn, so none always runs first (a cold page cache).
        order = list(sides)[r % 3 :] + list(sides)[: r % 3]
        for side in order:
            shutil.rmtree(outs[side], ignore_errors=True)
            times[side].append(measured(sides[side], tmp / "export.rss"))
        if r == 0:
            for side in ("ceiling", "checked"):
                diff = same_tree(outs["ours"], outs[side])
                if diff:
                    raise BenchError(f"export and the {side} side wrote different files: {diff}")
    ndjson = outs["ours"] / "ndjson"
    resources = sum(sum(1 for _ in p.open("rb")) for p in ndjson.glob("*.ndjson"))
    for out in outs.values():
        shutil.rmtree(out)
    best = {side: min(t["seconds"] for t in runs) for side, runs in times.items()}
    best_cpu = {side: min(t["cpu_seconds"] for t in runs) for side, runs in times.items()}
    return {
        "cases": n_cases,
        "resources": resources,
        "rounds": rounds,
        "seconds": best,
        "cpu_seconds": best_cpu,
        "resources_per_s": resources / best["ours"],
        "ceiling_resources_per_s": resources / best["ceiling"],
        "ratio": best["ceiling"] / best["ours"],
        "cpu_ratio": best_cpu["ceiling"] / best_cpu["ours"],
        # The most any export keeping these checks can reach, and how near ours comes to it.
        "checked_ratio": best["ceiling"] / best["checked"],
        "vs_checked_ratio": best["checked"] / best["ours"],
    }


def bench_export_memory(small: int, large: int, tmp: Path, cache: Path) -> dict[str, Any]:
    """Peak RSS of `fhir-cyclo export --ndjson` for `small` and `large` cases (a file each)."""
    out: dict[str, Any] = {"small_cases": small, "large_cases": large}
    for label, count in (("small", small), ("large", large)):
        folder = cached(cache, f"export-cases-{count}", lambda f, n=count: write_case_files(f, n))
        target = tmp / f"export-{label}-out"
        shutil.rmtree(target, ignore_errors=True)
        m = measured([*cli(), "export", str(folder), "--out", str(target), "--ndjson"], tmp / "rss")
        files = sum(1 for _ in target.glob("*.json"))
        shutil.rmtree(target)
        if files != count:
            raise BenchError(f"export wrote {files} Bundles for {count} cases")
        out[f"{label}_rss_mb"] = m["rss_mb"]
        out[f"{label}_cases_per_s"] = count / m["seconds"]
        log(f"  export {count} cases: {m['rss_mb']:.1f} MB peak RSS, {m['seconds']:.1f} s")
    out["ratio"] = out["large_rss_mb"] / out["small_rss_mb"]
    return out


# --- validation memo -----------------------------------------------------------------------------


def bench_memo(n_cases: int) -> dict[str, Any]:
    """How often the shape memo answers (fresh validator per input), and the cold path: the
    fixtures through `validate_resource` with a fresh memo against plain `model_validate`."""
    from fhir.resources.R4B import get_fhir_model_class

    from fhir_cyclo.core.case import Case
    from fhir_cyclo.core.terminology import terminology
    from fhir_cyclo.export.writer import map_case
    from fhir_cyclo.fhir import r4b
    from fhir_cyclo.fhir.bundle import validate_resource
    from fhir_cyclo.readers.case_files import load

    terms = terminology()
    out: dict[str, Any] = {}
    r4b._shared = None
    for i in range(n_cases):
        map_case(Case.model_validate(case_data(WARM_BASE + i)), terms)
    v = r4b.shape_validator()
    out["synthetic_cases"] = n_cases
    out["synthetic_hit_rate"] = v.hits / v.checked
    out["synthetic_shapes"] = v.plan_count()

    cases = [x.case for x in load([HERE.parent / "fixtures"], terms) if x.case is not None]
    fixture_resources = [r for c in cases for r in map_case(c, terms, validate=False)]
    models = {r["resourceType"]: get_fhir_model_class(r["resourceType"]) for r in fixture_resources}

    def plain() -> None:
        for r in fixture_resources:
            models[r["resourceType"]].model_validate(r)

    def memo() -> None:
        r4b._shared = None  # cold: a fresh memo, as in a new process
        for r in fixture_resources:
            if validate_resource(r) is not None:
                raise BenchError("a fixture resource does not validate")

    t_plain, t_memo = best_of(5, plain, memo)
    v = r4b.shape_validator()
    out["fixture_resources"] = len(fixture_resources)
    out["fixture_hit_rate"] = v.hits / v.checked
    out["fixture_cold_ms"] = t_memo * 1000
    out["fixture_model_validate_ms"] = t_plain * 1000
    out["cold_ratio"] = t_plain / t_memo
    r4b._shared = None
    return out


# --- score over files ----------------------------------------------------------------------------


def _scored(path: Path) -> int:
    return len(orjson.loads(path.read_bytes())["patients"])


def bench_score_files(small: int, large: int, tmp: Path, cache: Path) -> dict[str, Any]:
    """`fhir-cyclo score DIR --json OUT` over per-type NDJSON files (a Bulk Data export's layout)
    for `small` and `large` patients: peak RSS and time; then a Bulk Data folder (manifest.json
    + NDJSON) of `small` patients."""
    out: dict[str, Any] = {"small_patients": small, "large_patients": large}
    for label, count in (("small", small), ("large", large)):
        folder = cached(
            cache, f"score-ndjson-{count}", lambda f, n=count: write_scoring_export(f, n)
        )
        result = tmp / f"score-{label}.json"
        m = measured([*cli(), "score", str(folder), "--json", str(result)], tmp / "rss")
        scored = _scored(result)
        if scored < 0.8 * count:
            raise BenchError(f"score scored {scored} of {count} patients")
        out[f"{label}_rss_mb"] = m["rss_mb"]
        out[f"{label}_seconds"] = m["seconds"]
        out[f"{label}_cpu_seconds"] = m["cpu_seconds"]
        out[f"{label}_patients_per_s"] = count / m["seconds"]
        out[f"{label}_scored"] = scored
        log(f"  score {count} patients (NDJSON): {m['rss_mb']:.1f} MB, {m['seconds']:.1f} s")
    out["rss_ratio"] = out["large_rss_mb"] / out["small_rss_mb"]
    # Time per patient, large over small: 1.0 is linear.
    out["time_per_patient_ratio"] = (out["large_seconds"] / large) / (out["small_seconds"] / small)
    out["cpu_per_patient_ratio"] = (out["large_cpu_seconds"] / large) / (
        out["small_cpu_seconds"] / small
    )
    bulk = cached(
        cache, f"score-bulk-{small}", lambda f: write_scoring_export(f, small, manifest=True)
    )
    result = tmp / "score-bulk.json"
    try:
        m = measured([*cli(), "score", str(bulk), "--json", str(result)], tmp / "rss")
        if _scored(result) != out["small_scored"]:
            raise BenchError(
                f"Bulk Data folder scored {_scored(result)} patients, NDJSON {out['small_scored']}"
            )
    except BenchError as exc:
        # The NDJSON figures stand; the run still fails, naming this step.
        out["error"] = f"Bulk Data folder: {exc}"
        return out
    out["bulk_patients_per_s"] = small / m["seconds"]
    out["bulk_rss_mb"] = m["rss_mb"]
    log(f"  score {small} patients (Bulk Data folder): {m['rss_mb']:.1f} MB, {m['seconds']:.1f} s")
    return out


# --- push against HAPI ---------------------------------------------------------------------------


def _push_bodies(folder: Path, target: Path) -> int:
    """The compact Bundle bytes `fhir-cyclo push` sends for the case files, one per line."""
    from fhir_cyclo.core.case import Case
    from fhir_cyclo.core.terminology import terminology
    from fhir_cyclo.export.writer import map_case
    from fhir_cyclo.fhir.bundle import dumps, transaction_bundle

    terms = terminology()
    count = 0
    with target.open("wb") as fh:
        for path in sorted(folder.glob("*.json")):
            case = Case.model_validate(orjson.loads(path.read_bytes()))
            resources = map_case(case, terms)
            fh.write(dumps(transaction_bundle(case, terms, resources), pretty=False) + b"\n")
            count += len(resources)
    return count


def _block_ratio(slices: list[list[Any]]) -> float:
    """Bare seconds / our seconds over some of the push slices ([side, seconds, ...] each)."""
    seconds = {"ours": 0.0, "bare": 0.0}
    for side, took, *_ in slices:
        seconds[side] += took
    return seconds["bare"] / seconds["ours"]


def bench_push(  # noqa: PLR0913 - one keyword-only switch beside the measured sizes
    n_cases: int,
    workers_list: list[int],
    tmp: Path,
    server_url: str | None = None,
    push_from: str = "cases",
    *,
    ceiling: bool = True,
) -> dict[str, Any]:
    """`fhir-cyclo push` against a bare requests loop (bare_push.py), each in its own process,
    on one fresh HAPI FHIR JPA server (fhir_cyclo.server.hapi) per worker count, then HAPI's own
    ingest ceiling.

    HAPI slows as its database fills and two fresh servers fed the same bytes differ by up to a
    fifth in CPU per case, so neither "one server, one side after the other" (the first side won
    by up to 1.19x) nor "a server per side" (the ratio measured the instance) holds still. Here
    both sides share one server per worker count and take turns in eight slices of `n_cases / 4`
    cases, ours bare bare ours, bare ours ours bare: the slices' positions have equal sums and
    equal sums of squares on both sides, so a drift linear or quadratic in time falls equally on
    both (the server slowed ~1.5x over 2,300 cases, faster as it filled, which the four-slice
    ours bare bare ours left partly on ours), and the server is the same. One more slice, run by
    the bare loop right after the warm-up and not counted, settles the server first: the slice
    after the warm-up ran 1.10-1.23x slower than the next whatever client ran it (a start
    transient, which the order cannot cancel since it falls on one position). Every slice sends the
    same cases under new identifiers (all create, none update); the bare loop sends exactly the
    bytes push would send. With `server_url` (the test suite's server) that server is emptied
    instead of replaced. With `push_from="bundles"` our side pushes the Bundle files `export`
    wrote for its cases (exported before the clock starts), the other way users push: the same
    bytes go out, with no reading, mapping or validating of cases on the client. With
    `push_from="bare"` (a calibration, not a measure of push) both sides are the bare loop: the
    ratio then shows how far the protocol itself scatters around 1.
    """
    try:
        from fhir_cyclo.server.hapi import HapiServer  # type: ignore[import-not-found,unused-ignore]
    except ImportError as exc:
        raise BenchError(f"no HAPI launcher (fhir_cyclo.server.hapi): {exc}") from exc

    out: dict[str, Any] = {"cases": n_cases, "workers": {}, "push_from": push_from}
    runs = iter(range(1, 1000))
    slice_cases = max(1, n_cases // 4)
    order = ("ours", "bare", "bare", "ours", "bare", "ours", "ours", "bare")

    def new_cases(label: str, count: int) -> Path:
        # The same cases every time (HAPI's cost grows with a case's size, and sizes vary from 6
        # to 300 resources), under new identifiers: every slice creates, none updates.
        folder = tmp / f"push-{label}"
        shutil.rmtree(folder, ignore_errors=True)
        run = next(runs)
        folder.mkdir(parents=True)
        for i in range(count):
            case = case_data(i, 23)
            case["identifier"]["value"] = f"push-{run:03d}-{i:06d}"
            (folder / f"case-{i:06d}.json").write_bytes(orjson.dumps(case))
        return folder

    current: int | None = None  # pid of the server started for the worker count measured

    @contextlib.contextmanager
    def fresh_server(label: str) -> Iterator[str]:
        nonlocal current
        # 300 cases: on 100, four slices of 100 cases still sped up from 21 s to 16 s (the JIT).
        warm = new_cases(f"warm-{label}", min(n_cases, 300))
        if server_url:
            HapiServer.attach(server_url).reset()
            base = server_url
            server = None
        else:
            # An H2 file database and a 2 GB heap: in memory, a run's resources would fill the
            # test server's 1 GB heap and measure the garbage collector (seen at ~1,400 cases).
            data = tmp / f"hapi-db-{label}"
            server = HapiServer(data_dir=data, log_path=tmp / f"hapi-{label}.log", heap="2g")
            base = server.start()
            current = server.pid
        try:
            # Warm the server (JIT, caches, connection pools) on cases not measured.
            argv = [*cli(), "push", str(warm), "--server", base, "--workers", "2"]
            measured([*argv, "--no-progress", "--no-journal"], tmp / "push.rss")
            yield base
        finally:
            if server is not None:
                server.stop()
                shutil.rmtree(tmp / f"hapi-db-{label}", ignore_errors=True)

    def server_cpu() -> float:
        # CPU seconds the server's JVM has used so far (utime + stime in /proc, Linux).
        if server_url or current is None:
            return float("nan")
        fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def timed(argv: list[str]) -> dict[str, float]:
        """One measured client process: wall and CPU seconds of the whole process (start-up
        included, the same for both sides), and the server's CPU while it served it."""
        before = server_cpu()
        m = measured(argv, tmp / "push.rss")
        m["server_cpu_seconds"] = server_cpu() - before
        return m

    def ours(base: str, workers: int, count: int) -> dict[str, float]:
        if push_from == "bare":
            return bare(base, workers, count, "bare-as-ours")
        folder = new_cases(f"ours-{workers}", count)
        if push_from == "bundles":
            bundles = tmp / f"push-ours-{workers}-bundles"
            shutil.rmtree(bundles, ignore_errors=True)
            measured([*cli(), "export", str(folder), "--out", str(bundles)], tmp / "export.rss")
            folder = bundles
        journal = tmp / f"journal-{workers}.jsonl"
        journal.unlink(missing_ok=True)
        argv = [*cli(), "push", str(folder), "--server", base, "--workers", str(workers)]
        return timed([*argv, "--no-progress", "--journal", str(journal)])

    def bare(base: str, workers: int, count: int, label: str = "bare") -> dict[str, float]:
        folder = new_cases(f"{label}-{workers}", count)
        bodies = tmp / f"bodies-{workers}.ndjson"
        resources = _push_bodies(folder, bodies)  # mapped before the clock starts
        said = tmp / "bare.json"
        argv = [sys.executable, str(HERE / "bare_push.py"), str(bodies), base, str(workers)]
        m = timed([*argv, str(said)])
        if json.loads(said.read_text())["bundles"] != count:
            raise BenchError("bare push did not send every case")
        m["resources"] = resources
        return m

    keys = ("seconds", "cpu_seconds", "server_cpu_seconds")
    for workers in workers_list:
        total = {side: dict.fromkeys(keys, 0.0) for side in ("ours", "bare")}
        slices: list[list[Any]] = []
        with fresh_server(f"w{workers}") as base:
            settle = bare(base, workers, slice_cases, "settle")
            for side in order:
                m = (ours if side == "ours" else bare)(base, workers, slice_cases)
                for key in keys:
                    total[side][key] += m[key]
                # side, wall s, client CPU s, server CPU s (NaN on a shared server)
                slices.append([side, *(round(m[key], 3) for key in keys)])
        o, b, cases = total["ours"], total["bare"], 4 * slice_cases
        out["workers"][str(workers)] = {
            "cases_per_s": cases / o["seconds"],
            "bare_cases_per_s": cases / b["seconds"],
            "ratio": b["seconds"] / o["seconds"],
            # Each block of four on its own (each cancels a linear drift only): how much the
            # order and the curvature move the ratio.
            "block_ratios": [_block_ratio(slices[:4]), _block_ratio(slices[4:])],
            "slices": slices,
            "settle_slice": [round(settle[key], 3) for key in keys],
            # CPU per case: the client's, and the server's while serving that client.
            "client_cpu_ms_per_case": 1000 * o["cpu_seconds"] / cases,
            "bare_cpu_ms_per_case": 1000 * b["cpu_seconds"] / cases,
            "server_cpu_ms_per_case": 1000 * o["server_cpu_seconds"] / cases,
            "bare_server_cpu_ms_per_case": 1000 * b["server_cpu_seconds"] / cases,
        }
        log(f"  push workers={workers}: {out['workers'][str(workers)]}")
    # HAPI's own ceiling: the bare loop with more threads than the server has cores.
    if not ceiling:
        return out
    ceiling_workers = 2 * max(*workers_list, os.cpu_count() or 1)
    with fresh_server("ceiling") as base:
        m_ceiling = bare(base, ceiling_workers, n_cases, "ceiling")
    t_ceiling, resources = m_ceiling["seconds"], m_ceiling["resources"]
    out["hapi_ceiling_workers"] = ceiling_workers
    out["hapi_ceiling_resources_per_s"] = resources / t_ceiling
    out["hapi_ceiling_cases_per_s"] = n_cases / t_ceiling
    log(f"  HAPI ceiling ({ceiling_workers} threads): {resources / t_ceiling:.1f} resources/s")
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


def _row(name: str, value: str) -> tuple[str, str]:
    return name, value


def table(result: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    e = result.get("export")
    if e:
        rows += [
            _row(
                f"export end to end ({e['cases']:,} cases, {e['resources']:,} resources), s",
                f"ours {e['seconds']['ours']:.2f} / ceiling {e['seconds']['ceiling']:.2f}",
            ),
            _row("export vs ceiling (wall, higher better)", f"{e['ratio']:.3f}"),
            _row("  same, CPU seconds", f"{e['cpu_ratio']:.3f}"),
            _row(
                "ceiling with export's checks, s / vs ceiling",
                f"{e['seconds']['checked']:.2f} / {e['checked_ratio']:.3f}",
            ),
            _row("export vs ceiling with its checks", f"{e['vs_checked_ratio']:.3f}"),
        ]
    mem = result.get("export_memory")
    if mem:
        rows += [
            _row(
                f"export peak RSS {mem['small_cases']:,} / {mem['large_cases']:,} cases (MB)",
                f"{mem['small_rss_mb']:.1f} / {mem['large_rss_mb']:.1f} ({mem['ratio']:.3f})",
            )
        ]
    sc = result.get("score_files")
    if sc:
        rows += [
            _row(
                f"score peak RSS {sc['small_patients']:,} / {sc['large_patients']:,} patients (MB)",
                f"{sc['small_rss_mb']:.1f} / {sc['large_rss_mb']:.1f} ({sc['rss_ratio']:.3f})",
            ),
            _row(
                "score patients/s NDJSON small / large / Bulk Data folder",
                f"{sc['small_patients_per_s']:,.0f} / {sc['large_patients_per_s']:,.0f} / "
                f"{sc.get('bulk_patients_per_s', 0):,.0f}",
            ),
            _row("score time per patient, large / small", f"{sc['time_per_patient_ratio']:.3f}"),
        ]
    memo = result.get("memo")
    if memo:
        rows += [
            _row(
                "validation memo hit rate synthetic / fixtures",
                f"{memo['synthetic_hit_rate']:.3f} / {memo['fixture_hit_rate']:.3f}",
            ),
            _row(
                "fixtures cold: memo / plain model_validate (ms)",
                f"{memo['fixture_cold_ms']:.1f} / {memo['fixture_model_validate_ms']:.1f}",
            ),
        ]
    m = result.get("mapping")
    if m:
        rows += [
            _row("mapping ratio (in memory, ours/plain)", f"{m['ratio']:.3f}"),
            _row(
                "  mapping resources/s ours / plain",
                f"{m['resources_per_s']:,.0f} / {m['baseline_resources_per_s']:,.0f}",
            ),
        ]
    i = result.get("import")
    if i:
        rows += [
            _row("import ratio (t loads / t ours)", f"{i['ratio']:.3f}"),
            _row("  strict import ratio", f"{i['strict_ratio']:.3f}"),
        ]
    p = result.get("push") or {}
    for w, v in (p.get("workers") or {}).items():
        rows.append(
            _row(
                f"push {w} worker(s): cases/s ours / bare (ratio)",
                f"{v['cases_per_s']:.1f} / {v['bare_cases_per_s']:.1f} ({v['ratio']:.3f})",
            )
        )
        rows.append(
            _row(
                "  CPU ms per case: client ours / bare, server ours / bare",
                f"{v['client_cpu_ms_per_case']:.1f} / {v['bare_cpu_ms_per_case']:.1f}, "
                f"{v['server_cpu_ms_per_case']:.0f} / {v['bare_server_cpu_ms_per_case']:.0f}",
            )
        )
        blocks = " / ".join(f"{r:.3f}" for r in v["block_ratios"])
        rows.append(
            _row("  ratio of each block (ours bare bare ours / bare ours ours bare)", blocks)
        )
    if p.get("hapi_ceiling_resources_per_s"):
        rows.append(
            _row("HAPI ingest ceiling, resources/s", f"{p['hapi_ceiling_resources_per_s']:,.0f}")
        )
    s = result.get("scoring")
    if s:
        rows.append(
            _row(
                f"scoring in memory, patients/s ({s['patients']:,})", f"{s['patients_per_s']:,.0f}"
            )
        )
    for part, error in result.get("errors", {}).items():
        rows.append(_row(f"{part}", f"ERROR: {error}"))
    if not rows:
        return ""
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _round(value: Any, digits: int) -> Any:
    # NaN (a figure this run could not take, e.g. the CPU of a server started elsewhere): null.
    return None if value is None or math.isnan(value) else round(value, digits)


def summary_line(result: dict[str, Any]) -> dict[str, Any]:
    """The one JSON line: every key always present (None when its part did not run)."""
    g = result.get
    e, mem, sc = g("export") or {}, g("export_memory") or {}, g("score_files") or {}
    memo, m, i, p, s = (
        g("memo") or {},
        g("mapping") or {},
        g("import") or {},
        g("push") or {},
        (g("scoring") or {}),
    )
    push_workers = p.get("workers") or {}
    out: dict[str, Any] = {
        "export_vs_ceiling": _round(e.get("ratio"), 4),
        "export_vs_ceiling_cpu": _round(e.get("cpu_ratio"), 4),
        "export_resources_per_s": _round(e.get("resources_per_s"), 0),
        "export_ceiling_resources_per_s": _round(e.get("ceiling_resources_per_s"), 0),
        "export_checked_ceiling_vs_ceiling": _round(e.get("checked_ratio"), 4),
        "export_vs_checked_ceiling": _round(e.get("vs_checked_ratio"), 4),
        "export_rss_100k_over_1k": _round(mem.get("ratio"), 4),
        "export_rss_mb": [_round(mem.get("small_rss_mb"), 1), _round(mem.get("large_rss_mb"), 1)],
        "export_rss_cases": [mem.get("small_cases"), mem.get("large_cases")],
        "score_rss_100k_over_10k": _round(sc.get("rss_ratio"), 4),
        "score_rss_mb": [_round(sc.get("small_rss_mb"), 1), _round(sc.get("large_rss_mb"), 1)],
        "score_rss_patients": [sc.get("small_patients"), sc.get("large_patients")],
        "score_time_per_patient_large_over_small": _round(sc.get("time_per_patient_ratio"), 4),
        "score_cpu_per_patient_large_over_small": _round(sc.get("cpu_per_patient_ratio"), 4),
        "score_ndjson_patients_per_s": [
            _round(sc.get("small_patients_per_s"), 1),
            _round(sc.get("large_patients_per_s"), 1),
        ],
        "score_bulk_patients_per_s": _round(sc.get("bulk_patients_per_s"), 1),
        "memo_hit_rate": _round(memo.get("synthetic_hit_rate"), 4),
        "memo_hit_rate_fixtures": _round(memo.get("fixture_hit_rate"), 4),
        "cold_validate_vs_model_validate": _round(memo.get("cold_ratio"), 4),
        "push_ratio_by_workers": {w: round(v["ratio"], 4) for w, v in push_workers.items()},
        "push_cases_per_s_by_workers": {
            w: round(v["cases_per_s"], 2) for w, v in push_workers.items()
        },
        "push_bare_cases_per_s_by_workers": {
            w: round(v["bare_cases_per_s"], 2) for w, v in push_workers.items()
        },
        "push_client_cpu_ms_per_case_by_workers": {
            w: round(v["client_cpu_ms_per_case"], 2) for w, v in push_workers.items()
        },
        "push_bare_cpu_ms_per_case_by_workers": {
            w: round(v["bare_cpu_ms_per_case"], 2) for w, v in push_workers.items()
        },
        "push_server_cpu_ms_per_case_by_workers": {
            w: _round(v["server_cpu_ms_per_case"], 1) for w, v in push_workers.items()
        },
        "push_bare_server_cpu_ms_per_case_by_workers": {
            w: _round(v["bare_server_cpu_ms_per_case"], 1) for w, v in push_workers.items()
        },
        "push_block_ratios_by_workers": {
            w: [round(r, 4) for r in v["block_ratios"]] for w, v in push_workers.items()
        },
        # The uncounted slice that settles the server after its warm-up (wall seconds).
        "push_settle_seconds_by_workers": {
            w: v["settle_slice"][0] for w, v in push_workers.items()
        },
        "push_cases": p.get("cases"),
        "push_from": p.get("push_from"),
        "hapi_ceiling_resources_per_s": _round(p.get("hapi_ceiling_resources_per_s"), 1),
        "mapping_ratio": _round(m.get("ratio"), 4),
        "import_ratio": _round(i.get("ratio"), 4),
        "import_strict_ratio": _round(i.get("strict_ratio"), 4),
        "scoring_patients_per_s": _round(s.get("patients_per_s"), 1),
        "mapping_resources_per_s": _round(m.get("resources_per_s"), 0),
        "mapping_baseline_resources_per_s": _round(m.get("baseline_resources_per_s"), 0),
        "import_observations_per_s": _round(i.get("observations_per_s"), 0),
        "import_loads_observations_per_s": _round(i.get("loads_observations_per_s"), 0),
    }
    met: dict[str, bool | None] = {}
    for key, (op, bound) in TARGETS.items():
        value = out.get(key)
        if isinstance(value, dict):
            value = min(value.values()) if value else None
        met[key] = None if value is None else (value >= bound if op == ">=" else value <= bound)
    out["targets_met"] = met
    out["errors"] = result.get("errors", {})
    out["skipped"] = result.get("skipped", [])
    out["quick"] = result["quick"]
    out["machine"] = result["machine"]
    return out


PARTS = ("mapping", "import", "memo", "export", "export_memory", "score_files", "scoring", "push")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--skip-push", action="store_true", help="leave out push against HAPI")
    parser.add_argument("--only", help=f"comma-separated parts to run ({', '.join(PARTS)})")
    parser.add_argument("--workers", default="1,2,4", help="push worker counts (default 1,2,4)")
    parser.add_argument("--cache", type=Path, help="keep generated inputs here between runs")
    parser.add_argument("--push-cases", type=int, help="cases per push run (full run: 1000)")
    parser.add_argument(
        "--server", help="push against this running FHIR server instead of starting HAPI"
    )
    parser.add_argument(
        "--no-ceiling",
        dest="ceiling",
        action="store_false",
        help="leave out HAPI's ingest ceiling (a server reset per part; slow on a large database)",
    )
    parser.add_argument(
        "--push-from",
        choices=("cases", "bundles", "bare"),
        default="cases",
        help="push's input: the case files (default) or the Bundle files export wrote for them; "
        "`bare` runs the bare loop on both sides (calibrates the protocol's scatter)",
    )
    args = parser.parse_args(argv)

    quick = args.quick
    sizes = {
        "mapping_cases": 20 if quick else 300,
        "observations": 1000 if quick else 20000,
        "patients": 100 if quick else 10000,
        "memo_cases": 20 if quick else 2000,
        "export_cases": 30 if quick else 2000,
        "export_memory": (30, 300) if quick else (1000, 100_000),
        "score_files": (100, 1000) if quick else (10_000, 100_000),
        "push_cases": args.push_cases or (20 if quick else 1000),
    }
    rounds = 1 if quick else 3
    workers = [int(w) for w in args.workers.split(",") if w]
    wanted = set(args.only.split(",")) if args.only else set(PARTS)
    if unknown := wanted - set(PARTS):
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    skipped = [f"{p} (--only)" for p in PARTS if p not in wanted]
    if args.skip_push and "push" in wanted:
        wanted.discard("push")
        skipped.append("push (--skip-push)")

    result: dict[str, Any] = {"machine": machine(), "quick": quick, "errors": {}}
    result["skipped"] = skipped
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fhir-cyclo-bench-")))
        cache = args.cache or tmp / "inputs"
        cache.mkdir(parents=True, exist_ok=True)
        jobs: dict[str, Callable[[], dict[str, Any]]] = {
            "mapping": lambda: bench_mapping(sizes["mapping_cases"], rounds),
            # A round takes 0.2 s: more of them make each side's minimum its cost, not the noise
            # (best of 3 swung 0.23-0.30 between runs, best of 15 0.31-0.32, same code).
            "import": lambda: bench_import(sizes["observations"], 15 if not quick else 1),
            "memo": lambda: bench_memo(sizes["memo_cases"]),
            "export": lambda: bench_export(sizes["export_cases"], rounds, tmp, cache),
            "export_memory": lambda: bench_export_memory(*sizes["export_memory"], tmp, cache),
            "score_files": lambda: bench_score_files(*sizes["score_files"], tmp, cache),
            "scoring": lambda: bench_scoring(sizes["patients"]),
            "push": lambda: bench_push(
                sizes["push_cases"],
                workers,
                tmp,
                args.server,
                args.push_from,
                ceiling=args.ceiling,
            ),
        }
        for part in PARTS:
            if part not in wanted:
                continue
            log(f"{part} ...")
            gc.collect()
            try:
                result[part] = jobs[part]()
                if "error" in result[part]:  # measured in part, then failed
                    raise BenchError(result[part]["error"])
            except (BenchError, SystemExit, Exception) as exc:  # reported; the run exits 1
                result["errors"][part] = str(exc).splitlines()[0] if str(exc) else repr(exc)
                log(f"  {part} FAILED: {result['errors'][part]}")
    print(table(result))
    print(json.dumps(summary_line(result), separators=(",", ":")), flush=True)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
