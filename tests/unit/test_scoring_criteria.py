"""Response criteria per disease, on hand-built inputs: every threshold and its edge."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_cyclo.scoring.dates import parse_span
from fhir_cyclo.scoring.extract import (
    Measurement,
    PatientInputs,
    ScoringInputs,
    StartDate,
    TransfusionEvent,
)
from fhir_cyclo.scoring.rules import log_name, score, score_patient

START = date(2021, 1, 31)
M3 = date(2021, 4, 30)  # Jan 31 + 3 months, clamped
M6 = date(2021, 7, 31)
M12 = date(2022, 1, 31)
BASE_DAY = START - timedelta(days=2)


def lab(
    analyte: str,
    day: date | str,
    value: float | None,
    *,
    low: float | None = None,
    high: float | None = None,
    normal: bool = False,
    ref: str = "",
) -> Measurement:
    text = day if isinstance(day, str) else day.isoformat()
    return Measurement(
        ref or f"Observation/{analyte}-{text}",
        analyte,
        value,
        parse_span(text),
        text,
        "effectiveDateTime",
        low=low,
        high=high,
        normal=normal,
    )


def patient(
    disease: str,
    *labs: Measurement,
    gender: str | None = "female",
    transfusions: tuple[TransfusionEvent, ...] = (),
    start: str = START.isoformat(),
) -> PatientInputs:
    inputs = PatientInputs(
        key="urn:test|p1",
        reference="Patient/p1",
        identifier=("urn:test", "p1"),
        gender=gender,
        diseases=(disease,),
        start=StartDate("MedicationStatement/csa", parse_span(start), start, "effectiveDateTime"),
    )
    for m in labs:
        inputs.labs.setdefault(m.analyte, []).append(m)
    inputs.transfusions.extend(transfusions)
    return inputs


def responses(inputs: PatientInputs) -> list[str]:
    scored, _ = score_patient(inputs)
    return [a.response for a in scored.assessments]


def m3(inputs: PatientInputs) -> str:
    return responses(inputs)[0]


# --- ITP ---------------------------------------------------------------------------------------


def itp(base: float, value: float) -> PatientInputs:
    return patient("ITP", lab("platelets", BASE_DAY, base), lab("platelets", M3, value))


@pytest.mark.parametrize(
    ("base", "value", "expected"),
    [
        (10, 100.1, "CR"),
        (10, 100, "PR"),  # exactly 100 is not > 100; 100 > 30 and >= 2 x 10
        (60, 100, "NR"),  # not CR, and 100 < 2 x 60
        (10, 30.1, "PR"),
        (10, 30, "NR"),  # exactly 30 is not > 30
        (15.25, 30.5, "PR"),  # exactly doubled
        (15.26, 30.5, "NR"),  # just short of doubling
        (0, 31, "PR"),  # a zero baseline doubles trivially (no division)
        (200, 150, "CR"),  # CR needs no rise
    ],
)
def test_itp_thresholds(base: float, value: float, expected: str) -> None:
    assert m3(itp(base, value)) == expected


def test_itp_all_timepoints() -> None:
    inputs = patient(
        "ITP",
        lab("platelets", BASE_DAY, 12),
        lab("platelets", M3 + timedelta(days=10), 25),
        lab("platelets", M6 - timedelta(days=31), 40),
        lab("platelets", M12 + timedelta(days=32), 300),  # outside month 12's window
    )
    scored, _ = score_patient(inputs)
    assert [(a.month, a.response) for a in scored.assessments] == [
        (3, "NR"),
        (6, "PR"),
        (12, "NE"),
    ]
    assert scored.assessments[1].date == M6 - timedelta(days=31)
    assert [a.target for a in scored.assessments] == [M3, M6, M12]


def test_no_baseline_means_all_ne() -> None:
    inputs = patient(
        "ITP",
        lab("platelets", START - timedelta(days=31), 10),  # one day too early
        lab("platelets", M3, 150),
        lab("platelets", M6, 150),
        lab("platelets", M12, 150),
    )
    scored, notes = score_patient(inputs)
    assert responses(inputs) == ["NE", "NE", "NE"]
    assert scored.baseline is None
    assert any("no baseline" in n.message for n in notes)


def test_baseline_after_start_is_not_baseline() -> None:
    inputs = patient(
        "ITP", lab("platelets", START + timedelta(days=1), 10), lab("platelets", M3, 150)
    )
    assert responses(inputs) == ["NE", "NE", "NE"]


# --- AIHA --------------------------------------------------------------------------------------


def aiha(base: float, hb: float, *markers: Measurement) -> PatientInputs:
    return patient("AIHA", lab("hemoglobin", BASE_DAY, base), lab("hemoglobin", M3, hb), *markers)


GOOD = (lab("ldh", M3, 200), lab("indirect_bilirubin", M3, 0.5))


@pytest.mark.parametrize(
    ("base", "hb", "expected"),
    [
        (7, 12.1, "CR"),
        (7, 12, "PR"),  # exactly 12 is not > 12, but > 10
        (7, 10.1, "PR"),
        (8.5, 10, "NR"),  # exactly 10 is not > 10 and the rise is 1.5
        (8, 10, "PR"),  # a rise of exactly 2.0
        (7.1, 9.1, "PR"),  # 9.1 - 7.1 is 1.9999999999999991 in floats: still a 2.0 rise
        (7.1, 9.0, "NR"),
        (5, 6.9999, "NR"),
    ],
)
def test_aiha_thresholds(base: float, hb: float, expected: str) -> None:
    assert m3(aiha(base, hb, *GOOD)) == expected


@pytest.mark.parametrize(
    ("markers", "expected"),
    [
        ((lab("ldh", M3, 200),), "PR"),  # no bilirubin in the window: CR not confirmed
        ((lab("indirect_bilirubin", M3, 0.5),), "PR"),  # no LDH
        ((), "PR"),
        ((lab("ldh", M3, 300, high=280), lab("indirect_bilirubin", M3, 0.5)), "PR"),  # above high
        ((lab("ldh", M3, 280, high=280), lab("indirect_bilirubin", M3, 0.5)), "CR"),  # == high
        ((lab("ldh", M3, 250), lab("indirect_bilirubin", M3, 0.8)), "CR"),  # == defaults
        ((lab("ldh", M3, 251), lab("indirect_bilirubin", M3, 0.5)), "PR"),  # > default 250
        ((lab("ldh", M3, 200), lab("indirect_bilirubin", M3, 0.81)), "PR"),  # > default 0.8
        ((lab("ldh", M3, 300, high=400), lab("indirect_bilirubin", M3, 1.1, high=1.2)), "CR"),
        # markers outside the month-3 window do not confirm
        ((lab("ldh", M3 + timedelta(days=32), 200), lab("indirect_bilirubin", M3, 0.5)), "PR"),
    ],
)
def test_aiha_hemolysis_markers(markers: tuple[Measurement, ...], expected: str) -> None:
    assert m3(aiha(7, 12.5, *markers)) == expected


def test_aiha_marker_closest_to_target_decides() -> None:
    markers = (
        lab("ldh", M3 - timedelta(days=20), 200),
        lab("ldh", M3 + timedelta(days=2), 400),  # closest: above the limit
        lab("indirect_bilirubin", M3, 0.5),
    )
    scored, _ = score_patient(aiha(7, 12.5, *markers))
    a = scored.assessments[0]
    assert a.response == "PR"
    assert a.markers["ldh"] is not None
    assert a.markers["ldh"].value == 400


def test_aiha_low_hb_without_markers_is_nr() -> None:
    assert m3(aiha(9, 9.5)) == "NR"


# --- PRCA --------------------------------------------------------------------------------------


def rbc(day: date, status: str = "completed") -> TransfusionEvent:
    counted = status in ("completed", "in-progress")
    return TransfusionEvent(f"Procedure/{day}", (day, day), status, counted, "RBC transfusion")


def prca(
    hb: float | None,
    *,
    gender: str | None = "female",
    low: float | None = None,
    transfusions: tuple[TransfusionEvent, ...] = (),
    normal: bool = False,
) -> PatientInputs:
    return patient(
        "PRCA",
        lab("hemoglobin", BASE_DAY, 5),
        lab("hemoglobin", M3, hb, low=low, normal=normal),
        gender=gender,
        transfusions=transfusions,
    )


@pytest.mark.parametrize(
    ("hb", "gender", "low", "expected"),
    [
        (12.0, "female", None, "CR"),  # WHO female limit, inclusive (normal range)
        (11.9, "female", None, "PR"),
        (12.9, "male", None, "PR"),
        (13.0, "male", None, "CR"),
        (12.5, None, None, "PR"),  # unknown sex: the stricter (male) limit
        (12.5, "unknown", None, "PR"),
        (11.5, "female", 11.5, "CR"),  # the Observation's referenceRange.low wins
        (12.5, "male", 13.5, "PR"),
    ],
)
def test_prca_normal_range(hb: float, gender: str | None, low: float | None, expected: str) -> None:
    assert m3(prca(hb, gender=gender, low=low)) == expected


def test_prca_unknown_sex_is_noted() -> None:
    _, notes = score_patient(prca(12.5, gender=None))
    assert any(n.path == "Patient.gender" and "13.0" in n.message for n in notes)


@pytest.mark.parametrize(
    ("days_before", "status", "expected"),
    [
        (10, "completed", "NR"),
        (56, "completed", "NR"),  # the 8-week window is inclusive
        (57, "completed", "PR"),
        (0, "completed", "NR"),  # on the assessment day
        (-1, "completed", "PR"),  # after the assessment
        (10, "in-progress", "NR"),
        (10, "not-done", "PR"),  # "no transfusion was needed"
        (10, "stopped", "PR"),
    ],
)
def test_prca_transfusion_independence(days_before: int, status: str, expected: str) -> None:
    event = rbc(M3 - timedelta(days=days_before), status)
    assert m3(prca(9.0, transfusions=(event,))) == expected


def test_prca_normal_hb_is_cr_even_with_transfusion() -> None:
    # The study group's CR is "normal hemoglobin levels", nothing else.
    assert m3(prca(12.5, transfusions=(rbc(M3 - timedelta(days=3)),))) == "CR"


def test_prca_valueless_normal_interpretation_is_cr() -> None:
    scored, _ = score_patient(prca(None, normal=True))
    a = scored.assessments[0]
    assert a.response == "CR"
    assert a.pick is not None
    assert a.pick.value is None


def test_prca_partial_transfusion_period_counts_when_it_overlaps() -> None:
    event = TransfusionEvent(
        "Procedure/p", parse_span("2021-03"), "completed", True, "Red blood cell transfusion"
    )
    assert m3(prca(9.0, transfusions=(event,))) == "NR"


# --- cohort level ------------------------------------------------------------------------------


def test_score_skips_and_notes_half_documented_patients() -> None:
    scorable = itp(10, 150)
    no_start = PatientInputs("k2", None, None, None, diseases=("ITP",))
    no_disease = PatientInputs(
        "k3", None, None, None, start=StartDate("MedicationStatement/x", (START, START), "", "")
    )
    bystander = PatientInputs("k4", None, None, None)
    cohort = score(ScoringInputs([scorable, no_start, no_disease, bystander], []))
    assert [p.key for p in cohort.patients] == ["urn:test|p1"]
    messages = {n.source: n.message for n in cohort.notes}
    # Warnings name patients by Patient/id or a hash, never by identifier value (PHI).
    assert messages[log_name(no_start)] == "no cyclosporine start; not scored"
    assert messages[log_name(no_disease)] == "no ITP/AIHA/PRCA Condition; not scored"
    assert log_name(bystander) not in messages
    assert not any(k in str(n) for n in cohort.notes for k in ("k2", "k3", "k4"))


def test_several_diseases_scored_by_precedence_with_note() -> None:
    inputs = patient("AIHA", lab("hemoglobin", BASE_DAY, 8), lab("hemoglobin", M3, 10.5))
    inputs.diseases = ("AIHA", "ITP")
    cohort = score(ScoringInputs([inputs], []))
    assert cohort.patients[0].disease == "AIHA"
    assert any("scored as AIHA" in n.message for n in cohort.notes)


_RANK = {"NR": 0, "PR": 1, "CR": 2}


@given(
    base=st.floats(min_value=0, max_value=500, allow_nan=False),
    low=st.floats(min_value=0, max_value=1000, allow_nan=False),
    high=st.floats(min_value=0, max_value=1000, allow_nan=False),
)
def test_itp_response_is_monotone_in_platelets(base: float, low: float, high: float) -> None:
    low, high = round(min(low, high), 4), round(max(low, high), 4)
    base = round(base, 4)
    assert _RANK[m3(itp(base, low))] <= _RANK[m3(itp(base, high))]
