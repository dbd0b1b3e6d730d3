"""AdverseEvent <-> case adverse events with their CTCAE v5.0 grade.

R4 AdverseEvent: http://hl7.org/fhir/R4/adverseevent.html. The grade goes in the AE Clinical
Research backport IG's `ae-grade` extension (NCIt grade codes), never in `severity`, whose
required binding is mild|moderate|severe (terminology.md section 8). The suspect drug is the
MedicationStatement.
"""

from __future__ import annotations

from typing import Any

from fhir_cyclo.core.case import AdverseEvent
from fhir_cyclo.core.errors import MappingError
from fhir_cyclo.mappers.datatypes import (
    FromContext,
    Resource,
    ToContext,
    concept_cc,
    concept_from_cc,
    entry_key,
    time_extension,
    time_from_extension,
)

SERIOUSNESS = "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness"
OUTCOME = "http://terminology.hl7.org/CodeSystem/adverse-event-outcome"


def to_fhir(ae: AdverseEvent, ctx: ToContext) -> Resource:
    terms = ctx.terms
    try:
        concept = terms.adverse_events[ae.event]
    except KeyError:
        raise MappingError(f"unknown adverse event {ae.event!r}", path="event") from None
    grade = terms.ae_grades[ae.grade]
    ext: list[dict[str, Any]] = [
        {
            "url": terms.ae_grade_extension,
            "valueCodeableConcept": {
                "coding": [grade.fhir()],
                "text": f"CTCAE v5.0 grade {ae.grade}",
            },
        }
    ]
    if ae.date is not None and not isinstance(ae.date, str):
        ext.append(time_extension("effective", ae.date))
    res: Resource = {
        "resourceType": "AdverseEvent",
        "id": ctx.rid("AdverseEvent", ae.id),
        "extension": ext,
        "identifier": ctx.identifier(ae.id)[0],  # AdverseEvent.identifier is 0..1 in R4
        "actuality": "actual",
        "event": concept_cc(concept, ae.text),
        "subject": ctx.patient_ref(),
    }
    if isinstance(ae.date, str):
        res["date"] = ae.date
    res["seriousness"] = {
        "coding": [{"system": SERIOUSNESS, "code": "Serious" if ae.serious else "Non-serious"}]
    }
    if ae.outcome:
        res["outcome"] = {"coding": [{"system": OUTCOME, "code": ae.outcome}]}
    if ae.suspect:
        res["suspectEntity"] = [{"instance": ctx.ref("MedicationStatement", s)} for s in ae.suspect]
    return res


def from_fhir(res: Resource, ctx: FromContext, item_id: str) -> AdverseEvent:
    terms = ctx.terms
    key, text = concept_from_cc(
        res.get("event"), terms.adverse_event_by_code, terms.adverse_events, "AdverseEvent.event"
    )
    grade = None
    for ext in res.get("extension") or []:
        if ext.get("url") == terms.ae_grade_extension:
            grade = entry_key(
                terms.ae_grades, ext.get("valueCodeableConcept"), "extension[ae-grade]"
            )
    if grade is None:
        raise MappingError(
            "AdverseEvent has no CTCAE grade", path="AdverseEvent.extension[ae-grade]"
        )
    seriousness = {c.get("code") for c in (res.get("seriousness") or {}).get("coding") or []}
    outcome = next(
        iter(c.get("code") for c in (res.get("outcome") or {}).get("coding") or []), None
    )
    return AdverseEvent(
        id=item_id,
        event=key,
        text=text,
        date=res.get("date") or time_from_extension(res, "effective", "AdverseEvent"),
        grade=grade,
        # R4 codes: Serious, Serious<criterion> (SeriousResultsInDeath, ...), Non-serious.
        serious=any(str(code).startswith("Serious") for code in seriousness),
        suspect=tuple(
            ctx.item_of(s.get("instance"), "MedicationStatement", "AdverseEvent.suspectEntity")
            for s in res.get("suspectEntity") or []
        ),
        outcome=outcome,
    )
