"""Per-entry results of transaction responses and single writes, parsed from HAPI-style answers."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fhir_cyclo.core.errors import FatalTransportError, OperationOutcome

STORAGE_CODE_SYSTEM = "https://hapifhir.io/fhir/CodeSystem/hapi-fhir-storage-response-code"

# HAPI's StorageResponseCodeEnum says what a write really did: a bare "200 OK" is an update, a
# no-change update or a conditional create that matched. Only these codes count as updates.
_UPDATED_CODES = frozenset(
    {
        "SUCCESSFUL_UPDATE",
        "SUCCESSFUL_UPDATE_WITH_CONDITIONAL_MATCH",
        "SUCCESSFUL_PATCH",
        "SUCCESSFUL_CONDITIONAL_PATCH",
    }
)
_STATUS = re.compile(r"^\s*(\d{3})\b")
_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]+$")


def parse_status(value: object) -> int | None:
    """`"201 Created"` -> 201; also accepts a bare int or "201"; None when unparsable."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _STATUS.match(value)
        if match:
            return int(match.group(1))
    return None


def parse_location(location: str | None) -> tuple[str | None, str | None, str | None]:
    """(type, id, version) from `Type/id/_history/v`, relative or absolute, _history optional.

    Ids and versions are opaque strings (HAPI numbers, Medplum UUIDs): nothing is converted.
    """
    if not location:
        return None, None, None
    path = urlsplit(location).path if "://" in location else location.split("?", 1)[0]
    parts = [p for p in path.split("/") if p]
    version: str | None = None
    if "_history" in parts:
        at = len(parts) - 1 - parts[::-1].index("_history")
        version = parts[at + 1] if at + 1 < len(parts) else None
        parts = parts[:at]
    if len(parts) < 2 or not _RESOURCE_TYPE.match(parts[-2]):
        return None, None, version
    return parts[-2], parts[-1], version


def parse_etag(etag: str | None) -> str | None:
    """Version from an ETag: HAPI sends a bare `1` in bundles and `W/"1"` in headers."""
    if not etag:
        return None
    value = etag.strip()
    value = value.removeprefix("W/")
    return value.strip('"') or None


@dataclass(frozen=True)
class EntryResult:
    """What the server did with one entry (or one single create/update/delete)."""

    status: int
    resource_type: str | None = None
    id: str | None = None
    version: str | None = None
    location: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    outcome: OperationOutcome | None = None
    resource: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def storage_code(self) -> str | None:
        """HAPI's SUCCESSFUL_CREATE / SUCCESSFUL_UPDATE... code, when the server sent one."""
        if self.outcome is None:
            return None
        for issue in self.outcome.raw.get("issue") or []:
            details = issue.get("details") if isinstance(issue, dict) else None
            for coding in (details or {}).get("coding") or []:
                if isinstance(coding, dict) and coding.get("system") == STORAGE_CODE_SYSTEM:
                    code = coding.get("code")
                    return str(code) if code else None
        return None

    @property
    def created(self) -> bool:
        # 201 is unambiguous on every server (HAPI also answers 201 to a PUT that creates).
        return self.status == 201

    @property
    def updated(self) -> bool:
        code = self.storage_code
        if code is not None:
            return code in _UPDATED_CODES
        # Without HAPI's code a 200 on a write is the best signal (Medplum answers an
        # upsert to a new id with 200, so this may over-count updates there).
        return self.status == 200 and self.location is not None


@dataclass(frozen=True)
class TransactionResult:
    """The parsed transaction-response: one EntryResult per request entry, in request order."""

    entries: tuple[EntryResult, ...]
    bundle_type: str = "transaction-response"
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[EntryResult]:
        return iter(self.entries)

    def __getitem__(self, index: int) -> EntryResult:
        return self.entries[index]

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.entries)

    @property
    def created(self) -> int:
        return sum(e.created for e in self.entries)

    @property
    def updated(self) -> int:
        return sum(e.updated for e in self.entries)


def entry_from_headers(status: int, headers: Mapping[str, str], body: Any) -> EntryResult:
    """EntryResult of a plain create/update/delete from its Location/ETag headers and body."""
    location = headers.get("Content-Location") or headers.get("Location")
    rtype, rid, version = parse_location(location)
    etag = headers.get("ETag")
    resource = body if isinstance(body, dict) and "resourceType" in body else None
    outcome = OperationOutcome.from_json(body)
    if outcome is not None:
        resource = None
    elif resource is not None:
        rtype = rtype or resource.get("resourceType")
        rid = rid or resource.get("id")
        version = version or (resource.get("meta") or {}).get("versionId")
    return EntryResult(
        status=status,
        resource_type=rtype,
        id=rid,
        version=version or parse_etag(etag),
        location=location,
        etag=etag,
        last_modified=headers.get("Last-Modified"),
        outcome=outcome,
        resource=resource,
    )


def parse_transaction_response(
    body: Any, *, url: str, expected_entries: int | None = None
) -> TransactionResult:
    """Parse a transaction-response (or batch-response) Bundle; refuse anything else."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        kind = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
        raise FatalTransportError(
            f"POST {url} answered {kind!s} instead of a transaction-response Bundle", url=url
        )
    bundle_type = str(body.get("type", ""))
    if bundle_type not in ("transaction-response", "batch-response"):
        raise FatalTransportError(
            f"POST {url} answered a Bundle of type {bundle_type or '(none)'!r}, "
            f"expected transaction-response",
            url=url,
        )
    raw_entries = body.get("entry") or []
    if expected_entries is not None and len(raw_entries) != expected_entries:
        # Entry i answers request entry i; a count mismatch makes every mapping suspect.
        raise FatalTransportError(
            f"POST {url}: the transaction had {expected_entries} entries but the response has "
            f"{len(raw_entries)}",
            url=url,
        )
    entries = []
    for index, raw in enumerate(raw_entries):
        response = raw.get("response") if isinstance(raw, dict) else None
        status = parse_status(response.get("status")) if isinstance(response, dict) else None
        if not isinstance(response, dict) or status is None:
            raise FatalTransportError(
                f"POST {url}: transaction-response entry {index} has no valid response.status",
                url=url,
            )
        location = response.get("location")
        etag = response.get("etag")
        rtype, rid, version = parse_location(location)
        resource = raw.get("resource")
        if isinstance(resource, dict) and rtype is None:
            rtype, rid = resource.get("resourceType"), resource.get("id")
        entries.append(
            EntryResult(
                status=status,
                resource_type=rtype,
                id=rid,
                version=version or parse_etag(etag),
                location=location,
                etag=etag,
                last_modified=response.get("lastModified"),
                outcome=OperationOutcome.from_json(response.get("outcome")),
                resource=resource if isinstance(resource, dict) else None,
            )
        )
    return TransactionResult(entries=tuple(entries), bundle_type=bundle_type, raw=body)
