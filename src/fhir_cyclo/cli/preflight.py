"""Checks of a parsed command line that run before any work: every failure is a UsageError."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from fhir_cyclo.core.errors import UsageError

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


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def not_an_input(raw: str, option: str, inputs: Iterable[str], *, folder: bool) -> None:
    """No output may overwrite an input: an output that is an input, lies inside an input
    folder, or (for an output folder) holds an input is refused before any work."""
    out = Path(raw).resolve()
    for given in inputs:
        src = Path(given).resolve()
        if _inside(out, src) or (folder and _inside(src, out)):
            raise UsageError(
                f"{option} {raw}: would write over or inside the input {given}; "
                "choose an output outside the inputs"
            )


def output_folder(raw: str, option: str, inputs: Iterable[str] = ()) -> None:
    """An output folder: existing and writable, or creatable (missing folders are created)."""
    path = Path(raw)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{option} {raw}: exists and is not a folder")
    not_an_input(raw, option, inputs, folder=True)
    _writable_folder(path, f"{option} {raw}")


def output_file(
    raw: str, option: str, inputs: Iterable[str] = (), *, marker: bytes | None = None
) -> None:
    """An output file: not a folder, not an input, its folder writable or creatable (missing
    folders are created, as for every output option). With `marker`, an existing file is
    replaced only if its first KiB holds the marker, i.e. it is what this option writes."""
    path = Path(raw)
    if path.is_dir():
        raise UsageError(f"{option} {raw}: is a folder; give a file name")
    not_an_input(raw, option, inputs, folder=False)
    _writable_folder(path.parent, f"{option} {raw}")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise UsageError(f"{option} {raw}: file is read-only")
        if marker is not None and not _holds_marker(path, marker):
            raise UsageError(
                f"{option} {raw}: exists and was not written by this option; remove it or "
                "choose another name"
            )


def _holds_marker(path: Path, marker: bytes) -> bool:
    if not path.is_file():
        return False
    try:
        with path.open("rb") as handle:
            return marker in handle.read(1024)
    except OSError:
        return False


def one_stdout(options: Iterable[tuple[str, bool]]) -> None:
    """At most one output goes to stdout (two would interleave into something no tool reads)."""
    on_stdout = [name for name, used in options if used]
    if len(on_stdout) > 1:
        raise UsageError(
            f"{' and '.join(on_stdout)} would both write to stdout; send one to a file"
        )


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
