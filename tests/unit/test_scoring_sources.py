"""Reading resources for scoring: Bundles of any type, NDJSON, folders, bad JSON, server search."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_cyclo.core.errors import InputError
from fhir_cyclo.readers.fhir import iter_from_server, read_paths

DATA = Path(__file__).parent / "scoring_data"


def kinds(items: Any) -> list[str]:
    return [f"{i.resource['resourceType']}/{i.resource.get('id')}" for i in items]


def test_transaction_bundle_keeps_full_urls() -> None:
    items = list(read_paths([DATA / "case_report_transaction.json"]))
    assert len(items) == 8
    assert items[0].resource["resourceType"] == "Patient"
    assert items[0].full_url == "urn:uuid:7c0f3a52-1111-5d7e-9c1a-000000000001"
    assert items[0].origin.endswith("case_report_transaction.json")


def test_searchset_with_include_and_outcome(tmp_path: Path) -> None:
    page = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "fullUrl": "http://h/fhir/Observation/1",
                "resource": {"resourceType": "Observation", "id": "1"},
                "search": {"mode": "match"},
            },
            {"resource": {"resourceType": "Patient", "id": "p"}, "search": {"mode": "include"}},
            {"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}},
            {"request": {"method": "DELETE", "url": "Observation/2"}},  # no resource
        ],
    }
    path = tmp_path / "page.json"
    path.write_text(json.dumps(page))
    assert kinds(read_paths([path])) == ["Observation/1", "Patient/p", "OperationOutcome/None"]


def test_collection_of_nested_bundles_and_single_resource(tmp_path: Path) -> None:
    inner = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"resource": {"resourceType": "Condition", "id": "c"}}],
    }
    outer = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": inner}]}
    (tmp_path / "outer.json").write_text(json.dumps(outer))
    (tmp_path / "single.json").write_text(json.dumps({"resourceType": "Patient", "id": "p"}))
    assert kinds(read_paths([tmp_path / "outer.json", tmp_path / "single.json"])) == [
        "Condition/c",
        "Patient/p",
    ]


def test_ndjson_with_blank_lines_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "Observation.ndjson"
    lines = [json.dumps({"resourceType": "Observation", "id": str(i)}) for i in range(3)]
    path.write_bytes(b"\xef\xbb\xbf" + "\n\n".join(lines).encode() + b"\n")
    items = list(read_paths([path]))
    assert kinds(items) == ["Observation/0", "Observation/1", "Observation/2"]
    assert items[2].origin == f"{path}:5"


def test_ndjson_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.ndjson"
    path.write_text('{"resourceType": "Patient", "id": "a"}\n{"resourceType": \n')
    with pytest.raises(InputError) as info:
        list(read_paths([path]))
    assert info.value.source == str(path)
    assert info.value.path == "line 2"
    assert str(info.value).startswith(f"{path}: line 2: not valid JSON")


def test_bad_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"resourceType": "Bundle", "entry": [')
    with pytest.raises(InputError, match=r"broken\.json: not valid JSON") as info:
        list(read_paths([path]))
    assert info.value.source == str(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"id": "x"}', "no resourceType"),
        ("[1, 2]", "no resourceType"),
        ('{"resourceType": "Bundle", "entry": {"a": 1}}', "Bundle.entry: must be a list"),
        ('{"resourceType": "Bundle", "entry": [{"resource": "x"}]}', r"entry\[0\]\.resource"),
    ],
)
def test_not_fhir_is_an_input_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        list(read_paths([path]))


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        list(read_paths([tmp_path / "nope.json"]))


def test_folder_is_read_recursively_in_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a.json").write_text(json.dumps({"resourceType": "Patient", "id": "1"}))
    (tmp_path / "b" / "c.NDJSON").write_text(json.dumps({"resourceType": "Patient", "id": "2"}))
    (tmp_path / "b" / "notes.txt").write_text("not FHIR")
    (tmp_path / "b" / "d.json").write_text(json.dumps({"resourceType": "Patient", "id": "3"}))
    assert kinds(read_paths([tmp_path])) == ["Patient/1", "Patient/2", "Patient/3"]


# --- server ------------------------------------------------------------------------------------


class FakeClient:
    """Records searches and answers from a small in-memory store."""

    def __init__(self, store: dict[str, list[dict[str, Any]]], *, pages: bool = False) -> None:
        self.store = store
        self.pages = pages
        self.calls: list[tuple[str, dict[str, str]]] = []

    def search(self, resource_type: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        self.calls.append((resource_type, dict(params)))
        found = [r for r in self.store.get(resource_type, []) if self._matches(r, params)]
        if self.pages:
            yield {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": r} for r in found],
            }
        else:
            yield from found

    @staticmethod
    def _matches(resource: dict[str, Any], params: dict[str, str]) -> bool:
        if "_id" in params and resource.get("id") not in params["_id"].split(","):
            return False
        if "identifier" in params:
            tokens = {f"{i.get('system')}|{i.get('value')}" for i in resource.get("identifier", [])}
            if params["identifier"] not in tokens:
                return False
        if "subject" in params:
            return bool(resource.get("subject", {}).get("reference") == params["subject"])
        return True


STORE: dict[str, list[dict[str, Any]]] = {
    "Patient": [
        {
            "resourceType": "Patient",
            "id": "p1",
            "identifier": [{"system": "urn:mrn", "value": "1"}],
        },
        {"resourceType": "Patient", "id": "p2"},
    ],
    "Condition": [
        {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}}
    ],
    "MedicationStatement": [
        {
            "resourceType": "MedicationStatement",
            "id": "s1",
            "subject": {"reference": "Patient/p1"},
            "medicationReference": {"reference": "Medication/m1"},
        }
    ],
    "Observation": [
        {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"}}
    ],
    "Procedure": [
        {"resourceType": "Procedure", "id": "x1", "subject": {"reference": "Patient/p2"}}
    ],
    "Medication": [{"resourceType": "Medication", "id": "m1"}],
}


@pytest.mark.parametrize("pages", [False, True])
def test_server_by_identifier(pages: bool) -> None:
    client = FakeClient(STORE, pages=pages)
    items = list(iter_from_server(client, identifier="urn:mrn|1"))
    assert kinds(items) == [
        "Patient/p1",
        "Condition/c1",
        "MedicationStatement/s1",
        "Observation/o1",
        "Medication/m1",
    ]
    assert client.calls[0] == ("Patient", {"identifier": "urn:mrn|1"})
    searched = [c for c in client.calls if c[0] == "Observation"]
    assert searched[0][1]["subject"] == "Patient/p1"
    assert "http://loinc.org|718-7" in searched[0][1]["code"].split(",")
    assert ("Medication", {"_id": "m1"}) in client.calls


def test_server_by_patient_id_accepts_type_prefix() -> None:
    client = FakeClient(STORE)
    items = list(iter_from_server(client, patient="Patient/p2"))
    assert kinds(items) == ["Patient/p2", "Procedure/x1"]
    assert client.calls[0] == ("Patient", {"_id": "p2"})


def test_server_unknown_patient_is_an_input_error() -> None:
    with pytest.raises(InputError, match="no Patient found for the identifier given"):
        list(iter_from_server(FakeClient(STORE), identifier="urn:mrn|9"))


def test_server_everything() -> None:
    client = FakeClient(STORE)
    items = list(iter_from_server(client))
    assert sorted(kinds(items)) == sorted(f"{t}/{r['id']}" for t, rs in STORE.items() for r in rs)
    assert all("subject" not in params for _, params in client.calls)


def test_server_reads_medication_administrations() -> None:
    """EHRs record inpatient doses as MedicationAdministration (issue 10): searched too."""
    client = FakeClient(STORE)
    list(iter_from_server(client, patient="p1"))
    searched = [t for t, _ in client.calls]
    assert searched.index("MedicationStatement") < searched.index("MedicationAdministration")
    assert ("MedicationAdministration", {"subject": "Patient/p1"}) in client.calls
