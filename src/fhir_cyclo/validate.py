"""`fhir-cyclo validate`: check case files, cohort folders and FHIR Bundles; list every problem."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from fhir_cyclo.bundle import check_bundle, transaction_bundle
from fhir_cyclo.errors import InputError
from fhir_cyclo.inputs import discover, load, read_structured
from fhir_cyclo.terminology import terminology


def _is_fhir(path: Path) -> bool:
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        head = json.loads(path.read_bytes())
    except (ValueError, OSError):
        return False
    return isinstance(head, dict) and "resourceType" in head


def validate_paths(paths: Iterable[str | Path]) -> tuple[list[str], int]:
    """(problems as 'file: path: message' lines, number of items checked)."""
    terms = terminology()
    problems: list[str] = []
    checked = 0
    case_paths: list[Path] = []
    for path in discover(paths):
        if _is_fhir(path):
            checked += 1
            try:
                data = read_structured(path)
            except InputError as exc:
                problems.append(str(exc))
                continue
            problems.extend(f"{path}: {p}" for p in check_bundle(data, terms))
        else:
            case_paths.append(path)
    for loaded in load(case_paths, terms):
        checked += 1
        if loaded.error is not None:
            problems.append(str(loaded.error))
            continue
        assert loaded.case is not None
        try:
            bundle = transaction_bundle(loaded.case, terms)
        except InputError as exc:
            problems.append(f"{loaded.source}: {exc.path}: {exc.message}")
            continue
        problems.extend(f"{loaded.source}: {p}" for p in check_bundle(bundle, terms))
    return problems, checked
