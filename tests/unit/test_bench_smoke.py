"""bench/run.py runs end to end on tiny sizes and ends with its JSON line (timings not checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KEYS = {
    "export_vs_ceiling",
    "export_checked_ceiling_vs_ceiling",
    "export_vs_checked_ceiling",
    "export_rss_100k_over_1k",
    "score_rss_100k_over_10k",
    "push_ratio_by_workers",
    "push_cases_per_s_by_workers",
    "push_client_cpu_ms_per_case_by_workers",
    "push_server_cpu_ms_per_case_by_workers",
    "hapi_ceiling_resources_per_s",
    "memo_hit_rate",
    "mapping_ratio",
    "import_ratio",
    "scoring_patients_per_s",
    "cold_validate_vs_model_validate",
    "targets_met",
    "errors",
    "skipped",
    "machine",
}


def _run(*extra: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, object], str]:
    argv = [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", *extra]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False, env=env)
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_quick_bench_prints_the_json_line_with_every_key() -> None:
    # Push needs the HAPI server: left out here, explicitly, and said so in the line.
    code, summary, stderr = _run("--skip-push", "--only", "mapping,memo,export,export_memory,push")
    assert code == 0, stderr[-2000:]
    assert not KEYS - set(summary), KEYS - set(summary)
    for key in (
        "export_vs_ceiling",
        "export_checked_ceiling_vs_ceiling",
        "export_vs_checked_ceiling",
        "export_rss_100k_over_1k",
        "memo_hit_rate",
        "mapping_ratio",
    ):
        value = summary[key]
        assert isinstance(value, float) and value > 0, (key, value)
    assert summary["export_rss_cases"] == [30, 300]
    assert set(summary["skipped"]) == {  # type: ignore[arg-type]
        "push (--skip-push)",
        "import (--only)",
        "score_files (--only)",
        "scoring (--only)",
    }
    assert summary["errors"] == {}


def test_a_part_that_cannot_run_fails_the_run(tmp_path: Path) -> None:
    # No HAPI server jar: the push part is an error and the run exits 1, never a silent skip.
    env = {**os.environ, "FHIR_CYCLO_HAPI_JAR": str(tmp_path / "missing.jar")}
    code, summary, _ = _run("--only", "push", "--workers", "1", env=env)
    assert code == 1
    assert "push" in summary["errors"]  # type: ignore[operator]
    assert "missing.jar" in summary["errors"]["push"]  # type: ignore[index]
    assert summary["push_ratio_by_workers"] == {}
    assert summary["targets_met"]["push_ratio_by_workers"] is None  # type: ignore[index]
