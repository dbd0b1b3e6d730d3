"""`import`: FHIR Bundles, NDJSON, Bulk folders or a server -> one canonical YAML case file each."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fhir_cyclo.core.case import Case
from fhir_cyclo.core.errors import InputError, MappingError
from fhir_cyclo.core.ids import item_id_from_identifiers
from fhir_cyclo.core.terminology import Terminology, terminology
from fhir_cyclo.importing.canonical import MARKER, case_label, dump_case, file_name
from fhir_cyclo.importing.group import Losses, PatientGroup, group_by_patient, losses
from fhir_cyclo.importing.readback import Searcher, patient_groups
from fhir_cyclo.mappers import resources_to_case
from fhir_cyclo.readers.fhir import read_paths

Say = Callable[[str], None]


@dataclass(frozen=True)
class ImportOptions:
    """What `import` reads and where it writes: files (paths) or a server selection."""

    out: Path
    paths: tuple[str, ...] = ()
    identifier: str | None = None  # server: system|value
    patient: str | None = None  # server: Patient/id
    system: str | None = None  # server: every Patient with an identifier in this system


@dataclass
class ImportSummary:
    cases: int = 0
    written: list[Path] = field(default_factory=list)
    unchanged: int = 0
    failed: int = 0
    with_losses: int = 0
    skipped_patients: int = 0  # Patients with no identifier and no fhir-cyclo case item


@dataclass(frozen=True)
class Imported:
    label: str
    case: Case
    losses: Losses


def foreign_files(out: Path) -> list[Path]:
    """Files in `out` that import would replace but did not write (refused before any work)."""
    if not out.is_dir():
        return []
    found = []
    for path in sorted(out.glob("case-*.yaml")):
        try:
            with path.open("rb") as handle:
                head = handle.read(len(MARKER))
        except OSError:
            head = b""
        if head != MARKER:
            found.append(path)
    return found


def _write(path: Path, data: bytes) -> bool:
    """Atomic write (temp file, rename); False when the file already holds exactly `data`."""
    try:
        if path.read_bytes() == data:
            return False
    except OSError:
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0o022)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def cases_from_groups(
    groups: Iterable[PatientGroup], terms: Terminology, on_error: Say, summary: ImportSummary
) -> Iterator[Imported]:
    """Rebuild each Patient's case; groups with no case data are counted, bad ones reported."""
    for group in groups:
        if group.patient is None:
            on_error(
                f"{group.origin}: {len(group.resources)} resource(s) refer to {group.key}, "
                "which is not in the input: read the Patient too"
            )
            summary.failed += 1
            continue
        try:
            case = resources_to_case(group.entries(), terms, source=group.origin)
        except MappingError as exc:
            if exc.path == "Patient.identifier" and not any(
                item_id_from_identifiers(r.get("identifier")) for _, r in group.resources
            ):
                summary.skipped_patients += 1  # no case identifier, no case item: not a case
                continue
            on_error(str(exc))
            summary.failed += 1
            continue
        except (InputError, ValueError) as exc:
            on_error(f"{group.origin}: {exc}")
            summary.failed += 1
            continue
        yield Imported(case_label(case), case, losses(group, case, terms))


def groups_from_files(paths: Iterable[str], on_error: Say, on_notice: Say) -> list[PatientGroup]:
    """Every Patient group in the files, read through readers.fhir like `score` reads them."""
    unattached: Counter[str] = Counter()
    items = read_paths(paths, on_error=lambda e: on_error(str(e)), on_notice=on_notice)
    groups = list(group_by_patient(items, unattached))
    if unattached:
        kinds = ", ".join(f"{n} {t}" for t, n in sorted(unattached.items()))
        on_notice(f"left out {sum(unattached.values())} resource(s) of no patient: {kinds}")
    return groups


def run_import(
    options: ImportOptions,
    *,
    client: Searcher | None = None,
    on_error: Say,
    on_notice: Say,
    terms: Terminology | None = None,
) -> ImportSummary:
    """Read, rebuild and write every case; each case's losses go to `on_notice` by its label."""
    terms = terms or terminology()
    summary = ImportSummary()
    groups: Iterable[PatientGroup]
    if client is not None:
        groups = patient_groups(
            client, identifier=options.identifier, patient=options.patient, system=options.system
        )
    else:
        read_errors: list[str] = []

        def file_error(message: str) -> None:
            read_errors.append(message)
            on_error(message)

        groups = groups_from_files(options.paths, file_error, on_notice)
        summary.failed += len(read_errors)
    options.out.mkdir(parents=True, exist_ok=True)
    names: dict[str, str] = {}
    for item in cases_from_groups(groups, terms, on_error, summary):
        name = file_name(item.case)
        if name in names:
            on_error(f"case #{item.label} read twice ({names[name]}); the first one is kept")
            summary.failed += 1
            continue
        names[name] = item.label
        summary.cases += 1
        path = options.out / name
        if _write(path, dump_case(item.case)):
            summary.written.append(path)
        else:
            summary.unchanged += 1
        if item.losses:
            summary.with_losses += 1
            for line in item.losses.lines():
                on_notice(f"case #{item.label} ({name}): {line}")
    return summary
