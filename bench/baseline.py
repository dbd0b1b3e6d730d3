"""Hand-written plain-dict builder of the synthetic cases' Bundles: the mapping benchmark floor."""

# It produces byte for byte the Bundle that `fhir-cyclo export` writes for a `synthetic.case_data`
# case, with no model and no validation: literal dicts filled from the raw case values, constant
# parts (codings, categories, code systems) looked up once from the terminology and shared between
# resources, as a hand-written exporter would, then `orjson.dumps`. `run.py` checks the bytes
# against the real export for every case it times.

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import orjson

from fhir_cyclo.core.terminology import Terminology

# The same uuid5 namespace and id recipe as fhir_cyclo.core.ids (a builder derives the same ids).
NAMESPACE = uuid.UUID("6f0f3c8e-2a4b-5d7e-9c1a-3b5e7d9f1a2c")
UCUM = "http://unitsofmeasure.org"
ITEM_SYSTEM = "http://fhir-cyclo.example.org/fhir/sid/case-item"
LOCAL = "http://fhir-cyclo.example.org/fhir"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def _num(value: float) -> int | float:
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else value


def _qty(value: float, unit: str) -> dict[str, Any]:
    return {"value": _num(value), "unit": unit, "system": UCUM, "code": unit}


class PlainBuilder:
    """`bundle_bytes(case_dict)`: the transaction Bundle JSON of one synthetic case."""

    def __init__(self, terms: Terminology) -> None:
        def cc(concept: Any) -> dict[str, Any]:
            return {"coding": [c.fhir() for c in concept.codings], "text": concept.text}

        def coding(entry: Any, text: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {"coding": [entry.fhir()]}
            if text:
                out["text"] = text
            return out

        self.analyte = {k: cc(v) for k, v in terms.analytes.items()}
        self.disease = {k: cc(v) for k, v in terms.diagnoses.items()}
        self.drug = {k: cc(v) for k, v in terms.drugs.items()}
        self.procedure = {k: cc(v) for k, v in terms.procedures.items()}
        self.event = {k: cc(v) for k, v in terms.adverse_events.items()}
        self.route = {k: coding(v) for k, v in terms.routes.items()}
        self.histology = {
            who: {
                "url": terms.histology_extension,
                "valueCodeableConcept": coding(entry, f"WHO type {who}"),
            }
            for who, entry in terms.histology.items()
        }
        self.thymus = [coding(terms.body_sites["thymus"])]
        self.marrow_site = coding(terms.body_sites["bone_marrow"])
        self.masaoka = coding(terms.staging_methods["masaoka"])
        self.pos = coding(terms.qualitative_values["POS"])
        self.status_code = coding(terms.imaging["disease_status_code"])
        self.finding_code = coding(terms.imaging["finding_code"])
        self.size_code = coding(terms.imaging["size_code"])
        self.responses = terms.imaging_responses
        self.marrow = {k: coding(e, e.display) for k, e in terms.marrow_findings.items()}
        self.grades = {
            g: {
                "url": terms.ae_grade_extension,
                "valueCodeableConcept": {
                    "coding": [e.fhir()],
                    "text": f"CTCAE v5.0 grade {g}",
                },
            }
            for g, e in terms.ae_grades.items()
        }
        self.lab_category = [{"coding": [{"system": OBS_CATEGORY, "code": "laboratory"}]}]
        self.imaging_category = [{"coding": [{"system": OBS_CATEGORY, "code": "imaging"}]}]
        self.condition_category = [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                        "code": "problem-list-item",
                    }
                ]
            }
        ]
        self.confirmed = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                    "code": "confirmed",
                }
            ]
        }
        self.clinical = {
            s: {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": s,
                    }
                ]
            }
            for s in ("active", "resolved")
        }
        self.interp = {
            c: [{"coding": [{"system": INTERPRETATION, "code": c}]}] for c in ("L", "N", "H", "POS")
        }
        self.trough_type = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/referencerange-meaning",
                    "code": "pre",
                }
            ]
        }
        self.ordered = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/dose-rate-type",
                    "code": "ordered",
                }
            ]
        }
        self.synthetic_meta = {
            "tag": [
                {
                    "system": f"{LOCAL}/CodeSystem/cyclo-local",
                    "code": "synthetic-data",
                    "display": "Synthetic data",
                }
            ]
        }
        self.serious = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness",
                    "code": "Non-serious",
                }
            ]
        }
        self.outcome = {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/adverse-event-outcome",
                    "code": "resolved",
                }
            ]
        }
        self.dat = terms.dat_patterns

    def bundle_bytes(self, c: dict[str, Any], *, ids: dict[str, str] | None = None) -> bytes:
        """Pretty Bundle bytes as export writes them; `ids` maps "Type|item" to precomputed ids."""
        return orjson.dumps(self.bundle(c, ids=ids), option=orjson.OPT_INDENT_2) + b"\n"

    def bundle(self, c: dict[str, Any], *, ids: dict[str, str] | None = None) -> dict[str, Any]:
        """The transaction Bundle of one case as plain dicts (constant parts shared)."""
        system, value = c["identifier"]["system"], c["identifier"]["value"]
        token = f"{system}|{value}"
        prefix = f"{system}|{value}|"

        def rid(rtype: str, item: str) -> str:
            if ids is not None:
                return ids[f"{rtype}|{item}"]
            return str(uuid.uuid5(NAMESPACE, f"{rtype}|{prefix}{item}"))

        entries: list[dict[str, Any]] = []
        add = entries.append

        def put(rtype: str, res: dict[str, Any]) -> None:
            rid_ = res["id"]
            add(
                {
                    "fullUrl": f"urn:uuid:{rid_}",
                    "resource": res,
                    "request": {"method": "PUT", "url": f"{rtype}/{rid_}"},
                }
            )

        def ident(item: str) -> list[dict[str, str]]:
            return [{"system": ITEM_SYSTEM, "value": prefix + item}]

        pid = rid("Patient", "patient")
        subject = {"reference": f"urn:uuid:{pid}"}
        p = c["patient"]
        add(
            {
                "fullUrl": f"urn:uuid:{pid}",
                "resource": {
                    "resourceType": "Patient",
                    "meta": self.synthetic_meta,
                    "identifier": [{"system": system, "value": value}],
                    "gender": p["sex"],
                    **({"birthDate": p["birth_date"]} if "birth_date" in p else {}),
                },
                "request": {
                    "method": "PUT",
                    "url": f"Patient?identifier={quote(token, safe=':/|._-~')}",
                },
            }
        )

        dx = c["diagnoses"][0]
        thymoma = c["diagnoses"][1] if len(c["diagnoses"]) > 1 else None
        dx_id = rid("Condition", "dx")
        dx_ref = {"reference": f"urn:uuid:{dx_id}"}
        thymoma_id = rid("Condition", "thymoma")
        dat_ids = []
        if dx.get("dat_pattern"):
            dat_ids = [
                (a, rid("Observation", f"dx.{a.replace('_', '-')}"))
                for a in self.dat[dx["dat_pattern"]]
            ]
        res: dict[str, Any] = {
            "resourceType": "Condition",
            "id": dx_id,
            "identifier": ident("dx"),
            "clinicalStatus": self.clinical["active"],
            "verificationStatus": self.confirmed,
            "category": self.condition_category,
            "code": self.disease[dx["concept"]],
            "subject": subject,
            "onsetDateTime": dx["onset"],
        }
        if dat_ids:
            res["evidence"] = [{"detail": [{"reference": f"urn:uuid:{i}"}]} for _, i in dat_ids]
        if dx.get("note"):
            res["note"] = [{"text": dx["note"]}]
        put("Condition", res)
        if thymoma is not None:
            self._thymoma(put, thymoma, thymoma_id, ident("thymoma"), subject)
        for analyte, oid in dat_ids:
            put(
                "Observation",
                {
                    "resourceType": "Observation",
                    "id": oid,
                    "identifier": ident(f"dx.{analyte.replace('_', '-')}"),
                    "status": "final",
                    "category": self.lab_category,
                    "code": self.analyte[analyte],
                    "subject": subject,
                    "focus": [dx_ref],
                    "effectiveDateTime": dx["onset"],
                    "valueCodeableConcept": self.pos,
                    "interpretation": self.interp["POS"],
                },
            )

        csa_id = ""
        for t in c["treatments"]:
            tid = rid("MedicationStatement", t["id"])
            res = {"resourceType": "MedicationStatement", "id": tid}
            if t["id"] == "csa":
                csa_id = tid
                tt = t["target_trough"]
                res["extension"] = [
                    {
                        "url": f"{LOCAL}/StructureDefinition/line-of-therapy",
                        "valuePositiveInt": t["line"],
                    },
                    {
                        "url": f"{LOCAL}/StructureDefinition/target-trough",
                        "valueRange": {
                            "low": _qty(tt["low"], "ng/mL"),
                            "high": _qty(tt["high"], "ng/mL"),
                        },
                    },
                ]
            res["identifier"] = ident(t["id"])
            res["status"] = t["status"]
            res["medicationCodeableConcept"] = self.drug[t["drug"]]
            res["subject"] = subject
            res["effectivePeriod"] = (
                {"start": t["start"], "end": t["end"]} if "end" in t else {"start": t["start"]}
            )
            res["reasonReference"] = [dx_ref]
            dosage: dict[str, Any] = {}
            if "dosage_text" in t:
                dosage["text"] = t["dosage_text"]
            dose = t.get("dose")
            if dose:
                per_day = dose.get("doses_per_day")
                dosage["timing"] = {
                    "repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}
                    if per_day
                    else {"period": 1, "periodUnit": "d"}
                }
            dosage["route"] = self.route[t["route"]]
            if dose:
                unit = "mg/kg" if dose["unit"] == "mg/kg/d" else "mg"
                dosage["doseAndRate"] = [
                    {
                        "type": self.ordered,
                        "doseQuantity": _qty(
                            dose["value"] / (dose.get("doses_per_day") or 1), unit
                        ),
                    }
                ]
            res["dosage"] = [dosage]
            put("MedicationStatement", res)

        for lab in c["labs"]:
            unit = lab.get("unit", "")
            res = {
                "resourceType": "Observation",
                "id": rid("Observation", lab["id"]),
                "identifier": ident(lab["id"]),
                "status": "final",
                "category": self.lab_category,
                "code": self.analyte[lab["analyte"]],
                "subject": subject,
                "effectiveDateTime": lab["date"],
            }
            if "value" in lab:
                res["valueQuantity"] = _qty(lab["value"], unit)
            if "interpretation" in lab:
                res["interpretation"] = self.interp[lab["interpretation"]]
            if "note" in lab:
                res["note"] = [{"text": lab["note"]}]
            rr = lab.get("reference_range")
            if rr:
                rng: dict[str, Any] = {"low": _qty(rr["low"], unit), "high": _qty(rr["high"], unit)}
                if lab["analyte"] == "cyclosporine_trough":
                    rng["type"] = self.trough_type
                res["referenceRange"] = [rng]
            put("Observation", res)

        for img in c["imaging"]:
            res = {
                "resourceType": "Observation",
                "id": rid("Observation", img["id"]),
                "identifier": ident(img["id"]),
                "status": "final",
                "category": self.imaging_category,
                "code": self.status_code if img.get("response") else self.finding_code,
                "subject": subject,
            }
            if img.get("focus"):
                res["focus"] = [{"reference": f"urn:uuid:{thymoma_id}"}]
            res["effectiveDateTime"] = img["date"]
            if img.get("response"):
                res["valueCodeableConcept"] = {
                    "coding": [self.responses[img["response"]].fhir()],
                    "text": img["finding"],
                }
            else:
                res["valueString"] = img["finding"]
            res["method"] = {"text": img["modality"]}
            if "size_mm" in img:
                res["component"] = [
                    {"code": self.size_code, "valueQuantity": _qty(img["size_mm"], "mm")}
                ]
            put("Observation", res)

        for m in c["marrow"]:
            res = {
                "resourceType": "Observation",
                "id": rid("Observation", m["id"]),
                "identifier": ident(m["id"]),
                "status": "final",
                "category": self.lab_category,
                "code": self.marrow[m["finding"]],
                "subject": subject,
                "effectiveDateTime": m["date"],
            }
            if "value_percent" in m:
                res["valueQuantity"] = _qty(m["value_percent"], "%")
            else:
                res["valueInteger"] = m["grade"]
            res["bodySite"] = self.marrow_site
            put("Observation", res)

        for proc in c["procedures"]:
            put(
                "Procedure",
                {
                    "resourceType": "Procedure",
                    "id": rid("Procedure", proc["id"]),
                    "identifier": ident(proc["id"]),
                    "status": "completed",
                    "code": self.procedure[proc["procedure"]],
                    "subject": subject,
                    "performedDateTime": proc["performed"],
                    "reasonReference": [dx_ref],
                },
            )

        for ae in c["adverse_events"]:
            put(
                "AdverseEvent",
                {
                    "resourceType": "AdverseEvent",
                    "id": rid("AdverseEvent", ae["id"]),
                    "extension": [self.grades[ae["grade"]]],
                    "identifier": {"system": ITEM_SYSTEM, "value": prefix + ae["id"]},
                    "actuality": "actual",
                    "event": self.event[ae["event"]],
                    "subject": subject,
                    "date": ae["date"],
                    "seriousness": self.serious,
                    "outcome": self.outcome,
                    "suspectEntity": [{"instance": {"reference": f"urn:uuid:{csa_id}"}}],
                },
            )
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}

    def _thymoma(
        self,
        put: Any,
        thymoma: dict[str, Any],
        thymoma_id: str,
        identifier: list[dict[str, str]],
        subject: dict[str, str],
    ) -> None:
        stage = thymoma["stage"]
        put(
            "Condition",
            {
                "resourceType": "Condition",
                "id": thymoma_id,
                "extension": [self.histology[thymoma["histology"]["who_type"]]],
                "identifier": identifier,
                "clinicalStatus": self.clinical["resolved"],
                "verificationStatus": self.confirmed,
                "category": self.condition_category,
                "code": self.disease["thymoma"],
                "bodySite": self.thymus,
                "subject": subject,
                "onsetDateTime": thymoma["onset"],
                "abatementDateTime": thymoma["abatement"],
                "stage": [
                    {"summary": {"text": f"Masaoka stage {stage['value']}"}, "type": self.masaoka}
                ],
            },
        )


def case_ids(c: dict[str, Any]) -> dict[str, str]:
    """Every id `bundle_bytes` needs, precomputed (for the id-free variant of the baseline)."""
    system, value = c["identifier"]["system"], c["identifier"]["value"]
    items = [("Patient", "patient"), ("Condition", "dx"), ("Condition", "thymoma")]
    items += [("Observation", f"dx.{a}") for a in ("dat-igg", "dat-complement", "dat-iga")]
    items += [("MedicationStatement", t["id"]) for t in c["treatments"]]
    for group in ("labs", "imaging", "marrow"):
        items += [("Observation", x["id"]) for x in c[group]]
    items += [("Procedure", p["id"]) for p in c["procedures"]]
    items += [("AdverseEvent", a["id"]) for a in c["adverse_events"]]
    return {f"{t}|{i}": str(uuid.uuid5(NAMESPACE, f"{t}|{system}|{value}|{i}")) for t, i in items}
