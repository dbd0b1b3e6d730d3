"""Integration: real-world records (derived Synthea Bundles, tests/realworld/data/derived) load into
the sandbox's lenient HAPI server (the strict one refuses them: Synthea's extensions are unknown
there), and `score --server` and `bulk-export` + `score` give what scoring the files gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_cyclo.client import FhirClient, ServerOptions
from fhir_cyclo.server.hapi import HapiError, HapiServer
from tests.conftest import ARTIFACTS

pytestmark = pytest.mark.integration
DERIVED = Path(__file__).parents[1] / "realworld" / "data" / "derived"
# One derived record whose cyclosporine is a medicationCodeableConcept: a Patient/$export carries
# no Medication resources (not in the Patient compartment; client/bulk.py), so d1 (a separate
# Medication) cannot score from a Bulk folder. One Bundle: each takes minutes to validate on write.
BUNDLES = [DERIVED / "d2-granville-waiha.derived.json"]
# A port of its own (several test servers share the machine); override with the variable.
PORT = int(os.environ.get("FHIR_CYCLO_REALWORLD_PORT", "18724"))


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_CYCLO")}
    return subprocess.run(
        [sys.executable, "-m", "fhir_cyclo.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=900,
    )


def scored(*args: str) -> list[dict[str, Any]]:
    """What scoring decided per patient, without the resource ids (the server assigns its own)."""
    result = cli("score", *args, "--json", "-")
    assert result.returncode == 0, result.stderr
    out = []
    for p in json.loads(result.stdout)["patients"]:
        out.append(
            {
                "patient": p["patient"],
                "disease": p["disease"],
                "start": p["start"]["date"],
                "baseline": (p["baseline"] or {}).get("date"),
                "baseline_value": (p["baseline"] or {}).get("value"),
                "assessments": [
                    (a["month"], a["response"], a["date"], a["value"]) for a in p["assessments"]
                ],
            }
        )
    return sorted(out, key=lambda p: str(p["patient"]))


@pytest.fixture(scope="module")
def lenient_server() -> Iterator[HapiServer]:
    hapi = HapiServer(port=PORT, log_path=ARTIFACTS / "hapi-lenient.log", lenient=True)
    try:
        # Longer than the launcher's default: this test shares a busy 2-core machine.
        hapi.start(timeout=900)
    except HapiError as exc:
        pytest.fail(f"{exc}\n--- end of the server log ---\n{exc.log_tail}", pytrace=False)
    try:
        yield hapi
    finally:
        hapi.stop()


def test_real_world_bundles_load_and_score_like_the_files(
    lenient_server: HapiServer, tmp_path: Path
) -> None:
    assert BUNDLES, DERIVED
    # A Synthea Bundle is validated entry by entry on write: minutes on a busy machine.
    with FhirClient(ServerOptions(lenient_server.base_url, timeout=(5.0, 600.0))) as client:
        for path in BUNDLES:
            bundle = orjson.loads(path.read_bytes())
            result = client.transaction(bundle)  # a 422 would raise with the server's issues
            assert len(result.entries) == len(bundle["entry"])
    from_files = scored(*map(str, BUNDLES))
    assert [p["disease"] for p in from_files] == ["AIHA"]
    assert scored("--server", lenient_server.base_url) == from_files
    folder = tmp_path / "bulk"
    exported = cli(
        "bulk-export",
        "--server",
        lenient_server.base_url,
        "--out",
        str(folder),
        "--no-progress",
        "--max-poll-wait",
        "5",
    )
    assert exported.returncode == 0, exported.stderr
    assert (folder / "manifest.json").is_file()
    assert scored(str(folder)) == from_files
