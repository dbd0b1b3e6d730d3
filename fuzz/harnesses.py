"""Fuzz targets, one per reader: each takes bytes and may raise only fhir-cyclo's own errors.

Run under atheris by fuzz/run.py (`make fuzz`, and briefly by tests/unit/test_fuzz.py). Any other
exception is a crash: it becomes a file in tests/bad_input/ with its expected message.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from fhir_cyclo.core.errors import FhirCycloError

_WORK = Path(tempfile.mkdtemp(prefix="fhir-cyclo-fuzz-"))
atexit.register(shutil.rmtree, _WORK, ignore_errors=True)


def _write(name: str, data: bytes) -> Path:
    path = _WORK / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def case_file(data: bytes) -> None:
    """Case file reader (YAML, or JSON when it starts with '{'), model, table checks, mapping."""
    from fhir_cyclo.core.terminology import terminology
    from fhir_cyclo.export.writer import map_case
    from fhir_cyclo.readers.case_files import load

    suffix = ".json" if data[:1] == b"{" else ".yaml"
    path = _write(f"case/case{suffix}", data)
    for other in path.parent.iterdir():
        if other != path:
            other.unlink()
    terms = terminology()
    for loaded in load([path], terms):
        if loaded.case is not None:
            map_case(loaded.case, terms, validate=False)


def cohort_folder(data: bytes) -> None:
    """Cohort CSV folder: the input is cohort.yaml, patients.csv and labs.csv split on b'\\x00'."""
    from fhir_cyclo.core.terminology import terminology
    from fhir_cyclo.export.writer import map_case
    from fhir_cyclo.readers.cohort import cohort_cases

    parts = [*data.split(b"\x00", 2), b"", b""][:3]
    folder = _WORK / "cohort"
    for name, part in zip(("cohort.yaml", "patients.csv", "labs.csv"), parts, strict=True):
        _write(f"cohort/{name}", part)
    terms = terminology()
    for loaded in cohort_cases(folder, terms):
        if loaded.case is not None:
            map_case(loaded.case, terms, validate=False)


def _score(path: Path) -> None:
    from fhir_cyclo.readers.fhir import read_paths
    from fhir_cyclo.scoring.extract import extract
    from fhir_cyclo.scoring.rules import score

    errors: list[FhirCycloError] = []
    score(extract(read_paths([path], on_error=errors.append)))


def fhir_json(data: bytes) -> None:
    """A FHIR JSON file (Bundle of any type, resource, list) read and scored."""
    _score(_write("fhir/input.json", data))


def ndjson(data: bytes) -> None:
    """An NDJSON file read line by line and scored."""
    _score(_write("fhir/input.ndjson", data))


def manifest(data: bytes) -> None:
    """A Bulk Data export manifest.json (scoring.sources.read_manifest), beside one output file
    its urls may name."""
    from fhir_cyclo.readers.fhir import read_manifest

    path = _write("bulk/manifest.json", data)
    _write("bulk/Patient.ndjson", b'{"resourceType": "Patient", "id": "p1"}\n')
    read_manifest(path)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "case_file": case_file,
    "cohort_folder": cohort_folder,
    "fhir_json": fhir_json,
    "ndjson": ndjson,
    "manifest": manifest,
}


def check(target: str, data: bytes) -> None:
    """Run one input: fhir-cyclo's own errors are the expected outcome of bad input."""
    with contextlib.suppress(FhirCycloError):
        TARGETS[target](data)
