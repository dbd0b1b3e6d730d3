"""MedicationStatement <-> Treatment: drug, phase dates, Dosage, line of therapy, trough target.

R4 MedicationStatement: http://hl7.org/fhir/R4/medicationstatement.html. Dosage follows
terminology.md section 9: a weight-based daily dose "5 mg/kg/day" is `doseQuantity` per
administration in `mg/kg` with `timing.repeat` giving administrations per day (never
`rateQuantity`, which receivers read as an infusion rate). Pulses ("two 3-day courses of
1000 mg/day") are one Dosage per course with `boundsDuration`. The target trough range travels in a
project extension (a Range in ng/mL).
"""

from __future__ import annotations

from typing import Any

from fhir_cyclo.core.case import Dose, Pulses, Treatment, TroughTarget
from fhir_cyclo.core.errors import MappingError
from fhir_cyclo.mappers.datatypes import (
    EXT_LINE_OF_THERAPY,
    EXT_TARGET_TROUGH,
    FromContext,
    Resource,
    ToContext,
    coding_cc,
    concept_cc,
    concept_from_cc,
    entry_key,
    extension_value,
    note_from,
    notes,
    quantity,
    quantity_value,
    time_extension,
    time_from_extension,
)

DOSE_RATE_TYPE = "http://terminology.hl7.org/CodeSystem/dose-rate-type"
# Per-administration UCUM unit for each daily-dose unit of the case model.
_PER_DOSE_UNIT = {"mg/kg/d": "mg/kg", "mg/d": "mg"}
_DAILY_UNIT = {v: k for k, v in _PER_DOSE_UNIT.items()}


def to_fhir(t: Treatment, ctx: ToContext) -> Resource:
    try:
        concept = ctx.terms.drugs[t.drug]
    except KeyError:
        raise MappingError(f"unknown drug {t.drug!r}", path="drug") from None
    res: Resource = {
        "resourceType": "MedicationStatement",
        "id": ctx.rid("MedicationStatement", t.id),
    }
    ext: list[dict[str, Any]] = []
    if t.line is not None:
        ext.append({"url": EXT_LINE_OF_THERAPY, "valuePositiveInt": t.line})
    if t.target_trough:
        tt = t.target_trough
        ext.append(
            {
                "url": EXT_TARGET_TROUGH,
                "valueRange": {
                    "low": quantity(tt.low, tt.unit),
                    "high": quantity(tt.high, tt.unit),
                },
            }
        )
    for role, when in (("start", t.start), ("end", t.end)):
        if when is not None and not isinstance(when, str):
            ext.append(time_extension(role, when))
    if ext:
        res["extension"] = ext
    res["identifier"] = ctx.identifier(t.id)
    res["status"] = t.status
    res["medicationCodeableConcept"] = concept_cc(concept, t.text)
    res["subject"] = ctx.patient_ref()
    period = {k: v for k, v in (("start", t.start), ("end", t.end)) if isinstance(v, str)}
    if period:
        res["effectivePeriod"] = period
    if t.reasons:
        res["reasonReference"] = [ctx.ref("Condition", r) for r in t.reasons]
    res.update(notes(t.note))
    dosage = _dosages(t, ctx)
    if dosage:
        res["dosage"] = dosage
    return res


def _dosages(t: Treatment, ctx: ToContext) -> list[dict[str, Any]]:
    base: dict[str, Any] = {}
    if t.dosage_text:
        base["text"] = t.dosage_text
    repeat: dict[str, Any] = {}
    if t.dose:
        per_day = t.dose.doses_per_day
        if per_day is not None:
            repeat["frequency"] = per_day
        repeat.update({"period": 1, "periodUnit": "d"})
    if t.pulses:
        repeat["boundsDuration"] = {
            "value": t.pulses.days,
            "unit": "days",
            "system": "http://unitsofmeasure.org",
            "code": "d",
        }
    if repeat:
        base["timing"] = {"repeat": repeat}
    if t.route:
        base["route"] = coding_cc(ctx.terms.routes[t.route])
    if t.dose:
        per_dose = t.dose.value / (t.dose.doses_per_day or 1)
        base["doseAndRate"] = [
            {
                "type": {"coding": [{"system": DOSE_RATE_TYPE, "code": "ordered"}]},
                "doseQuantity": quantity(per_dose, _PER_DOSE_UNIT[t.dose.unit]),
            }
        ]
    if not base:
        return []
    courses = t.pulses.courses if t.pulses else 1
    if courses == 1:
        return [base]
    return [{"sequence": i + 1, **base} for i in range(courses)]


def from_fhir(res: Resource, ctx: FromContext, item_id: str) -> Treatment:
    terms = ctx.terms
    drug, text = concept_from_cc(
        res.get("medicationCodeableConcept"), terms.drug_by_code, terms.drugs, "medication"
    )
    line = extension_value(res, EXT_LINE_OF_THERAPY)
    trough = extension_value(res, EXT_TARGET_TROUGH)
    target = None
    if trough:
        rng = trough.get("valueRange") or {}
        low, unit = quantity_value(rng.get("low"), "extension[target-trough].low")
        high, _ = quantity_value(rng.get("high"), "extension[target-trough].high")
        target = TroughTarget(low=low, high=high, unit=unit)
    period = res.get("effectivePeriod") or {}
    start = period.get("start") or time_from_extension(res, "start", "MedicationStatement")
    end = period.get("end") or time_from_extension(res, "end", "MedicationStatement")
    dose = pulses = route = dosage_text = None
    dosages = res.get("dosage") or []
    if dosages:
        first = dosages[0]
        dosage_text = first.get("text")
        if first.get("route"):
            route = entry_key(terms.routes, first["route"], "dosage.route")
        repeat = (first.get("timing") or {}).get("repeat") or {}
        if "boundsDuration" in repeat:
            pulses = Pulses(courses=len(dosages), days=int(repeat["boundsDuration"]["value"]))
        for dr in first.get("doseAndRate") or []:
            if "doseQuantity" in dr:
                value, unit = quantity_value(dr["doseQuantity"], "dosage.doseAndRate.doseQuantity")
                if unit not in _DAILY_UNIT:
                    raise MappingError(f"dose unit {unit!r} not mg or mg/kg", path="dosage")
                per_day = repeat.get("frequency")
                daily = round(value * (per_day or 1), 9)
                dose = Dose(value=daily, unit=_DAILY_UNIT[unit], doses_per_day=per_day)
    return Treatment(
        id=item_id,
        drug=drug,
        text=text,
        start=start,
        end=end,
        status=res.get("status", "completed"),
        dose=dose,
        pulses=pulses,
        route=route,
        line=line.get("valuePositiveInt") if line else None,
        reasons=tuple(
            ctx.item_of(r, "Condition", "reasonReference") for r in res.get("reasonReference") or []
        ),
        target_trough=target,
        dosage_text=dosage_text,
        note=note_from(res),
    )
