"""Writes the DERIVED real-world test files from the ORIGINAL Synthea Bundles (deterministic)."""

# Originals are never modified: a derived file holds original resources unchanged (whole record,
# or for the smaller variants every resource of the types scoring reads) plus APPENDED entries (a
# Condition, a cyclosporine MedicationRequest/-Statement, maybe a Medication), each new resource
# tagged TAG. Ids are uuid5 of a fixed namespace and gzip has mtime 0, so re-running gives the
# same bytes; tests/realworld/test_corpus.py regenerates into a temporary folder and compares.
# Run: python -m tools.realworld.make_derived [OUT]   (OUT defaults to tests/realworld/data)
from __future__ import annotations

import copy
import gzip
import json
import sys
import uuid
from pathlib import Path
from typing import Any

Json = dict[str, Any]
DATA = Path(__file__).resolve().parents[2] / "tests" / "realworld" / "data"
SYN = DATA / "original" / "synthea-r4"
NS = uuid.UUID("6f0b1c52-5c1e-4d0c-9a43-0c7c1f2a2400")
TAG = {
    "system": "https://fhir-cyclo.example/tags",
    "code": "derived",
    "display": "Derived by fhir-cyclo corpus: added to a public record, not part of it",
}
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CSA: Json = {
    "coding": [{"system": RXNORM, "code": "3008", "display": "cyclosporine"}],
    "text": "cyclosporine",
}
# The resource types scoring reads: the subset files keep every original resource of these.
SCORED_TYPES = ("Patient", "Condition", "Observation", "Medication", "MedicationRequest")

FILES = {
    "damion": "Damion_Frami_9246eb82-afc3-4a9a-8d03-47fdc2273007.json",
    "granville": "Granville_Crooks_271033b4-ab72-469d-87e2-bbd6c6ecec1f.json",
    "micah": "Micah_Schinner_d4d72610-ec40-42ed-b34f-09e286181ee9.json",
}
PLT_UNITS = [
    "10*3/uL",
    "x10(3)/mcL",
    "Thousand/uL",
    "THOU/uL",
    "10^3/µL",
    "x10E3/uL",
    "K/µL",
    "/nL",
    "10*9/L",
]
HB_UNITS = {"g/dL": 1.0, "g/L": 10.0, "mmol/L": 0.6206}  # TM s2: 1 g/dL = 10 g/L = 0.6206 mmol/L


def uid(name: str) -> str:
    return str(uuid.uuid5(NS, name))


def load(key: str) -> Json:
    data: Json = json.loads((SYN / FILES[key]).read_text(encoding="utf-8"))
    return data


def patient_id(bundle: Json) -> str:
    return str(
        next(
            e["resource"]["id"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "Patient"
        )
    )


def condition(name: str, pid: str, codings: list[Json], text: str, onset: str) -> Json:
    terminology = "http://terminology.hl7.org/CodeSystem/"
    return {
        "resourceType": "Condition",
        "id": uid(name + "/Condition"),
        "meta": {"tag": [TAG]},
        "clinicalStatus": {
            "coding": [{"system": terminology + "condition-clinical", "code": "active"}]
        },
        "verificationStatus": {
            "coding": [{"system": terminology + "condition-ver-status", "code": "confirmed"}]
        },
        "category": [
            {
                "coding": [
                    {"system": terminology + "condition-category", "code": "problem-list-item"}
                ]
            }
        ],
        "code": {"coding": codings, "text": text},
        "subject": {"reference": "urn:uuid:" + pid},
        "onsetDateTime": onset,
        "recordedDate": onset,
    }


def med_request(name: str, pid: str, start: str, medication: str) -> list[Json]:
    """A cyclosporine MedicationRequest (+ a Medication when medication == 'separate')."""
    mr: Json = {
        "resourceType": "MedicationRequest",
        "id": uid(name + "/MedicationRequest"),
        "meta": {"tag": [TAG]},
        "status": "active",
        "intent": "order",
        "subject": {"reference": "urn:uuid:" + pid},
        "authoredOn": start,
        "dosageInstruction": [
            {
                "text": "cyclosporine 3 mg/kg/day orally in two divided doses",
                "timing": {
                    "repeat": {
                        "boundsPeriod": {"start": start},
                        "frequency": 2,
                        "period": 1,
                        "periodUnit": "d",
                    }
                },
            }
        ],
    }
    out = [mr]
    if medication == "concept":
        mr["medicationCodeableConcept"] = copy.deepcopy(CSA)
    elif medication == "contained":
        mr["contained"] = [{"resourceType": "Medication", "id": "csa", "code": copy.deepcopy(CSA)}]
        mr["medicationReference"] = {"reference": "#csa"}
    else:
        med: Json = {
            "resourceType": "Medication",
            "id": uid(name + "/Medication"),
            "meta": {"tag": [TAG]},
            "code": copy.deepcopy(CSA),
        }
        out.append(med)
        mr["medicationReference"] = {"reference": "urn:uuid:" + med["id"]}
    return out


def med_statement(name: str, pid: str, start: str) -> Json:
    return {
        "resourceType": "MedicationStatement",
        "id": uid(name + "/MedicationStatement"),
        "meta": {"tag": [TAG]},
        "status": "active",
        "medicationCodeableConcept": copy.deepcopy(CSA),
        "subject": {"reference": "urn:uuid:" + pid},
        "effectivePeriod": {"start": start},
        "dateAsserted": start,
    }


def entry(resource: Json) -> Json:
    return {
        "fullUrl": "urn:uuid:" + resource["id"],
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }


def is_derived(resource: Json) -> bool:
    return bool(resource.get("meta", {}).get("tag") == [TAG])


def subset(bundle: Json) -> Json:
    """The same Bundle keeping only entries of the types scoring reads (whole, unchanged)."""
    out = {k: v for k, v in bundle.items() if k != "entry"}
    out["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] in SCORED_TYPES]
    return out


def dump(obj: Json, path: Path) -> None:
    # Compact: the corpus stays a few MB; `python -m json.tool FILE` shows it indented.
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    path.write_text(text + "\n", encoding="utf-8")


def plans() -> dict[str, tuple[str, list[Json], bool]]:
    """name -> (original, added resources, whole record (True) or the scored types only)."""
    d_pid = patient_id(load("damion"))
    g_pid = patient_id(load("granville"))
    m_pid = patient_id(load("micah"))
    return {
        # D1: ITP, SNOMED 2897005 + ICD-10-CM D69.3; MedicationRequest -> separate Medication.
        "d1-damion-itp": (
            "damion",
            [
                condition(
                    "d1",
                    d_pid,
                    [
                        {
                            "system": SNOMED,
                            "code": "2897005",
                            "display": "Immune thrombocytopenia (disorder)",
                        },
                        {
                            "system": ICD10CM,
                            "code": "D69.3",
                            "display": "Immune thrombocytopenic purpura",
                        },
                    ],
                    "Immune thrombocytopenia",
                    "2015-11-23",
                ),
                *med_request("d1", d_pid, "2015-12-08", "separate"),
            ],
            True,
        ),
        # D2: warm AIHA, SNOMED 3978000 + ICD-10-CM D59.11; MedicationStatement.
        "d2-granville-waiha": (
            "granville",
            [
                condition(
                    "d2",
                    g_pid,
                    [
                        {
                            "system": SNOMED,
                            "code": "3978000",
                            "display": "Hemolytic anemia due to warm antibody",
                        },
                        {
                            "system": ICD10CM,
                            "code": "D59.11",
                            "display": "Warm autoimmune hemolytic anemia",
                        },
                    ],
                    "Warm autoimmune hemolytic anemia",
                    "2004-06-07",
                ),
                med_statement("d2", g_pid, "2004-07-23"),
            ],
            True,
        ),
        # D3: ITP coded ONLY as SNOMED 32273002 (issue 24); contained Medication.
        "d3-micah-itp-32273002": (
            "micah",
            [
                condition(
                    "d3",
                    m_pid,
                    [
                        {
                            "system": SNOMED,
                            "code": "32273002",
                            "display": "Idiopathic thrombocytopenic purpura (disorder)",
                        }
                    ],
                    "Idiopathic thrombocytopenic purpura",
                    "2017-11-29",
                ),
                *med_request("d3", m_pid, "2017-12-01", "contained"),
            ],
            True,
        ),
        # D4: the same patient as D3 (so only the scored types are kept), warm AIHA coded ONLY as
        # ICD-10-CM D59.11; MedicationRequest with medicationCodeableConcept.
        "d4-micah-waiha-icd": (
            "micah",
            [
                condition(
                    "d4",
                    m_pid,
                    [
                        {
                            "system": ICD10CM,
                            "code": "D59.11",
                            "display": "Warm autoimmune hemolytic anemia",
                        }
                    ],
                    "Warm autoimmune hemolytic anemia",
                    "2018-01-26",
                ),
                *med_request("d4", m_pid, "2018-01-27", "concept"),
            ],
            False,
        ),
    }


def is_code(resource: Json, code: str) -> bool:
    codings = resource.get("code", {}).get("coding", [])
    return resource.get("resourceType") == "Observation" and any(
        c.get("code") == code for c in codings
    )


def _rewrite(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: (ids.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, ids))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rewrite(v, ids) for v in value]
    return value


def variants(d1: Json, out: Path) -> None:
    small = subset(d1)
    # Bundle types: transaction = derived/d1 itself; collection/searchset: the scored types.
    col = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": e["fullUrl"], "resource": e["resource"]} for e in small["entry"]],
    }
    dump(col, out / "bundle-collection.json")
    searchset = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(small["entry"]),
        "entry": [
            {"fullUrl": e["fullUrl"], "resource": e["resource"], "search": {"mode": "match"}}
            for e in small["entry"]
        ],
    }
    dump(searchset, out / "bundle-searchset.json")
    # NDJSON per type, whole record: Synthea's urn:uuid references are rewritten to Type/id, as a
    # server export holds them (the only change; SOURCES.md says so).
    ids = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in d1["entry"]
    }
    by_type: dict[str, list[Json]] = {}
    for e in d1["entry"]:
        by_type.setdefault(e["resource"]["resourceType"], []).append(_rewrite(e["resource"], ids))
    nd, bulk = out / "ndjson", out / "bulk"
    nd.mkdir(parents=True, exist_ok=True)
    bulk.mkdir(parents=True, exist_ok=True)
    manifest: Json = {
        "transactionTime": "2024-01-01T00:00:00Z",
        "request": "https://example.org/fhir/Patient/$export",
        "requiresAccessToken": False,
        "output": [],
        "error": [],
    }
    for kind in sorted(by_type):
        lines = "".join(
            json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in by_type[kind]
        )
        (nd / f"{kind}.ndjson").write_text(lines, encoding="utf-8")
        name = f"{kind}.000.ndjson.gz"
        with gzip.GzipFile(bulk / name, "wb", mtime=0) as fh:
            fh.write(lines.encode("utf-8"))
        manifest["output"].append({"type": kind, "url": name, "count": len(by_type[kind])})
    dump(manifest, bulk / "manifest.json")
    # A client's log beside the output (the line shape of smart-on-fhir's log.ndjson, values ours).
    count = sum(len(v) for v in by_type.values())
    (bulk / "log.ndjson").write_text(
        '{"exportId": "corpus-d1", "timestamp": "2024-01-01T00:00:00Z", "eventId": "kickoff", '
        '"eventDetail": {"exportUrl": "https://example.org/fhir/Patient/$export"}}\n'
        '{"exportId": "corpus-d1", "timestamp": "2024-01-01T00:01:00Z", "eventId": '
        f'"export_complete", "eventDetail": {{"files": {len(by_type)}, "resources": {count}}}}}\n',
        encoding="utf-8",
    )
    # Medication contained instead of separate (scored types only).
    cont = copy.deepcopy(small)
    cont["entry"] = [
        e
        for e in cont["entry"]
        if not (e["resource"]["resourceType"] == "Medication" and is_derived(e["resource"]))
    ]
    for e in cont["entry"]:
        r = e["resource"]
        if r["resourceType"] == "MedicationRequest" and is_derived(r):
            r["contained"] = [
                {"resourceType": "Medication", "id": "csa", "code": copy.deepcopy(CSA)}
            ]
            r["medicationReference"] = {"reference": "#csa"}
    dump(cont, out / "medication-contained.json")
    # Units: a small collection Bundle per spelling holding, whole and unchanged except the unit
    # (and the Hb value for g/L, mmol/L), the Patient, the derived resources and every PLT/Hb
    # Observation. Same numbers for every platelet spelling (all mean 10^9/L).
    keep = [
        e
        for e in d1["entry"]
        if e["resource"]["resourceType"] == "Patient"
        or (
            e["resource"]["resourceType"] in ("Condition", "MedicationRequest", "Medication")
            and is_derived(e["resource"])
        )
    ]
    labs = [
        e for e in d1["entry"] if is_code(e["resource"], "777-3") or is_code(e["resource"], "718-7")
    ]
    for i, unit in enumerate(PLT_UNITS):
        b: Json = {"resourceType": "Bundle", "type": "collection", "entry": []}
        for e in keep + labs:
            r = copy.deepcopy(e["resource"])
            if is_code(r, "777-3"):
                q = r["valueQuantity"]
                q["unit"] = unit
                if unit in ("10*3/uL", "/nL", "10*9/L"):
                    q["system"], q["code"] = "http://unitsofmeasure.org", unit
                else:  # not UCUM: no system/code, the lab's spelling only in unit
                    q.pop("system", None)
                    q.pop("code", None)
            b["entry"].append({"fullUrl": e["fullUrl"], "resource": r})
        safe = unit.replace("/", "_per_").replace("*", "x").replace("^", "e")
        safe = safe.replace("(", "").replace(")", "").replace("µ", "micro")
        dump(b, out / "units" / f"plt-{i:02d}-{safe}.json")
    for unit, factor in HB_UNITS.items():
        b = {"resourceType": "Bundle", "type": "collection", "entry": []}
        for e in keep + labs:
            r = copy.deepcopy(e["resource"])
            if is_code(r, "718-7"):
                q = r["valueQuantity"]
                q["value"] = round(q["value"] * factor, 4) if factor != 1.0 else q["value"]
                q["unit"] = q["code"] = unit
                q["system"] = "http://unitsofmeasure.org"
                if unit == "mmol/L":  # LOINC for Hb in moles (TM s1): 59260-0
                    name = "Hemoglobin [Moles/volume] in Blood"
                    r["code"] = {
                        "coding": [
                            {"system": "http://loinc.org", "code": "59260-0", "display": name}
                        ],
                        "text": name,
                    }
            b["entry"].append({"fullUrl": e["fullUrl"], "resource": r})
        dump(b, out / "units" / f"hb-{unit.replace('/', '_per_')}.json")


def main(out: Path = DATA) -> None:
    built: dict[str, Json] = {}
    for name, (key, added, whole) in plans().items():
        bundle = load(key)
        bundle["entry"].extend(entry(r) for r in added)
        built[name] = bundle
        dump(bundle if whole else subset(bundle), out / "derived" / f"{name}.derived.json")
    variants(built["d1-damion-itp"], out / "variants" / "d1-damion-itp")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)
