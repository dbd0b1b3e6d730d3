"""Bulk Data export manifest (the JSON a `$export` status request returns): checked, then listed.

A minimal reader with one contract, `parse_manifest(data, source) -> list[ManifestOutput]` raising
only InputError, so the fuzz harness (fuzz/harnesses.py) has a fixed target; the Bulk Data client
reads manifests through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from fhir_cyclo.errors import InputError

MAX_OUTPUTS = 10_000  # one file per type and chunk; far above any real export


@dataclass(frozen=True)
class ManifestOutput:
    """One output (or error) file of a Bulk Data export."""

    type: str
    url: str
    count: int | None = None
    error: bool = False


def _outputs(doc: dict[str, Any], key: str, source: str, *, error: bool) -> list[ManifestOutput]:
    raw = doc.get(key, [])
    if not isinstance(raw, list):
        raise InputError("must be a list", source=source, path=key)
    if len(raw) > MAX_OUTPUTS:
        raise InputError(f"more than {MAX_OUTPUTS} entries", source=source, path=key)
    out = []
    for i, entry in enumerate(raw):
        where = f"{key}[{i}]"
        if not isinstance(entry, dict):
            raise InputError("must be an object", source=source, path=where)
        kind, url, count = entry.get("type"), entry.get("url"), entry.get("count")
        if not isinstance(kind, str) or not kind.isalpha():
            raise InputError(
                "type must be a FHIR resource type", source=source, path=f"{where}.type"
            )
        if not isinstance(url, str) or not url:
            raise InputError("url must be a string", source=source, path=f"{where}.url")
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:  # "https://[bad": an invalid IPv6 host
            host = None
        if host is None or parts.scheme not in ("http", "https"):
            raise InputError(
                "url must be an absolute http(s) URL", source=source, path=f"{where}.url"
            )
        if count is not None and (
            isinstance(count, bool) or not isinstance(count, int) or count < 0
        ):
            raise InputError(
                "count must be a whole number >= 0", source=source, path=f"{where}.count"
            )
        out.append(ManifestOutput(kind, url, count, error))
    return out


def parse_manifest(data: bytes, source: str) -> list[ManifestOutput]:
    """Every output and error file of a manifest; InputError naming the field if it is unusable."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc}", source=source) from None
    if not isinstance(doc, dict):
        raise InputError("a Bulk Data manifest is a JSON object", source=source)
    if not isinstance(doc.get("transactionTime"), str):
        raise InputError(
            "missing: not a Bulk Data export manifest", source=source, path="transactionTime"
        )
    if "output" not in doc:
        raise InputError("missing", source=source, path="output")
    return _outputs(doc, "output", source, error=False) + _outputs(doc, "error", source, error=True)
