"""Min / median / max of each number over several bench/run.py JSON lines (docs/performance.md).

`python bench/summarize.py run1.out run2.out run3.out`: the last line of each file is its JSON
line; nested numbers (per worker count, [small, large] pairs) are summarised key by key.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any


def _flatten(value: Any, prefix: str, out: dict[str, list[float]]) -> None:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int | float):
        out.setdefault(prefix, []).append(float(value))
    elif isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}", out)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}[{i}]", out)


def main(argv: list[str]) -> int:
    lines = [json.loads(Path(a).read_text().strip().splitlines()[-1]) for a in argv]
    numbers: dict[str, list[float]] = {}
    for line in lines:
        for key, value in line.items():
            if key not in ("machine", "targets_met", "errors", "skipped", "quick"):
                _flatten(value, key, numbers)
    print("| key | min | median | max | runs |\n| --- | --- | --- | --- | --- |")
    for key, values in numbers.items():
        lo, mid, hi = min(values), statistics.median(values), max(values)
        print(f"| {key} | {lo:,.4g} | {mid:,.4g} | {hi:,.4g} | {len(values)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
