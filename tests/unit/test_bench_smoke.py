"""bench/run.py runs end to end on tiny sizes and ends with its JSON line (timings not checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "mapping_ratio",
    "import_ratio",
    "push_ratio",
    "memory_ratio",
    "scoring_patients_per_s",
    "mapping_resources_per_s",
    "mapping_baseline_resources_per_s",
    "import_observations_per_s",
    "import_loads_observations_per_s",
    "push_cases_per_s",
    "push_bare_cases_per_s",
    "push_ratio_by_workers",
    "memory_small_rss_mb",
    "memory_large_rss_mb",
    "targets_met",
    "machine",
}


def test_quick_bench_prints_the_json_line_with_every_key() -> None:
    argv = [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--n-cases", "3"]
    argv += ["--observations", "300", "--patients", "30", "--workers", "1,2"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert not KEYS - set(summary), KEYS - set(summary)
    for key in ("mapping_ratio", "import_ratio", "memory_ratio", "scoring_patients_per_s"):
        assert isinstance(summary[key], float) and summary[key] > 0
    # Without the sandbox (no Node or no `npm ci`) push is reported as skipped, keys stay.
    if summary["push_ratio"] is not None:
        assert set(summary["push_ratio_by_workers"]) == {"1", "2"}
    assert summary["memory_cases"] == [3, 30]
