"""Recorded-response loaders and small synthetic FHIR payload builders for the contract tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import requests

from fhir_cyclo.client import FhirClient

DATA = Path(__file__).parent / "data"
BASE = "https://hapi.fhir.org/baseR4"
FHIR_JSON = "application/fhir+json"

MakeClient = Callable[..., FhirClient]


def load(name: str) -> dict[str, Any]:
    """A recorded HAPI response from tests/contract/data/."""
    data: dict[str, Any] = orjson.loads((DATA / name).read_bytes())
    return data


def recorded_ids(name: str) -> list[str]:
    """The ids in a recorded transaction-response's Locations ("Type/id/_history/n")."""
    return [e["response"]["location"].split("/")[1] for e in load(name)["entry"]]


def tx_bundle(entries: int, *, tag: str = "x") -> dict[str, Any]:
    """A transaction Bundle of `entries` PUT Observation entries (the mock ignores content)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{tag}-{i}",
                "resource": {"resourceType": "Observation", "id": f"{tag}-{i}", "status": "final"},
                "request": {"method": "PUT", "url": f"Observation/{tag}-{i}"},
            }
            for i in range(entries)
        ],
    }


def searchset(
    resources: list[dict[str, Any]],
    *,
    next_url: str | None = None,
    modes: list[str] | None = None,
) -> dict[str, Any]:
    """A synthetic searchset page without `total` (like HAPI's large searches)."""
    links = [{"relation": "self", "url": "ignored"}]
    if next_url is not None:
        links.append({"relation": "next", "url": next_url})
    modes = modes or ["match"] * len(resources)
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": [
            {"resource": r, "search": {"mode": m}} for r, m in zip(resources, modes, strict=True)
        ],
    }


def obs(obs_id: str) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": obs_id, "status": "final"}


def outcome(diagnostics: str) -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "processing", "diagnostics": diagnostics}],
    }


def sent_body(request: requests.PreparedRequest) -> bytes:
    """The bytes a mocked request carried (the client always sends bytes, never json=)."""
    assert isinstance(request.body, bytes), type(request.body)
    return request.body


def sent_url(request: requests.PreparedRequest) -> str:
    assert request.url is not None
    return request.url
