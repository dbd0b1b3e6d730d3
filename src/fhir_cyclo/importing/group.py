"""Sort FHIR resources into one group per Patient, and name what a case cannot carry back."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fhir_cyclo.core.case import Case
from fhir_cyclo.core.ids import item_id_from_identifiers
from fhir_cyclo.core.terminology import Terminology
from fhir_cyclo.mappers import case_to_resources
from fhir_cyclo.readers.fhir import SourceItem

Resource = dict[str, Any]
# Elements every server rewrites or adds: not case data, so never reported as lost.
_SERVER_OWNED = frozenset({"id", "meta", "text"})
# Where each resource type names its patient (R4): subject, or patient for AllergyIntolerance etc.
_PATIENT_FIELDS = ("subject", "patient")


@dataclass
class PatientGroup:
    """One Patient and every resource that refers to it, as read (fullUrl, resource)."""

    key: str
    origin: str
    patient: Resource | None = None
    patient_url: str | None = None
    resources: list[tuple[str | None, Resource]] = field(default_factory=list)

    def entries(self) -> list[tuple[str | None, Resource]]:
        assert self.patient is not None
        return [(self.patient_url, self.patient), *self.resources]


def _relative(ref: str) -> str:
    head = ref.split("/_history/", maxsplit=1)[0].rstrip("/")
    parts = head.split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 and not ref.startswith("urn:") else ref


def _patient_ref(resource: Resource) -> str | None:
    for name in _PATIENT_FIELDS:
        ref = resource.get(name)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            return _relative(ref["reference"])
    return None


def group_by_patient(
    items: Iterable[SourceItem], unattached: Counter[str] | None = None
) -> Iterator[PatientGroup]:
    """Groups in the order their Patients were first read; resources are kept per group once
    (a Bundle and its NDJSON copy both read give each resource once).

    A resource finds its Patient by its subject/patient reference (a Bundle's urn:uuid, a
    relative `Patient/id` or an absolute URL); references to no Patient read here form groups
    without a Patient, which the caller reports. Resources that name no patient at all
    (Organization, Practitioner, Medication, ...) belong to no case: counted by type in
    `unattached`.
    """
    groups: dict[str, PatientGroup] = {}
    alias: dict[str, str] = {}  # any name of a Patient -> its group key
    pending: list[tuple[str, SourceItem]] = []
    seen: set[tuple[str, str]] = set()
    for item in items:
        res = item.resource
        rtype = res.get("resourceType")
        rid = res.get("id")
        if isinstance(rid, str):
            if (str(rtype), rid) in seen:
                continue
            seen.add((str(rtype), rid))
        if rtype == "Patient":
            names = [n for n in (item.full_url, f"Patient/{rid}" if rid else None) if n]
            known = [alias[n] for n in names if n in alias]
            key = known[0] if known else (names[0] if names else f"#{len(groups)}")
            group = groups.setdefault(key, PatientGroup(key, item.origin))
            if group.patient is None:
                group.patient, group.patient_url, group.origin = res, item.full_url, item.origin
            for name in names:
                alias[name] = key
            continue
        ref = _patient_ref(res)
        if ref is None:
            if unattached is not None:
                unattached[str(rtype)] += 1
            continue
        pending.append((ref, item))
    for ref, item in pending:
        key = alias.get(ref, ref)
        group = groups.setdefault(key, PatientGroup(key, item.origin))
        group.resources.append((item.full_url, item.resource))
    yield from groups.values()


@dataclass(frozen=True)
class Losses:
    """What the FHIR data held that the case file does not: per case, named, counted."""

    not_case_data: dict[str, int]  # resource type -> count of resources without a case item id
    dropped: dict[str, int]  # element path (Type.element.child) -> resources that had it

    def lines(self) -> list[str]:
        out = []
        if self.not_case_data:
            kinds = ", ".join(f"{n} {t}" for t, n in sorted(self.not_case_data.items()))
            out.append(f"not written by fhir-cyclo, left out: {kinds}")
        if self.dropped:
            paths = ", ".join(f"{p} ({n})" for p, n in sorted(self.dropped.items()))
            out.append(f"elements the mappers do not read back: {paths}")
        return out

    def __bool__(self) -> bool:
        return bool(self.not_case_data or self.dropped)


def _paths(node: Any, prefix: str, out: set[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _paths(value, f"{prefix}.{key}", out)
    elif isinstance(node, list):
        for value in node:
            _paths(value, prefix, out)
    else:
        out.add(prefix)


def element_paths(resource: Resource) -> set[str]:
    """Every leaf path of a resource without list positions (`Observation.code.coding.code`)."""
    rtype = str(resource.get("resourceType"))
    out: set[str] = set()
    for key, value in resource.items():
        if key not in _SERVER_OWNED and key != "resourceType":
            _paths(value, f"{rtype}.{key}", out)
    return out


def losses(group: PatientGroup, case: Case, terms: Terminology) -> Losses:
    """Compare what was read with what the case gives when exported again: elements in the
    input that the re-export lacks are what FHIR carried but the case model cannot."""
    again: dict[tuple[str, str | None], Resource] = {}
    for res in case_to_resources(case, terms):
        item = item_id_from_identifiers(res.get("identifier"))
        again[(res["resourceType"], "patient" if res["resourceType"] == "Patient" else item)] = res
    foreign: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    for _, res in group.entries():
        rtype = str(res.get("resourceType"))
        item = "patient" if rtype == "Patient" else item_id_from_identifiers(res.get("identifier"))
        if item is None:
            foreign[rtype] += 1
            continue
        twin = again.get((rtype, item))
        have = element_paths(twin) if twin is not None else set()
        for path in sorted(element_paths(res) - have):
            dropped[path] += 1
    return Losses(dict(foreign), dict(dropped))
