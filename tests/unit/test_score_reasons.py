"""Every result says why: one test per reason kind, and the --json document against its schema."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from fhir_cyclo.readers.fhir import read_paths
from fhir_cyclo.report import to_json
from fhir_cyclo.scoring.extract import extract
from fhir_cyclo.scoring.rules import REASON_KINDS, Assessment, score, score_patient
from tests.unit.test_scoring_criteria import BASE_DAY, M3, START, lab, patient, prca, rbc

SCHEMA_PATH = (
    Path(__file__).resolve().parents[2] / "src" / "fhir_cyclo" / "report" / "score.schema.json"
)
DATA = Path(__file__).parent / "scoring_data"
PLT_UNIT = "\u00d710\u2079/L"  # sentences show x10^9/L with a real times sign, not UCUM 10*9/L
GOOD_MARKERS = (lab("ldh", M3, 200), lab("indirect_bilirubin", M3, 0.5))


def month3(*labs: Any, disease: str = "AIHA", **kw: Any) -> Assessment:
    scored, _ = score_patient(patient(disease, *labs, **kw))
    return scored.assessments[0]


def kinds(a: Assessment) -> list[str]:
    return [r.kind for r in a.reasons]


def texts(a: Assessment) -> list[str]:
    return [r.text for r in a.reasons]


# --- threshold missed, one per threshold ---------------------------------------------------------


def test_itp_cr_and_pr_thresholds_missed() -> None:
    a = month3(lab("platelets", BASE_DAY, 20), lab("platelets", M3, 35), disease="ITP")
    assert a.response == "NR"
    assert kinds(a) == ["threshold_missed", "threshold_met", "threshold_missed"]
    assert texts(a) == [
        f"CR missed: PLT 35 {PLT_UNIT} is not > 100 {PLT_UNIT}",
        f"PR condition met: PLT 35 {PLT_UNIT} > 30 {PLT_UNIT}",
        f"PR missed: PLT 35 {PLT_UNIT} is not >= 2 x baseline 20 = 40 {PLT_UNIT}",
    ]
    ratio = a.checks[-1]
    assert (ratio.value, ratio.op, ratio.threshold, ratio.held) == (35, ">=", 40, False)
    assert ratio.refs == (f"Observation/platelets-{M3}", f"Observation/platelets-{BASE_DAY}")


def test_itp_pr_value_threshold_missed_although_doubled() -> None:
    a = month3(lab("platelets", BASE_DAY, 10), lab("platelets", M3, 30), disease="ITP")
    assert a.response == "NR"
    assert f"PR missed: PLT 30 {PLT_UNIT} is not > 30 {PLT_UNIT}" in texts(a)
    # A failed value ends the rule: the ratio is not reported as if it mattered.
    assert [c.test for c in a.checks] == ["value", "value"]


def test_aiha_cr_value_and_both_pr_thresholds_missed() -> None:
    a = month3(lab("hemoglobin", BASE_DAY, 8.5), lab("hemoglobin", M3, 10), *GOOD_MARKERS)
    assert a.response == "NR"
    assert texts(a) == [
        "CR missed: Hb 10 g/dL is not > 12 g/dL",
        "PR missed: Hb 10 g/dL is not > 10 g/dL",
        "PR missed: Hb rise 1.5 g/dL (baseline 8.5 to 10) is not >= 2 g/dL",
    ]
    assert set(kinds(a)) == {"threshold_missed"}


def test_aiha_marker_above_upper_limit_is_a_missed_threshold() -> None:
    a = month3(
        lab("hemoglobin", BASE_DAY, 7),
        lab("hemoglobin", M3, 12.5),
        lab("ldh", M3, 300, high=280),
        lab("indirect_bilirubin", M3, 0.5),
    )
    assert a.response == "PR"
    missed = [r.text for r in a.reasons if r.kind == "threshold_missed"]
    assert missed == [
        f"CR missed: LDH 300 U/L on {M3} is above the upper limit 280 U/L (the lab's reference range)"
    ]
    assert "PR: Hb 12.5 g/dL > 10 g/dL" in texts(a)


def test_prca_normal_range_missed_with_the_limit_used() -> None:
    scored, _ = score_patient(prca(11.9, gender="female"))
    a = scored.assessments[0]
    assert a.response == "PR"
    assert texts(a)[0] == (
        "CR missed: Hb 11.9 g/dL is below the lower limit of normal 12 g/dL (WHO anaemia "
        "threshold, female)"
    )
    assert kinds(a) == ["threshold_missed", "threshold_met"]


# --- missing marker ------------------------------------------------------------------------------


def test_aiha_missing_markers_each_named() -> None:
    # The aiha-05 case: Hb 12.4 at month 3 but no LDH / bilirubin in the window.
    a = month3(lab("hemoglobin", BASE_DAY, 7.9), lab("hemoglobin", M3, 12.4))
    assert a.response == "PR"
    window = f"{a.window[0]}..{a.window[1]}"
    assert texts(a) == [
        "CR condition met: Hb 12.4 g/dL > 12 g/dL",
        f"CR not assessable: no LDH in window {window}",
        f"CR not assessable: no ind. bili in window {window} (nor total bili with direct bili "
        "to derive it)",
        "PR: Hb 12.4 g/dL > 10 g/dL",
    ]
    assert kinds(a).count("marker_missing") == 2
    # Evidence for write-back stays as before: only what the rule read on its path.
    assert a.markers == {"ldh": None}
    assert a.missing_markers == ("ldh", "indirect_bilirubin")  # the same, for the JSON field


# --- value outside the window --------------------------------------------------------------------


def test_value_outside_window_is_ne_and_names_the_nearest() -> None:
    late = M3 + timedelta(days=40)
    a = month3(lab("platelets", BASE_DAY, 20), lab("platelets", late, 150), disease="ITP")
    assert a.response == "NE"
    assert kinds(a) == ["no_value_in_window"]
    (reason,) = a.reasons
    assert reason.text == (
        f"NE: no PLT in window {a.window[0]}..{a.window[1]} (target {M3}); nearest {late}, "
        "9 d after the window"
    )
    assert reason.refs == (f"Observation/platelets-{late}",)


def test_no_baseline_reason_on_patient_and_every_timepoint() -> None:
    scored, _ = score_patient(
        patient("ITP", lab("platelets", START - timedelta(days=31), 20), lab("platelets", M3, 150))
    )
    assert [r.kind for r in scored.reasons] == ["no_baseline"]
    assert all(kinds(a) == ["no_baseline"] for a in scored.assessments)


# --- partial date imputed ------------------------------------------------------------------------


def test_partial_dates_imputed_are_reasons() -> None:
    scored, _ = score_patient(
        patient(
            "ITP",
            lab("platelets", "2020", 20, ref="Observation/base"),
            lab("platelets", "2021-04", 150, ref="Observation/m3"),
            start="2020-12",
        )
    )
    assert [(r.kind, r.refs) for r in scored.reasons] == [
        ("date_imputed", ("MedicationStatement/csa",)),
        ("date_imputed", ("Observation/base",)),
    ]
    assert scored.reasons[0].text == (
        "cyclosporine start dated '2020-12' (partial): taken as 2020-12-01, the first day of its "
        "interval"
    )
    a = scored.assessments[0]
    assert a.response == "CR"
    assert a.reasons[-1].kind == "date_imputed"
    # Target 2021-03-01: the closest day of April 2021 is its first.
    assert a.reasons[-1].text.startswith("PLT dated '2021-04' (partial): taken as 2021-04-01")


# --- transfusion in window -----------------------------------------------------------------------


def test_transfusion_in_window_blocks_pr() -> None:
    when = M3 - timedelta(days=10)
    scored, _ = score_patient(prca(9.0, transfusions=(rbc(when),)))
    a = scored.assessments[0]
    assert a.response == "NR"
    assert kinds(a) == ["threshold_missed", "transfusion_in_window"]
    assert a.reasons[1].refs == (f"Procedure/{when}",)
    assert a.reasons[1].text == (
        f"PR missed: red-cell transfusion in {M3 - timedelta(days=56)}..{M3} (56 d before the "
        f"Hb): 'RBC transfusion' (completed, {when})"
    )


def test_no_transfusion_gives_pr_with_the_window_checked() -> None:
    scored, _ = score_patient(prca(9.0, transfusions=(rbc(M3 - timedelta(days=57)),)))
    a = scored.assessments[0]
    assert a.response == "PR"
    assert a.reasons[-1].kind == "threshold_met"
    assert "no counted red-cell transfusion in" in a.reasons[-1].text


def test_valueless_normal_hb_reason() -> None:
    scored, _ = score_patient(prca(None, normal=True))
    assert kinds(scored.assessments[0]) == ["normal_without_value"]


def test_every_result_has_a_reason_and_every_kind_is_known() -> None:
    cohort = score(extract(read_paths([DATA / "cohort", DATA / "case_report_transaction.json"])))
    for p in cohort.patients:
        for a in p.assessments:
            assert a.reasons, (p.key, a.month)
            assert set(kinds(a)) <= set(REASON_KINDS)


# --- the JSON document and its schema ------------------------------------------------------------


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    cohort = score(extract(read_paths([DATA / "cohort", DATA / "case_report_transaction.json"])))
    # Through JSON text, as a reader of --json gets it.
    return json.loads(json.dumps(to_json(cohort)))


def test_json_document_matches_its_schema(
    validator: jsonschema.Draft202012Validator, document: dict[str, Any]
) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == []
    assert len(document["patients"]) == 6


def test_empty_cohort_matches_the_schema(validator: jsonschema.Draft202012Validator) -> None:
    doc = json.loads(
        json.dumps(to_json(score(extract(read_paths([DATA / "cohort" / "Patient.ndjson"])))))
    )
    validator.validate(doc)
    assert doc["patients"] == [] and doc["summary"] == []
    accounting = doc["accounting"]
    assert accounting["scored"] == 0
    assert accounting["patients_read"] == sum(accounting["not_scored"].values()) > 0


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["patients"][0]["assessments"][0].pop("reasons"),
        lambda d: d["patients"][0]["assessments"][0]["reasons"][0].update(kind="because"),
        lambda d: d["patients"][0]["assessments"][0].update(response="maybe"),
        lambda d: d["patients"][0].update(extra=1),
        lambda d: d["summary"][0]["timepoints"][0].update(CR=-1),
        lambda d: d["patients"][0]["assessments"][1].update(reasons=[]),
        lambda d: d["accounting"].pop("scored"),
    ],
)
def test_schema_rejects_drift(
    validator: jsonschema.Draft202012Validator, document: dict[str, Any], break_it: Any
) -> None:
    broken = copy.deepcopy(document)
    break_it(broken)
    assert not validator.is_valid(broken)
