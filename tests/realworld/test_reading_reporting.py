"""Issue 24 "Why": forgiving reading, exact reporting, --explain and units, on real-world data."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from fhir_cyclo.cli.app import main
from fhir_cyclo.core import units

DATA = Path(__file__).parent / "data"
D1 = DATA / "derived" / "d1-damion-itp.derived.json"
D3 = DATA / "derived" / "d3-micah-itp-32273002.derived.json"
PLT_UNITS = DATA / "variants" / "d1-damion-itp" / "units" / "plt-00-10x3_per_uL.json"
BULK = DATA / "original" / "bulk-sample-10-patients"
ORACLE = DATA / "original" / "oracle-health"
SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "src/fhir_cyclo/report/score.schema.json").read_text()
)
D1_PATIENT = "Patient/e224268b-e233-45f0-a961-59fd223827c9"
BASELINE_PLT = "Observation/4e9a5d8e-7dfd-436d-9506-e204514be1ee"
MONTH12_PLT = "Observation/50253a5d-75f7-47ce-abd8-6c8d2b86c58c"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def write(tmp_path: Path, name: str, doc: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def score_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = main(["score", *args, "--json", "-"])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def edited(source: Path, ref: str, change: Any) -> dict[str, Any]:
    """A copy of a Bundle with `change(resource)` applied to the resource `ref`."""
    doc = copy.deepcopy(load(source))
    kind, rid = ref.split("/")
    for entry in doc["entry"]:
        r = entry["resource"]
        if r["resourceType"] == kind and r["id"] == rid:
            change(r)
    return doc


# --- Why: a client's log.ndjson beside Bulk output made `score` exit 1 -----------------------------


def test_client_log_beside_bulk_output_is_one_notice_and_exit_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, doc, err = score_json(capsys, str(BULK))
    assert code == 0
    assert doc["accounting"]["patients_read"] == 2
    notes = [line for line in err.splitlines() if "log.ndjson" in line]
    assert len(notes) == 1 and "skipped: not FHIR resources" in notes[0]
    assert "error" not in err


def test_a_json_file_that_is_not_a_resource_is_a_notice(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = score_json(capsys, str(ORACLE / "observation-entry.json"))
    assert code == 0
    assert "observation-entry.json: not a FHIR resource (no resourceType); skipped" in err


def test_a_bad_line_among_resources_is_still_an_error(tmp_path: Path) -> None:
    lines = (BULK / "Patient.000.ndjson").read_text(encoding="utf-8").splitlines()
    (tmp_path / "Patient.ndjson").write_text(lines[0] + '\n{"not": "fhir"}\n', encoding="utf-8")
    assert (
        main(["score", str(tmp_path / "Patient.ndjson"), "--json", str(tmp_path / "o.json")]) == 1
    )


# --- Why: malformed entries (no resource) were dropped silently ------------------------------------


def test_entry_without_resource_is_named_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = load(PLT_UNITS)
    doc["entry"].insert(2, {"fullUrl": "urn:uuid:0000"})  # no resource, no request/response
    doc["entry"].insert(3, {"request": {"method": "DELETE", "url": "Observation/x"}})  # fine
    code, _, err = score_json(capsys, str(write(tmp_path, "b.json", doc)))
    assert code == 0
    assert "Bundle.entry[2]: no resource; skipped (malformed entry)" in err
    assert "entry[3]" not in err
    assert "1 resource(s) skipped" in err


# --- Why: 32273002 was not ITP, with no hint --------------------------------------------------------


def test_32273002_is_itp(capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = score_json(capsys, str(D3))
    assert code == 0
    assert [p["disease"] for p in doc["patients"]] == ["ITP"]


def test_near_miss_code_is_named_when_not_scored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def recode(r: dict[str, Any]) -> None:
        r["code"] = {"coding": [{"system": "http://snomed.info/sct", "code": "13172003"}]}

    doc = load(D3)
    for entry in doc["entry"]:
        if entry["resource"]["resourceType"] == "Condition" and "derived" in json.dumps(
            entry["resource"].get("meta", {})
        ):
            recode(entry["resource"])
    path = write(tmp_path, "d3.json", doc)
    code, out, err = score_json(capsys, str(path))
    assert code == 0 and out["patients"] == []
    assert "no ITP/AIHA/PRCA Condition (near miss:" in err
    assert "SNOMED CT 13172003 'Autoimmune thrombocytopenic purpura' is close to ITP" in err
    # --explain says the same per patient.
    assert main(["score", str(path), "--explain"]) == 0
    out_text = capsys.readouterr().out
    assert "near miss: Condition/" in out_text and "13172003" in out_text


def test_drug_named_cyclosporine_in_text_but_coded_otherwise_is_a_near_miss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def recode(r: dict[str, Any]) -> None:
        r["medicationCodeableConcept"] = {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "378441"}],
            "text": "Ciclosporin 0.05% ophthalmic emulsion",
        }
        r.pop("medicationReference", None)

    doc = load(D1)
    for entry in doc["entry"]:
        r = entry["resource"]
        if r["resourceType"] == "MedicationRequest" and "derived" in json.dumps(r.get("meta", {})):
            recode(r)
    assert main(["score", str(write(tmp_path, "d1.json", doc)), "--explain"]) == 0
    out = capsys.readouterr().out
    assert "drug text 'Ciclosporin 0.05% ophthalmic emulsion' names cyclosporine" in out
    assert "cyclosporine start: none" in out


# --- Why: lab units as laboratories write them were dropped ----------------------------------------


@pytest.mark.parametrize(
    "spelling",
    ["x10(3)/mcL", "Thousand/uL", "10*3/mcL", "10^3/mcL", "x10^3/mcL", "Thousands Per MicroLiter"],
)
def test_platelet_spellings_convert(spelling: str) -> None:
    assert units.factor(spelling, "10*9/L") == 1.0


def test_mc_is_micro_only_where_it_stands() -> None:
    assert units.to_ucum("10*3/mcL") == "10*3/uL"  # was None: a "u" was prepended
    assert units.to_ucum("mcg/L") == "ug/L"
    assert units.to_ucum("/mcL") == "/uL"


def test_arbitrary_units_never_convert_to_counts() -> None:
    assert units.factor("[IU]/L", "10*9/L") is None  # was 1e-09
    assert units.factor("[IU]/L", "U/L") is None
    assert units.factor("K/uL", "10*9/L") == 1.0  # the alias wins over kelvin per microlitre


# --- Why: "no PLT in window" although a PLT in the window was skipped -------------------------------


def test_result_skipped_in_window_is_named_not_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def bad_unit(r: dict[str, Any]) -> None:
        r["valueQuantity"] = {"value": 305.2141, "unit": "furlongs"}

    path = write(tmp_path, "b.json", edited(PLT_UNITS, MONTH12_PLT, bad_unit))
    code, doc, err = score_json(capsys, str(path))
    assert code == 0
    month12 = doc["patients"][0]["assessments"][2]
    assert month12["response"] == "NE"
    (reason,) = month12["reasons"]
    assert reason["kind"] == "value_skipped"
    assert f"{MONTH12_PLT} (2016-12-08): unit 'furlongs' not understood" in reason["text"]
    assert reason["sources"] == [MONTH12_PLT]
    # Months with nothing in the window still say "no PLT".
    assert doc["patients"][0]["assessments"][0]["reasons"][0]["kind"] == "no_value_in_window"
    # Counted in the accounting, by why.
    assert doc["accounting"]["results_skipped"] == {"unit not understood": 1}
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)  # new kind and count in the schema
    assert "lab results skipped (unit not understood: 1)" in err


def test_result_skipped_outside_every_window_is_in_the_patient_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = "Observation/0b4866eb-e0d1-4ae9-9fc8-fca38c3734d5"  # 2011-12-01: in no window

    def bad_unit(r: dict[str, Any]) -> None:
        r["valueQuantity"] = {"value": 228.6, "unit": "furlongs"}

    path = write(tmp_path, "b.json", edited(PLT_UNITS, old, bad_unit))
    _, doc, _ = score_json(capsys, str(path))
    patient = doc["patients"][0]
    texts = [r["text"] for r in patient["reasons"] if r["kind"] == "value_skipped"]
    assert texts == [f"PLT result {old} (2011-12-01) skipped: unit 'furlongs' not understood"]
    assert [a["response"] for a in patient["assessments"]] == ["NE", "NE", "CR"]


def test_baseline_skipped_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def absent(r: dict[str, Any]) -> None:
        r.pop("valueQuantity")
        r["dataAbsentReason"] = {"text": "Error"}

    path = write(tmp_path, "b.json", edited(PLT_UNITS, BASELINE_PLT, absent))
    _, doc, _ = score_json(capsys, str(path))
    reasons = doc["patients"][0]["reasons"]
    assert reasons[0]["kind"] == "value_skipped"
    assert "no value (dataAbsentReason Error)" in reasons[0]["text"]


# --- Why: a status with a trailing space went unnoticed ----------------------------------------------


def test_status_with_trailing_space_is_invalid_input_named(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, doc, err = score_json(capsys, str(ORACLE / "observation-searchset-entered-in-error.json"))
    assert code == 0
    assert (
        "Observation/L-197412603: status: 'entered-in-error ' is not an Observation.status code "
        "(trailing/leading space); skipped (invalid input)"
    ) in err
    assert doc["accounting"]["results_skipped"] == {"status": 1}


# --- Why: --patient for a patient read but not scored hid the reasons ------------------------------


def test_patient_read_but_not_scored_shows_why(capsys: pytest.CaptureFixture[str]) -> None:
    synthea = (
        DATA / "original" / "synthea-r4" / "Damion_Frami_9246eb82-afc3-4a9a-8d03-47fdc2273007.json"
    )
    code = main(["score", str(synthea), "--patient", D1_PATIENT])
    err = capsys.readouterr().err
    assert code != 0
    assert f"--patient {D1_PATIENT}: read, but not scored:" in err
    assert "not scored: no ITP/AIHA/PRCA condition and no cyclosporine start" in err
    assert "results: hemoglobin" in err and "platelets 3" in err


# --- Why: per-patient warnings flooded; same-instant duplicates were silent ------------------------


def _cohort(tmp_path: Path, n: int) -> Path:
    """n copies of D1's scored-types Bundle under different patient ids (same lab history)."""
    base = load(DATA / "variants" / "d1-damion-itp" / "bundle-collection.json")
    text = json.dumps(base)
    pid = D1_PATIENT.split("/")[1]
    for i in range(n):
        (tmp_path / f"p{i}.json").write_text(
            text.replace(pid, f"{pid[:-2]}{i:02d}").replace(
                '"value": "9246eb82', f'"value": "{i}x'
            ),
            encoding="utf-8",
        )
    return tmp_path


def test_repeated_warning_is_one_line_with_a_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _cohort(tmp_path, 3)
    assert main(["score", str(folder), "--table"]) == 0
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if "MedicationRequest used" in x]
    assert len(lines) == 1 and "(3 times in 3 patient(s): p-" in lines[0]  # tokens, never ids
    assert main(["-v", "score", str(folder), "--table"]) == 0
    err = capsys.readouterr().err
    assert len([x for x in err.splitlines() if "MedicationRequest used" in x]) == 3


def test_same_instant_duplicates_are_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = load(PLT_UNITS)
    twin = copy.deepcopy(
        next(e for e in doc["entry"] if e["resource"].get("id") == MONTH12_PLT.split("/")[1])
    )
    twin["resource"]["id"] = "zz-twin"
    twin["fullUrl"] = "urn:uuid:zz-twin"
    twin["resource"]["valueQuantity"]["value"] = 20
    doc["entry"].append(twin)
    code, out, err = score_json(capsys, str(write(tmp_path, "b.json", doc)))
    assert code == 0
    assert "2 PLT results at the same instant 2016-12-08T16:13:33+00:00" in err
    assert "used Observation/zz-twin" in err
    assert out["patients"][0]["assessments"][2]["used"]["source"] == "Observation/zz-twin"


# --- Why: --strict stopped at the first invalid resource ---------------------------------------------


def test_strict_lists_every_invalid_resource_and_scores_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = load(PLT_UNITS)
    broken = 0
    for entry in doc["entry"]:
        r = entry["resource"]
        if r["resourceType"] == "Observation" and broken < 2:
            r["valueQuantity"]["value"] = "not a number"
            broken += 1
    path = write(tmp_path, "b.json", doc)
    code = main(["score", str(path), "--strict", "--json", str(tmp_path / "out.json")])
    err = capsys.readouterr().err
    assert code == 1
    assert "2 invalid resource(s); nothing scored (--strict)" in err
    assert err.count("not valid FHIR (R4B)") == 2
    assert not (tmp_path / "out.json").exists()


# --- --explain: what scoring will use, per patient ---------------------------------------------------


def test_explain_names_diagnosis_start_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(D1, tmp_path / "d1.json")
    assert main(["score", str(tmp_path / "d1.json"), "--explain"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^p-[0-9a-f]{8}: scored$", out, re.M)  # the patient's token (issue 23)
    assert D1_PATIENT not in out
    assert "diagnosis: ITP (SNOMED CT 2897005, ICD-10-CM D69.3) from Condition/" in out
    assert "cyclosporine start: 2015-12-08 from MedicationRequest/" in out
    assert "platelets 3 (2011-12-01..2016-12-08)" in out
    assert "responses: 3 mo NE, 6 mo NE, 12 mo CR" in out
    code, doc, _ = score_json(capsys, str(tmp_path / "d1.json"), "--explain")
    assert code == 0
    (entry,) = doc["explain"]
    assert entry["diagnosis"]["codes"] == "SNOMED CT 2897005, ICD-10-CM D69.3"
    assert entry["cyclosporine_start"]["kind"] == "MedicationRequest"
    assert entry["results"]["platelets"]["count"] == 3
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
