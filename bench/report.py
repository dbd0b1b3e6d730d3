"""Bench of `score --report` at cohort scale: report_patients_per_s and report_bytes_per_patient.

1,000 SYNTHETIC patients (bench/synthetic.write_scoring_export: the registry-like NDJSON the
scoring bench uses, 3 to 300 results a patient) scored end to end by the CLI in a fresh process
(start-up, reading, scoring, drawing, writing), three runs; min/median/max printed. Target:
report_patients_per_s >= 10 on the 2-core machine, met only if the min meets it.

    PYTHONPATH=src:. python bench/report.py [--patients N] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.synthetic import write_scoring_export

TARGET = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        data = Path(tmp) / "ndjson"
        write_scoring_export(data, args.patients)
        rates, sizes = [], []
        for n in range(args.runs):
            report = Path(tmp) / f"report-{n}.html"
            started = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "fhir_cyclo.cli",
                    "score",
                    str(data),
                    "--report",
                    str(report),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            seconds = time.perf_counter() - started
            if done.returncode != 0:
                print(done.stderr[-2000:], file=sys.stderr)
                return 1
            cards = report.read_text(encoding="utf-8").count('<section class="card ')
            rates.append(args.patients / seconds)
            sizes.append(report.stat().st_size / max(cards, 1))
            print(
                f"run {n + 1}: {seconds:.2f} s, {cards} cards, {report.stat().st_size} bytes",
                file=sys.stderr,
            )
    for key, values in (("report_patients_per_s", rates), ("report_bytes_per_patient", sizes)):
        print(
            f"{key}: min {min(values):.1f} median {statistics.median(values):.1f} "
            f"max {max(values):.1f}"
        )
    met = min(rates) >= TARGET
    print(f"target report_patients_per_s >= {TARGET:g} (min): {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
