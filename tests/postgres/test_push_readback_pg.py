"""push / read back / idempotency on HAPI JPA over PostgreSQL (the loading profile)."""

from __future__ import annotations

import pytest

from fhir_cyclo.core.case import Case
from fhir_cyclo.fhir.bundle import transaction_bundle
from fhir_cyclo.importing.readback import fetch_case
from fhir_cyclo.server.hapi import HapiServer
from tests.integration.conftest import Server
from tests.integration.test_push_readback import footprint, push_all
from tests.postgres.conftest import Postgres

pytestmark = [pytest.mark.postgres, pytest.mark.integration]


def test_push_read_back_and_push_again_on_postgresql(
    pg_server: HapiServer, postgres: Postgres, all_fixture_cases: list[Case]
) -> None:
    server = Server(pg_server.base_url, pg_server)
    push_all(server, all_fixture_cases, workers=4)
    with server.client() as client:
        for case in all_fixture_cases:
            assert fetch_case(client, case.identifier.token) == case, case.identifier.token
    first = footprint(server, all_fixture_cases)
    push_all(server, all_fixture_cases, workers=4)
    assert footprint(server, all_fixture_cases) == first
    assert first["Patient"] == len(all_fixture_cases)
    assert sum(first.values()) == sum(
        len(transaction_bundle(c)["entry"]) for c in all_fixture_cases
    )
    # The rows are in PostgreSQL itself (not an H2 fallback): HAPI's resource table, live rows.
    stored = postgres.sql(
        "SELECT count(*) FROM hfj_resource WHERE res_type = 'Patient' AND res_deleted_at IS NULL"
    )
    assert int(stored) == len(all_fixture_cases)
