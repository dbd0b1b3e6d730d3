"""The push journal under damage: torn last line, junk lines, edited cases, other servers, a second writer."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_cyclo.core.case import Case
from fhir_cyclo.fhir.bundle import dumps, transaction_bundle
from fhir_cyclo.server.journal import JournalError, PushJournal, bundle_digest, case_key

pytestmark = pytest.mark.faults

SERVER = "http://127.0.0.1:8080/fhir"


def bundle_bytes(case: Case) -> bytes:
    return dumps(transaction_bundle(case), pretty=False)


def test_torn_last_line_is_ignored_and_cut_before_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with PushJournal(path, SERVER) as journal:
        journal.record("a", "1", entries=3)
        journal.record("b", "2", entries=3)
    intact = path.read_bytes()
    path.write_bytes(intact + b'{"v":1,"server":"' + SERVER.encode() + b'","case":"c","bun')
    with PushJournal(path, SERVER) as journal:
        assert len(journal) == 2 and journal.acknowledged("a", "1")
        assert path.read_bytes() == intact  # repaired on open
        journal.record("c", "3", entries=1)
    with PushJournal(path, SERVER) as journal:
        assert [journal.acknowledged(k, d) for k, d in (("a", "1"), ("b", "2"), ("c", "3"))] == [
            True,
            True,
            True,
        ]
    assert path.read_bytes().count(b"\n") == 3


def test_a_junk_line_only_costs_a_re_push(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with PushJournal(path, SERVER) as journal:
        journal.record("a", "1", entries=1)
    path.write_bytes(path.read_bytes() + b"\x00\x00 not json\n")
    with PushJournal(path, SERVER) as journal:
        journal.record("b", "2", entries=1)
    with PushJournal(path, SERVER) as journal:
        assert journal.acknowledged("a", "1") and journal.acknowledged("b", "2")
        assert len(journal) == 2


def test_only_the_same_server_and_the_same_bundle_count_as_already_there(
    tmp_path: Path, case_report: Case
) -> None:
    data = bundle_bytes(case_report)
    edited = transaction_bundle(case_report)
    lab = next(e for e in edited["entry"] if "valueQuantity" in e["resource"])
    lab["resource"]["valueQuantity"]["value"] += 1  # a corrected lab value
    edited_data = dumps(edited, pretty=False)
    key = case_key("label", data)
    path = tmp_path / "j.jsonl"
    with PushJournal(path, SERVER) as journal:
        journal.record(key, bundle_digest(data), entries=1)
    with PushJournal(path, SERVER) as journal:
        assert journal.acknowledged(key, bundle_digest(data))
        assert case_key("other label", edited_data) == key  # the same case ...
        assert not journal.acknowledged(key, bundle_digest(edited_data))  # ... edited: re-push
    with PushJournal(path, "http://127.0.0.1:9999/fhir") as other:
        assert len(other) == 0


def test_case_key_hides_the_identifier_and_ignores_where_the_bundle_came_from(
    case_report: Case,
) -> None:
    data = bundle_bytes(case_report)
    key = case_key("case-file label", data)
    assert case_report.identifier.value not in key and len(key) == 64
    # An exported Bundle without the conditional URL still names the same case.
    bundle = transaction_bundle(case_report)
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] == "Patient":
            entry["request"] = {"method": "POST", "url": "Patient"}
    assert case_key("out/bundles/x.json", dumps(bundle, pretty=False)) == key
    assert case_key("a.json", b'{"resourceType":"Bundle"}') != case_key("b.json", b"{}")


def test_a_second_writer_is_refused_and_the_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "j.jsonl"
    with PushJournal(path, SERVER):
        with pytest.raises(JournalError, match="in use"):
            PushJournal(path, SERVER)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with PushJournal(path, SERVER) as again:  # the lock went with the first one
        assert len(again) == 0


def test_lines_are_written_at_once_and_fsynced_in_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fhir_cyclo.server.journal as journal_module

    synced: list[int] = []
    real_fsync = journal_module.os.fsync
    monkeypatch.setattr(journal_module.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    path = tmp_path / "j.jsonl"
    with PushJournal(path, SERVER) as journal:
        for n in range(50):
            journal.record(f"case-{n}", "d", entries=1)
            # Each line is in the file as soon as record returns (kill -9 loses none)...
            assert path.read_bytes().count(b"\n") == n + 1
        assert len(synced) <= 1  # ...but 50 lines within a second cost at most one fsync
    assert len(synced) in (1, 2)  # close syncs the rest
    synced.clear()
    monkeypatch.setattr(journal_module, "SYNC_INTERVAL_S", 0.0)
    with PushJournal(path, SERVER) as journal:
        assert len(journal) == 50
        for n in range(3):
            journal.record(f"more-{n}", "d", entries=1)
        assert len(synced) == 3  # an interval of 0: every line, as before


@pytest.mark.parametrize(
    "bundle",
    [
        {"resourceType": "Bundle", "entry": 5},
        {"resourceType": "Bundle", "entry": {"resource": {}}},
        {"entry": [{"resource": {"resourceType": "Patient", "identifier": 5}}]},
        {"entry": [{"resource": {"resourceType": "Patient", "identifier": "x"}}]},
        [1, 2],
    ],
)
def test_a_malformed_bundle_is_keyed_by_its_label_not_a_crash(bundle: Any) -> None:
    # push journals whatever Bundle file it is given (the server judges it): a wrong shape must
    # fall back to the label, as a Bundle without a Patient does (was a TypeError, exit 70).
    data = orjson.dumps(bundle)
    assert case_key("a.json", data) == case_key("a.json", b"{}") != case_key("b.json", data)
