"""Transaction Bundles per case, Bundle/NDJSON serialisation, and the Bundle rule checks."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

import orjson

from fhir_cyclo.core.case import Case
from fhir_cyclo.core.terminology import Terminology, terminology
from fhir_cyclo.fhir.r4b import error_text as _first_error
from fhir_cyclo.fhir.r4b import shape_validator
from fhir_cyclo.mappers import case_to_resources, resources_to_case
from fhir_cyclo.mappers.datatypes import Resource


def transaction_bundle(
    case: Case, terms: Terminology | None = None, resources: list[Resource] | None = None
) -> Resource:
    """One transaction per case: Patient matched by identifier, the rest PUT to deterministic ids.

    Only the Patient is conditional (PUT Patient?identifier=...), so a re-export updates it and
    servers that cap conditional entries per transaction (Medplum) accept large bundles.
    """
    entries = []
    for res in resources if resources is not None else case_to_resources(case, terms):
        rtype, rid = res["resourceType"], res["id"]
        if rtype == "Patient":
            token = quote(case.identifier.token, safe=":/|._-~")
            # No body id: the server owns the Patient's id (HAPI strips it; 2279 otherwise).
            body = {k: v for k, v in res.items() if k != "id"}
            request = {"method": "PUT", "url": f"Patient?identifier={token}"}
        else:
            body = res
            request = {"method": "PUT", "url": f"{rtype}/{rid}"}
        entries.append({"fullUrl": f"urn:uuid:{rid}", "resource": body, "request": request})
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def dumps(resource: Resource, *, pretty: bool = True) -> bytes:
    """Deterministic JSON bytes (insertion-ordered keys, UTF-8, trailing newline when pretty)."""
    if pretty:
        return orjson.dumps(resource, option=orjson.OPT_INDENT_2) + b"\n"
    return orjson.dumps(resource)


def bundle_entries(bundle: Resource) -> list[tuple[str | None, Resource]]:
    return [
        (e.get("fullUrl"), e["resource"])
        for e in bundle.get("entry") or []
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]


def bundle_to_case(
    bundle: Resource, terms: Terminology | None = None, source: str = "bundle"
) -> Case:
    return resources_to_case(bundle_entries(bundle), terms, source)


def with_local_references(resources: Iterable[Resource]) -> list[Resource]:
    """Copies whose `urn:uuid:` references become `Type/id` (NDJSON and collection output)."""
    items = list(resources)
    targets = {f"urn:uuid:{r['id']}": f"{r['resourceType']}/{r['id']}" for r in items}
    return [_rewrite(r, targets) for r in items]


# In compact JSON a raw `"reference":"` can only be a `reference` key with a string value (a
# quote inside a string is always escaped), so this finds exactly the values `_rewrite` looks at.
_URN_REFERENCE = b'"reference":"urn:uuid:'
_VALUE_AT = len(b'"reference":"')
# Characters JSON may escape: an id containing one is not compared as raw bytes.
_ESCAPED = re.compile(r'["\\\x00-\x1f]')


def local_reference_lines(resources: list[Resource], compact: list[bytes]) -> list[bytes]:
    """`dumps(r, pretty=False)` of each of `with_local_references(resources)`, made from the
    compact bytes of the resources as they are (`compact[i] == dumps(resources[i], pretty=False)`).

    The same bytes without copying every resource: only the reference values are replaced, in
    the serialised text. Falls back to `with_local_references` for ids JSON would escape.
    """
    targets: dict[bytes, bytes] = {}
    for r in resources:
        rid, rtype = str(r.get("id")), str(r.get("resourceType"))
        if _ESCAPED.search(rid) or _ESCAPED.search(rtype):
            return [dumps(x, pretty=False) for x in with_local_references(resources)]
        targets[rid.encode()] = f"{rtype}/{rid}".encode()
    return [_local_line(line, targets) for line in compact]


def _local_line(line: bytes, targets: dict[bytes, bytes]) -> bytes:
    at = line.find(_URN_REFERENCE)
    if at < 0:
        return line
    parts = []
    done = 0
    while at >= 0:
        start = at + len(_URN_REFERENCE)
        end = line.find(b'"', start)
        # The value is exactly urn:uuid:<id> only when that quote closes it: an id holds no
        # backslash, so a match in `targets` also proves the quote is not an escaped one.
        local = targets.get(line[start:end])
        if local is not None:
            parts.append(line[done : at + _VALUE_AT])
            parts.append(local)
            done = end
        at = line.find(_URN_REFERENCE, start)
    parts.append(line[done:])
    return b"".join(parts)


def _rewrite(node: Any, targets: dict[str, str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                out[key] = targets.get(value, value)
            else:
                out[key] = _rewrite(value, targets)
        return out
    if isinstance(node, list):
        return [_rewrite(v, targets) for v in node]
    return node


# --- rule checks --------------------------------------------------------------------------------


def _references(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield path, value
            else:
                yield from _references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _references(value, f"{path}[{i}]")


def _codings(node: Any, path: str) -> Iterator[tuple[str, Any, Any]]:
    if isinstance(node, dict):
        if "system" in node and "code" in node and "value" not in node and "unit" not in node:
            yield path, node.get("system"), node.get("code")
        for key, value in node.items():
            yield from _codings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _codings(value, f"{path}[{i}]")


def validate_resource(resource: Resource) -> str | None:
    """First fhir.resources R4B validation error of a resource, None when it validates.

    Same verdicts and messages as `model_validate`; resources shaped like one already seen are
    checked value by value instead of model by model (see r4b.py), which is what keeps export fast.
    """
    return shape_validator().first_error(resource)


def check_bundle(bundle: Resource, terms: Terminology | None = None) -> list[str]:
    """Every rule problem of a Bundle: empty list when it is sound.

    fullUrls unique; each reference resolves inside the bundle; no empty resource; each resource
    validates with fhir.resources R4B; each coding's system+code is in mappings/.
    """
    from fhir.resources.R4B import get_fhir_model_class  # heavy import, only when checking

    terms = terms or terminology()
    problems: list[str] = []
    if bundle.get("resourceType") != "Bundle":
        return ["not a Bundle"]
    try:
        get_fhir_model_class("Bundle").model_validate(bundle)
    except ValueError as exc:
        problems.append(f"Bundle: R4B validation: {_first_error(exc)}")
    full_urls: dict[str, int] = {}
    for i, entry in enumerate(bundle.get("entry") or []):
        url = entry.get("fullUrl")
        if url in full_urls:
            problems.append(f"entry[{i}].fullUrl {url} duplicates entry[{full_urls[url]}]")
        elif url:
            full_urls[url] = i
    known = set(full_urls)
    for _, res in bundle_entries(bundle):
        if res.get("id"):
            known.add(f"{res['resourceType']}/{res['id']}")
    for i, entry in enumerate(bundle.get("entry") or []):
        problems += _entry_problems(i, entry.get("resource"), known, terms)
    return problems


def _entry_problems(i: int, res: Any, known: set[str], terms: Terminology) -> list[str]:
    """An entry's resource: not empty, references resolving to `known`, codings in mappings/."""
    where = f"entry[{i}] {(res or {}).get('resourceType', '?')}"
    if not isinstance(res, dict) or len(res) <= 1:
        return [f"{where}: empty resource"]
    problems = [
        f"{path}: reference {ref} does not resolve inside the bundle"
        for path, ref in _references(res, where)
        if ref not in known
    ]
    problems += [
        f"{path}: coding {system}|{code} is not in mappings/"
        for path, system, code in _codings(res, where)
        if (system, code) not in terms.known_codings
    ]
    return problems
