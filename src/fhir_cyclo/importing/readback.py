"""Read a case back from a FHIR server by its identifier (paged searches) and rebuild it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from fhir_cyclo.core.case import Case
from fhir_cyclo.core.errors import InputError
from fhir_cyclo.importing.group import PatientGroup
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


def patient_groups(
    client: Searcher,
    *,
    identifier: str | None = None,
    patient: str | None = None,
    system: str | None = None,
) -> Iterator[PatientGroup]:
    """One group per Patient selected on the server, with every case resource citing it.

    `identifier` is `system|value`, `patient` an id or `Patient/id`, `system` an identifier
    system (every Patient with an identifier in it); none of them: every Patient of the server.
    Raises InputError when a named Patient is not there (the value is not echoed: PHI).
    """
    if identifier is not None:
        params = {"identifier": identifier}
    elif patient is not None:
        params = {"_id": patient.removeprefix("Patient/")}
    elif system is not None:
        params = {"identifier": f"{system}|"}  # a token with an empty value: any value
    else:
        params = {}
    origin = "server Patient?" + ("identifier=..." if "identifier" in params else "")
    found = 0
    for res in client.search("Patient", params):
        if res.get("resourceType") != "Patient" or not isinstance(res.get("id"), str):
            continue
        found += 1
        group = PatientGroup(f"Patient/{res['id']}", f"server Patient/{res['id']}")
        group.patient = res
        group.resources = [(None, r) for r in case_resources(client, res["id"])]
        yield group
    if not found and (identifier is not None or patient is not None):
        what = "the identifier given" if identifier is not None else repr(patient)
        raise InputError(f"no Patient found for {what}", source=origin)
