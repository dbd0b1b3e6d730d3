"""Scores as FHIR R4 Observations in a transaction Bundle of PUTs (deterministic ids)."""

from __future__ import annotations

import uuid
from typing import Any

from fhir_cyclo.core.scoring_config import ScoringConfig
from fhir_cyclo.scoring.rules import Assessment, CohortScore, PatientScore

# Category "survey": the response is the result of applying a defined assessment instrument (the
# criteria) to lab results, which is what observation-category "survey" covers (its examples are
# scores such as Apgar). "exam" means physical examination findings, and "laboratory" would claim
# the value was measured by a lab, which it was not.
CATEGORY = {
    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
    "code": "survey",
    "display": "Survey",
}
UCUM = "http://unitsofmeasure.org"
SNOMED = "http://snomed.info/sct"


def assessment_identifier(key: str, month: int) -> str:
    """Business identifier value of one assessment: "<patient key>|m<month>"."""
    return f"{key}|m{month}"


def assessment_id(identifier_system: str, value: str) -> str:
    """Resource id: uuid5(NAMESPACE_URL, "<identifier system>|<value>"), stable across runs."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{identifier_system}|{value}"))


def _subject(p: PatientScore) -> dict[str, Any]:
    if p.inputs.reference:
        return {"reference": p.inputs.reference}
    # No server id (e.g. a urn:uuid Patient in a transaction file): a conditional reference by
    # identifier, which the server resolves when it processes the transaction.
    assert p.inputs.identifier is not None, "a patient key is an id or an identifier"
    system, value = p.inputs.identifier
    if system:
        return {"reference": f"Patient?identifier={system}|{value}"}
    return {"identifier": {"value": value}}


def _citation(cfg: ScoringConfig, disease: str) -> str:
    return "; ".join(cfg.cite(k) for k in cfg.criteria[disease].sources)


def _derived_from(p: PatientScore, a: Assessment) -> list[dict[str, str]]:
    refs: list[str] = []
    if a.pick is not None:
        refs.append(a.pick.measurement.ref)
        if p.baseline is not None:
            refs.append(p.baseline.measurement.ref)
    for pick in a.markers.values():
        if pick is not None:
            # A derived marker (indirect bilirubin) points at the results it was computed from.
            refs += pick.measurement.derived_from or [pick.measurement.ref]
    # Only literal "Observation/<id>" references can be written back; a resource read without
    # an id has nothing a server could resolve.
    unique = dict.fromkeys(r for r in refs if r.startswith("Observation/"))
    return [{"reference": r} for r in unique]


def observation(p: PatientScore, a: Assessment, cfg: ScoringConfig) -> dict[str, Any]:
    """One response Observation (R4) for a patient and timepoint."""
    wb = cfg.writeback
    system = wb["code_system"]
    identifier_value = assessment_identifier(p.key, a.month)
    response = wb["responses"][a.response]
    codings = [{"system": system, "code": a.response, "display": response["display"]}]
    if response.get("snomed"):
        codings.append(
            {"system": SNOMED, "code": response["snomed"], "display": response["snomed_display"]}
        )
    day = a.date or a.target
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": assessment_id(wb["identifier_system"], identifier_value),
        "identifier": [{"system": wb["identifier_system"], "value": identifier_value}],
        "status": "final",
        "category": [{"coding": [CATEGORY]}],
        "code": {
            "coding": [{"system": system, **wb["code"]}],
            "text": f"Cyclosporine response at {a.month} months",
        },
        "subject": _subject(p),
        "effectiveDateTime": day.isoformat(),
        "method": {"text": f"{p.disease} response criteria: {_citation(cfg, p.disease)}"},
        "valueCodeableConcept": {
            "coding": codings,
            "text": f"{response['display']} ({a.response}), {p.disease}",
        },
        "component": [
            {
                "code": {"coding": [{"system": system, **wb["month_component"]}]},
                "valueQuantity": {"value": a.month, "unit": "month", "system": UCUM, "code": "mo"},
            }
        ],
    }
    condition = p.inputs.condition_refs.get(p.disease)
    if condition and condition.startswith("Condition/"):
        resource["focus"] = [{"reference": condition}]
    derived = _derived_from(p, a)
    if derived:
        resource["derivedFrom"] = derived
    return resource


def to_bundle(cohort: CohortScore) -> dict[str, Any]:
    """Transaction Bundle with one PUT Observation/<id> per patient and timepoint."""
    entries = []
    for p in sorted(cohort.patients, key=lambda s: s.key):
        for a in p.assessments:
            resource = observation(p, a, cohort.config)
            entries.append(
                {
                    "fullUrl": f"urn:uuid:{resource['id']}",
                    "resource": resource,
                    "request": {"method": "PUT", "url": f"Observation/{resource['id']}"},
                }
            )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
