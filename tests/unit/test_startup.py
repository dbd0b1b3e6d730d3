"""What a command loads before its first case: only what every run of it needs."""

from __future__ import annotations

import subprocess
import sys


def test_push_score_and_bulk_start_without_the_jose_libraries() -> None:
    # PyJWT + cryptography cost ~40 ms of every start-up; only a SMART client uses them, and it
    # imports them when it loads its key (client/smart.py).
    code = (
        "import sys\n"
        "import fhir_cyclo.cli.app, fhir_cyclo.cli.push, fhir_cyclo.server.push, fhir_cyclo.cli.bulk_export\n"
        "import fhir_cyclo.client.fhir, fhir_cyclo.client.smart\n"
        "print(sorted(m for m in ('jwt', 'cryptography') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
