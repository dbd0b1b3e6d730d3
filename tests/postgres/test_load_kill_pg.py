"""HAPI on PostgreSQL SIGKILLed in the middle of `fhir-cyclo load`, restarted, and the same load
run again: every resource there once (0 lost, 0 duplicated), each as exported."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
import pytest

from bench.synthetic import write_case_files
from fhir_cyclo.cli.app import main
from fhir_cyclo.server.hapi import HapiServer
from tests.postgres.test_load_pg import exported, stored

pytestmark = [pytest.mark.postgres, pytest.mark.integration]

CASES = 60  # ~2,000 resources: an import of some 20-40 s here, long enough to be cut


def test_kill_mid_import_then_rerun_loses_and_duplicates_nothing(
    pg_server: HapiServer, tmp_path: Path
) -> None:
    write_case_files(tmp_path / "cases", CASES, seed=22)
    out = tmp_path / "export"
    assert main(["export", str(tmp_path / "cases"), "--out", str(out), "--ndjson", "-q"]) == 0
    want = exported(out)
    expected = {rtype: len(rows) for rtype, rows in want.items()}
    total = sum(expected.values())

    codes: list[int] = []
    first = threading.Thread(
        target=lambda: codes.append(
            main(["load", str(out), "--server", pg_server.base_url, "--max-poll-wait", "1", "-q"])
        )
    )
    first.start()
    seen = 0
    deadline = time.monotonic() + 300
    while seen == 0 and time.monotonic() < deadline:  # the job has begun storing
        seen = sum(pg_server.counts().values())
        time.sleep(0.2)
    pg_server.kill()
    first.join(timeout=300)
    assert 0 < seen < total, (seen, total)  # cut in the middle, not before or after
    assert codes and codes[0] != 0  # the interrupted load did not claim success

    pg_server.restart()
    assert main(["load", str(out), "--server", pg_server.base_url, "--max-poll-wait", "1"]) == 0
    assert pg_server.counts() == expected  # nothing lost, nothing twice
    got = stored(pg_server.base_url)
    for rtype, rows in want.items():
        assert sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in got[rtype]) == sorted(
            orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows
        ), rtype
