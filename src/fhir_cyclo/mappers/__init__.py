"""Case <-> FHIR mappers, one module per resource type; `case_to_resources` lists them in order."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from fhir_cyclo.core.case import Case
from fhir_cyclo.core.errors import MappingError
from fhir_cyclo.core.ids import item_id_from_identifiers
from fhir_cyclo.core.terminology import Terminology, terminology
from fhir_cyclo.mappers import (
    adverse_event,
    condition,
    medication_statement,
    observation,
    patient,
    procedure,
)
from fhir_cyclo.mappers.datatypes import FromContext, Resource, ToContext


def case_to_resources(case: Case, terms: Terminology | None = None) -> Iterator[Resource]:
    """Every resource of a case, Patient first, in a fixed order (deterministic bundles)."""
    ctx = ToContext(case=case.identifier, terms=terms or terminology())
    yield patient.to_fhir(case.patient, ctx)
    yield from _each("diagnoses", case.diagnoses, lambda d: [condition.to_fhir(d, ctx)])
    yield from _each("diagnoses", case.diagnoses, lambda d: observation.dat_to_fhir(d, ctx))
    yield from _each(
        "treatments", case.treatments, lambda t: [medication_statement.to_fhir(t, ctx)]
    )
    yield from _each("labs", case.labs, lambda lab: [observation.lab_to_fhir(lab, ctx)])
    yield from _each("imaging", case.imaging, lambda i: [observation.imaging_to_fhir(i, ctx)])
    yield from _each("marrow", case.marrow, lambda m: [observation.marrow_to_fhir(m, ctx)])
    yield from _each("procedures", case.procedures, lambda p: [procedure.to_fhir(p, ctx)])
    yield from _each(
        "adverse_events", case.adverse_events, lambda a: [adverse_event.to_fhir(a, ctx)]
    )


def _each(group: str, items: Iterable[object], fn: object) -> Iterator[Resource]:
    for index, item in enumerate(items):
        try:
            yield from fn(item)  # type: ignore[operator]
        except MappingError as exc:
            raise exc.prefixed(f"{group}[{index}]") from None


def resources_to_case(
    resources: Iterable[tuple[str | None, Resource]],
    terms: Terminology | None = None,
    source: str = "bundle",
) -> Case:
    """Rebuild one case from its resources (fullUrl or None, resource); inverse of the export."""
    ctx = FromContext(terms=terms or terminology(), source=source)
    items = list(resources)
    for full_url, res in items:
        ctx.register(res, full_url)
    patients = [res for _, res in items if res.get("resourceType") == "Patient"]
    if len(patients) != 1:
        raise MappingError(f"expected one Patient, found {len(patients)}", source=source)
    identifier, demographics = patient.from_fhir(patients[0], ctx)
    groups: dict[str, list[object]] = {
        "diagnoses": [],
        "treatments": [],
        "labs": [],
        "imaging": [],
        "marrow": [],
        "procedures": [],
        "adverse_events": [],
    }
    for _, res in items:
        rtype = res.get("resourceType")
        if rtype in ("Patient", None):
            continue
        item_id = item_id_from_identifiers(res.get("identifier"))
        if item_id is None:
            # Not written by fhir-cyclo (no case-item identifier): not part of the case record.
            continue
        path = f"{rtype}/{res.get('id', '?')}"
        try:
            if rtype == "Condition":
                groups["diagnoses"].append(condition.from_fhir(res, ctx, item_id))
            elif rtype == "MedicationStatement":
                groups["treatments"].append(medication_statement.from_fhir(res, ctx, item_id))
            elif rtype == "Procedure":
                groups["procedures"].append(procedure.from_fhir(res, ctx, item_id))
            elif rtype == "AdverseEvent":
                groups["adverse_events"].append(adverse_event.from_fhir(res, ctx, item_id))
            elif rtype == "Observation":
                kind = observation.kind_of(res, ctx)
                if kind == "lab":
                    groups["labs"].append(observation.lab_from_fhir(res, ctx, item_id))
                elif kind == "imaging":
                    groups["imaging"].append(observation.imaging_from_fhir(res, ctx, item_id))
                elif kind == "marrow":
                    groups["marrow"].append(observation.marrow_from_fhir(res, ctx, item_id))
                # "dat": derived from the Condition's DAT pattern, rebuilt there.
        except MappingError as exc:
            raise MappingError(exc.message, source=source, path=f"{path}: {exc.path}") from None
        except ValueError as exc:
            raise MappingError(str(exc), source=source, path=path) from None
    return Case(identifier=identifier, patient=demographics, **groups)
