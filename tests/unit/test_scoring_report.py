"""End to end on the fixtures: --json document, Table 2 summary, plots and the write-back Bundle."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_cyclo.readers.fhir import read_paths
from fhir_cyclo.report import percent, plot, plot_filename, to_json, to_table
from fhir_cyclo.scoring.extract import extract
from fhir_cyclo.scoring.rules import CohortScore, score
from fhir_cyclo.scoring.writeback import to_bundle

DATA = Path(__file__).parent / "scoring_data"
CASE_KEY = "http://fhir-cyclo.example.org/fhir/sid/case|isshiki-2019"


def run(*paths: Path) -> CohortScore:
    return score(extract(read_paths(paths)))


@pytest.fixture(scope="module")
def case() -> CohortScore:
    return run(DATA / "case_report_transaction.json")


@pytest.fixture(scope="module")
def cohort() -> CohortScore:
    return run(DATA / "cohort")


CORE = ("month", "response", "date", "value", "unit")


def test_case_report_json(case: CohortScore) -> None:
    doc = to_json(case)
    [p] = doc["patients"]
    assert (p["patient"], p["label"], p["disease"], p["cyclosporine_start"]) == (
        CASE_KEY,
        "isshiki-2019",
        "PRCA",
        "2011-12-01",
    )
    assert {k: p["baseline"][k] for k in ("date", "value", "unit", "date_text", "imputed")} == {
        "date": "2011-12-01",
        "value": 4.6,
        "unit": "g/dL",
        "date_text": "2011",
        "imputed": True,
    }
    assert [tuple(a[k] for k in CORE) for a in p["assessments"]] == [
        (3, "CR", "2012-02-29", None, None),
        (6, "NE", None, None, None),
        (12, "NE", None, None, None),
    ]
    m3, m6, _ = p["assessments"]
    # The value-less "normal" Hb decided month 3, on a date imputed inside "2012-02".
    assert [r["kind"] for r in m3["reasons"]] == ["normal_without_value", "date_imputed"]
    assert m3["used"]["interpretation_normal"] is True
    assert m3["window"] == {"start": "2012-01-30", "end": "2012-04-01"}  # 2012-03-01 +/- 31 d
    assert [r["kind"] for r in m6["reasons"]] == ["no_value_in_window"]
    assert [r["kind"] for r in p["reasons"]] == ["date_imputed", "date_imputed"]  # start, baseline
    assert {k: doc["accounting"][k] for k in ("patients_read", "scored", "not_scored")} == {
        "patients_read": 1,
        "scored": 1,
        "not_scored": {},
    }
    assert len(doc["warnings"]) == len(case.notes) == len(p["warnings"]) == 3


def test_case_report_warns_about_every_imputed_date(case: CohortScore) -> None:
    text = [str(n) for n in case.notes]
    prefix = "7c0f3a52-1111-5d7e-9c1a-00000000000"
    # The lab warnings name the file they came from (no case-item identifier in this file).
    where = DATA / "case_report_transaction.json"
    assert text == [
        f"MedicationStatement/{prefix}4: effectivePeriod.start: partial date '2011-12': "
        "cyclosporine start taken as 2011-12-01 (first day)",
        f"{where} Observation/{prefix}5: effectiveDateTime: partial date '2011' imputed as "
        "2011-12-01 (baseline)",
        f"{where} Observation/{prefix}7: effectiveDateTime: partial date '2012-02' imputed as "
        "2012-02-29 (month 3)",
    ]


def test_case_report_not_done_transfusion_kept_but_not_counted(case: CohortScore) -> None:
    events = case.patients[0].inputs.transfusions
    assert [(e.status, e.counted) for e in events] == [("not-done", False)]


def test_case_report_as_ndjson_gives_the_same_result(case: CohortScore, tmp_path: Path) -> None:
    bundle = orjson.loads((DATA / "case_report_transaction.json").read_bytes())
    lines = b"".join(orjson.dumps(e["resource"]) + b"\n" for e in bundle["entry"])
    # Plain relative references, as a server export writes them.
    lines = lines.replace(
        b"urn:uuid:7c0f3a52-1111-5d7e-9c1a-000000000001",
        b"Patient/7c0f3a52-1111-5d7e-9c1a-000000000001",
    )
    (tmp_path / "export.ndjson").write_bytes(lines)
    assert to_json(run(tmp_path)) == to_json(case)


EXPECTED_COHORT = {
    "urn:example:mrn|aiha-1": ("AIHA", 7.5, [("CR", 12.6), ("PR", 12.4), ("PR", 9.6)]),
    "urn:example:mrn|aiha-2": ("AIHA", None, [("NE", None)] * 3),
    "urn:example:mrn|itp-1": ("ITP", 12.0, [("PR", 45.0), ("CR", 120.0), ("PR", 80.0)]),
    "urn:example:mrn|itp-2": ("ITP", 20.0, [("NR", 35.0), ("NE", None), ("CR", 150.0)]),
    "urn:example:mrn|prca-1": ("PRCA", 5.8, [("NR", 10.2), ("PR", 11.8), ("CR", 13.4)]),
}


def test_cohort_json(cohort: CohortScore) -> None:
    doc = to_json(cohort)
    assert [p["patient"] for p in doc["patients"]] == sorted(EXPECTED_COHORT)
    for p in doc["patients"]:
        disease, base, assessments = EXPECTED_COHORT[p["patient"]]
        assert p["disease"] == disease
        assert (p["baseline"] or {}).get("value") == base
        assert [(a["response"], a["value"]) for a in p["assessments"]] == assessments
        assert [a["month"] for a in p["assessments"]] == [3, 6, 12]


def test_cohort_table(cohort: CohortScore) -> None:
    text = to_table(cohort)
    rows = text.splitlines()
    header = rows.index(next(r for r in rows if r.startswith("Month")))
    assert rows[header : header + 4] == [
        "Month  ITP (N = 2)                AIHA (N = 2)               PRCA (N = 1)",
        "3      CR 0/2 (0) - PR 1/2 (50)   CR 1/1 (100) - PR 0/1 (0)  CR 0/1 (0) - PR 0/1 (0)",
        "6      CR 1/1 (100) - PR 0/1 (0)  CR 0/1 (0) - PR 1/1 (100)  CR 0/1 (0) - PR 1/1 (100)",
        "12     CR 1/2 (50) - PR 1/2 (50)  CR 0/1 (0) - PR 1/1 (100)  CR 1/1 (100) - PR 0/1 (0)",
    ]
    # Citations travel with the numbers.
    assert "Ther Adv Hematol 2022" in text
    assert "Japanese PRCA Collaborative Study Group" in text
    assert "WHO/NMH/NHD/MNM/11.1" in text
    assert (
        "ITP (PLT, \u00d710\u2079/L): CR if PLT > 100; PR if PLT > 30 and PLT >= 2 x baseline"
        in text
    )


@pytest.mark.parametrize(
    ("n", "total", "expected"),
    [(12, 29, "41"), (9, 29, "31"), (1, 8, "13"), (2, 3, "67"), (0, 0, "-")],
)
def test_percent_like_the_paper(n: int, total: int, expected: str) -> None:
    assert percent(n, total) == expected


def test_empty_cohort_table() -> None:
    text = to_table(run(DATA / "cohort" / "Patient.ndjson"))
    assert "(no patient could be scored)" in text


def test_plots_written(cohort: CohortScore, tmp_path: Path) -> None:
    paths = plot(cohort, tmp_path / "plots")
    # Named by the short label, never the identifier system URL.
    assert [p.name for p in paths] == [
        "aiha-1.svg",
        "aiha-2.svg",
        "itp-1.svg",
        "itp-2.svg",
        "prca-1.svg",
    ]
    for path in paths:
        assert path.read_bytes()[:5] == b"<svg "
        assert path.stat().st_size > 3_000  # a drawn course, not an empty frame


def test_plot_filenames_are_safe_and_unique() -> None:
    taken: set[str] = set()
    first = plot_filename("http://x.org/mrn|a/b", taken)
    second = plot_filename("http://x.org/mrn|a:b", taken)  # sanitises to the same stem
    assert first == "http_x.org_mrn_a_b.svg"
    assert second.startswith("http_x.org_mrn_a_b-") and second != first
    assert plot_filename("../..", set()) == "patient.svg"


# --- write-back --------------------------------------------------------------------------------

CS = "http://fhir-cyclo.example.org/fhir/CodeSystem/csa-response"
SID = "http://fhir-cyclo.example.org/fhir/sid/response-assessment"


def entries(cohort: CohortScore) -> dict[str, dict[str, Any]]:
    bundle = to_bundle(cohort)
    assert bundle["type"] == "transaction"
    return {e["resource"]["identifier"][0]["value"]: e for e in bundle["entry"]}


def test_writeback_one_put_per_patient_and_month(cohort: CohortScore) -> None:
    found = entries(cohort)
    assert len(found) == 15
    entry = found["urn:example:mrn|itp-1|m6"]
    rid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{SID}|urn:example:mrn|itp-1|m6"))
    assert entry["request"] == {"method": "PUT", "url": f"Observation/{rid}"}
    obs = entry["resource"]
    assert obs["id"] == rid
    assert obs["status"] == "final"
    assert obs["category"][0]["coding"][0]["code"] == "survey"
    assert obs["code"]["coding"][0] == {
        "system": CS,
        "code": "response-assessment",
        "display": "Cyclosporine response assessment",
    }
    assert obs["code"]["text"] == "Cyclosporine response at 6 months"
    assert obs["subject"] == {"reference": "Patient/itp-1"}
    assert obs["effectiveDateTime"] == "2021-07-31"
    assert [(c["system"], c["code"]) for c in obs["valueCodeableConcept"]["coding"]] == [
        (CS, "CR"),
        ("http://snomed.info/sct", "103338009"),
    ]
    assert obs["component"][0]["valueQuantity"]["value"] == 6
    assert obs["focus"] == [{"reference": "Condition/itp-1-dx"}]
    # the 6-month platelet count and the baseline
    assert obs["derivedFrom"] == [
        {"reference": "Observation/itp-1-o5"},
        {"reference": "Observation/itp-1-o2"},
    ]


def test_writeback_codes_per_response(cohort: CohortScore) -> None:
    found = entries(cohort)
    snomed = {
        key: [c["code"] for c in e["resource"]["valueCodeableConcept"]["coding"][1:]]
        for key, e in found.items()
    }
    assert snomed["urn:example:mrn|itp-1|m3"] == ["103337004"]  # PR
    assert snomed["urn:example:mrn|itp-2|m3"] == ["266721009"]  # NR
    assert snomed["urn:example:mrn|itp-2|m6"] == []  # NE: no SNOMED equivalent


def test_writeback_ne_uses_target_date_and_no_derivation(cohort: CohortScore) -> None:
    obs = entries(cohort)["urn:example:mrn|itp-2|m6"]["resource"]
    assert obs["effectiveDateTime"] == "2021-09-10"  # 2021-03-10 + 6 months
    assert "derivedFrom" not in obs


def test_writeback_aiha_cr_cites_markers(cohort: CohortScore) -> None:
    obs = entries(cohort)["urn:example:mrn|aiha-1|m3"]["resource"]
    refs = [r["reference"] for r in obs["derivedFrom"]]
    assert len(refs) == 4  # Hb, baseline Hb, LDH, indirect bilirubin
    assert all(r.startswith("Observation/aiha-1-o") for r in refs)


def test_writeback_is_deterministic(cohort: CohortScore) -> None:
    assert to_bundle(cohort) == to_bundle(run(DATA / "cohort"))


def test_writeback_subject_without_server_id() -> None:
    patient = {"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "9"}]}
    bundle = orjson.loads((DATA / "case_report_transaction.json").read_bytes())
    bundle["entry"][0]["resource"] = patient
    from fhir_cyclo.readers.fhir import iter_document

    cohort_ = score(extract(iter_document(bundle, "memory")))
    obs = to_bundle(cohort_)["entry"][0]["resource"]
    assert obs["subject"] == {"reference": "Patient?identifier=urn:mrn|9"}


def test_writeback_validates_as_fhir(cohort: CohortScore, case: CohortScore) -> None:
    from fhir.resources.R4B.bundle import Bundle

    for scored in (cohort, case):
        bundle = to_bundle(scored)
        assert len(bundle["entry"]) == 3 * len(scored.patients) > 0  # one per patient and month
        Bundle.model_validate(bundle)  # raises on any invalid resource
