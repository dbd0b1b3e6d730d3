"""Read a case back from a FHIR server by its identifier (paged searches) and rebuild it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from fhir_cyclo.core.case import Case
from fhir_cyclo.core.errors import InputError
from fhir_cyclo.mappers import resources_to_case

# Resource types a case is made of, searched by subject once the Patient is known.
CASE_TYPES = ("Condition", "MedicationStatement", "Observation", "Procedure", "AdverseEvent")


class Searcher(Protocol):
    def search(
        self, resource_type: str, params: dict[str, str] | None = None
    ) -> Iterator[dict[str, Any]]: ...


def find_patients(client: Searcher, token: str) -> list[dict[str, Any]]:
    """Patients carrying the identifier `system|value` (more than one means duplicates)."""
    return list(client.search("Patient", {"identifier": token}))


def case_resources(client: Searcher, patient_id: str) -> Iterator[dict[str, Any]]:
    subject = f"Patient/{patient_id}"
    for rtype in CASE_TYPES:
        yield from client.search(rtype, {"subject": subject})


def fetch_case(client: Searcher, token: str) -> Case:
    """The case whose Patient identifier is `system|value`, rebuilt with the mappers' from_fhir."""
    patients = find_patients(client, token)
    if len(patients) != 1:
        raise InputError(f"expected one Patient with identifier {token}, found {len(patients)}")
    patient = patients[0]
    resources = [(None, patient), *((None, r) for r in case_resources(client, patient["id"]))]
    return resources_to_case(resources, source=f"server Patient/{patient['id']}")
