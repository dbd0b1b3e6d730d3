"""Deterministic SYNTHETIC cases, scoring resources and searchset pages for the benchmark."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

SYSTEM = "http://fhir-cyclo.example.org/fhir/sid/bench"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"

# (analyte, UCUM unit, low, high, reference range or None): values stay inside check_case's
# plausible ranges so every generated case loads.
LAB_PANEL: tuple[tuple[str, str, float, float, tuple[float, float] | None], ...] = (
    ("hemoglobin", "g/dL", 6.0, 15.0, (12.0, 16.0)),
    ("platelets", "10*9/L", 5.0, 300.0, (150.0, 400.0)),
    ("reticulocytes", "10*9/L", 5.0, 120.0, None),
    ("ldh", "U/L", 150.0, 900.0, (120.0, 250.0)),
    ("creatinine", "mg/dL", 0.5, 2.0, (0.5, 1.1)),
    ("cyclosporine_trough", "ng/mL", 60.0, 250.0, (100.0, 150.0)),
)
DISEASES = ("warm_aiha", "itp", "prca_acquired")
MAX_LABS = 300


def _day(start: dt.date, days: int) -> str:
    return (start + dt.timedelta(days=days)).isoformat()


def lab_count(rng: random.Random) -> int:
    """Labs of one case: most cases have a few dozen or fewer, a long tail has hundreds.

    3 * 100**(u**3) for u uniform in [0, 1): median 5, mean about 28, 9 % of cases with 100 or
    more, max 300 (a case report with a few values next to a registry patient followed for years).
    """
    return min(MAX_LABS, int(3 * 100 ** (rng.random() ** 3)))


def case_data(index: int, seed: int = 7) -> dict[str, Any]:
    """One case (the case-file layout, as YAML/JSON case files hold it); same index, same case.

    Varies like real cases: 3 diseases (a thymoma only with some PRCA and a few others), 3 to
    300 labs, optional fields present or not (notes, reference ranges, interpretations, end
    dates, doses per day, second-line drugs, imaging, marrow, procedures, adverse events, birth
    date), partial dates (year or year-month) on birth dates, onsets and some labs, and a few
    value-less results (interpretation only).
    """
    rng = random.Random(seed * 1_000_003 + index)
    disease = DISEASES[index % len(DISEASES)]
    diagnosed = dt.date(2010, 1, 1) + dt.timedelta(days=rng.randrange(0, 3000))
    start = diagnosed + dt.timedelta(days=rng.randrange(30, 400))
    onset = diagnosed.isoformat()
    if rng.random() < 0.1:
        onset = onset[:7]  # the source gives the month only
    dx: dict[str, Any] = {
        "id": "dx",
        "concept": disease,
        "onset": onset,
        "clinical_status": "active",
    }
    if disease == "warm_aiha":
        dx["dat_pattern"] = rng.choice(["IgG", "IgG+C", "IgG+C"])
    if rng.random() < 0.5:
        dx["note"] = f"Synthetic benchmark diagnosis {index}"
    diagnoses = [dx]
    has_thymoma = (disease == "prca_acquired" and rng.random() < 0.6) or rng.random() < 0.05
    if has_thymoma:
        diagnoses.append(
            {
                "id": "thymoma",
                "concept": "thymoma",
                "onset": _day(diagnosed, -rng.randrange(100, 2000))[: rng.choice([4, 7, 10])],
                "abatement": _day(diagnosed, -rng.randrange(1, 99)),
                "clinical_status": "resolved",
                "histology": {"who_type": rng.choice(["A", "AB", "B1", "B2"])},
                "stage": {"system": "masaoka", "value": rng.choice(["I", "II", "III"])},
                "body_site": "thymus",
            }
        )
    dose: dict[str, Any] = {"value": rng.choice([3.0, 3.5, 4.0, 5.0]), "unit": "mg/kg/d"}
    if rng.random() < 0.8:
        dose["doses_per_day"] = 2
    csa: dict[str, Any] = {
        "id": "csa",
        "drug": "cyclosporine",
        "start": start.isoformat(),
        "status": "completed",
        "dose": dose,
        "route": "oral",
        "line": rng.randrange(2, 6),
        "reasons": ["dx"],
        "target_trough": {"low": 100, "high": 150},
    }
    if rng.random() < 0.7:
        csa["end"] = _day(start, rng.randrange(200, 700))
    else:
        csa["status"] = "active"
    treatments = [csa]
    if rng.random() < 0.7:
        treatments.append(
            {
                "id": "pred",
                "drug": "prednisone",
                "start": _day(diagnosed, 3),
                "end": _day(diagnosed, rng.randrange(60, 200)),
                "status": "completed",
                "dose": {"value": rng.choice([25.0, 50.0, 75.0]), "unit": "mg/d"},
                "route": "oral",
                "reasons": ["dx"],
            }
        )
    if rng.random() < 0.4:
        treatments.append(
            {
                "id": "ritux",
                "drug": "rituximab",
                "start": _day(diagnosed, rng.randrange(200, 300)),
                "status": "completed",
                "route": "intravenous",
                "reasons": ["dx"],
                "dosage_text": "375 mg/m2 weekly x 4",
            }
        )
    labs = []
    n_labs = lab_count(rng)
    spacing = max(1, 2000 // (n_labs // len(LAB_PANEL) + 1))  # days between panels
    for n in range(n_labs):
        analyte, unit, low, high, rr = LAB_PANEL[n % len(LAB_PANEL)]
        when = _day(start, -30 + spacing * (n // len(LAB_PANEL)) + n % 3)
        if rng.random() < 0.05:
            when = when[:7]  # "in March 2012"
        lab: dict[str, Any] = {"id": f"lab-{n:03d}", "analyte": analyte, "date": when}
        if analyte == "hemoglobin" and rng.random() < 0.03:
            lab["interpretation"] = "N"  # "Hb normal", no value given
            labs.append(lab)
            continue
        lab["value"] = round(rng.uniform(low, high), 1)
        lab["unit"] = unit
        if rr is not None and rng.random() < 0.8:
            lab["reference_range"] = {"low": rr[0], "high": rr[1]}
        if rng.random() < 0.2:
            lab["interpretation"] = rng.choice(["L", "N", "H"])
        if rng.random() < 0.03:
            lab["note"] = "haemolysed sample, repeated"
        labs.append(lab)
    imaging = []
    if rng.random() < 0.5:
        ct1: dict[str, Any] = {
            "id": "ct-1",
            "date": _day(start, 90),
            "modality": "CT",
            "finding": "No mediastinal mass",
            "response": rng.choice(["stable", "improved"]),
        }
        if has_thymoma:
            ct1["focus"] = "thymoma"
        imaging.append(ct1)
    if rng.random() < 0.3:
        imaging.append(
            {
                "id": "ct-2",
                "date": _day(start, 365),
                "modality": "CT",
                "finding": "Spleen 12 cm",
                "size_mm": float(rng.randrange(90, 160)),
            }
        )
    marrow: list[dict[str, Any]] = []
    if rng.random() < 0.6:
        marrow = [
            {
                "id": "bm-cell",
                "date": _day(diagnosed, 10),
                "finding": "cellularity",
                "value_percent": float(rng.randrange(20, 80)),
            },
            {
                "id": "bm-fib",
                "date": _day(diagnosed, 10),
                "finding": "reticulin_fibrosis",
                "grade": 1,
            },
        ]
    patient: dict[str, Any] = {"sex": rng.choice(["female", "male"]), "synthetic": True}
    birth = rng.random()
    if birth < 0.7:
        patient["birth_date"] = f"{rng.randrange(1940, 2000)}-{rng.randrange(1, 13):02d}-15"
    elif birth < 0.9:
        patient["birth_date"] = str(rng.randrange(1940, 2000))  # de-identified: year only
    case: dict[str, Any] = {
        "identifier": {"system": SYSTEM, "value": f"bench-{index:06d}"},
        "patient": patient,
        "diagnoses": diagnoses,
        "treatments": treatments,
        "labs": labs,
        "imaging": imaging,
        "marrow": marrow,
        "procedures": [],
        "adverse_events": [],
    }
    if disease == "itp" and rng.random() < 0.3:
        case["procedures"].append(
            {
                "id": "splenectomy",
                "procedure": "splenectomy",
                "performed": _day(diagnosed, rng.randrange(100, 400)),
                "reasons": ["dx"],
            }
        )
    if rng.random() < 0.3:
        case["adverse_events"].append(
            {
                "id": "ae1",
                "event": "creatinine_increased",
                "grade": rng.randrange(1, 3),
                "date": _day(start, rng.randrange(30, 150)),
                "serious": False,
                "outcome": "resolved",
                "suspect": ["csa"],
            }
        )
    return case


def write_case_files(folder: Path, count: int, seed: int = 7) -> list[Path]:
    """`count` case JSON files in `folder` (one case per file: export streams them one by one)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"case-{i:06d}.json"
        path.write_bytes(orjson.dumps(case_data(i, seed)))
        paths.append(path)
    return paths


# --- searchset pages (import) -------------------------------------------------------------------

# LOINC codes the scoring config knows (hemoglobin, platelets, reticulocytes) and their units.
_SCORED = (
    ("718-7", "g/dL", 6.0, 15.0),
    ("777-3", "10*9/L", 5.0, 300.0),
    ("60474-4", "10*9/L", 5.0, 120.0),
)


def observation(i: int, patients: int, rng: random.Random) -> dict[str, Any]:
    """A searchset Observation as a server returns it (meta, absolute subject, reference range)."""
    code, unit, low, high = _SCORED[i % len(_SCORED)]
    day = dt.date(2018, 1, 1) + dt.timedelta(days=rng.randrange(0, 1500))
    return {
        "resourceType": "Observation",
        "id": f"obs-{i:07d}",
        "meta": {"versionId": "1", "lastUpdated": "2024-05-01T10:00:00.000Z"},
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/pat-{i % patients:05d}"},
        "effectiveDateTime": day.isoformat(),
        "valueQuantity": {
            "value": round(rng.uniform(low, high), 1),
            "unit": unit,
            "system": UCUM,
            "code": unit,
        },
        "referenceRange": [
            {
                "low": {"value": low, "unit": unit, "system": UCUM, "code": unit},
                "high": {"value": high, "unit": unit, "system": UCUM, "code": unit},
            }
        ],
    }


def searchset_pages(
    total: int, page_size: int = 100, patients: int = 200, seed: int = 11
) -> list[bytes]:
    """`total` Observations as searchset Bundle pages (bytes, as a server sends them)."""
    rng = random.Random(seed)
    pages = []
    base = "http://127.0.0.1:8080/fhir"
    for first in range(0, total, page_size):
        entries = [
            {
                "fullUrl": f"{base}/Observation/obs-{i:07d}",
                "resource": observation(i, patients, rng),
                "search": {"mode": "match"},
            }
            for i in range(first, min(total, first + page_size))
        ]
        page: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": [{"relation": "self", "url": f"{base}/Observation?_offset={first}"}],
            "entry": entries,
        }
        if first + page_size < total:
            page["link"].append(
                {"relation": "next", "url": f"{base}/Observation?_offset={first + page_size}"}
            )
        pages.append(orjson.dumps(page))
    return pages


def scoring_resources(patients: int, seed: int = 13) -> Iterator[dict[str, Any]]:
    """Patient, Condition, cyclosporine MedicationStatement and 12 labs for each of `patients`."""
    rng = random.Random(seed)
    for p in range(patients):
        pid = f"pat-{p:05d}"
        subject = {"reference": f"Patient/{pid}"}
        start = dt.date(2015, 1, 1) + dt.timedelta(days=rng.randrange(0, 2000))
        itp = p % 2 == 0
        yield {
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": SYSTEM, "value": pid}],
            "gender": "female" if p % 3 else "male",
        }
        yield {
            "resourceType": "Condition",
            "id": f"{pid}-dx",
            "code": {
                "coding": [
                    {"system": "http://snomed.info/sct", "code": "2897005" if itp else "413603009"}
                ]
            },
            "subject": subject,
        }
        yield {
            "resourceType": "MedicationStatement",
            "id": f"{pid}-csa",
            "status": "completed",
            "medicationCodeableConcept": {
                "coding": [
                    {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "3008"}
                ]
            },
            "subject": subject,
            "effectivePeriod": {"start": start.isoformat()},
        }
        code, unit, low, high = _SCORED[0] if not itp else _SCORED[1]
        for k, offset in enumerate((-7, 20, 45, 80, 100, 150, 180, 210, 300, 360, 400, 500)):
            yield {
                "resourceType": "Observation",
                "id": f"{pid}-lab-{k}",
                "status": "final",
                "code": {"coding": [{"system": LOINC, "code": code}]},
                "subject": subject,
                "effectiveDateTime": (start + dt.timedelta(days=offset)).isoformat(),
                "valueQuantity": {
                    "value": round(rng.uniform(low, high), 1),
                    "unit": unit,
                    "system": UCUM,
                    "code": unit,
                },
            }


# --- scoring input as a Bulk Data export would hold it -------------------------------------------

# (disease, Condition coding system, code, scored lab LOINC, unit, low, high); AIHA also has
# LDH (2532-0) and indirect bilirubin (1971-1) next to its Hb.
_SCORING_DISEASES = (
    ("ITP", "http://snomed.info/sct", "2897005", "777-3", "10*9/L", 5.0, 300.0),
    ("AIHA", "http://snomed.info/sct", "413603009", "718-7", "g/dL", 6.0, 15.0),
    ("PRCA", "http://snomed.info/sct", "50715003", "718-7", "g/dL", 4.0, 14.0),
    ("ITP", "http://hl7.org/fhir/sid/icd-10-cm", "D69.3", "777-3", "10*9/L", 5.0, 300.0),
)
_AIHA_MARKERS = (("2532-0", "U/L", 150.0, 900.0, 250.0), ("1971-1", "mg/dL", 0.2, 3.0, 0.8))
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def scoring_patient(p: int, rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    """One patient's resources by type, varying like registry data: 3 diseases (SNOMED or
    ICD-10-CM), 3 to 300 results, reference ranges present or not, some partial dates, a few
    value-less or unusable results, patients without a cyclosporine start or disease."""
    pid = f"pat-{p:06d}"
    subject = {"reference": f"Patient/{pid}"}
    disease, system, code, loinc, unit, low, high = _SCORING_DISEASES[p % len(_SCORING_DISEASES)]
    start = dt.date(2012, 1, 1) + dt.timedelta(days=rng.randrange(0, 3000))
    out: dict[str, list[dict[str, Any]]] = {
        "Patient": [
            {
                "resourceType": "Patient",
                "id": pid,
                "meta": {"versionId": "1", "lastUpdated": "2025-01-01T00:00:00Z"},
                "identifier": [{"system": SYSTEM, "value": pid}],
                "gender": rng.choice(["female", "male", "female", "male", "unknown"]),
                "birthDate": str(rng.randrange(1940, 2005)),
            }
        ],
        "Condition": [],
        "MedicationStatement": [],
        "Observation": [],
    }
    if rng.random() < 0.97:  # a few patients carry no scored disease
        out["Condition"].append(
            {
                "resourceType": "Condition",
                "id": f"{pid}-dx",
                "code": {"coding": [{"system": system, "code": code}]},
                "subject": subject,
                **({"onsetDateTime": start.isoformat()[:7]} if rng.random() < 0.5 else {}),
            }
        )
    if rng.random() < 0.97:  # ... and a few no cyclosporine start
        when = start.isoformat()
        if rng.random() < 0.05:
            when = when[:7]  # "started in March"
        out["MedicationStatement"].append(
            {
                "resourceType": "MedicationStatement",
                "id": f"{pid}-csa",
                "status": rng.choice(["completed", "active"]),
                "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "3008"}]},
                "subject": subject,
                "effectivePeriod": {"start": when},
            }
        )
    panels: list[tuple[str, str, float, float, float | None]] = [(loinc, unit, low, high, None)]
    if disease == "AIHA":
        panels += list(_AIHA_MARKERS)
    n = lab_count(rng)
    spacing = max(1, 900 // n)
    for k in range(n):
        lab_code, lab_unit, lo, hi, upper = panels[k % len(panels)]
        day = start + dt.timedelta(days=-30 + spacing * k + rng.randrange(0, 3))
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "id": f"{pid}-lab-{k}",
            "status": "final" if rng.random() < 0.99 else "entered-in-error",
            "code": {"coding": [{"system": LOINC, "code": lab_code}]},
            "subject": subject,
            "effectiveDateTime": day.isoformat() if rng.random() > 0.03 else day.isoformat()[:7],
        }
        if lab_code == "718-7" and rng.random() < 0.02:
            obs["interpretation"] = [{"coding": [{"system": _INTERP, "code": "N"}]}]
        else:
            value = round(rng.uniform(lo, hi), 1)
            obs["valueQuantity"] = {"value": value, "unit": lab_unit, "system": UCUM}
            obs["valueQuantity"]["code"] = lab_unit
            if upper is not None and rng.random() < 0.7:
                obs["referenceRange"] = [{"high": {"value": upper, "unit": lab_unit}}]
        out["Observation"].append(obs)
    return out


_INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def write_scoring_export(
    folder: Path, patients: int, seed: int = 13, manifest: bool = False
) -> int:
    """`patients` patients as per-type NDJSON files (Bulk Data layout: a patient's resources
    spread over the files); with `manifest`, a Bulk Data manifest.json names them. Returns the
    number of resources written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = ("Patient", "Condition", "MedicationStatement", "Observation")
    files = {t: (folder / f"{t}.ndjson").open("wb") for t in names}
    counts = dict.fromkeys(names, 0)
    try:
        for p in range(patients):
            for rtype, resources in scoring_patient(p, rng).items():
                fh = files[rtype]
                for r in resources:
                    fh.write(orjson.dumps(r) + b"\n")
                counts[rtype] += len(resources)
    finally:
        for fh in files.values():
            fh.close()
    if manifest:
        doc = {
            "transactionTime": "2025-01-01T00:00:00Z",
            "request": "http://127.0.0.1/fhir/$export?_type=" + ",".join(names),
            "requiresAccessToken": False,
            "output": [{"type": t, "url": f"{t}.ndjson", "count": counts[t]} for t in names],
            "error": [],
        }
        (folder / "manifest.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return sum(counts.values())
