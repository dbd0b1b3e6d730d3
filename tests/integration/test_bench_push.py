"""bench/run.py's push part runs end to end against the HAPI test server (keys checked, not timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fhir_cyclo.server.hapi import HapiServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hapi(hapi_server: HapiServer) -> Iterator[HapiServer]:
    hapi_server.reset()
    yield hapi_server
    hapi_server.reset()  # the bench's cases are not for the tests that follow


def test_push_part_measures_both_sides_and_the_ceiling(hapi: HapiServer) -> None:
    argv = [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "push"]
    argv += ["--server", hapi.base_url, "--push-cases", "4", "--workers", "1,2"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["errors"] == {}
    assert summary["push_cases"] == 4
    for key in ("push_ratio_by_workers", "push_cases_per_s_by_workers"):
        assert set(summary[key]) == {"1", "2"}, (key, summary[key])
        assert all(v > 0 for v in summary[key].values()), (key, summary[key])
    assert summary["hapi_ceiling_resources_per_s"] > 0
    # Both sides took turns on one server (ours bare bare ours, bare ours ours bare): a ratio per
    # block of four.
    pairs = summary["push_block_ratios_by_workers"]
    assert set(pairs) == {"1", "2"} and all(len(v) == 2 and min(v) > 0 for v in pairs.values())
    # An uncounted slice settles each worker count's server before the eight that count.
    settle = summary["push_settle_seconds_by_workers"]
    assert set(settle) == {"1", "2"} and min(settle.values()) > 0
    for key in ("push_client_cpu_ms_per_case_by_workers", "push_bare_cpu_ms_per_case_by_workers"):
        assert all(v > 0 for v in summary[key].values()), (key, summary[key])
    # The server's CPU is read from the JVM the bench started; this one it did not start.
    assert set(summary["push_server_cpu_ms_per_case_by_workers"].values()) == {None}
    # Each worker count starts on an emptied server; the last (the ceiling) left its 4 warm-up and
    # 4 measured cases, one Patient each: the bare loop's bytes were stored, not just sent.
    assert hapi.counts(("Patient",))["Patient"] == 4 + 4


@pytest.mark.parametrize("push_from", ["bundles", "bare"])
def test_push_part_other_inputs(hapi: HapiServer, push_from: str) -> None:
    # bundles: our side pushes the Bundle files export wrote (the bytes are the same); bare: the
    # bare loop on both sides, the calibration of the protocol.
    argv = [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--only", "push"]
    argv += ["--server", hapi.base_url, "--push-cases", "4", "--workers", "2"]
    done = subprocess.run(
        [*argv, "--push-from", push_from], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["errors"] == {}
    assert summary["push_from"] == push_from
    assert summary["push_ratio_by_workers"]["2"] > 0
    # Worker count 2 then the ceiling, each on an emptied server: the ceiling's 4 warm-up and 4
    # measured cases are what is left, so the exported Bundles were pushed and then cleared.
    assert hapi.counts(("Patient",))["Patient"] == 4 + 4
