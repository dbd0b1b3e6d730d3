"""Deterministic resource ids and business identifiers: a re-export updates, never duplicates."""

from __future__ import annotations

import hashlib
import uuid

from fhir_cyclo.core.case import Identifier
from fhir_cyclo.core.terminology import LOCAL_BASE

# Fixed namespace for every uuid5 this project derives; changing it orphans all data on servers.
NAMESPACE = uuid.UUID("6f0f3c8e-2a4b-5d7e-9c1a-3b5e7d9f1a2c")

ITEM_IDENTIFIER_SYSTEM = f"{LOCAL_BASE}/sid/case-item"
"""Business identifier system of every non-Patient resource: value is `<case token>|<item id>`."""

PATIENT_ITEM = "patient"


# SHA-1 state after the namespace bytes: every id hashes the namespace first (RFC 4122 name-based
# ids), so each id copies this state instead of hashing those 16 bytes again.
_NAMESPACE_SHA1 = hashlib.sha1(NAMESPACE.bytes, usedforsecurity=False)


def uuid5_text(name: str) -> str:
    """`str(uuid.uuid5(NAMESPACE, name))` without the UUID object (export derives one per
    resource): the first 16 bytes of SHA-1(namespace + name) with the version (5) and RFC 4122
    variant bits set, as `uuid.UUID(bytes=..., version=5)` sets them."""
    sha = _NAMESPACE_SHA1.copy()
    sha.update(name.encode())
    raw = bytearray(sha.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50
    raw[8] = (raw[8] & 0x3F) | 0x80
    x = raw.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def resource_id(case: Identifier, resource_type: str, item_id: str) -> str:
    """uuid5 of type, case identifier and item: stable across runs and machines."""
    return uuid5_text(f"{resource_type}|{case.system}|{case.value}|{item_id}")


def item_identifier(case: Identifier, item_id: str) -> dict[str, str]:
    return {"system": ITEM_IDENTIFIER_SYSTEM, "value": f"{case.token}|{item_id}"}


def item_id_from_identifiers(identifiers: object) -> str | None:
    """The case-local item id from a resource's identifiers, None if it has none of ours."""
    if isinstance(identifiers, dict):  # AdverseEvent.identifier is a single Identifier in R4
        identifiers = [identifiers]
    if not isinstance(identifiers, list):
        return None
    for ident in identifiers:
        if isinstance(ident, dict) and ident.get("system") == ITEM_IDENTIFIER_SYSTEM:
            value = ident.get("value")
            if isinstance(value, str) and "|" in value:
                return value.rsplit("|", 1)[1]
    return None
