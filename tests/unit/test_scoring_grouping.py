"""Out-of-core grouping by patient scores exactly as the whole input does, in any partitioning."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_cyclo.export.writer import export
from fhir_cyclo.readers.fhir import SourceItem, read_paths
from fhir_cyclo.report import log_lines, to_json, to_table
from fhir_cyclo.report.stream import score_groups, table, write_json
from fhir_cyclo.scoring.extract import extract
from fhir_cyclo.scoring.grouping import grouped
from fhir_cyclo.scoring.rules import score
from tests.conftest import FIXTURES

SYSTEM = "http://example.org/mrn"
LOINC = "http://loinc.org"


def _tricky() -> list[SourceItem]:
    """Links that cross partitions unless grouping resolves them as extraction does."""

    def item(resource: dict[str, Any], full_url: str | None = None) -> SourceItem:
        return SourceItem(resource, full_url, "test")

    start = {"effectivePeriod": {"start": "2020-01-10"}}
    csa_code = {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "3008"}]
    }
    items = []
    for n in range(12):
        pid = f"p{n}"
        items.append(
            item(
                {
                    "resourceType": "Patient",
                    "id": pid,
                    "identifier": [{"system": SYSTEM, "value": f"v{n}"}],
                }
            )
        )
        # Subject forms: relative, absolute, versioned, by identifier.
        subject: dict[str, Any] = [
            {"reference": f"Patient/{pid}"},
            {"reference": f"http://server.example/fhir/Patient/{pid}"},
            {"reference": f"Patient/{pid}/_history/3"},
            {"identifier": {"system": SYSTEM, "value": f"v{n}"}},
        ][n % 4]
        items.append(
            item(
                {
                    "resourceType": "Condition",
                    "id": f"c{n}",
                    "subject": subject,
                    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "2897005"}]},
                }
            )
        )
        items.append(
            item(
                {
                    "resourceType": "MedicationStatement",
                    "id": f"m{n}",
                    "status": "completed",
                    "subject": {"reference": f"Patient/{pid}"},
                    "medicationReference": {"reference": "Medication/csa"},
                    **start,
                }
            )
        )
        for k, (day, plt) in enumerate((("2020-01-05", 20), ("2020-04-10", 120))):
            items.append(
                item(
                    {
                        "resourceType": "Observation",
                        "id": f"o{n}-{k}",
                        "status": "final",
                        "subject": subject,
                        "code": {"coding": [{"system": LOINC, "code": "777-3"}]},
                        "effectiveDateTime": day,
                        "valueQuantity": {"value": plt + n, "unit": "10*9/L"},
                    }
                )
            )
    # A second Patient resource for the same person (another id, same identifier): merged.
    items.append(
        item(
            {
                "resourceType": "Patient",
                "id": "p0-copy",
                "identifier": [{"system": SYSTEM, "value": "v0"}],
            }
        )
    )
    items.append(
        item(
            {
                "resourceType": "Observation",
                "id": "o0-copy",
                "status": "final",
                "subject": {"reference": "Patient/p0-copy"},
                "code": {"coding": [{"system": LOINC, "code": "777-3"}]},
                "effectiveDateTime": "2020-07-10",
                "valueQuantity": {"value": 150, "unit": "10*9/L"},
            }
        )
    )
    # A transaction-Bundle patient known only by its urn:uuid fullUrl.
    urn = "urn:uuid:7d2b4c1e-0000-4000-8000-000000000001"
    items.append(
        item(
            {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": "urn-patient"}]},
            urn,
        )
    )
    items.append(
        item(
            {
                "resourceType": "Condition",
                "subject": {"reference": urn},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "2897005"}]},
            },
            "urn:uuid:c",
        )
    )
    items.append(
        item(
            {
                "resourceType": "MedicationStatement",
                "status": "completed",
                "subject": {"reference": urn},
                "medicationCodeableConcept": csa_code,
                **start,
            },
            "urn:uuid:m",
        )
    )
    items.append(
        item(
            {
                "resourceType": "Observation",
                "status": "final",
                "subject": {"reference": urn},
                "code": {"coding": [{"system": LOINC, "code": "777-3"}]},
                "effectiveDateTime": "2020-01-08",
                "valueQuantity": {"value": 10, "unit": "10*9/L"},
            },
            "urn:uuid:o",
        )
    )
    # Unresolvable and subject-less resources are noted wherever they land.
    items.append(
        item(
            {
                "resourceType": "Observation",
                "id": "lost",
                "status": "final",
                "subject": {"reference": "Group/x"},
                "code": {"coding": [{"system": LOINC, "code": "777-3"}]},
                "effectiveDateTime": "2020-01-08",
                "valueQuantity": {"value": 10, "unit": "10*9/L"},
            }
        )
    )
    items.append(
        item(
            {
                "resourceType": "Observation",
                "id": "nobody",
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": "777-3"}]},
            }
        )
    )
    # The Medication the statements reference comes last, after every patient's data.
    items.append(item({"resourceType": "Medication", "id": "csa", "code": csa_code}))
    return items


@pytest.fixture(scope="module")
def exported_items(tmp_path_factory: pytest.TempPathFactory) -> list[SourceItem]:
    out = tmp_path_factory.mktemp("export")
    export([FIXTURES], out, ndjson=True)
    return list(read_paths([out]))


def _whole(items: list[SourceItem]) -> tuple[bytes, list[str], str]:
    cohort = score(extract(items))
    data = orjson.dumps(to_json(cohort), option=orjson.OPT_INDENT_2) + b"\n"
    # As logged: each warning about a patient names it by its token, in both paths.
    return data, sorted(log_lines(cohort)), to_table(cohort)


@pytest.mark.parametrize("partition_size", [1, 3, 7, 1000])
def test_partitions_score_as_the_whole_input(
    tmp_path: Path, exported_items: list[SourceItem], partition_size: int
) -> None:
    items = _tricky() + exported_items
    expected_json, expected_notes, expected_table = _whole(items)
    notes: list[str] = []
    result = score_groups(
        items,
        tmp_path,
        on_note=lambda n: notes.append(str(n)),
        in_memory_limit=5,
        partition_size=partition_size,
    )
    out = io.BytesIO()
    write_json(result, out)
    got, want = orjson.loads(out.getvalue()), orjson.loads(expected_json)
    # Warnings come partition by partition: the same ones, in another order.
    key = orjson.dumps
    assert sorted(got.pop("warnings"), key=key) == sorted(want.pop("warnings"), key=key)
    assert got == want
    assert sorted(notes) == expected_notes
    assert table(result) == expected_table
    assert result.patients == len(orjson.loads(expected_json)["patients"]) > 20


def test_groups_hold_every_resource_once_and_medications_in_each(tmp_path: Path) -> None:
    items = _tricky()
    groups = list(grouped(items, in_memory_limit=5, partition_size=4, tmp_dir=tmp_path))
    assert len(groups) > 3
    seen = Counter(orjson.dumps(i.resource) for g in groups for i in g)
    medication = orjson.dumps(items[-1].resource)
    assert seen.pop(medication) == len(groups)
    assert seen == Counter(orjson.dumps(i.resource) for i in items[:-1])
    assert not list(tmp_path.iterdir())  # the spool and partitions are gone


def test_small_input_is_one_group_as_read() -> None:
    items = _tricky()
    assert list(grouped(items)) == [items]


def test_nothing_to_score_writes_the_empty_document(tmp_path: Path) -> None:
    result = score_groups([], tmp_path)
    out = io.BytesIO()
    write_json(result, out)
    expected = orjson.dumps(to_json(score(extract([]))), option=orjson.OPT_INDENT_2) + b"\n"
    assert out.getvalue() == expected
    assert b'"patients": []' in expected
