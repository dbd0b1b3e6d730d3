"""Loaded by `$import` into HAPI on PostgreSQL, then Bulk-exported and scored: the same scores
as the files the export came from (the import and Bulk export paths together, on PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fhir_cyclo.cli.app import main
from fhir_cyclo.client.bulk import MANIFEST
from fhir_cyclo.server.hapi import HapiServer
from tests.conftest import FIXTURES
from tests.integration.test_bulk_export import FAST, cli, scores

pytestmark = [pytest.mark.postgres, pytest.mark.integration]


def test_imported_then_bulk_exported_scores_like_the_files(
    pg_server: HapiServer, tmp_path: Path
) -> None:
    out = tmp_path / "export"
    assert main(["export", str(FIXTURES), "--out", str(out), "--ndjson", "-q"]) == 0
    assert main(["load", str(out), "--server", pg_server.base_url, "--max-poll-wait", "1"]) == 0
    folder = tmp_path / "bulk"
    result = cli(
        "bulk-export", "--server", pg_server.base_url, "--out", str(folder), "--no-progress", *FAST
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((folder / MANIFEST).read_text())
    assert {o["type"] for o in manifest["output"]} >= {"Patient", "Condition", "Observation"}
    from_files = scores(out / "ndjson")  # the files that were loaded
    assert len(from_files) == 14
    assert in_any_order(scores(folder)) == in_any_order(from_files)


def in_any_order(patients: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each patient's warnings and reasons sorted: they follow the order the resources were read
    in (NDJSON file order vs the server's export order); their content must be the same."""
    for patient in patients:
        for key in ("warnings", "reasons"):
            patient[key] = sorted(patient[key], key=lambda item: json.dumps(item, sort_keys=True))
    return patients
