"""Patient <-> case identity and demographics (http://hl7.org/fhir/R4/patient.html)."""

from __future__ import annotations

from typing import Any

from fhir_cyclo.core.case import Identifier, Patient
from fhir_cyclo.core.errors import MappingError
from fhir_cyclo.core.terminology import LOCAL_SYSTEM, SYNTHETIC_TAG
from fhir_cyclo.mappers.datatypes import FromContext, Resource, ToContext


def to_fhir(patient: Patient, ctx: ToContext) -> Resource:
    """The case's Patient; the case identifier is its business identifier (matched on push)."""
    res: Resource = {"resourceType": "Patient", "id": ctx.rid("Patient", "patient")}
    if patient.synthetic:
        res["meta"] = {"tag": [dict(SYNTHETIC_TAG)]}
    res["identifier"] = [{"system": ctx.case.system, "value": ctx.case.value}]
    if patient.name:
        res["name"] = [{"text": patient.name}]
    if patient.telecom:
        res["telecom"] = [
            {"system": "email" if "@" in t else "phone", "value": t} for t in patient.telecom
        ]
    res["gender"] = patient.sex
    if patient.birth_date:
        res["birthDate"] = patient.birth_date
    if isinstance(patient.deceased, bool):
        res["deceasedBoolean"] = patient.deceased
    elif patient.deceased is not None:
        res["deceasedDateTime"] = patient.deceased
    if patient.address:
        res["address"] = [{"text": patient.address}]
    return res


def from_fhir(res: Resource, ctx: FromContext) -> tuple[Identifier, Patient]:
    """Case identifier (first identifier) and demographics; names/addresses are not case data."""
    idents = res.get("identifier") or []
    if not idents or not isinstance(idents[0], dict):
        raise MappingError(
            "Patient has no identifier", source=ctx.source, path="Patient.identifier"
        )
    try:
        case = Identifier(system=idents[0].get("system", ""), value=idents[0].get("value", ""))
    except ValueError as exc:
        raise MappingError(
            f"Patient identifier is incomplete: {exc}", source=ctx.source, path="Patient.identifier"
        ) from exc
    tags = (res.get("meta") or {}).get("tag") or []
    deceased: Any = res.get("deceasedBoolean", res.get("deceasedDateTime"))
    patient = Patient(
        sex=res.get("gender", "unknown"),
        birth_date=res.get("birthDate"),
        deceased=deceased,
        synthetic=any(
            t.get("system") == LOCAL_SYSTEM and t.get("code") == "synthetic-data" for t in tags
        ),
        name=(res.get("name") or [{}])[0].get("text"),
        telecom=tuple(str(t.get("value")) for t in res.get("telecom") or []),
        address=(res.get("address") or [{}])[0].get("text"),
    )
    return case, patient
