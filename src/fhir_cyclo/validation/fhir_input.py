"""`fhir-cyclo validate` on FHIR files: what makes data wrong FHIR R4, read as `score` reads it.

Errors: R4B model errors (structure, cardinality, primitive formats), R4 required bindings
(bindings.py), entries with nothing in them, contained references (`#id`) that do not resolve,
duplicate fullUrls. Not errors in a record someone else wrote: codings outside mappings/,
references to resources outside the file, profiles we do not know. The project's own Bundles
(any entry carries the case-item identifier system export writes) keep every strict rule of
fhir/bundle.py: the tables and references inside the Bundle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fhir_cyclo.core.errors import InputError, pydantic_path
from fhir_cyclo.core.ids import ITEM_IDENTIFIER_SYSTEM
from fhir_cyclo.core.terminology import Terminology
from fhir_cyclo.fhir.bundle import check_bundle
from fhir_cyclo.readers.fhir import is_manifest, is_ndjson, ndjson_lines, read_json_bytes
from fhir_cyclo.validation.bindings import binding_problems

_R4B_BUNDLE = "Bundle: R4B validation:"


def r4b_problems(bundle: dict[str, Any]) -> list[str]:
    """Every R4B validation error of every entry ("entry[3] Observation.status: ..."), then
    those of the Bundle shell; check_bundle alone stops at the first error of the whole Bundle."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    problems: list[str] = []
    entries = bundle.get("entry")
    shell = dict(bundle)
    if isinstance(entries, list):
        shell["entry"] = [
            {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
            for e in entries
        ]
        for i, entry in enumerate(entries):
            res = entry.get("resource") if isinstance(entry, dict) else None
            kind = res.get("resourceType") if isinstance(res, dict) else None
            if not isinstance(kind, str):
                continue
            try:
                model = get_fhir_model_class(kind)
            except KeyError:
                problems.append(f"entry[{i}].resource: unknown resourceType {kind!r}")
                continue
            try:
                model.model_validate(res)
            except ValidationError as exc:
                problems.extend(
                    f"entry[{i}] {kind}.{pydantic_path(e['loc'])}: R4B validation: {e['msg']}"
                    for e in exc.errors()
                )
            except ValueError as exc:  # fhir.resources raises plain ValueErrors for some rules
                problems.append(f"entry[{i}] {kind}: R4B validation: {exc}")
    try:
        get_fhir_model_class("Bundle").model_validate(shell)
    except ValidationError as exc:
        problems.extend(
            f"Bundle.{pydantic_path(e['loc'])}: R4B validation: {e['msg']}" for e in exc.errors()
        )
    except ValueError as exc:
        problems.append(f"Bundle: R4B validation: {exc}")
    return problems


def bundle_problems(bundle: dict[str, Any], terms: Terminology) -> list[str]:
    """Bundle rules (references, fullUrls, codings) plus every R4B error."""
    rules = check_bundle(bundle, terms)
    if any(p.startswith(_R4B_BUNDLE) for p in rules):
        rules = [p for p in rules if not p.startswith(_R4B_BUNDLE)] + r4b_problems(bundle)
    return rules


# The R4 `code` pattern as fhir.resources words it; rewritten so the user sees the value.
_CODE_PATTERN = "String should match pattern '^[^\\s]+(\\s[^\\s]+)*$'"


@dataclass
class FhirReport:
    """What validating FHIR files found: problem lines, resources checked, notes (not errors)."""

    problems: list[str] = field(default_factory=list)
    resources: int = 0
    files: int = 0
    notes: list[str] = field(default_factory=list)


def is_ours(doc: dict[str, Any]) -> bool:
    """A Bundle fhir-cyclo wrote: some entry carries the case-item identifier system of export."""
    if doc.get("resourceType") != "Bundle":
        return False
    for entry in doc.get("entry") or []:
        res = entry.get("resource") if isinstance(entry, dict) else None
        idents = res.get("identifier") if isinstance(res, dict) else None
        if isinstance(idents, dict):
            idents = [idents]
        if isinstance(idents, list) and any(
            isinstance(i, dict) and i.get("system") == ITEM_IDENTIFIER_SYSTEM for i in idents
        ):
            return True
    return False


def _model_problems(resource: dict[str, Any], where: str) -> list[str]:
    """Every R4B model error of one resource, as '<where>.<element>: ...' lines."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    kind = resource.get("resourceType")
    try:
        model = get_fhir_model_class(str(kind))
    except KeyError:
        return [f"{where}: unknown resourceType {kind!r}"]
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        lines = []
        for e in exc.errors():
            at = f"{where}.{pydantic_path(e['loc'])}"
            if e["msg"] == _CODE_PATTERN:
                lines.append(
                    f"{at}: invalid code {e['input']!r}: leading, trailing or repeated whitespace"
                )
            else:
                lines.append(f"{at}: {e['msg']}")
        return lines
    except ValueError as exc:  # fhir.resources raises plain ValueErrors for some rules
        return [f"{where}: {exc}"]
    return []


def _local_refs(node: Any, at: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "contained":
                continue  # a contained resource's own references are checked with it
            if key == "reference" and isinstance(value, str) and value.startswith("#"):
                yield at, value
            else:
                yield from _local_refs(value, f"{at}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _local_refs(value, f"{at}[{i}]")


def _contained_problems(resource: dict[str, Any], where: str) -> list[str]:
    """`#id` references that name no contained resource of the resource that holds them."""
    contained = [c for c in resource.get("contained") or [] if isinstance(c, dict)]
    ids = {f"#{c.get('id')}" for c in contained if c.get("id")} | {"#"}
    problems = [
        f"{at}: reference {ref} names no contained resource"
        for at, ref in _local_refs(resource, where)
        if ref not in ids
    ]
    for i, inner in enumerate(contained):
        inner_where = f"{where}.contained[{i}]"
        problems.extend(binding_problems(inner, inner_where))
        # Inside a contained resource `#x` still means the container's contained list.
        problems.extend(
            f"{at}: reference {ref} names no contained resource"
            for at, ref in _local_refs(inner, inner_where)
            if ref not in ids
        )
    return problems


def resource_problems(resource: dict[str, Any], where: str) -> list[str]:
    """Every problem of one resource that is not a Bundle (model, bindings, contained refs)."""
    return (
        _model_problems(resource, where)
        + binding_problems(resource, where)
        + _contained_problems(resource, where)
    )


def _entry_problems(entry: Any, i: int) -> list[str]:
    where = f"entry[{i}]"
    if not isinstance(entry, dict):
        return [f"{where}: not an object"]
    request = entry.get("request") if isinstance(entry.get("request"), dict) else None
    method = request.get("method") if request else None
    if "resource" not in entry or entry["resource"] is None:
        if method in ("POST", "PUT", "PATCH"):
            return [f"{where}: no resource for request {method}"]
        if request is None and entry.get("response") is None:
            # R4 bdl-5: an entry must have a resource unless it has a request or response.
            return [f"{where}: no resource (and no request or response)"]
    return []


def document_problems(doc: Any, terms: Terminology) -> tuple[list[str], int]:
    """(problems, resources checked) of one JSON document: a resource or a Bundle of any type."""
    if not isinstance(doc, dict):
        return ["not a FHIR resource (a JSON object with resourceType)"], 0
    kind = doc.get("resourceType")
    if not isinstance(kind, str):
        inner = doc.get("resource")
        if isinstance(inner, dict) and "resourceType" in inner:
            found, count = document_problems(inner, terms)
            note = "a Bundle entry (fullUrl + resource), not a resource or a Bundle"
            return [f"resourceType: {note}", *(f"resource.{p}" for p in found)], count
        return ["not a FHIR resource (no resourceType)"], 0
    if kind != "Bundle":
        return resource_problems(doc, kind), 1
    if is_ours(doc):
        entries = doc.get("entry") or []
        return bundle_problems(doc, terms), len(entries) if isinstance(entries, list) else 0
    return _foreign_bundle(doc, terms)


def _foreign_bundle(bundle: dict[str, Any], terms: Terminology) -> tuple[list[str], int]:
    entries = bundle.get("entry")
    if entries is not None and not isinstance(entries, list):
        return ["Bundle.entry: must be a list"], 0
    # The Bundle without its resources: one model check for the shell and every entry's fields.
    shell = dict(bundle)
    if entries:
        shell["entry"] = [
            {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
            for e in entries
        ]
    problems = _model_problems(shell, "Bundle") + binding_problems(bundle, "Bundle")
    if not entries:
        return problems, 0
    count = 0
    seen: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(entries):
        problems.extend(_entry_problems(entry, i))
        if not isinstance(entry, dict):
            continue
        url = entry.get("fullUrl")
        res = entry.get("resource")
        if isinstance(url, str):
            version = str(((res or {}).get("meta") or {}).get("versionId", ""))
            if (url, version) in seen:  # R4 bdl-7: unique unless the versions differ
                problems.append(f"entry[{i}].fullUrl {url} duplicates entry[{seen[url, version]}]")
            else:
                seen[url, version] = i
        if res is None:
            continue
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            problems.append(f"entry[{i}].resource: not a FHIR resource (no resourceType)")
            continue
        if res["resourceType"] == "Bundle":
            found, inner = document_problems(res, terms)
            problems.extend(f"entry[{i}].resource {p}" for p in found)
            count += inner
            continue
        count += 1
        problems.extend(resource_problems(res, f"entry[{i}] {res['resourceType']}"))
    return problems, count


def validate_fhir_file(
    path: Path, terms: Terminology, report: FhirReport, on_case: Callable[[Path], None]
) -> None:
    """Add one file's problems to `report`; a JSON file that is a case file goes to `on_case`."""
    if is_ndjson(path):
        _ndjson(path, terms, report)
        return
    try:
        doc = read_json_bytes(path)
    except InputError as exc:
        report.problems.append(str(exc))
        report.files += 1
        return
    if isinstance(doc, dict) and "resourceType" not in doc:
        if is_manifest(doc):
            return  # a Bulk Data manifest: read_paths reads its files, it is no data itself
        if "resource" not in doc:
            on_case(path)  # a case file (or a broken one): the case checks name its fields
            return
    report.files += 1
    found, count = document_problems(doc, terms)
    report.resources += count
    report.problems.extend(f"{path}: {p}" for p in found)


def _ndjson(path: Path, terms: Terminology, report: FhirReport) -> None:
    report.files += 1
    first = True
    try:
        for number, line in ndjson_lines(path):
            where = f"{path}:{number}"
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                report.problems.append(f"{where}: not valid JSON: {exc}")
                continue
            if first and not (isinstance(doc, dict) and "resourceType" in doc):
                # A client's log.ndjson (Bulk Data downloads write one beside the data).
                report.notes.append(
                    f"{path}: skipped: not FHIR NDJSON (line {number} has no resourceType)"
                )
                report.files -= 1
                return
            first = False
            found, count = document_problems(doc, terms)
            report.resources += count
            report.problems.extend(f"{where}: {p}" for p in found)
    except InputError as exc:
        report.problems.append(str(exc))
