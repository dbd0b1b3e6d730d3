"""Procedure <-> case procedures: thymectomy, resection, splenectomy, transfusions, things not done.

R4 Procedure: http://hl7.org/fhir/R4/procedure.html. `status: not-done` carries statements such as
"no blood transfusions were required" or "no adjuvant therapy", so those facts survive export too.
Procedures without a verified code (thymectomy, transfusion) carry only the project code and text.
"""

from __future__ import annotations

from fhir_cyclo.core.case import Procedure
from fhir_cyclo.core.errors import MappingError
from fhir_cyclo.mappers.datatypes import (
    FromContext,
    Resource,
    ToContext,
    coding_cc,
    concept_cc,
    concept_from_cc,
    note_from,
    notes,
    when_choice,
    when_from_choice,
)


def to_fhir(p: Procedure, ctx: ToContext) -> Resource:
    terms = ctx.terms
    try:
        concept = terms.procedures[p.procedure]
    except KeyError:
        raise MappingError(f"unknown procedure {p.procedure!r}", path="procedure") from None
    res: Resource = {"resourceType": "Procedure", "id": ctx.rid("Procedure", p.id)}
    res["identifier"] = ctx.identifier(p.id)
    res["status"] = p.status
    res["code"] = concept_cc(concept, p.text)
    res["subject"] = ctx.patient_ref()
    if p.performed_end is not None:
        if not isinstance(p.performed, str):
            raise MappingError("performed_end needs a performed date", path="performed_end")
        res["performedPeriod"] = {"start": p.performed, "end": p.performed_end}
    else:
        res.update(when_choice("performed", p.performed))
    if p.reasons:
        res["reasonReference"] = [ctx.ref("Condition", r) for r in p.reasons]
    if concept.body_site:
        res["bodySite"] = [coding_cc(terms.body_sites[concept.body_site])]
    if p.outcome:
        res["outcome"] = {"text": p.outcome}
    res.update(notes(p.note))
    return res


def from_fhir(res: Resource, ctx: FromContext, item_id: str) -> Procedure:
    terms = ctx.terms
    key, text = concept_from_cc(
        res.get("code"), terms.procedure_by_code, terms.procedures, "Procedure.code"
    )
    performed = when_from_choice(res, "performed", "Procedure")
    performed_end = None
    if "performedPeriod" in res:
        performed = res["performedPeriod"].get("start")
        performed_end = res["performedPeriod"].get("end")
    return Procedure(
        id=item_id,
        procedure=key,
        text=text,
        performed=performed,
        performed_end=performed_end,
        status=res.get("status", "completed"),
        reasons=tuple(
            ctx.item_of(r, "Condition", "Procedure.reasonReference")
            for r in res.get("reasonReference") or []
        ),
        outcome=(res.get("outcome") or {}).get("text"),
        note=note_from(res),
    )
