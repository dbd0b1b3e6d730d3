"""Export: read cases one at a time, map, validate, write Bundle files (and NDJSON) atomically."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fhir_cyclo.core.case import Case
from fhir_cyclo.core.errors import FhirCycloError, InputError, MappingError
from fhir_cyclo.core.terminology import Terminology, terminology
from fhir_cyclo.export.deidentify import KeyFile, deidentify, mark_folder
from fhir_cyclo.fhir.bundle import (
    dumps,
    local_reference_lines,
    transaction_bundle,
    validate_resource,
)
from fhir_cyclo.mappers import case_to_resources
from fhir_cyclo.mappers.datatypes import Resource
from fhir_cyclo.readers.case_files import load


@dataclass
class ExportSummary:
    """Counts of one export. Bundle files are counted (one per exported case, named by
    `bundle_filename`), not listed: a path per case would make memory grow with the cohort."""

    cases: int = 0
    resources: int = 0
    ndjson_files: list[Path] = field(default_factory=list)  # one per resource type
    failed: list[FhirCycloError] = field(default_factory=list)


def bundle_filename(case: Case) -> str:
    """Readable and collision-free: slug of the case value plus a hash of the full identifier."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", case.identifier.value).strip("-")[:60] or "case"
    digest = hashlib.sha256(case.identifier.token.encode()).hexdigest()[:8]
    return f"{slug}-{digest}.json"


def map_case(case: Case, terms: Terminology, *, validate: bool = True) -> list[Resource]:
    """Case -> resources, each validated with fhir.resources R4B unless `validate` is off."""
    resources = list(case_to_resources(case, terms))
    if validate:
        for res in resources:
            problem = validate_resource(res)
            if problem:
                raise MappingError(
                    f"{res['resourceType']} does not validate (R4B): {problem}",
                    source=case.identifier.token,
                )
    return resources


def map_case_compact(
    case: Case, terms: Terminology, *, validate: bool = True
) -> tuple[list[Resource], list[bytes]]:
    """`map_case` and each resource's compact JSON bytes (NDJSON writes them with references
    made local, see `bundle.local_reference_lines`). push wants no lines, hence two functions."""
    resources = map_case(case, terms, validate=validate)
    return resources, [dumps(res, pretty=False) for res in resources]


@functools.cache
def file_mode() -> int:
    """The mode open() would give a new file (0666 less the umask): mkstemp's 0600 would make
    Bundles private while the NDJSON beside them is not. The key file alone is 0600 on purpose."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class NdjsonWriter:
    """Per-type NDJSON files (Bulk Data layout), streamed to .part files and renamed on close."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, IO[bytes]] = {}

    def write_case(self, resources: list[Resource], compact: list[bytes] | None = None) -> None:
        # The whole case is serialised before any byte is written: a failing case adds nothing.
        if compact is None:
            compact = [dumps(r, pretty=False) for r in resources]
        local = local_reference_lines(resources, compact)
        lines = [
            (r["resourceType"], line + b"\n") for r, line in zip(resources, local, strict=True)
        ]
        for rtype, line in lines:
            fh = self._files.get(rtype)
            if fh is None:
                fh = self._files[rtype] = (self.folder / f"{rtype}.ndjson.part").open("wb")
            fh.write(line)

    def close(self, *, commit: bool) -> list[Path]:
        out = []
        for rtype, fh in self._files.items():
            fh.close()
            part = self.folder / f"{rtype}.ndjson.part"
            if commit:
                final = self.folder / f"{rtype}.ndjson"
                os.replace(part, final)
                out.append(final)
            else:
                part.unlink(missing_ok=True)
        return out


def export(
    paths: Iterable[str | Path],
    out_dir: Path,
    *,
    ndjson: bool = False,
    validate: bool = True,
    deidentify_keys: Path | None = None,
    on_error: Callable[[FhirCycloError], None] | None = None,
    skipped: list[str] | None = None,
) -> ExportSummary:
    """Stream every case under `paths` to `out_dir`: one transaction Bundle JSON per case.

    With `deidentify_keys`, each case is de-identified first (see deidentify.py) using that key
    file, which is created if missing and must stay out of the exported folder.
    """
    terms = terminology()
    keys = None
    if deidentify_keys is not None:
        if deidentify_keys.resolve().is_relative_to(out_dir.resolve()):
            raise InputError(
                "the key file must not be inside the output folder", source=str(deidentify_keys)
            )
        keys = KeyFile(deidentify_keys)
    out_dir.mkdir(parents=True, exist_ok=True)
    if keys is not None:
        mark_folder(out_dir, keys)
    summary = ExportSummary()
    writer = NdjsonWriter(out_dir / "ndjson") if ndjson else None
    ok = False
    try:
        for loaded in load(paths, terms, skipped):  # files that are not cases: listed by the CLI
            error: FhirCycloError | None = loaded.error
            if loaded.case is not None:
                try:
                    case = loaded.case
                    if keys is not None:
                        case = deidentify(case, keys)
                    resources, compact = map_case_compact(case, terms, validate=validate)
                    data = dumps(transaction_bundle(case, terms, resources))
                    target = out_dir / bundle_filename(case)
                    write_atomic(target, data)
                    if writer:
                        writer.write_case(resources, compact)
                    summary.cases += 1
                    summary.resources += len(resources)
                except InputError as exc:
                    error = (
                        exc
                        if exc.source
                        else InputError(exc.message, source=loaded.source, path=exc.path)
                    )
            if error is not None:
                summary.failed.append(error)
                if on_error:
                    on_error(error)
        ok = True
    finally:
        if keys is not None:
            keys.save()
        if writer:
            summary.ndjson_files.extend(writer.close(commit=ok))
    return summary
