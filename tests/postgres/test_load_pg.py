"""`fhir-cyclo load` ($import) into HAPI on PostgreSQL, loading profile: counts, a re-run that
only updates, and the data equal to what the transaction path (`push`) stores."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_cyclo.cli.app import main
from fhir_cyclo.client import FhirClient
from fhir_cyclo.core.case import Case
from fhir_cyclo.server.hapi import CLINICAL_TYPES, HapiServer
from tests.conftest import FIXTURES
from tests.integration.conftest import Server
from tests.integration.test_push_readback import push_all

pytestmark = [pytest.mark.postgres, pytest.mark.integration]


@pytest.fixture(scope="module")
def ndjson_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export")
    assert main(["export", str(FIXTURES), "--out", str(out), "--ndjson", "-q"]) == 0
    return out


def exported(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """The exported resources per type, without `meta` (the comparison ignores it)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for path in sorted((folder / "ndjson").glob("*.ndjson")):
        rows = [
            {k: v for k, v in orjson.loads(line).items() if k != "meta"}
            for line in path.read_bytes().splitlines()
            if line.strip()
        ]
        if rows:
            out[rows[0]["resourceType"]] = rows
    return out


def stored(base_url: str) -> dict[str, list[dict[str, Any]]]:
    """Every clinical resource on the server, without `meta` (versions, timestamps)."""
    out: dict[str, list[dict[str, Any]]] = {}
    with FhirClient(base_url) as client:
        for rtype in CLINICAL_TYPES:
            rows = [
                {k: v for k, v in r.items() if k != "meta"}
                for r in client.search(rtype, {"_sort": "_id"}, page_size=500)
            ]
            if rows:
                out[rtype] = rows
    return out


def by_identifier(data: dict[str, list[dict[str, Any]]]) -> dict[str, list[bytes]]:
    """The data with each Patient's server id replaced by its identifier, sorted per type:
    push stores Patients under server-assigned ids (conditional PUT by identifier), $import
    under the export's deterministic ids; everything else has the same id both ways."""
    names = {}
    for patient in data.get("Patient", []):
        ident = patient["identifier"][0]
        names[patient["id"]] = f"{ident['system']}|{ident['value']}"
    pattern = re.compile(r'"(Patient/)?(' + "|".join(map(re.escape, names)) + r')"')

    def rename(match: re.Match[str]) -> str:
        return f'"{match.group(1) or ""}{names[match.group(2)]}"'

    return {
        rtype: sorted(
            pattern.sub(rename, orjson.dumps(r, option=orjson.OPT_SORT_KEYS).decode()).encode()
            for r in rows
        )
        for rtype, rows in data.items()
    }


def test_load_counts_rerun_and_equals_the_transaction_path(
    pg_server: HapiServer,
    ndjson_export: Path,
    all_fixture_cases: list[Case],
    capsys: pytest.CaptureFixture[str],
) -> None:
    expected = {rtype: len(rows) for rtype, rows in exported(ndjson_export).items()}
    assert (
        main(["load", str(ndjson_export), "--server", pg_server.base_url, "--max-poll-wait", "1"])
        == 0
    )
    err = capsys.readouterr().err
    assert "done" in err, err
    assert pg_server.counts() == expected
    imported = stored(pg_server.base_url)
    # Every resource as exported, id included (meta aside).
    for rtype, rows in exported(ndjson_export).items():
        want = sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in rows)
        got = sorted(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) for r in imported[rtype])
        assert got == want, rtype

    # Again: every resource updated in place, nothing added.
    assert (
        main(["load", str(ndjson_export), "--server", pg_server.base_url, "--max-poll-wait", "1"])
        == 0
    )
    assert pg_server.counts() == expected
    assert "SUCCESSFUL_UPDATE" in capsys.readouterr().err

    # The transaction path on the same (emptied) server stores the same data.
    pg_server.reset()
    push_all(Server(pg_server.base_url, pg_server), all_fixture_cases, workers=2)
    assert pg_server.counts() == expected
    transacted = stored(pg_server.base_url)
    assert Counter({t: len(r) for t, r in transacted.items()}) == Counter(expected)
    assert by_identifier(transacted) == by_identifier(imported)
