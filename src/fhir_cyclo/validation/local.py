"""`fhir-cyclo validate`, local checks: case files, cohort folders and FHIR Bundles, every problem.

Each problem is one "file: where: message" line: every model error and table check of a case (not
only the first), every R4B error of every Bundle entry, every Bundle rule. A server-side check
(`$validate` on a FHIR server) would add lines of the same form; it is not part of this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from fhir_cyclo.core.errors import InputError, pydantic_path
from fhir_cyclo.core.terminology import Terminology, terminology
from fhir_cyclo.fhir.bundle import check_bundle, transaction_bundle
from fhir_cyclo.readers.case_files import discover, load, read_structured

_R4B_BUNDLE = "Bundle: R4B validation:"


def _is_fhir(path: Path) -> bool:
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        head = orjson.loads(path.read_bytes())
    except (orjson.JSONDecodeError, OSError):
        return False
    return isinstance(head, dict) and "resourceType" in head


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


def validate_paths(paths: Iterable[str | Path]) -> tuple[list[str], int, list[str]]:
    """(problems as 'file: where: message' lines, items checked, files skipped as not ours)."""
    terms = terminology()
    problems: list[str] = []
    skipped: list[str] = []
    checked = 0
    case_paths: list[Path] = []
    for path in discover(paths, skipped):
        if _is_fhir(path):
            checked += 1
            try:
                data = read_structured(path)
            except InputError as exc:
                problems.append(str(exc))
                continue
            problems.extend(f"{path}: {p}" for p in bundle_problems(data, terms))
        else:
            case_paths.append(path)
    for loaded in load(case_paths, terms):
        checked += 1
        if loaded.case is None:
            problems.extend(str(p) for p in loaded.problems)
            continue
        try:
            bundle = transaction_bundle(loaded.case, terms)
        except InputError as exc:
            problems.append(f"{loaded.source}: {exc.path}: {exc.message}")
            continue
        problems.extend(f"{loaded.source}: {p}" for p in bundle_problems(bundle, terms))
    return problems, checked, skipped
