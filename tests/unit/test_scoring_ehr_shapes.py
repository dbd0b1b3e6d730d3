"""Scoring data shaped the way EHRs send it (tests/unit/ehr_data), each scored as the README says."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from fhir_cyclo.cli.app import main
from fhir_cyclo.core.errors import InputError
from fhir_cyclo.readers.fhir import read_paths
from fhir_cyclo.report import to_json
from fhir_cyclo.scoring.extract import extract
from fhir_cyclo.scoring.model import patient_token
from fhir_cyclo.scoring.rules import CohortScore, score

DATA = Path(__file__).parent / "ehr_data"
MRN = "http://hospital.example.org/fhir/sid/mrn"


def run(*paths: Path) -> tuple[CohortScore, list[str], list[str]]:
    errors: list[str] = []
    notices: list[str] = []
    items = read_paths(paths, on_error=lambda e: errors.append(str(e)), on_notice=notices.append)
    cohort = score(extract(items))
    return cohort, errors, notices


def responses(cohort: CohortScore, mrn: str) -> dict[int, str]:
    patient = next(p for p in to_json(cohort)["patients"] if p["patient"] == f"{MRN}|{mrn}")
    return {a["month"]: a["response"] for a in patient["assessments"]}


def patient_json(cohort: CohortScore, mrn: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        p for p in to_json(cohort)["patients"] if p["patient"] == f"{MRN}|{mrn}"
    )
    return found


def messages(cohort: CohortScore) -> list[str]:
    return [str(n) for n in cohort.notes]


def test_medication_administration_only_gives_the_start() -> None:
    cohort, errors, _ = run(DATA / "medication-administration-only.json")
    assert errors == []
    p = patient_json(cohort, "MAR-0001")
    # Earliest completed administration (2023-01-10 20:00), not the entered-in-error one.
    assert p["cyclosporine_start"] == "2023-01-10"
    assert p["baseline"]["value"] == 15.0
    assert responses(cohort, "MAR-0001") == {3: "CR", 6: "PR", 12: "NR"}
    assert (
        patient_token("http://hospital.example.org/fhir/sid/mrn|MAR-0001")
        + ": cyclosporine start: no usable MedicationStatement; "
        "MedicationAdministration used" in messages(cohort)
    )
    assert any("ma-mar-x" in m and "entered-in-error" in m for m in messages(cohort))


def test_text_only_cyclosporine_is_recognised_with_a_warning() -> None:
    cohort, _, _ = run(DATA / "text-only-drug.json")
    p = patient_json(cohort, "TXT-0001")
    assert p["cyclosporine_start"] == "2022-03-01"  # not the 2021 text-only tacrolimus
    assert responses(cohort, "TXT-0001") == {3: "CR", 6: "PR", 12: "NR"}
    assert any(
        m.startswith(
            "MedicationStatement/ms-txt-1: medication: no RxNorm code; cyclosporine "
            "recognised by its text 'Neoral (ciclosporin) 100 mg capsule'"
        )
        for m in messages(cohort)
    )
    assert not any("ms-txt-2" in m for m in messages(cohort))


@pytest.mark.parametrize(
    ("text", "recognised"),
    [
        ("Ciclosporin 50 mg", True),
        ("cyclosporin A", True),
        ("CYCLOSPORINE 25MG CAP", True),
        ("CsA 100 mg bid", True),
        ("Sandimmun Optoral", True),
        ("Sandimmune", True),
        ("neoral solution", True),
        ("tacrolimus", False),
        ("csa-like compound", True),  # \bcsa\b: "CsA" followed by a hyphen is still the word
        ("capsaicin", False),
    ],
)
def test_text_names(text: str, recognised: bool) -> None:
    from fhir_cyclo.core.scoring_config import load_config

    assert load_config().medication_text.matches(text) is recognised


def test_another_rxnorm_code_is_never_overruled_by_text() -> None:
    resources = [
        {"resourceType": "Patient", "id": "p"},
        {
            "resourceType": "MedicationStatement",
            "id": "m",
            "status": "active",
            "medicationCodeableConcept": {
                "coding": [
                    {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "42316"}
                ],
                "text": "tacrolimus (replaces cyclosporine)",
            },
            "subject": {"reference": "Patient/p"},
            "effectiveDateTime": "2022-01-01",
        },
    ]
    assert extract(resources).patients[0].start is None


def test_diagnostic_report_panel_contained_results_are_read() -> None:
    cohort, errors, _ = run(DATA / "diagnostic-report-panel.json")
    assert errors == []
    p = patient_json(cohort, "DR-0001")
    # MedicationStatement (2022-05-04) beats the earlier MedicationRequest (2022-05-03).
    assert p["cyclosporine_start"] == "2022-05-04"
    assert {k: p["baseline"][k] for k in ("date", "value", "unit")} == {
        "date": "2022-04-28",
        "value": 7.9,
        "unit": "g/dL",
    }
    assert responses(cohort, "DR-0001") == {3: "CR", 6: "PR", 12: "NR"}
    # Month 6: Hb 12.8 but the panel had no LDH: CR was out of reach for want of data.
    month6 = p["assessments"][1]
    assert month6["missing_markers"] == ["ldh"]
    assert any(
        m.startswith("p-") and ": month 6: PR: CR not reachable, no LDH in the window" in m
        for m in messages(cohort)
    )
    assert not any("MedicationRequest used" in m for m in messages(cohort))


def test_observation_components_are_read() -> None:
    cohort, _, _ = run(DATA / "components.json")
    p = patient_json(cohort, "CMP-0001")
    assert p["baseline"]["value"] == 12.0
    assert responses(cohort, "CMP-0001") == {3: "PR", 6: "CR", 12: "PR"}
    inputs = cohort.patients[0].inputs
    assert {m.ref for m in inputs.labs["platelets"]} == {
        "Observation/cbc-b",
        "Observation/cbc-3",
        "Observation/cbc-6",
        "Observation/cbc-12",
    }
    assert inputs.labs["platelets"][0].high == 400.0  # the component's own referenceRange


def test_component_problems_name_the_component_path() -> None:
    resources = [
        {
            "resourceType": "Observation",
            "id": "o",
            "status": "final",
            "code": {"text": "CBC"},
            "subject": {"reference": "Patient/p"},
            "effectiveDateTime": "2022-01-01",
            "component": [
                {"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]}},
                {
                    "code": {"coding": [{"system": "http://loinc.org", "code": "777-3"}]},
                    "valueQuantity": {"value": 40, "unit": "furlongs"},
                },
            ],
        }
    ]
    notes = [str(n) for n in extract(resources).notes]
    assert notes == [
        "Observation/o: component[1].valueQuantity.unit: unknown unit 'furlongs' for platelets; "
        "skipped"
    ]


def test_total_and_direct_bilirubin_derive_indirect() -> None:
    cohort, _, _ = run(DATA / "total-direct-bilirubin.json")
    p = patient_json(cohort, "BILI-0001")
    # Month 3: 13.7 umol/L total (0.80 mg/dL) - 0.2 direct = 0.6 <= 0.8: CR.
    # Month 6: a total but no direct: CR not reachable -> PR, and it says why.
    # Month 12: 2.4 - 0.3 = 2.1 > 0.8: haemolysis goes on -> PR (Hb > 10).
    assert responses(cohort, "BILI-0001") == {3: "CR", 6: "PR", 12: "PR"}
    assert p["assessments"][1]["missing_markers"] == ["indirect_bilirubin"]
    assert "missing_markers" not in p["assessments"][2]
    month3 = cohort.patients[0].assessments[0]
    derived = month3.markers["indirect_bilirubin"]
    # total in umol/L converted with bilirubin 584.66 g/mol (mappings/units.yaml), minus direct
    assert derived is not None and derived.value == 0.601
    assert derived.measurement.derived_from == ("Observation/o-bili-t-3", "Observation/o-bili-d-3")
    assert any(
        "month 6: PR: CR not reachable, no ind. bili (nor total bili with "
        "direct bili to derive it)" in m
        for m in messages(cohort)
    )


def test_derived_write_back_points_at_the_measured_results() -> None:
    from fhir_cyclo.scoring.writeback import to_bundle

    cohort, _, _ = run(DATA / "total-direct-bilirubin.json")
    entries = to_bundle(cohort)["entry"]
    month3 = next(
        e["resource"]
        for e in entries
        if any(
            c.get("valueQuantity", {}).get("value") == 3 for c in e["resource"].get("component", [])
        )
    )
    refs = {d["reference"] for d in month3["derivedFrom"]}
    assert {"Observation/o-bili-t-3", "Observation/o-bili-d-3"} <= refs
    assert all(r.startswith("Observation/") and " " not in r for r in refs)


def test_measured_indirect_wins_over_derived_and_negative_is_zero() -> None:
    from fhir_cyclo.core.scoring_config import load_config
    from fhir_cyclo.scoring.model import Measurement
    from fhir_cyclo.scoring.rules import derive

    day = __import__("datetime").date(2022, 4, 1)
    labs = {
        "total_bilirubin": [
            Measurement("Observation/t", "total_bilirubin", 0.3, (day, day), "d", "f")
        ],
        "direct_bilirubin": [
            Measurement("Observation/d", "direct_bilirubin", 0.4, (day, day), "d", "f")
        ],
    }
    pick = derive(load_config().derived["indirect_bilirubin"], labs, day, 31)
    assert pick is not None and pick.value == 0.0


def test_bulk_folder_with_manifest() -> None:
    cohort, errors, notices = run(DATA / "bulk-folder")
    assert errors == []  # manifest.json, README.txt and a CSV are no errors
    assert responses(cohort, "BULK-0001") == {3: "CR", 6: "CR", 12: "PR"}
    assert patient_json(cohort, "BULK-0001")["cyclosporine_start"] == "2022-02-01"
    skipped = [n for n in notices if "non-FHIR" in n]
    assert len(skipped) == 1  # listed once
    assert "README.txt" in skipped[0] and "export-log.csv" in skipped[0]
    assert any("OperationOutcome.000.ndjson: export error file, 1 issue(s)" in n for n in notices)
    assert any("Procedure export failed" in n for n in notices)
    assert to_json(cohort)["accounting"] == {
        "patients_read": 3,
        "scored": 1,
        "not_scored": {"no ITP/AIHA/PRCA condition": 1, "no cyclosporine start": 1},
    }


def test_bulk_manifest_decides_what_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "bulk"
    shutil.copytree(DATA / "bulk-folder", folder)
    # An NDJSON file the manifest does not list is skipped (a leftover from another export).
    (folder / "Stray.ndjson").write_text('{"resourceType": "Patient", "id": "stray"}\n')
    cohort, errors, notices = run(folder / "manifest.json")  # naming the manifest works too
    assert errors == []
    assert cohort.accounting.read == 3
    assert any("Stray.ndjson" in n for n in notices)


def test_bulk_manifest_naming_a_missing_file(tmp_path: Path) -> None:
    folder = tmp_path / "bulk"
    shutil.copytree(DATA / "bulk-folder", folder)
    (folder / "Observation.000.ndjson").unlink()
    with pytest.raises(InputError) as err:
        list(read_paths([folder]))
    assert "manifest.json: output[" in str(err.value)
    assert "Observation.000.ndjson is not in" in str(err.value)


def test_gzip_ndjson_is_read(tmp_path: Path) -> None:
    folder = tmp_path / "gz"
    shutil.copytree(DATA / "bulk-folder", folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    for entry in manifest["output"]:
        name = entry["url"].rsplit("/", 1)[1]
        data = (folder / name).read_bytes()
        (folder / name).unlink()
        (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        entry["url"] = f"{name}.gz"  # a relative url: the file itself
    (folder / "manifest.json").write_text(json.dumps(manifest))
    cohort, errors, _ = run(folder)
    assert errors == []
    assert responses(cohort, "BULK-0001") == {3: "CR", 6: "CR", 12: "PR"}


def test_folder_without_manifest_lists_other_files_once(tmp_path: Path) -> None:
    shutil.copy(DATA / "components.json", tmp_path / "a.json")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "img.png").write_bytes(b"\x89PNG")
    (tmp_path / ".hidden-state.json").write_text("{}")  # hidden files are not data
    cohort, errors, notices = run(tmp_path)
    assert errors == []
    assert cohort.accounting.scored == 1
    assert notices == [f"{tmp_path}: skipped 2 non-FHIR file(s): img.png, notes.txt"]


def test_score_cli_summary_and_exit_code(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "s.json"
    assert main(["score", str(DATA / "bulk-folder"), "--json", str(out)]) == 0
    err = capsys.readouterr().err
    assert (
        "read 3 patient(s): scored 1, not scored 2 (no ITP/AIHA/PRCA condition: 1; "
        "no cyclosporine start: 1)" in err
    )
    assert json.loads(out.read_text())["accounting"]["patients_read"] == 3


def test_fallback_warning_names_no_identifier() -> None:
    """The start-fallback warning once printed `system|value` of the patient (issue 10)."""
    resources = [
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:mrn", "value": "CANARY-MRN-77"}],
        },
        {
            "resourceType": "MedicationRequest",
            "id": "r",
            "status": "active",
            "intent": "order",
            "authoredOn": "2022-01-01",
            "medicationCodeableConcept": {
                "coding": [
                    {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "3008"}
                ]
            },
            "subject": {"identifier": {"system": "urn:mrn", "value": "CANARY-MRN-77"}},
        },
    ]
    inputs = extract(resources)
    assert inputs.patients[0].start is not None
    notes = [str(n) for n in inputs.notes]
    assert any("MedicationRequest used" in n for n in notes)
    assert not any("CANARY-MRN-77" in n for n in notes)
