"""Run one fuzz target under atheris: `python fuzz/run.py TARGET [libFuzzer options] [CORPUS...]`.

TARGET is one of fuzz/harnesses.py TARGETS. Seeds come from fuzz/seeds/TARGET (copied by the
Makefile / test into a scratch corpus folder so the repository is never written to).
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).parent))

with atheris.instrument_imports(include=["fhir_cyclo"]):
    import harnesses

    # Import the readers under instrumentation so coverage guides the fuzzer through them.


def main() -> None:
    target = sys.argv.pop(1)
    if target not in harnesses.TARGETS:
        raise SystemExit(f"unknown target {target!r}; one of {sorted(harnesses.TARGETS)}")
    # Load tables once, outside the measured loop.
    from fhir_cyclo.core.scoring_config import load_config
    from fhir_cyclo.core.terminology import terminology

    terminology()
    load_config()
    atheris.Setup(sys.argv, lambda data: harnesses.check(target, data))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
