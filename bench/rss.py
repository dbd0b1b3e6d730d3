"""Peak RSS of `fhir-cyclo score` over Synthea-sized Bundles: flat in the input?

`python bench/rss.py [--counts 100,1000] [--source FILE] [--keep DIR]` writes N copies of one real
Synthea Bundle (tests/realworld/data/derived/d2-granville-waiha.derived.json, 1.1 MB, a scored
patient) with every id rewritten per copy (so N distinct patients), runs `score DIR --json FILE`
in a fresh process per count, and reads that process's peak RSS from wait4(). Prints one JSON
line per count and the ratio key `score_rss_1000_over_100_bundles` (target <= 1.3).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "realworld" / "data" / "derived" / "d2-granville-waiha.derived.json"
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_NS = uuid.UUID("1b0c7a52-3f5e-4a8e-9a57-3c2d2c7f0e11")


def make_copies(source: Path, folder: Path, count: int) -> None:
    """`count` copies of `source`, each uuid in it replaced by a uuid5 of (copy, uuid)."""
    data = source.read_bytes()
    found = sorted(set(_UUID.findall(data)))
    for n in range(count):
        mapping = {u: str(uuid.uuid5(_NS, f"{n}|{u.decode()}")).encode() for u in found}
        (folder / f"copy-{n:05d}.json").write_bytes(
            _UUID.sub(lambda m, table=mapping: table[m.group(0)], data)
        )


def peak_rss_mb(folder: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one `score FOLDER --json OUT` in its own process."""
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fhir_cyclo.cli", "score", str(folder), "--json", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    took = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"score exited {proc.returncode} on {folder}")
    return usage.ru_maxrss / 1024, took  # Linux: kilobytes


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="100,1000")
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--keep", type=Path, help="make the copies here (reused if present)")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    base = args.keep or Path(tempfile.mkdtemp(prefix="fhir-cyclo-rss-"))
    results: dict[int, float] = {}
    try:
        for count in counts:
            folder = base / f"bundles-{count}"
            if not folder.is_dir() or len(list(folder.glob("*.json"))) != count:
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                make_copies(args.source, folder, count)
            mb, took = peak_rss_mb(folder, base / f"score-{count}.out.json")
            results[count] = mb
            line = {"bundles": count, "peak_rss_mb": round(mb, 1), "seconds": round(took, 1)}
            print(json.dumps(line), flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    if 100 in results and 1000 in results:
        ratio = results[1000] / results[100]
        print(json.dumps({"score_rss_1000_over_100_bundles": round(ratio, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
