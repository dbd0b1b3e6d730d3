"""Condition <-> Diagnosis: disease, episode, WHO histology, Masaoka stage, DAT evidence.

R4 Condition: http://hl7.org/fhir/R4/condition.html. Histology uses the mCODE
histology-morphology-behavior extension (ICD-O-3); the Masaoka stage value has no verified code, so
it travels as `stage.summary.text` with the verified staging method in `stage.type`. The DAT pattern
of an AIHA is `evidence.detail` pointing at the DAT Observations (see observation.dat_to_fhir).
"""

from __future__ import annotations

import re
from typing import Any

from fhir_cyclo.core.case import Diagnosis, Histology, Stage
from fhir_cyclo.core.errors import MappingError
from fhir_cyclo.mappers.datatypes import (
    EXT_DUE_TO,
    FromContext,
    Resource,
    ToContext,
    coding_cc,
    concept_cc,
    concept_from_cc,
    entry_key,
    note_from,
    notes,
    when_choice,
    when_from_choice,
)

CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VERIFICATION = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
_STAGE_TEXT = re.compile(r"^Masaoka stage (?P<value>\S+)(?: \((?P<text>.*)\))?$")


def dat_item_id(diagnosis_id: str, analyte: str) -> str:
    """Item id of a DAT Observation derived from a diagnosis' DAT pattern."""
    return f"{diagnosis_id}.{analyte.replace('_', '-')}"


def to_fhir(d: Diagnosis, ctx: ToContext) -> Resource:
    terms = ctx.terms
    try:
        concept = terms.diagnoses[d.concept]
    except KeyError:
        raise MappingError(f"unknown diagnosis {d.concept!r}", path="concept") from None
    res: Resource = {"resourceType": "Condition", "id": ctx.rid("Condition", d.id)}
    ext: list[dict[str, Any]] = []
    if d.histology:
        code = d.histology.icdo3 or terms.histology[d.histology.who_type].code
        entry = next((e for e in terms.histology.values() if e.code == code), None)
        if entry is None:
            raise MappingError(f"ICD-O-3 code {code!r} not in mappings", path="histology.icdo3")
        ext.append(
            {
                "url": terms.histology_extension,
                "valueCodeableConcept": coding_cc(
                    entry, d.histology.text or f"WHO type {d.histology.who_type}"
                ),
            }
        )
    ext.extend(
        {"url": EXT_DUE_TO, "valueReference": ctx.ref("Condition", cause)} for cause in d.due_to
    )
    if ext:
        res["extension"] = ext
    res["identifier"] = ctx.identifier(d.id)
    res["clinicalStatus"] = {"coding": [{"system": CLINICAL, "code": d.clinical_status}]}
    res["verificationStatus"] = {"coding": [{"system": VERIFICATION, "code": d.verification}]}
    res["category"] = [{"coding": [{"system": CATEGORY, "code": "problem-list-item"}]}]
    res["code"] = concept_cc(concept, d.text)
    if d.body_site:
        res["bodySite"] = [coding_cc(terms.body_sites[d.body_site])]
    res["subject"] = ctx.patient_ref()
    res.update(when_choice("onset", d.onset))
    res.update(when_choice("abatement", d.abatement))
    if d.stage:
        summary = f"Masaoka stage {d.stage.value}" + (f" ({d.stage.text})" if d.stage.text else "")
        res["stage"] = [
            {"summary": {"text": summary}, "type": coding_cc(terms.staging_methods[d.stage.system])}
        ]
    if d.dat_pattern:
        res["evidence"] = [
            {"detail": [ctx.ref("Observation", dat_item_id(d.id, a))]}
            for a in terms.dat_patterns[d.dat_pattern]
        ]
    res.update(notes(d.note))
    return res


def from_fhir(res: Resource, ctx: FromContext, item_id: str) -> Diagnosis:
    terms = ctx.terms
    concept, text = concept_from_cc(
        res.get("code"), terms.diagnosis_by_code, terms.diagnoses, "Condition.code"
    )
    histology = due_to = None
    due: list[str] = []
    for ext in res.get("extension") or []:
        if ext.get("url") == terms.histology_extension:
            cc = ext.get("valueCodeableConcept") or {}
            who = entry_key(terms.histology, cc, "Condition.extension[histology]")
            code = cc["coding"][0]["code"]
            label = cc.get("text")
            histology = Histology(
                who_type=who,
                icdo3=None if code == terms.histology[who].code else code,
                text=None if label == f"WHO type {who}" else label,
            )
        elif ext.get("url") == EXT_DUE_TO:
            due.append(ctx.item_of(ext.get("valueReference"), "Condition", "Condition.dueTo"))
    due_to = tuple(due)
    stage = None
    if res.get("stage"):
        raw = res["stage"][0]
        match = _STAGE_TEXT.match(str((raw.get("summary") or {}).get("text", "")))
        if not match:
            raise MappingError("stage summary is not 'Masaoka stage X'", path="Condition.stage")
        stage = Stage(
            system=entry_key(terms.staging_methods, raw.get("type"), "Condition.stage.type"),
            value=match["value"],
            text=match["text"],
        )
    dat_pattern = None
    if res.get("evidence"):
        analytes = []
        for ev in res["evidence"]:
            for detail in ev.get("detail") or []:
                obs = ctx.resource_of(detail)
                if obs is None:
                    raise MappingError("DAT evidence does not resolve", path="Condition.evidence")
                key, _ = concept_from_cc(
                    obs.get("code"), terms.analyte_by_code, terms.analytes, "Observation.code"
                )
                analytes.append(key)
        dat_pattern = next(
            (p for p, a in terms.dat_patterns.items() if sorted(a) == sorted(analytes)), None
        )
        if dat_pattern is None:
            raise MappingError(
                f"DAT results {analytes} match no pattern", path="Condition.evidence"
            )
    body_site = None
    if res.get("bodySite"):
        body_site = entry_key(terms.body_sites, res["bodySite"][0], "Condition.bodySite")
    return Diagnosis(
        id=item_id,
        concept=concept,
        text=text,
        onset=when_from_choice(res, "onset", "Condition"),
        abatement=when_from_choice(res, "abatement", "Condition"),
        clinical_status=_code(res.get("clinicalStatus"), "active"),
        verification=_code(res.get("verificationStatus"), "confirmed"),
        histology=histology,
        stage=stage,
        dat_pattern=dat_pattern,
        due_to=due_to,
        body_site=body_site,
        note=note_from(res),
    )


def _code(cc: object, default: str) -> Any:
    if isinstance(cc, dict):
        for coding in cc.get("coding") or []:
            if coding.get("code"):
                return coding["code"]
    return default
