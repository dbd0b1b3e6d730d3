"""Observation <-> labs, DAT results, imaging assessments and bone-marrow findings.

R4 Observation: http://hl7.org/fhir/R4/observation.html. Labs carry LOINC + a UCUM Quantity in the
unit the source reported (conversion happens on import, not here, so nothing is lost). A value-less
lab keeps its interpretation (e.g. "Hb reached the normal range" -> N). Cyclosporine troughs mark
their reference range as `pre` (trough, terminology.md section 9). Imaging with a response is a
disease-status assessment (LOINC 97509-4, mCODE value set); without one, a project-coded finding.
"""

from __future__ import annotations

from typing import Any, Literal

from fhir_cyclo.core.case import Diagnosis, Imaging, Lab, MarrowFinding, ReferenceRange
from fhir_cyclo.core.errors import MappingError
from fhir_cyclo.core.units import unit_problem
from fhir_cyclo.mappers.condition import dat_item_id
from fhir_cyclo.mappers.datatypes import (
    FromContext,
    Resource,
    ToContext,
    coding_cc,
    concept_cc,
    concept_from_cc,
    entry_key,
    note_from,
    notes,
    quantity,
    quantity_value,
    time_extension,
    time_from_extension,
)

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
REFRANGE_MEANING = "http://terminology.hl7.org/CodeSystem/referencerange-meaning"

Kind = Literal["lab", "dat", "imaging", "marrow"]


def _category(code: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": CATEGORY, "code": code}]}]


def _effective(when: object) -> dict[str, Any]:
    if when is None:
        return {}
    if isinstance(when, str):
        return {"effectiveDateTime": when}
    return {"extension": [time_extension("effective", when)]}  # type: ignore[arg-type]


def _effective_from(res: Resource, path: str) -> Any:
    if "effectiveDateTime" in res:
        return res["effectiveDateTime"]
    return time_from_extension(res, "effective", path)


def _head(
    ctx: ToContext,
    item_id: str,
    when: object,
    category: str,
    code: dict[str, Any],
    *,
    focus: str | None = None,
) -> Resource:
    """The elements every Observation we write starts with, in one fixed order."""
    res: Resource = {"resourceType": "Observation", "id": ctx.rid("Observation", item_id)}
    eff = _effective(when)
    if "extension" in eff:
        res["extension"] = eff.pop("extension")
    res["identifier"] = ctx.identifier(item_id)
    res["status"] = "final"
    res["category"] = _category(category)
    res["code"] = code
    res["subject"] = ctx.patient_ref()
    if focus:
        res["focus"] = [ctx.ref("Condition", focus)]
    res.update(eff)
    return res


# --- labs ---------------------------------------------------------------------------------------


def lab_to_fhir(lab: Lab, ctx: ToContext) -> Resource:
    terms = ctx.terms
    try:
        concept = terms.analytes[lab.analyte]
    except KeyError:
        raise MappingError(f"unknown analyte {lab.analyte!r}", path="analyte") from None
    if lab.unit is not None and concept.factor_to_unit(lab.unit) is None:
        raise MappingError(unit_problem(lab.unit, lab.analyte, concept.unit or ""), path="unit")
    res = _head(ctx, lab.id, lab.date, "laboratory", concept_cc(concept, lab.text))
    if lab.value is not None and lab.unit is not None:
        res["valueQuantity"] = quantity(lab.value, lab.unit)
    elif concept.qualitative and lab.interpretation in ("POS", "NEG"):
        res["valueCodeableConcept"] = coding_cc(terms.qualitative_values[lab.interpretation])
    if lab.interpretation:
        res["interpretation"] = [
            {"coding": [{"system": INTERPRETATION, "code": lab.interpretation}]}
        ]
    res.update(notes(lab.note))
    if lab.reference_range:
        rr = lab.reference_range
        unit = lab.unit or concept.unit or ""
        rng: dict[str, Any] = {}
        if rr.low is not None:
            rng["low"] = quantity(rr.low, unit)
        if rr.high is not None:
            rng["high"] = quantity(rr.high, unit)
        if lab.analyte == "cyclosporine_trough":
            rng["type"] = {"coding": [{"system": REFRANGE_MEANING, "code": "pre"}]}
        if rr.text:
            rng["text"] = rr.text
        res["referenceRange"] = [rng]
    return res


def lab_from_fhir(res: Resource, ctx: FromContext, item_id: str) -> Lab:
    terms = ctx.terms
    analyte, text = concept_from_cc(
        res.get("code"), terms.analyte_by_code, terms.analytes, "Observation.code"
    )
    value = unit = None
    if "valueQuantity" in res:
        value, unit = quantity_value(res["valueQuantity"], "Observation.valueQuantity")
    interpretation = None
    for interp in res.get("interpretation") or []:
        for coding in interp.get("coding") or []:
            if coding.get("system") == INTERPRETATION:
                interpretation = coding.get("code")
    reference_range = None
    if res.get("referenceRange"):
        raw = res["referenceRange"][0]
        low = quantity_value(raw["low"], "referenceRange.low")[0] if "low" in raw else None
        high = quantity_value(raw["high"], "referenceRange.high")[0] if "high" in raw else None
        reference_range = ReferenceRange(low=low, high=high, text=raw.get("text"))
    date = _effective_from(res, "Observation")
    if date is None:
        raise MappingError("lab Observation has no time", path="Observation.effective[x]")
    return Lab(
        id=item_id,
        analyte=analyte,
        date=date,
        value=value,
        unit=unit,
        interpretation=interpretation,
        reference_range=reference_range,
        text=text,
        note=note_from(res),
    )


def dat_to_fhir(d: Diagnosis, ctx: ToContext) -> list[Resource]:
    """Positive DAT Observations implied by an AIHA's DAT pattern (IgG, IgG+C, IgA)."""
    if not d.dat_pattern:
        return []
    terms = ctx.terms
    out = []
    for analyte in terms.dat_patterns[d.dat_pattern]:
        item = dat_item_id(d.id, analyte)
        res: Resource = {"resourceType": "Observation", "id": ctx.rid("Observation", item)}
        res["identifier"] = ctx.identifier(item)
        res["status"] = "final"
        res["category"] = _category("laboratory")
        res["code"] = concept_cc(terms.analytes[analyte], None)
        res["subject"] = ctx.patient_ref()
        res["focus"] = [ctx.ref("Condition", d.id)]
        res.update(when_as_effective(d.onset))
        res["valueCodeableConcept"] = coding_cc(terms.qualitative_values["POS"])
        res["interpretation"] = [{"coding": [{"system": INTERPRETATION, "code": "POS"}]}]
        out.append(res)
    return out


def when_as_effective(when: object) -> dict[str, Any]:
    """DAT results are dated like the diagnosis they support, when that date is a real date."""
    return {"effectiveDateTime": when} if isinstance(when, str) else {}


# --- imaging ------------------------------------------------------------------------------------


def imaging_to_fhir(img: Imaging, ctx: ToContext) -> Resource:
    terms = ctx.terms
    key = "disease_status_code" if img.response else "finding_code"
    res = _head(ctx, img.id, img.date, "imaging", coding_cc(terms.imaging[key]), focus=img.focus)
    if img.response:
        res["valueCodeableConcept"] = coding_cc(terms.imaging_responses[img.response], img.finding)
    else:
        res["valueString"] = img.finding
    res["method"] = {"text": img.modality}
    if img.size_mm is not None:
        res["component"] = [
            {
                "code": coding_cc(terms.imaging["size_code"]),
                "valueQuantity": quantity(img.size_mm, "mm"),
            }
        ]
    return res


def imaging_from_fhir(res: Resource, ctx: FromContext, item_id: str) -> Imaging:
    terms = ctx.terms
    response = None
    if "valueCodeableConcept" in res:
        cc = res["valueCodeableConcept"]
        response = entry_key(terms.imaging_responses, cc, "Observation.valueCodeableConcept")
        finding = cc.get("text", "")
    else:
        finding = res.get("valueString", "")
    size = None
    for comp in res.get("component") or []:
        size, _ = quantity_value(comp.get("valueQuantity"), "Observation.component")
    focus = None
    if res.get("focus"):
        focus = ctx.item_of(res["focus"][0], "Condition", "Observation.focus")
    date = _effective_from(res, "Observation")
    return Imaging(
        id=item_id,
        date=date,
        modality=(res.get("method") or {}).get("text"),
        finding=finding,
        response=response,
        focus=focus,
        size_mm=size,
    )


# --- bone marrow --------------------------------------------------------------------------------


def marrow_to_fhir(m: MarrowFinding, ctx: ToContext) -> Resource:
    terms = ctx.terms
    try:
        entry = terms.marrow_findings[m.finding]
    except KeyError:
        raise MappingError(f"unknown marrow finding {m.finding!r}", path="finding") from None
    res = _head(ctx, m.id, m.date, "laboratory", coding_cc(entry, entry.display))
    if m.value_percent is not None:
        res["valueQuantity"] = quantity(m.value_percent, "%")
    elif m.grade is not None:
        res["valueInteger"] = m.grade
    else:
        res["valueString"] = m.value_text
    res["bodySite"] = coding_cc(terms.body_sites["bone_marrow"])
    return res


def marrow_from_fhir(res: Resource, ctx: FromContext, item_id: str) -> MarrowFinding:
    finding = entry_key(ctx.terms.marrow_findings, res.get("code"), "Observation.code")
    percent = None
    if "valueQuantity" in res:
        percent, _ = quantity_value(res["valueQuantity"], "Observation.valueQuantity")
    return MarrowFinding(
        id=item_id,
        date=_effective_from(res, "Observation"),
        finding=finding,
        value_percent=percent,
        value_text=res.get("valueString"),
        grade=res.get("valueInteger"),
    )


def kind_of(res: Resource, ctx: FromContext) -> Kind:
    """Which case collection an Observation belongs to."""
    categories = {
        c.get("code") for cat in res.get("category") or [] for c in cat.get("coding") or []
    }
    if "imaging" in categories:
        return "imaging"
    codings = {
        (c.get("system"), c.get("code")) for c in (res.get("code") or {}).get("coding") or []
    }
    marrow = {(e.system, e.code) for e in ctx.terms.marrow_findings.values()}
    if codings & marrow:
        return "marrow"
    if res.get("focus") and any(
        ctx.terms.analyte_by_code.get(c, "").startswith("dat_") for c in codings
    ):
        return "dat"
    return "lab"
