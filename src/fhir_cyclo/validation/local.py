"""`fhir-cyclo validate`, local checks: case files, cohort folders and FHIR files, every problem.

Each problem is one "file: where: message" line: every model error and table check of a case (not
only the first), every R4B error of every Bundle entry, every Bundle rule. FHIR files are read as
`score` reads them and checked by fhir_input.py (strict rules for the project's own Bundles, FHIR
R4 validity for everyone else's). A server-side check (`$validate`) is validation/server.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from fhir_cyclo.core.errors import InputError
from fhir_cyclo.core.terminology import terminology
from fhir_cyclo.fhir.bundle import transaction_bundle
from fhir_cyclo.readers.case_files import COHORT_PATIENTS, discover, load
from fhir_cyclo.readers.fhir import fhir_files, is_manifest, is_ndjson, read_json_bytes
from fhir_cyclo.validation.fhir_input import FhirReport, bundle_problems, validate_fhir_file


class Checked(NamedTuple):
    """What `validate_paths` found: problem lines, cases checked, files skipped as not ours,
    FHIR resources checked, FHIR files read, and notes (files skipped on purpose: no error)."""

    problems: list[str]
    checked: int
    skipped: list[str]
    resources: int
    files: int
    notes: list[str]

    def summary(self) -> str:
        """'checked 3 item(s): 0 problem(s)'; FHIR input adds its resources and files."""
        parts = []
        if self.checked or not self.files:
            parts.append(f"{self.checked} item(s)")
        if self.files:
            parts.append(f"{self.resources} resource(s) in {self.files} FHIR file(s)")
        return f"checked {' and '.join(parts)}: {len(self.problems)} problem(s)"


def _fhir_suffix(path: Path) -> bool:
    return is_ndjson(path) or path.suffix.lower() == ".json"


def _in_cohort(path: Path) -> bool:
    return any((p / COHORT_PATIENTS).is_file() for p in path.parents)


def validate_paths(paths: Iterable[str | Path]) -> Checked:
    """Every problem of case files, cohort folders and FHIR files under `paths`.

    FHIR files are found and read as `score` finds and reads them (readers/fhir.py: Bundles of
    any type, single resources, NDJSON, Bulk Data folders through their manifest, .ndjson.gz)
    and checked as FHIR R4 (fhir_input.py); case files and cohorts as before.
    """
    paths = list(paths)
    terms = terminology()
    report = FhirReport()
    case_paths: list[Path] = []
    fhir_seen: set[Path] = set()

    def on_error(exc: InputError) -> None:
        report.problems.append(str(exc))

    for file in fhir_files(paths, on_error, report.notes.append, list_skipped=False):
        if file in fhir_seen or _in_cohort(file) or not _fhir_suffix(file):
            continue  # a named .yaml is a case file: score would fail on it, validate checks it
        fhir_seen.add(file)
        validate_fhir_file(file, terms, report, case_paths.append)
    case_skipped: list[str] = []
    for path in discover(paths, case_skipped):
        if path in fhir_seen or (path.name == "manifest.json" and _is_manifest_file(path)):
            continue
        case_paths.append(path)
    skipped: list[str] = []
    for name in case_skipped:
        path = Path(name)
        if path in fhir_seen:
            continue
        if not is_ndjson(path):
            skipped.append(name)
        elif (path.parent / "manifest.json").is_file():
            # A Bulk folder is read as its manifest says (a client's log.ndjson is not listed).
            report.notes.append(f"{path}: skipped: not listed in {path.parent / 'manifest.json'}")
        # else: the NDJSON copy of an export's Bundles, already noted once for its folder
    checked = 0
    problems = report.problems
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
    return Checked(problems, checked, skipped, report.resources, report.files, report.notes)


def _is_manifest_file(path: Path) -> bool:
    try:
        return is_manifest(read_json_bytes(path))
    except InputError:
        return False
