"""Shared builders for FHIR datatypes (CodeableConcept, Quantity, times) and mapping contexts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fhir_cyclo.core.case import Age, Identifier, RelativeTime, When
from fhir_cyclo.core.errors import MappingError
from fhir_cyclo.core.ids import item_id_from_identifiers, item_identifier, resource_id
from fhir_cyclo.core.terminology import LOCAL_BASE, UCUM, CodingEntry, Concept, Terminology

Resource = dict[str, Any]

EXT = f"{LOCAL_BASE}/StructureDefinition"
# Elements whose FHIR type has no Age/String choice get the source's relative time in one of these.
EXT_TIME = {
    "effective": f"{EXT}/time-effective",
    "start": f"{EXT}/time-start",
    "end": f"{EXT}/time-end",
}
EXT_LINE_OF_THERAPY = f"{EXT}/line-of-therapy"
EXT_TARGET_TROUGH = f"{EXT}/target-trough"
EXT_DUE_TO = "http://hl7.org/fhir/StructureDefinition/condition-dueTo"


@dataclass(frozen=True)
class ToContext:
    """What a `to_fhir` needs besides its item: the case identity and the tables."""

    case: Identifier
    terms: Terminology
    # Ids already derived for this case: every resource points at the Patient (and most at a
    # Condition), and a uuid5 costs more than the rest of a small resource's mapping.
    _ids: dict[tuple[str, str], str] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def rid(self, resource_type: str, item_id: str) -> str:
        key = (resource_type, item_id)
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = resource_id(self.case, resource_type, item_id)
        return found

    def ref(self, resource_type: str, item_id: str) -> dict[str, str]:
        # urn:uuid references: the server rewrites them to its own Type/id in the transaction.
        return {"reference": f"urn:uuid:{self.rid(resource_type, item_id)}"}

    def patient_ref(self) -> dict[str, str]:
        return self.ref("Patient", "patient")

    def identifier(self, item_id: str) -> list[dict[str, str]]:
        return [item_identifier(self.case, item_id)]


@dataclass
class FromContext:
    """Resolves references of one case's resources back to case item ids."""

    terms: Terminology
    source: str = "bundle"
    # reference string (urn:uuid:..., Type/id) -> (resource type, item id)
    items: dict[str, tuple[str, str]] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)

    def register(self, resource: Resource, full_url: str | None = None) -> None:
        item = item_id_from_identifiers(resource.get("identifier"))
        rtype = str(resource.get("resourceType"))
        keys = []
        if full_url:
            keys.append(full_url)
        if resource.get("id"):
            keys.append(f"{rtype}/{resource['id']}")
        for key in keys:
            self.resources[key] = resource
            if item is not None:
                self.items[key] = (rtype, item)

    def item_of(self, reference: object, expected_type: str, path: str) -> str:
        ref = reference.get("reference") if isinstance(reference, dict) else None
        if not isinstance(ref, str):
            raise MappingError("reference without a `reference` string", path=path)
        found = self.items.get(ref) or self.items.get(_relative(ref))
        if found is None or found[0] != expected_type:
            raise MappingError(
                f"reference {ref!r} does not resolve to a {expected_type}", path=path
            )
        return found[1]

    def resource_of(self, reference: object) -> Resource | None:
        ref = reference.get("reference") if isinstance(reference, dict) else None
        if not isinstance(ref, str):
            return None
        return self.resources.get(ref) or self.resources.get(_relative(ref))


def _relative(ref: str) -> str:
    """`http://server/fhir/Condition/abc` -> `Condition/abc` (absolute references from servers)."""
    parts = ref.rstrip("/").split("/")
    if len(parts) >= 2 and "/_history/" not in ref:
        return "/".join(parts[-2:])
    if "/_history/" in ref:
        head = ref.split("/_history/", maxsplit=1)[0].split("/")
        return "/".join(head[-2:])
    return ref


# --- numbers, quantities, concepts --------------------------------------------------------------


def number(value: float) -> int | float:
    """Integral floats go out as JSON integers (1000, not 1000.0); readers get floats back."""
    return int(value) if float(value).is_integer() and abs(value) < 2**53 else value


def quantity(value: float, unit: str, display: str | None = None) -> dict[str, Any]:
    return {"value": number(value), "unit": display or unit, "system": UCUM, "code": unit}


def quantity_value(q: object, path: str) -> tuple[float, str]:
    if not isinstance(q, dict) or not isinstance(q.get("value"), int | float):
        raise MappingError("Quantity without a numeric value", path=path)
    unit = q.get("code") if q.get("system") == UCUM else q.get("unit")
    if not isinstance(unit, str):
        raise MappingError("Quantity without a UCUM code", path=path)
    return float(q["value"]), unit


def concept_cc(concept: Concept, text: str | None) -> dict[str, Any]:
    """CodeableConcept of a table concept; `text` is the source's wording, else the table label."""
    return {"coding": [c.fhir() for c in concept.codings], "text": text or concept.text}


def coding_cc(entry: CodingEntry, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [entry.fhir()]}
    if text:
        out["text"] = text
    return out


def concept_from_cc(
    cc: object, index: Mapping[tuple[str, str], str], group: Mapping[str, Concept], path: str
) -> tuple[str, str | None]:
    """(concept key, source text or None) from a CodeableConcept; codings decide, not display."""
    if not isinstance(cc, dict):
        raise MappingError("missing CodeableConcept", path=path)
    for coding in cc.get("coding") or []:
        key = index.get((coding.get("system"), coding.get("code")))
        if key is not None:
            text = cc.get("text")
            # The table label means "no wording of its own": keep the case canonical.
            return key, (text if text and text != group[key].text else None)
    raise MappingError("no coding known to mappings/terminology.yaml", path=path)


def entry_key(entries: Mapping[Any, CodingEntry], cc: object, path: str) -> Any:
    """Key of the table entry whose coding appears in a CodeableConcept."""
    codings = cc.get("coding") if isinstance(cc, dict) else None
    for coding in codings or []:
        for key, entry in entries.items():
            if (entry.system, entry.code) == (coding.get("system"), coding.get("code")):
                return key
    raise MappingError("no coding known to mappings/terminology.yaml", path=path)


# --- times --------------------------------------------------------------------------------------


def age_quantity(age: Age) -> dict[str, Any]:
    return {"value": number(age.age), "unit": "years", "system": UCUM, "code": "a"}


def when_choice(prefix: str, when: When | None) -> dict[str, Any]:
    """`onset[x]`/`performed[x]`-style choice with DateTime | Age | String alternatives."""
    if when is None:
        return {}
    if isinstance(when, str):
        return {f"{prefix}DateTime": when}
    if isinstance(when, Age):
        return {f"{prefix}Age": age_quantity(when)}
    return {f"{prefix}String": when.text}


def when_from_choice(resource: Mapping[str, Any], prefix: str, path: str) -> When | None:
    if f"{prefix}DateTime" in resource:
        return str(resource[f"{prefix}DateTime"])
    if f"{prefix}Age" in resource:
        value, unit = quantity_value(resource[f"{prefix}Age"], f"{path}.{prefix}Age")
        if unit != "a":
            raise MappingError(f"age unit {unit!r} is not years ('a')", path=f"{path}.{prefix}Age")
        return Age(age=value)
    if f"{prefix}String" in resource:
        return RelativeTime(text=str(resource[f"{prefix}String"]))
    return None


def time_extension(role: str, when: When) -> dict[str, Any]:
    """Extension for an Age/relative time on an element that only takes dateTime."""
    if isinstance(when, Age):
        return {"url": EXT_TIME[role], "valueAge": age_quantity(when)}
    assert isinstance(when, RelativeTime)
    return {"url": EXT_TIME[role], "valueString": when.text}


def time_from_extension(resource: Mapping[str, Any], role: str, path: str) -> When | None:
    for ext in resource.get("extension") or []:
        if ext.get("url") == EXT_TIME[role]:
            if "valueAge" in ext:
                value, _ = quantity_value(ext["valueAge"], f"{path}.extension")
                return Age(age=value)
            return RelativeTime(text=str(ext.get("valueString", "")))
    return None


def extension_value(resource: Mapping[str, Any], url: str) -> Mapping[str, Any] | None:
    for ext in resource.get("extension") or []:
        if ext.get("url") == url:
            return dict(ext)
    return None


def notes(text: str | None) -> dict[str, Any]:
    return {"note": [{"text": text}]} if text else {}


def note_from(resource: Mapping[str, Any]) -> str | None:
    items = resource.get("note") or []
    return str(items[0].get("text")) if items else None
