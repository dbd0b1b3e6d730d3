"""One test per fact of the thymoma/PRCA case report: the exported Bundle holds it, coded right."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_cyclo.core.case import Case
from fhir_cyclo.fhir.bundle import transaction_bundle

LOINC, SNOMED, RXNORM = (
    "http://loinc.org",
    "http://snomed.info/sct",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
)
UCUM, ICD10 = "http://unitsofmeasure.org", "http://hl7.org/fhir/sid/icd-10-cm"


@pytest.fixture(scope="module")
def resources(case_report: Case) -> list[dict[str, Any]]:
    return [e["resource"] for e in transaction_bundle(case_report)["entry"]]


def by_type(resources: list[dict[str, Any]], rtype: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["resourceType"] == rtype]


def codes(cc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in cc.get("coding", [])}


def lab(resources: list[dict[str, Any]], loinc: str, when: str) -> dict[str, Any]:
    (found,) = [
        r
        for r in by_type(resources, "Observation")
        if (LOINC, loinc) in codes(r["code"]) and r.get("effectiveDateTime") == when
    ]
    return found


def test_patient_is_a_woman_with_the_case_identifier(resources: list[dict[str, Any]]) -> None:
    (patient,) = by_type(resources, "Patient")
    assert patient["gender"] == "female"
    assert patient["identifier"] == [
        {
            "system": "http://fhir-cyclo.example.org/fhir/sid/case-report",
            "value": "isshiki-thymoma-prca",
        }
    ]


def test_hemoglobin_4_6_g_dl(resources: list[dict[str, Any]]) -> None:
    hb = lab(resources, "718-7", "2011")
    assert hb["valueQuantity"] == {"value": 4.6, "unit": "g/dL", "system": UCUM, "code": "g/dL"}


def test_reticulocytes_1000_per_ul(resources: list[dict[str, Any]]) -> None:
    retic = lab(resources, "60474-4", "2011")
    assert retic["valueQuantity"] == {"value": 1000, "unit": "/uL", "system": UCUM, "code": "/uL"}


def test_anti_achr_7_5_nmol_l_at_age_50(resources: list[dict[str, Any]]) -> None:
    (achr,) = [
        r for r in by_type(resources, "Observation") if (LOINC, "11034-6") in codes(r["code"])
    ]
    assert achr["valueQuantity"]["value"] == 7.5 and achr["valueQuantity"]["code"] == "nmol/L"
    assert achr["extension"][0]["valueAge"] == {
        "value": 50,
        "unit": "years",
        "system": UCUM,
        "code": "a",
    }
    assert "myasthenia" in achr["note"][0]["text"]


def test_hemoglobin_normal_in_february_2012(resources: list[dict[str, Any]]) -> None:
    hb = lab(resources, "718-7", "2012-02")
    assert "valueQuantity" not in hb
    assert hb["interpretation"][0]["coding"][0]["code"] == "N"


def test_hb_and_retic_rose_three_weeks_after_start(resources: list[dict[str, Any]]) -> None:
    rising = [
        r
        for r in by_type(resources, "Observation")
        if r.get("interpretation", [{}])[0].get("coding", [{}])[0].get("code") == "U"
    ]
    assert {next(iter(codes(r["code"])))[1] for r in rising} == {"718-7", "60474-4"}
    assert all("three weeks" in r["extension"][0]["valueString"] for r in rising)


def test_cyclosporine_5_mg_kg_day_from_december_2011(resources: list[dict[str, Any]]) -> None:
    statements = [
        r
        for r in by_type(resources, "MedicationStatement")
        if (RXNORM, "3008") in codes(r["medicationCodeableConcept"])
    ]
    first = next(r for r in statements if r["effectivePeriod"]["start"] == "2011-12")
    dose = first["dosage"][0]["doseAndRate"][0]["doseQuantity"]
    assert dose == {"value": 5, "unit": "mg/kg", "system": UCUM, "code": "mg/kg"}
    assert first["dosage"][0]["timing"]["repeat"] == {"period": 1, "periodUnit": "d"}
    assert first["dosage"][0]["route"]["coding"][0]["code"] == "26643006"


def test_trough_target_100_150_ng_ml(resources: list[dict[str, Any]]) -> None:
    first = next(
        r
        for r in by_type(resources, "MedicationStatement")
        if r.get("effectivePeriod", {}).get("start") == "2011-12"
    )
    (rng,) = [e["valueRange"] for e in first["extension"] if e["url"].endswith("/target-trough")]
    assert (rng["low"]["value"], rng["high"]["value"], rng["low"]["code"]) == (100, 150, "ng/mL")
    assert "100-150 ng/mL" in first["dosage"][0]["text"]


def test_dose_reduction_january_2014_and_150_mg_day_after_relapse(
    resources: list[dict[str, Any]],
) -> None:
    starts = {
        r["effectivePeriod"]["start"]: r
        for r in by_type(resources, "MedicationStatement")
        if "effectivePeriod" in r
    }
    assert starts["2014-01"]["effectivePeriod"]["end"] == "2015-11"
    later = starts["2015-11"]
    assert later["status"] == "active"
    assert later["dosage"][0]["doseAndRate"][0]["doseQuantity"] == {
        "value": 150,
        "unit": "mg",
        "system": UCUM,
        "code": "mg",
    }


def test_methylprednisolone_two_3_day_pulse_courses_1000_mg(
    resources: list[dict[str, Any]],
) -> None:
    (mp,) = [
        r
        for r in by_type(resources, "MedicationStatement")
        if (RXNORM, "6902") in codes(r["medicationCodeableConcept"])
    ]
    assert len(mp["dosage"]) == 2
    for d in mp["dosage"]:
        assert d["timing"]["repeat"]["boundsDuration"]["value"] == 3
        assert d["doseAndRate"][0]["doseQuantity"]["value"] == 1000


def test_thymoma_b1_masaoka_ii(resources: list[dict[str, Any]]) -> None:
    thymomas = [
        r for r in by_type(resources, "Condition") if (SNOMED, "444231005") in codes(r["code"])
    ]
    assert len(thymomas) == 3  # initial, local recurrence, pleural dissemination
    initial = next(r for r in thymomas if "stage" in r)
    assert (ICD10, "C37") in codes(initial["code"])
    assert initial["stage"][0]["summary"]["text"] == "Masaoka stage II (microinvasive)"
    assert initial["stage"][0]["type"]["coding"][0]["code"] == "1287648008"
    (hist,) = [e for e in initial["extension"] if "histology" in e["url"]]
    assert hist["valueCodeableConcept"]["coding"][0]["code"] == "8583/3"
    assert initial["onsetAge"]["value"] == 50


def test_prca_remission_feb_2012_relapse_nov_2015(resources: list[dict[str, Any]]) -> None:
    prca = [r for r in by_type(resources, "Condition") if (SNOMED, "90414007") in codes(r["code"])]
    assert {(r.get("onsetDateTime"), r.get("abatementDateTime")) for r in prca} == {
        ("2011", "2012-02"),
        ("2015-11", None),
    }
    assert all((ICD10, "D60.0") in codes(r["code"]) for r in prca)
    first = next(r for r in prca if r["onsetDateTime"] == "2011")
    assert first["extension"][0]["url"] == "http://hl7.org/fhir/StructureDefinition/condition-dueTo"


def test_ct_improved_may_2012_and_complete_remission_march_2013(
    resources: list[dict[str, Any]],
) -> None:
    imaging = {
        r.get("effectiveDateTime"): r
        for r in by_type(resources, "Observation")
        if r["category"][0]["coding"][0]["code"] == "imaging"
    }
    assert (SNOMED, "268910001") in codes(imaging["2012-05"]["valueCodeableConcept"])
    cr = imaging["2013-03"]
    assert (LOINC, "97509-4") in codes(cr["code"])
    assert (SNOMED, "103338009") in codes(cr["valueCodeableConcept"])


def test_thymectomy_at_50_text_only_and_no_transfusions(resources: list[dict[str, Any]]) -> None:
    procs = by_type(resources, "Procedure")
    thymectomy = next(p for p in procs if p["code"]["text"] == "Thymectomy")
    # UNVERIFIED in terminology.md: no SNOMED coding, only the project code
    assert all(
        c["system"].startswith("http://fhir-cyclo.example.org/")
        for c in thymectomy["code"]["coding"]
    )
    assert thymectomy["performedAge"]["value"] == 50
    transfusion = next(p for p in procs if p["code"]["text"] == "Red blood cell transfusion")
    assert transfusion["status"] == "not-done" and transfusion["performedDateTime"] == "2011-12"


def test_pleural_recurrence_is_provisional(resources: list[dict[str, Any]]) -> None:
    (r2,) = [r for r in by_type(resources, "Condition") if r.get("abatementDateTime") == "2013-03"]
    assert r2["verificationStatus"]["coding"][0]["code"] == "provisional"


def test_bone_marrow_severe_erythrocytopenia(resources: list[dict[str, Any]]) -> None:
    marrow = [
        r
        for r in by_type(resources, "Observation")
        if r.get("bodySite", {}).get("coding", [{}])[0].get("code") == "14016003"
    ]
    assert len(marrow) == 3
    assert any(r.get("valueString") == "Severe erythrocytopenia" for r in marrow)
