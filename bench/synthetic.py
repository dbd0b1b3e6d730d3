"""Deterministic SYNTHETIC cases (about 60 resources each) and searchset pages for the benchmark."""

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
LABS_PER_CASE = 46
DISEASES = ("warm_aiha", "itp", "prca_acquired")


def _day(start: dt.date, days: int) -> str:
    return (start + dt.timedelta(days=days)).isoformat()


def case_data(index: int, seed: int = 7) -> dict[str, Any]:
    """One case (the case-file layout, as YAML/JSON case files hold it); same index, same case.

    About 60 resources: Patient, 2 Conditions (+2 DAT Observations for AIHA), 3
    MedicationStatements, 46 labs, 2 imaging and 2 marrow Observations, a Procedure and an
    AdverseEvent.
    """
    rng = random.Random(seed * 1_000_003 + index)
    disease = DISEASES[index % len(DISEASES)]
    diagnosed = dt.date(2010, 1, 1) + dt.timedelta(days=rng.randrange(0, 3000))
    start = diagnosed + dt.timedelta(days=rng.randrange(30, 400))
    dx: dict[str, Any] = {
        "id": "dx",
        "concept": disease,
        "onset": diagnosed.isoformat(),
        "clinical_status": "active",
    }
    if disease == "warm_aiha":
        dx["dat_pattern"] = "IgG+C"
    if rng.random() < 0.5:
        dx["note"] = f"Synthetic benchmark diagnosis {index}"
    thymoma: dict[str, Any] = {
        "id": "thymoma",
        "concept": "thymoma",
        "onset": _day(diagnosed, -rng.randrange(100, 2000)),
        "abatement": _day(diagnosed, -rng.randrange(1, 99)),
        "clinical_status": "resolved",
        "histology": {"who_type": rng.choice(["A", "AB", "B1", "B2"])},
        "stage": {"system": "masaoka", "value": rng.choice(["I", "II", "III"])},
        "body_site": "thymus",
    }
    csa: dict[str, Any] = {
        "id": "csa",
        "drug": "cyclosporine",
        "start": start.isoformat(),
        "end": _day(start, rng.randrange(200, 700)),
        "status": "completed",
        "dose": {"value": rng.choice([3.0, 3.5, 4.0, 5.0]), "unit": "mg/kg/d", "doses_per_day": 2},
        "route": "oral",
        "line": rng.randrange(2, 6),
        "reasons": ["dx"],
        "target_trough": {"low": 100, "high": 150},
    }
    pred: dict[str, Any] = {
        "id": "pred",
        "drug": "prednisone",
        "start": _day(diagnosed, 3),
        "end": _day(diagnosed, rng.randrange(60, 200)),
        "status": "completed",
        "dose": {"value": rng.choice([25.0, 50.0, 75.0]), "unit": "mg/d"},
        "route": "oral",
        "reasons": ["dx"],
    }
    ritux: dict[str, Any] = {
        "id": "ritux",
        "drug": "rituximab",
        "start": _day(diagnosed, rng.randrange(200, 300)),
        "status": "completed",
        "route": "intravenous",
        "reasons": ["dx"],
        "dosage_text": "375 mg/m2 weekly x 4",
    }
    labs = []
    for n in range(LABS_PER_CASE):
        analyte, unit, low, high, rr = LAB_PANEL[n % len(LAB_PANEL)]
        lab: dict[str, Any] = {
            "id": f"lab-{n:03d}",
            "analyte": analyte,
            "date": _day(start, -30 + 14 * (n // len(LAB_PANEL)) + n % 3),
            "value": round(rng.uniform(low, high), 1),
            "unit": unit,
        }
        if rr is not None:
            lab["reference_range"] = {"low": rr[0], "high": rr[1]}
        if n % 5 == 0:
            lab["interpretation"] = rng.choice(["L", "N", "H"])
        labs.append(lab)
    imaging = [
        {
            "id": "ct-1",
            "date": _day(start, 90),
            "modality": "CT",
            "finding": "No mediastinal mass",
            "response": rng.choice(["stable", "improved"]),
            "focus": "thymoma",
        },
        {
            "id": "ct-2",
            "date": _day(start, 365),
            "modality": "CT",
            "finding": "Spleen 12 cm",
            "size_mm": float(rng.randrange(90, 160)),
        },
    ]
    marrow = [
        {
            "id": "bm-cell",
            "date": _day(diagnosed, 10),
            "finding": "cellularity",
            "value_percent": float(rng.randrange(20, 80)),
        },
        {"id": "bm-fib", "date": _day(diagnosed, 10), "finding": "reticulin_fibrosis", "grade": 1},
    ]
    return {
        "identifier": {"system": SYSTEM, "value": f"bench-{index:06d}"},
        "patient": {
            "sex": rng.choice(["female", "male"]),
            "birth_date": f"{rng.randrange(1940, 2000)}-{rng.randrange(1, 13):02d}-15",
            "synthetic": True,
        },
        "diagnoses": [dx, thymoma],
        "treatments": [csa, pred, ritux],
        "labs": labs,
        "imaging": imaging,
        "marrow": marrow,
        "procedures": [
            {
                "id": "splenectomy",
                "procedure": "splenectomy",
                "performed": _day(diagnosed, rng.randrange(100, 400)),
                "reasons": ["dx"],
            }
        ],
        "adverse_events": [
            {
                "id": "ae1",
                "event": "creatinine_increased",
                "grade": rng.randrange(1, 3),
                "date": _day(start, rng.randrange(30, 150)),
                "serious": False,
                "outcome": "resolved",
                "suspect": ["csa"],
            }
        ],
    }


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
