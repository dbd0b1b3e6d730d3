"""Checks of a parsed command line that run before any work: every failure is a UsageError."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from fhir_cyclo.errors import UsageError

CASE_FILE_SUFFIXES = (".yaml", ".yml")
COHORT_MARKER = "patients.csv"


def inputs_exist(paths: Iterable[str]) -> None:
    """Every input named on the command line exists."""
    for raw in paths:
        if not Path(raw).exists():
            raise UsageError(f"{raw}: no such file or folder")


def _writable_folder(folder: Path, what: str) -> None:
    """`folder` exists as a folder we can write into, or can be created (first existing ancestor
    is a writable folder)."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{what}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{what}: cannot write in {probe} (permission denied)")


def output_folder(raw: str, option: str) -> None:
    """An output folder: existing and writable, or creatable."""
    path = Path(raw)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {raw}: exists and is not a folder")
    _writable_folder(path, f"{option} {raw}")


def output_file(raw: str, option: str) -> None:
    """An output file: not a folder, in an existing writable folder."""
    path = Path(raw)
    if path.is_dir():
        raise UsageError(f"{option} {raw}: is a folder; give a file name")
    parent = path.parent
    if not parent.exists():
        raise UsageError(f"{option} {raw}: folder {parent} does not exist")
    if not parent.is_dir():
        raise UsageError(f"{option} {raw}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {raw}: cannot write in {parent} (permission denied)")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{option} {raw}: file is read-only")


def readable_file(raw: str, option: str) -> None:
    path = Path(raw)
    if not path.is_file():
        raise UsageError(f"{option} {raw}: no such file")
    if not os.access(path, os.R_OK):
        raise UsageError(f"{option} {raw}: cannot read it (permission denied)")


def positive(value: float, option: str) -> None:
    if not value > 0:
        raise UsageError(f"{option} must be greater than 0, got {value:g}")


def server_url(url: str, option: str = "--server") -> None:
    """The shape of a FHIR base URL (the http guard and the server itself are checked later)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:  # "https://[bad": an invalid IPv6 host (found by fuzzing the manifest)
        host = None
    if not host or parts.scheme not in ("http", "https"):
        raise UsageError(f"{option} {url!r}: not an absolute http(s) URL")


def not_case_input(paths: Iterable[str]) -> None:
    """`score` reads FHIR: a case file or cohort folder named here is a mistake with a known fix."""
    for raw in paths:
        path = Path(raw)
        if (
            (path.is_file() and path.suffix.lower() in CASE_FILE_SUFFIXES)
            or (path.is_dir() and (path / COHORT_MARKER).is_file())
            or (path.is_dir() and _only_case_files(path))
        ):
            raise UsageError(
                f"{raw}: a case file or cohort folder, and score reads FHIR: run "
                f"`fhir-cyclo export {raw} --out DIR` first, then `fhir-cyclo score DIR`"
            )


def _only_case_files(folder: Path) -> bool:
    """A folder with case files or cohort CSVs and no FHIR file at all."""
    cases = fhir = False
    for p in folder.rglob("*"):
        suffix = p.suffix.lower()
        if suffix in (".json", ".ndjson"):
            fhir = True
            break
        cases = cases or suffix in CASE_FILE_SUFFIXES or p.name == COHORT_MARKER
    return cases and not fhir
