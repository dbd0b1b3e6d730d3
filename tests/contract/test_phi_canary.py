"""PHI canary: every command, on every warning path, with -v: no identifier, name, birth date or
phone number of a patient in any output line or log record.

The canaries are unique strings planted in case files, FHIR files, Bulk Data files and server
answers. Output *data* that must name patients (the --json report, exported Bundles) goes to
files and is not searched; everything a person or a log collector sees (stdout, stderr, every
log record at DEBUG) is.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import responses
import yaml

from fhir_cyclo.cli.app import main

from .helpers import BASE

ROOT = Path(__file__).resolve().parents[2]
CASE = ROOT / "fixtures" / "cases" / "thymoma-prca-isshiki.yaml"
ID_SYSTEM = "urn:oid:1.2.36.146.595.217.0.1"
IDS = ["CANARYID4417", "CANARYID5528", "CANARYID6639"]
NAMES = ["Qzvcanary", "Xylofakename"]
BIRTH = "1933-03-17"
PHONE = "555-0199-8742"
CANARIES = [*IDS, *NAMES, BIRTH, PHONE, PHONE.replace("-", "")]
LOINC = "http://loinc.org"
RX = "http://www.nlm.nih.gov/research/umls/rxnorm"


def patient_json(pid: str, value: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": ID_SYSTEM, "value": value}],
        "name": [{"family": NAMES[1], "given": [NAMES[0]]}],
        "birthDate": BIRTH,
        "telecom": [{"system": "phone", "value": PHONE}],
        "gender": "unknown",
    }


def by_identifier(value: str) -> dict[str, Any]:
    return {"identifier": {"system": ID_SYSTEM, "value": value}}


def lab(  # noqa: PLR0917 - a compact builder for one test
    oid: str, code: str, value: Any, unit: str, day: str, subject: dict[str, Any]
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": subject,
        "effectiveDateTime": day,
        "valueQuantity": {"value": value, "unit": unit},
    }


def warning_path_resources() -> list[dict[str, Any]]:
    """One resource set that walks every scoring warning, all naming canary patients."""
    p1 = by_identifier(IDS[0])
    unknown = by_identifier(IDS[2])  # no such Patient: "not a known Patient reference"
    return [
        patient_json("c1", IDS[0]),
        {
            "resourceType": "Patient",
            "identifier": [{"system": ID_SYSTEM, "value": IDS[1]}],
            "name": [{"text": NAMES[0]}],
        },
        # p1: AIHA and ITP coded (precedence warning), start only from a request (fallback),
        # partial dates, a text-only drug, missing markers, a bad unit, a bound, no value
        {
            "resourceType": "Condition",
            "id": "k1",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "413603009"}]},
            "subject": p1,
        },
        {
            "resourceType": "Condition",
            "id": "k2",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "2897005"}]},
            "subject": p1,
        },
        {
            "resourceType": "MedicationRequest",
            "id": "r1",
            "status": "active",
            "intent": "order",
            "authoredOn": "2022-01",
            "medicationCodeableConcept": {"text": "Neoral"},
            "subject": p1,
        },
        lab("h0", "718-7", 7.0, "g/dL", "2022-01", p1),
        lab("h3", "718-7", 12.5, "g/dL", "2022-04", p1),
        lab("h6", "718-7", 12.5, "furlongs", "2022-07-01", p1),
        {
            **lab("h7", "718-7", 12.5, "g/dL", "2022-07-01", p1),
            "valueQuantity": {"value": 9, "comparator": "<", "unit": "g/dL"},
        },
        {**lab("h8", "718-7", 0, "g/dL", "2022-07-02", p1), "valueQuantity": {"unit": "g/dL"}},
        lab("t3", "1975-2", 1.0, "mg/dL", "2022-04-02", p1),
        # p2 (no id): a Condition but no cyclosporine -> not scored, named by hash
        {
            "resourceType": "Condition",
            "id": "k3",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "2897005"}]},
            "subject": by_identifier(IDS[1]),
        },
        # subject that resolves to nobody, and a medication without a subject
        lab("u1", "777-3", 50, "10*9/L", "2022-01-01", unknown),
        {
            "resourceType": "MedicationStatement",
            "id": "s9",
            "status": "active",
            "medicationCodeableConcept": {"coding": [{"system": RX, "code": "3008"}]},
            "subject": unknown,
            "effectiveDateTime": "2022-01-01",
        },
        {
            "resourceType": "MedicationStatement",
            "id": "s10",
            "status": "active",
            "medicationReference": {"reference": "Medication/none"},
            "subject": p1,
        },
    ]


def write_cases(folder: Path) -> None:
    folder.mkdir()
    case = yaml.safe_load(CASE.read_text())
    case["identifier"] = {"system": ID_SYSTEM, "value": IDS[0]}
    case["patient"].update(
        name=f"{NAMES[0]} {NAMES[1]}", birth_date=BIRTH, telecom=[PHONE], sex="female"
    )
    (folder / "a.yaml").write_text(yaml.safe_dump(case))
    (folder / "b-duplicate.yaml").write_text(yaml.safe_dump(case))  # same identifier twice
    bad = dict(case, identifier={"system": ID_SYSTEM, "value": IDS[1]})
    bad["patient"] = dict(case["patient"], birth_date="1933-02-30")  # an impossible date
    (folder / "c-bad.yaml").write_text(yaml.safe_dump(bad))
    (folder / "d-broken.json").write_text('{"identifier": {"value": "' + IDS[2] + '"')


def tx_response(request: Any) -> tuple[int, dict[str, str], str]:
    bundle = json.loads(request.body)
    if any(IDS[1] in json.dumps(e) for e in bundle["entry"]):
        body = {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": "processing", "diagnostics": "HAPI-0550: conflict"}
            ],
        }
        return 409, {"Content-Type": "application/fhir+json"}, json.dumps(body)
    entries = [
        {
            "response": {
                "status": "201 Created",
                "location": f"{e['request']['url'].split('?')[0]}/x{i}/_history/1",
            }
        }
        for i, e in enumerate(bundle["entry"])
    ]
    return (
        200,
        {"Content-Type": "application/fhir+json"},
        json.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": entries}),
    )


def search_response(request: Any) -> tuple[int, dict[str, str], str]:
    path = request.path_url.split("?")[0].rsplit("/", 1)[-1]
    resources = [r for r in warning_path_resources() if r["resourceType"] == path and r.get("id")]
    if path == "Patient" and IDS[2] in request.url:
        resources = []  # the identifier search that finds nobody
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }
    return 200, {"Content-Type": "application/fhir+json"}, json.dumps(bundle)


def bulk_script(rsps: responses.RequestsMock) -> None:
    status = f"{BASE}/bulkstatus/canary"
    rsps.get(f"{BASE}/Patient/$export", status=202, headers={"Content-Location": status})
    rsps.get(status, status=429, headers={"Retry-After": "0"})
    rsps.get(status, status=202, headers={"X-Progress": "50%", "Retry-After": "0"})
    files = f"{BASE}/Binary"
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in warning_path_resources():
        by_type.setdefault(r["resourceType"], []).append(r)
    output = [{"type": t, "url": f"{files}/{t}", "count": len(rs)} for t, rs in by_type.items()]
    rsps.get(
        status,
        status=200,
        json={
            "transactionTime": "t",
            "requiresAccessToken": True,
            "output": output,
            "error": [{"type": "OperationOutcome", "url": f"{files}/err"}],
        },
    )
    for t, rs in by_type.items():
        rsps.get(f"{files}/{t}", body="".join(json.dumps(r) + "\n" for r in rs))
    err = {
        "resourceType": "OperationOutcome",
        "issue": [
            {"severity": "error", "code": "processing", "diagnostics": "Procedure search failed"}
        ],
    }
    rsps.get(f"{files}/err", body=json.dumps(err) + "\n")
    rsps.delete(status, status=202)


def test_no_phi_in_any_output_or_log(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.chdir(tmp_path)  # the push journal and the default bulk folder land here
    monkeypatch.setenv("FHIR_CYCLO_TOKEN", "canary-token-not-phi")
    cases = tmp_path / "cases"
    write_cases(cases)
    ehr = tmp_path / "ehr.json"
    ehr.write_text(
        json.dumps(
            {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": r} for r in warning_path_resources()],
            }
        )
    )

    codes: dict[str, int] = {}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(
            f"{BASE}/metadata", json={"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}
        )
        rsps.add_callback(responses.POST, BASE, callback=tx_response)
        bulk_script(rsps)
        for kind in (
            "Patient",
            "Condition",
            "MedicationStatement",
            "MedicationAdministration",
            "MedicationRequest",
            "Observation",
            "Procedure",
            "Medication",
        ):
            rsps.add_callback(responses.GET, f"{BASE}/{kind}", callback=search_response)
        runs = {
            "export": ["-v", "export", str(cases), "--out", str(tmp_path / "out"), "--ndjson"],
            "validate": ["-v", "validate", str(cases), str(ehr)],
            "push": ["-v", "push", str(cases), "--server", BASE, "--no-progress"],
            "bulk-export": [
                "-v",
                "bulk-export",
                "--server",
                BASE,
                "--out",
                str(tmp_path / "bulk"),
                "--no-progress",
            ],
            "score files": [
                "-v",
                "score",
                str(ehr),
                str(tmp_path / "out"),
                str(tmp_path / "bulk"),
                "--json",
                str(tmp_path / "s.json"),
                "--table",
            ],
            "score server": ["-v", "score", "--server", BASE, "--json", str(tmp_path / "s2.json")],
            "score server identifier": [
                "-v",
                "score",
                "--server",
                BASE,
                "--identifier",
                f"{ID_SYSTEM}|{IDS[2]}",
            ],
            "score files identifier": [
                "-v",
                "score",
                str(ehr),
                "--identifier",
                f"{ID_SYSTEM}|{IDS[2]}",
            ],
        }
        seen: dict[str, str] = {}
        for name, argv in runs.items():
            caplog.clear()
            codes[name] = main(argv)
            out = capsys.readouterr()
            seen[name] = out.out + out.err + "\n".join(r.getMessage() for r in caplog.records)

    # The warning paths were really walked (else the test would prove nothing).
    everything = "\n".join(seen.values())
    for expected in (
        "no usable MedicationStatement; MedicationRequest used",
        "recognised by its text",
        "is not a known Patient reference",
        "not scored",
        "CR not reachable",
        "partial date",
        "scored as AIHA",
        "unknown unit",
        "export error",
        "failed",
        "HTTP 429",
    ):
        assert expected in everything, expected
    assert codes["push"] == 1 and codes["score server identifier"] == 1
    assert codes["score files"] == 0 and codes["bulk-export"] == 1
    leaks = {
        f"{name}: {line}"
        for name, text in seen.items()
        for line in text.splitlines()
        if any(c in line for c in CANARIES)
    }
    assert not leaks, "\n".join(sorted(leaks))


def test_loggable_url_masks_person_parameters() -> None:
    from fhir_cyclo.client.http import loggable_url

    url = f"{BASE}/Patient?identifier=urn%3Amrn%7C{IDS[0]}&_count=50&name={NAMES[0]}&birthdate={BIRTH}"
    assert loggable_url(url) == f"{BASE}/Patient?identifier=***&_count=50&name=***&birthdate=***"
    assert loggable_url(f"{BASE}/Observation?subject=Patient/1&code=x") == (
        f"{BASE}/Observation?subject=Patient/1&code=x"  # server ids and codes are not PHI
    )
