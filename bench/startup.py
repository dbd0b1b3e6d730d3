"""Start-up of `fhir-cyclo --version` / `--help` (target: under 0.15 s), with the bare interpreter.

`python -m bench.startup [--runs 3] [--repeats 5]`: each run takes the best of `repeats` wall
times (hyperfine-style) and of the CPU time (user + sys) of one child process; the table shows
min/median/max over the runs. The target is met only if the min meets it. Bytecode is written
(PYTHONDONTWRITEBYTECODE unset) and warmed first, as for an installed package.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

TARGET_S = 0.15
COMMANDS: list[tuple[str, list[str]]] = [
    ("python -c pass", ["-c", "pass"]),
    ("fhir-cyclo --version", ["-m", "fhir_cyclo.cli", "--version"]),
    ("fhir-cyclo --help", ["-m", "fhir_cyclo.cli", "--help"]),
    ("fhir-cyclo score --help", ["-m", "fhir_cyclo.cli", "score", "--help"]),
]


def one(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, *argv], env=env, capture_output=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for _, command in COMMANDS:
        one(command, env)  # writes and warms the bytecode
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU(s)")
    print(f"{'command':26} {'wall min/median/max (ms)':>28} {'cpu min/median/max (ms)':>28}")
    met = True
    for name, command in COMMANDS:
        walls, cpus = [], []
        for _ in range(args.runs):
            samples = [one(command, env) for _ in range(args.repeats)]
            walls.append(min(s[0] for s in samples))
            cpus.append(min(s[1] for s in samples))

        def cell(values: list[float]) -> str:
            ms = [v * 1000 for v in (min(values), statistics.median(values), max(values))]
            return "/".join(f"{v:.0f}" for v in ms)

        print(f"{name:26} {cell(walls):>28} {cell(cpus):>28}")
        if name.startswith("fhir-cyclo") and "score" not in name:
            met = met and min(walls) < TARGET_S
    print(
        f"target --version and --help under {TARGET_S} s (min wall): {'met' if met else 'NOT met'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
