"""Locate and read the data tables in mappings/ (YAML), with errors that name the file."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import yaml

from fhir_cyclo.core.errors import TerminologyError


def mappings_dir() -> Path:
    """The mappings/ folder: $FHIR_CYCLO_MAPPINGS, the repo checkout, or the copy inside a wheel."""
    override = os.environ.get("FHIR_CYCLO_MAPPINGS")
    if override:
        return Path(override)
    here = Path(__file__).resolve().parent
    for candidate in (here.parents[2] / "mappings", here.parent / "_mappings"):
        if candidate.is_dir():
            return candidate
    raise TerminologyError("mappings/ folder not found (set FHIR_CYCLO_MAPPINGS)")


# libyaml's safe loader when PyYAML was built with it: the same data (a unit test compares every
# table), parsed 6-20x faster; terminology.yaml alone took 96 ms of each command's start-up.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.cache
def load_table(name: str) -> dict[str, Any]:
    """Parse mappings/<name>.yaml once; a missing or malformed file is a TerminologyError."""
    path = mappings_dir() / f"{name}.yaml"
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_SAFE_LOADER)  # noqa: S506
    except FileNotFoundError as exc:
        raise TerminologyError(f"{path}: table missing") from exc
    except yaml.YAMLError as exc:
        raise TerminologyError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise TerminologyError(f"{path}: top level must be a mapping")
    return data
