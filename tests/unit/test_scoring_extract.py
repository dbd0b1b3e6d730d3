"""FHIR resources as real EHRs send them -> scoring inputs: codes, units, dates, references."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_cyclo.core.errors import InputError
from fhir_cyclo.readers.fhir import SourceItem
from fhir_cyclo.scoring.extract import PatientInputs, ScoringInputs, extract

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CSA = {"coding": [{"system": RXNORM, "code": "3008", "display": "cyclosporine"}]}


def pat(pid: str = "p1", **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": pid, **extra}


def obs(
    oid: str,
    code: str,
    value: float | None = None,
    unit: str | None = "g/dL",
    *,
    system: str | None = UCUM,
    when: dict[str, Any] | None = None,
    subject: str = "Patient/p1",
    **extra: Any,
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": subject},
        **(when if when is not None else {"effectiveDateTime": "2021-01-10"}),
    }
    if value is not None:
        quantity: dict[str, Any] = {"value": value}
        if unit is not None:
            quantity["unit"] = unit
            if system is not None:
                quantity["system"] = system
                quantity["code"] = unit
        resource["valueQuantity"] = quantity
    resource.update(extra)
    return resource


def cond(
    cid: str, system: str, code: str, subject: str = "Patient/p1", **extra: Any
) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": subject},
        **extra,
    }


def stmt(
    sid: str, start: str = "2021-01-31", subject: str = "Patient/p1", **extra: Any
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "MedicationStatement",
        "id": sid,
        "status": "active",
        "subject": {"reference": subject},
        "effectivePeriod": {"start": start},
    }
    if "medicationReference" not in extra:
        resource["medicationCodeableConcept"] = CSA
    resource.update(extra)
    return resource


def one(resources: list[dict[str, Any]]) -> tuple[PatientInputs, ScoringInputs]:
    inputs = extract(resources)
    assert len(inputs.patients) == 1, [p.key for p in inputs.patients]
    return inputs.patients[0], inputs


def values(resources: list[dict[str, Any]], analyte: str) -> list[float | None]:
    p, _ = one([pat(), *resources])
    return [m.value for m in p.labs.get(analyte, [])]


def messages(inputs: ScoringInputs) -> list[str]:
    return [str(n) for n in inputs.notes]


# --- units -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "value", "unit", "system", "expected"),
    [
        ("718-7", 9.1, "g/dL", UCUM, 9.1),
        ("718-7", 91, "g/L", UCUM, 9.1),
        ("59260-0", 6.2, "mmol/L", UCUM, 9.991),  # 6.2 mmol/L x 16,114.5 g/mol = 9.99099 g/dL
        ("59260-0", 2.85, "mmol/L", UCUM, 4.5926),
        ("718-7", 9.1, "g/dl", None, 9.1),  # unit text without a system, lower-case
        ("777-3", 45, "10*9/L", UCUM, 45),
        ("777-3", 45, "10*3/uL", UCUM, 45),
        ("26515-7", 45, "K/uL", None, 45),
        ("777-3", 45, "10^3/uL", None, 45),
        ("777-3", 45, "/nL", UCUM, 45),
        ("777-3", 45000, "/uL", UCUM, 45),
        ("777-3", 45, "10³/µL".replace("³", "^3"), None, 45),  # micro sign in text
        ("2532-0", 4.5, "ukat/L", UCUM, 270),
        ("1971-1", 17.1, "umol/L", UCUM, 0.9998),  # x 584.66 g/mol
        ("60474-4", 1000, "/uL", UCUM, 1),
    ],
)
def test_units_normalised(
    code: str, value: float, unit: str, system: str | None, expected: float
) -> None:
    analyte = {
        "718-7": "hemoglobin",
        "59260-0": "hemoglobin",
        "777-3": "platelets",
        "26515-7": "platelets",
        "2532-0": "ldh",
        "1971-1": "indirect_bilirubin",
        "60474-4": "reticulocytes",
    }[code]
    assert values([obs("o1", code, value, unit, system=system)], analyte) == [expected]


def test_ucum_code_wins_over_unit_text() -> None:
    resource = obs("o1", "718-7", 91, "g/L")
    resource["valueQuantity"]["unit"] = "g/dL"  # display text that disagrees with the code
    assert values([resource], "hemoglobin") == [9.1]


def test_unit_text_used_when_system_is_not_ucum() -> None:
    resource = obs("o1", "718-7", 91, "g/L", system="http://example.org/units")
    resource["valueQuantity"]["code"] = "GM/DL-LOCAL"
    assert values([resource], "hemoglobin") == [9.1]


def test_unknown_unit_skipped_with_warning_naming_resource_and_field() -> None:
    p, inputs = one([pat(), obs("o9", "718-7", 9.1, "U/L")])
    assert p.labs.get("hemoglobin", []) == []
    assert "Observation/o9: valueQuantity.code: unknown unit 'U/L' for hemoglobin; skipped" in (
        messages(inputs)
    )


def test_missing_unit_and_missing_value_are_warned() -> None:
    _, inputs = one(
        [pat(), obs("o1", "777-3", 45, None), obs("o2", "777-3"), obs("o3", "777-3", True)]
    )
    text = messages(inputs)
    assert "Observation/o1: valueQuantity.unit: no unit for platelets; skipped" in text
    assert "Observation/o2: value[x]: no value; skipped" in text
    assert any(t.startswith("Observation/o3: valueQuantity.value: not a number") for t in text)


def test_value_string_and_data_absent_reason_are_named() -> None:
    text_value = obs("o1", "718-7", valueString="4.6 g/dL")
    absent = obs("o2", "718-7", dataAbsentReason={"coding": [{"code": "not-performed"}]})
    _, inputs = one([pat(), text_value, absent])
    assert "Observation/o1: value[x]: no value (valueString is not a quantity); skipped" in (
        messages(inputs)
    )
    assert "Observation/o2: value[x]: no value (dataAbsentReason not-performed); skipped" in (
        messages(inputs)
    )


def test_comparator_value_is_skipped() -> None:
    resource = obs("o1", "777-3", 10, "10*9/L")
    resource["valueQuantity"]["comparator"] = "<"
    p, inputs = one([pat(), resource])
    assert p.labs.get("platelets", []) == []
    assert any("valueQuantity.comparator" in t for t in messages(inputs))


def test_reference_range_normalised_and_typed_ranges_ignored() -> None:
    resource = obs(
        "o1",
        "718-7",
        91,
        "g/L",
        referenceRange=[
            {"type": {"coding": [{"code": "treatment"}]}, "low": {"value": 100, "unit": "g/L"}},
            {"low": {"value": 120, "unit": "g/L"}, "high": {"value": 160}},
        ],
    )
    p, _ = one([pat(), resource])
    m = p.labs["hemoglobin"][0]
    assert (m.low, m.high) == (12.0, 16.0)  # a bound without a unit takes the value's unit


# --- dates and statuses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("when", "first", "field"),
    [
        ({"effectiveDateTime": "2021-03-04T23:30:00+09:00"}, "2021-03-04", "effectiveDateTime"),
        (
            {"effectivePeriod": {"start": "2021-03-04", "end": "2021-03-06"}},
            "2021-03-04",
            "effectivePeriod.start",
        ),
        ({"effectivePeriod": {"end": "2021-03-06"}}, "2021-03-06", "effectivePeriod.end"),
        ({"effectiveInstant": "2021-03-04T10:00:00Z"}, "2021-03-04", "effectiveInstant"),
        ({"issued": "2021-03-05T10:00:00Z"}, "2021-03-05", "issued"),
    ],
)
def test_observation_dates(when: dict[str, Any], first: str, field: str) -> None:
    p, _ = one([pat(), obs("o1", "718-7", 9, when=when)])
    m = p.labs["hemoglobin"][0]
    assert m.span[0].isoformat() == first
    assert m.date_field == field


def test_observation_without_date_or_with_bad_date_is_warned() -> None:
    _, inputs = one(
        [
            pat(),
            obs("o1", "718-7", 9, when={}),
            obs("o2", "718-7", 9, when={"effectiveDateTime": "03/04/2021"}),
        ]
    )
    text = messages(inputs)
    assert any(
        t.startswith("Observation/o1: effectivePeriod.start/") and "no date" in t for t in text
    )
    assert "Observation/o2: effectiveDateTime: not a FHIR date: '03/04/2021'; skipped" in text


@pytest.mark.parametrize("status", ["entered-in-error", "cancelled"])
def test_skipped_observation_status(status: str) -> None:
    p, inputs = one([pat(), obs("o1", "718-7", 9, status=status)])
    assert p.labs.get("hemoglobin", []) == []
    assert f"Observation/o1: status: status {status}; skipped" in messages(inputs)


def test_amended_and_preliminary_results_are_used() -> None:
    assert values(
        [obs("o1", "718-7", 9, status="amended"), obs("o2", "718-7", 8, status="preliminary")],
        "hemoglobin",
    ) == [9, 8]


def test_unrelated_observations_are_ignored_silently() -> None:
    p, inputs = one([pat(), obs("bp", "85354-9", 120, "mm[Hg]")])
    assert p.labs == {}
    assert inputs.notes == []


def test_valueless_normal_hb_kept_for_prca_only() -> None:
    normal = obs(
        "n1",
        "718-7",
        interpretation=[
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": "N",
                    }
                ]
            }
        ],
    )
    prca, _ = one([pat(), normal, cond("c1", SNOMED, "50715003")])
    assert [(m.value, m.normal) for m in prca.labs["hemoglobin"]] == [(None, True)]
    itp, inputs = one([pat(), normal, cond("c1", SNOMED, "2897005")])
    assert itp.labs["hemoglobin"] == []
    assert any(
        t.startswith("Observation/n1: valueQuantity.value: no value") for t in messages(inputs)
    )


# --- references ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reference",
    [
        "Patient/p1",
        "https://ehr.example.org/fhir/Patient/p1",
        "https://ehr.example.org/fhir/Patient/p1/_history/3",
    ],
)
def test_subject_reference_forms(reference: str) -> None:
    assert values([obs("o1", "718-7", 9, subject=reference)], "hemoglobin") == [9]


def test_urn_uuid_subject_resolved_through_bundle_fullurl() -> None:
    items = [
        SourceItem(
            pat("abc", identifier=[{"system": "urn:mrn", "value": "42"}]), "urn:uuid:1", "f"
        ),
        SourceItem(obs("o1", "718-7", 9, subject="urn:uuid:1"), "urn:uuid:2", "f"),
    ]
    inputs = extract(items)
    assert [(p.key, p.reference) for p in inputs.patients] == [("urn:mrn|42", "Patient/abc")]
    assert [m.value for m in inputs.patients[0].labs["hemoglobin"]] == [9]


def test_patient_without_id_keyed_by_identifier() -> None:
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "7"}]}
    items = [
        SourceItem(patient, "urn:uuid:p", "f"),
        SourceItem(obs("o1", "718-7", 9, subject="urn:uuid:p"), None, "f"),
    ]
    inputs = extract(items)
    assert [(p.key, p.reference, p.identifier) for p in inputs.patients] == [
        ("urn:mrn|7", None, ("urn:mrn", "7"))
    ]


def test_logical_identifier_reference() -> None:
    resource = obs("o1", "718-7", 9)
    resource["subject"] = {"identifier": {"system": "urn:mrn", "value": "42"}}
    p, _ = one([pat(identifier=[{"system": "urn:mrn", "value": "42"}]), resource])
    assert [m.value for m in p.labs["hemoglobin"]] == [9]


def test_patient_key_falls_back_to_reference() -> None:
    inputs = extract([obs("o1", "718-7", 9, subject="Patient/zz")])
    assert [p.key for p in inputs.patients] == ["Patient/zz"]


def test_same_identifier_in_two_exports_is_merged() -> None:
    ident = [{"system": "urn:mrn", "value": "42"}]
    inputs = extract(
        [
            pat("a", identifier=ident),
            pat("b", identifier=ident),
            obs("o1", "718-7", 9, subject="Patient/a"),
            obs("o2", "718-7", 8, subject="Patient/b"),
        ]
    )
    assert len(inputs.patients) == 1
    assert sorted(m.value or 0 for m in inputs.patients[0].labs["hemoglobin"]) == [8, 9]


def test_unresolvable_subject_is_warned() -> None:
    inputs = extract([obs("o1", "718-7", 9, subject="Group/g1"), obs("o2", "718-7", 9, subject="")])
    text = messages(inputs)
    assert "Observation/o1: subject: 'Group/g1' is not a known Patient reference; skipped" in text
    assert "Observation/o2: subject: no patient reference; skipped" in text


# --- diseases ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "code", "disease"),
    [
        (SNOMED, "2897005", "ITP"),
        (SNOMED, "128091003", "ITP"),
        (ICD, "D69.3", "ITP"),
        (SNOMED, "413603009", "AIHA"),
        (SNOMED, "3978000", "AIHA"),
        (ICD, "D59.10", "AIHA"),
        (ICD, "D59.19", "AIHA"),
        (ICD, "D59.1", "AIHA"),
        ("http://terminology.hl7.org/CodeSystem/icd10CM", "D59.11", "AIHA"),
        (ICD, "d5911", "AIHA"),  # no dot, lower case
        (SNOMED, "50715003", "PRCA"),
        (SNOMED, "234376007", "PRCA"),
        (SNOMED, "90414007", "PRCA"),
        (ICD, "D60.0", "PRCA"),
        (ICD, "D60.9", "PRCA"),
    ],
)
def test_disease_codes(system: str, code: str, disease: str) -> None:
    p, _ = one([pat(), cond("c1", system, code)])
    assert p.diseases == (disease,)
    assert p.condition_refs == {disease: "Condition/c1"}


@pytest.mark.parametrize(
    ("system", "code"),
    [
        (ICD, "D59.0"),  # drug-induced AIHA is not on the list
        (ICD, "D69.41"),  # Evans syndrome code: not on the normative lists
        (SNOMED, "D69.3"),  # right code, wrong system
        (ICD, "2897005"),
        (SNOMED, "444231005"),  # thymoma
    ],
)
def test_not_a_scored_disease(system: str, code: str) -> None:
    p, _ = one([pat(), cond("c1", system, code)])
    assert p.diseases == ()


def test_display_alone_does_not_make_a_disease() -> None:
    resource = cond("c1", SNOMED, "000")
    resource["code"]["coding"][0]["display"] = "Immune thrombocytopenia"
    resource["code"]["text"] = "ITP"
    p, _ = one([pat(), resource])
    assert p.diseases == ()


def test_evans_patient_scored_as_aiha_by_precedence() -> None:
    p, _ = one([pat(), cond("c1", ICD, "D69.3"), cond("c2", SNOMED, "413603009")])
    assert p.diseases == ("AIHA", "ITP")
    assert p.disease == "AIHA"


@pytest.mark.parametrize("status", ["refuted", "entered-in-error"])
def test_refuted_condition_ignored(status: str) -> None:
    resource = cond("c1", ICD, "D69.3", verificationStatus={"coding": [{"code": status}]})
    p, inputs = one([pat(), resource])
    assert p.diseases == ()
    assert f"Condition/c1: verificationStatus: {status}; skipped" in messages(inputs)


# --- cyclosporine --------------------------------------------------------------------------------


def start_of(resources: list[dict[str, Any]]) -> str | None:
    p, _ = one([pat(), *resources])
    return p.start.day.isoformat() if p.start else None


def test_earliest_statement_wins_and_datetime_fallback() -> None:
    late = stmt("s1", "2021-03-01")
    early = stmt("s2", "2021-02-01")
    by_datetime = stmt("s3", effectiveDateTime="2021-01-15")
    del by_datetime["effectivePeriod"]
    assert start_of([late, early]) == "2021-02-01"
    assert start_of([late, by_datetime]) == "2021-01-15"


def test_partial_start_is_first_day() -> None:
    assert start_of([stmt("s1", "2011-12")]) == "2011-12-01"
    assert start_of([stmt("s1", "2011")]) == "2011-01-01"


@pytest.mark.parametrize("status", ["entered-in-error", "not-taken"])
def test_statement_status_skipped(status: str) -> None:
    early = stmt("s1", "2020-01-01", status=status)
    assert start_of([early, stmt("s2", "2021-01-01")]) == "2021-01-01"


def test_stu3_taken_n_skipped() -> None:
    assert start_of([stmt("s1", "2020-01-01", taken="n")]) is None


def test_other_drug_ignored() -> None:
    other = stmt("s1", "2020-01-01")
    other["medicationCodeableConcept"] = {"coding": [{"system": RXNORM, "code": "8640"}]}
    assert start_of([other]) is None


def test_contained_medication() -> None:
    resource = stmt(
        "s1",
        "2020-05-05",
        contained=[{"resourceType": "Medication", "id": "m", "code": CSA}],
        medicationReference={"reference": "#m"},
    )
    assert start_of([resource]) == "2020-05-05"


@pytest.mark.parametrize(
    "reference", ["Medication/m1", "https://ehr.example.org/fhir/Medication/m1/_history/2"]
)
def test_referenced_medication_in_any_order(reference: str) -> None:
    medication = {"resourceType": "Medication", "id": "m1", "code": CSA}
    resource = stmt("s1", "2020-05-05", medicationReference={"reference": reference})
    assert start_of([resource, medication]) == "2020-05-05"  # Medication after the statement


def test_product_medication_with_cyclosporine_ingredient() -> None:
    medication = {
        "resourceType": "Medication",
        "id": "m1",
        "code": {"coding": [{"system": RXNORM, "code": "197553"}], "text": "Neoral 25 mg"},
        "ingredient": [{"itemCodeableConcept": CSA}],
    }
    resource = stmt("s1", "2020-05-05", medicationReference={"reference": "Medication/m1"})
    assert start_of([medication, resource]) == "2020-05-05"


def test_missing_medication_is_warned() -> None:
    resource = stmt("s1", "2020-05-05", medicationReference={"reference": "Medication/gone"})
    p, inputs = one([pat(), resource])
    assert p.start is None
    assert (
        "MedicationStatement/s1: medicationReference: Medication/gone not found; "
        "cannot tell the drug" in messages(inputs)
    )


def test_medication_request_used_only_without_statement() -> None:
    request = {
        "resourceType": "MedicationRequest",
        "id": "r1",
        "status": "completed",
        "intent": "order",
        "medicationCodeableConcept": CSA,
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2020-01-01",
        "dosageInstruction": [{"timing": {"repeat": {"boundsPeriod": {"start": "2020-01-03"}}}}],
    }
    p, inputs = one([pat(), request])
    assert p.start is not None
    assert (p.start.day.isoformat(), p.start.date_field) == (
        "2020-01-03",
        "dosageInstruction[0].timing.repeat.boundsPeriod.start",
    )
    assert any("MedicationRequest used" in t for t in messages(inputs))
    assert start_of([request, stmt("s1", "2020-02-01")]) == "2020-02-01"
    proposal = {**request, "intent": "proposal"}
    assert start_of([proposal]) is None


# --- transfusions --------------------------------------------------------------------------------


def proc(pid: str, text: str, status: str = "completed", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Procedure",
        "id": pid,
        "status": status,
        "code": {"text": text},
        "subject": {"reference": "Patient/p1"},
        "performedDateTime": "2021-03-01",
        **extra,
    }


@pytest.mark.parametrize(
    ("text", "is_rbc"),
    [
        ("Red blood cell transfusion", True),
        ("TRANSFUSION OF PACKED RED CELLS", True),
        ("pRBC transfusion, 2 units", True),
        ("Erythrocyte transfusion", True),
        ("Blood transfusion", True),
        ("Platelet transfusion", False),
        ("Transfusion of blood platelets", False),
        ("Fresh frozen plasma transfusion", False),
        ("Transfusion ordered", False),  # "red" inside "ordered" is not a word
        ("Red cell exchange", False),  # no transfusion
    ],
)
def test_transfusion_text(text: str, is_rbc: bool) -> None:
    p, _ = one([pat(), proc("x1", text)])
    assert bool(p.transfusions) is is_rbc


def test_transfusion_matched_on_coding_display() -> None:
    resource = proc("x1", "Procedure 123")
    resource["code"]["coding"] = [
        {"system": "urn:local", "code": "T1", "display": "RBC transfusion"}
    ]
    p, _ = one([pat(), resource])
    assert [t.text for t in p.transfusions] == ["RBC transfusion"]


@pytest.mark.parametrize(
    ("status", "counted"),
    [("completed", True), ("in-progress", True), ("not-done", False), ("preparation", False)],
)
def test_transfusion_status(status: str, counted: bool) -> None:
    p, _ = one([pat(), proc("x1", "Red blood cell transfusion", status)])
    assert [t.counted for t in p.transfusions] == [counted]


def test_transfusion_period() -> None:
    resource = proc("x1", "RBC transfusion", status="in-progress")
    del resource["performedDateTime"]
    resource["performedPeriod"] = {"start": "2021-03"}
    p, _ = one([pat(), resource])
    assert p.transfusions[0].span[0].isoformat() == "2021-03-01"
    assert p.transfusions[0].span[1].year == 9999  # still running


# --- strict and malformed ------------------------------------------------------------------------


def test_strict_validates_with_r4b_models() -> None:
    bad = obs("o1", "718-7", 9)
    bad["valueQuantity"]["value"] = "nine"
    with pytest.raises(InputError, match="Observation/o1"):
        extract([pat(), bad], strict=True)
    ok, _ = one([pat(), obs("o1", "718-7", 9)])
    assert extract([pat(), obs("o1", "718-7", 9)], strict=True).patients[0].labs == ok.labs


def test_malformed_resource_does_not_stop_the_run() -> None:
    bad = obs("o1", "718-7", 9)
    bad["code"]["coding"] = ["718-7"]  # strings where codings belong
    p, inputs = one([pat(), bad, obs("o2", "718-7", 8)])
    assert [m.value for m in p.labs["hemoglobin"]] == [8]
    assert any(t.startswith("Observation/o1: malformed") for t in messages(inputs))
