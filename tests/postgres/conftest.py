"""A throwaway PostgreSQL (hapi/pg/pgctl.sh, Debian's postgresql package) and one HAPI test server
on it with the loading profile, started once per session for the tests marked `postgres`.

Without PostgreSQL installed the tests skip with that reason, except in CI ($CI=true), where a
missing PostgreSQL fails them: `.ci/run` installs it.
"""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from fhir_cyclo.server.hapi import HapiError, HapiServer
from tests.conftest import ARTIFACTS, HAPI_STATS, ROOT

PGCTL = ROOT / "hapi" / "pg" / "pgctl.sh"


@dataclass(frozen=True)
class Postgres:
    folder: Path
    jdbc_url: str  # jdbc:postgresql://127.0.0.1:PORT/DB?user=fhircyclo

    def sql(self, query: str) -> str:
        """One query through psql, straight to the database (not through HAPI)."""
        parts = urlsplit(self.jdbc_url.removeprefix("jdbc:"))
        psql = sorted(glob.glob("/usr/lib/postgresql/*/bin/psql"))[-1]
        argv = [psql, "-X", "-At", "-h", "127.0.0.1", "-p", str(parts.port), "-U", "fhircyclo"]
        argv += ["-d", parts.path.lstrip("/"), "-c", query]
        if os.getuid() == 0:  # the cluster belongs to user postgres (pgctl.sh)
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60)
        return done.stdout.strip()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pgctl(*args: str) -> str:
    done = subprocess.run(
        [str(PGCTL), *args], capture_output=True, text=True, check=False, timeout=180
    )
    if done.returncode != 0:
        pytest.fail(f"pgctl.sh {args[0]} failed: {done.stderr.strip()}", pytrace=False)
    return done.stdout.strip()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster on loopback with a fresh database, removed at the end."""
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb") and not os.environ.get("PG_BIN"):
        reason = "PostgreSQL is not installed (apt-get install postgresql; .ci/run does)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI: {reason}", pytrace=False)
        pytest.skip(reason)
    # Directly under /tmp: as root the cluster's owner (user postgres) must enter every parent.
    folder = Path(tempfile.mkdtemp(prefix="fhir-cyclo-pg-", dir="/tmp"))
    url = _pgctl("start", str(folder), str(_free_port()), "fhircyclo_test")
    try:
        yield Postgres(folder, url)
    finally:
        subprocess.run([str(PGCTL), "stop", str(folder)], check=False, timeout=120)


@pytest.fixture(scope="session")
def pg_hapi(postgres: Postgres) -> Iterator[HapiServer]:
    """The HAPI test server on that PostgreSQL, loading profile (one per session: ~1 min)."""
    hapi = HapiServer(
        database_url=postgres.jdbc_url, profile="load", log_path=ARTIFACTS / "hapi-pg.log"
    )
    try:
        hapi.start()
    except HapiError as exc:
        pytest.fail(f"{exc}\n--- end of the server log ---\n{exc.log_tail}", pytrace=False)
    with hapi:
        HAPI_STATS["on PostgreSQL started in"] = f"{hapi.started_in:.0f} s"
        yield hapi


@pytest.fixture
def pg_server(pg_hapi: HapiServer) -> HapiServer:
    """The PostgreSQL server with no clinical data left by an earlier test.

    The deleted resources are expunged too: an `$import` that brings back ids deleted earlier
    fails for the targets it also meets as placeholder references (HAPI-0550/HAPI-0825,
    "client-assigned ID constraint failure"; seen when two tests loaded the same fixtures).
    """
    pg_hapi.reset()
    expunge = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "expungeDeletedResources", "valueBoolean": True},
            {"name": "expungePreviousVersions", "valueBoolean": True},
        ],
    }
    done = requests.post(f"{pg_hapi.base_url}/$expunge", json=expunge, timeout=300)
    assert done.status_code == 200, done.text[:500]
    return pg_hapi


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.postgres)
            item.add_marker(pytest.mark.integration)
