"""The fault tier's "server SIGKILLed mid-push, then `push --resume`" on HAPI over PostgreSQL:
the same test (tests/faults/test_kills.py), its server swapped for the PostgreSQL one."""

from __future__ import annotations

import pytest

from fhir_cyclo.server.hapi import HapiServer
from tests.faults import test_kills
from tests.faults.conftest import FaultLedger
from tests.faults.test_kills import cohort  # noqa: F401 - the fixture, on this module's server

pytestmark = [pytest.mark.postgres, pytest.mark.integration]


@pytest.fixture(scope="module")
def hapi_server(pg_hapi: HapiServer) -> HapiServer:
    """The PostgreSQL server in place of the session's H2 one (for `cohort` and the test)."""
    return pg_hapi


@pytest.fixture
def ledger() -> FaultLedger:
    return FaultLedger()  # this tier's own: the fault summary line is the faults tier's


test_server_killed_mid_push_then_resume_completes_the_rest_on_postgresql = (
    test_kills.test_server_killed_mid_export_then_resume_completes_the_rest
)
