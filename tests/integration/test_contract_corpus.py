"""The recorded contract corpus still is what the HAPI server answers (re-recorded into tmp)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.contract.record_hapi import DATA, TAG, record
from tests.integration.conftest import Server

pytestmark = pytest.mark.integration


def _shape(path: Path) -> tuple[str, list[str], list[str]]:
    """What must not drift: resourceType, issue severities / entry statuses, HAPI codes."""
    body = json.loads(path.read_text())
    if body["resourceType"] == "OperationOutcome":
        parts = [i["severity"] for i in body["issue"]]
    else:
        parts = [e["response"]["status"] for e in body.get("entry", []) if "response" in e]
        parts += [link["relation"] for link in body.get("link", [])]
        parts.append(f"total={'total' in body} entries={len(body.get('entry', []))}")
    return body["resourceType"], parts, sorted(set(re.findall(r"HAPI-\d{4}", path.read_text())))


def test_re_recording_gives_the_committed_corpus(server: Server, tmp_path: Path) -> None:
    if not server.resettable:
        pytest.skip("records only from the project's own HAPI server (it deletes all data)")
    written = record(server.base_url, tmp_path)
    committed = sorted(p.name for p in DATA.glob(f"*-local-{TAG}-*.json"))
    assert sorted(written) == committed
    for name in committed:
        assert _shape(tmp_path / name) == _shape(DATA / name), name
