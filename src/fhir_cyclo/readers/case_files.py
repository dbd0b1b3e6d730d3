"""Read cases from case files (YAML/JSON) and cohort CSV folders, checked against the tables.

Each reader yields one case at a time (streaming) or an InputError naming the file and field;
one bad case never hides the good ones around it.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import ValidationError

from fhir_cyclo.core.case import Case
from fhir_cyclo.core.errors import InputError, pydantic_path
from fhir_cyclo.core.terminology import Terminology, terminology
from fhir_cyclo.core.units import unit_problem
from fhir_cyclo.readers.checks import (
    CASE_SUFFIXES,
    COHORT_LABS,
    COHORT_META,
    COHORT_PATIENTS,
    Loaded,
    check_case,
    close_matches,
    from_validation_error,
    read_csv,
    read_structured,
    unknown_name,
    validation_errors,
)
from fhir_cyclo.readers.cohort import cohort_cases

__all__ = [  # the checks are re-exported: callers read cases from here
    "CASE_SUFFIXES",
    "COHORT_LABS",
    "COHORT_META",
    "COHORT_PATIENTS",
    "Loaded",
    "check_case",
    "close_matches",
    "discover",
    "from_validation_error",
    "load",
    "pydantic_path",
    "read_csv",
    "read_structured",
    "unit_problem",
    "unknown_name",
    "validation_errors",
]


def discover(paths: Iterable[str | Path], skipped: list[str] | None = None) -> Iterator[Path]:
    """Case files and cohort folders under the given paths, in a stable (sorted) order.

    Files in scanned folders that are none of these are appended to `skipped` (the caller lists
    them in one line) instead of vanishing silently.
    """
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise InputError("no such file or folder", source=str(path))
        if path.is_file():
            yield path
            continue
        if (path / COHORT_PATIENTS).is_file():
            yield path
            continue
        in_cohort = any((p / COHORT_PATIENTS).is_file() for p in path.parents)
        yield from _walk(path, in_cohort, skipped)


def _walk(folder: Path, in_cohort: bool, skipped: list[str] | None) -> Iterator[Path]:
    """`discover` below one folder: the order of `sorted(folder.rglob("*"))` (paths compare part by
    part, so that is depth first with each folder's names sorted), one folder listed at a time.

    The names of a folder are kept as one string while its entries are visited, not as a list
    of Paths for the whole tree: a 100,000-case folder would otherwise hold ~30 MB until the
    export ends. Like rglob, symlinked folders are yielded (a cohort) but not walked into.
    """
    with os.scandir(folder) as scan:
        names = sorted(entry.name for entry in scan)
    packed = "\0".join(names)  # names cannot contain NUL
    del names
    start = 0
    while start <= len(packed) and packed:
        end = packed.find("\0", start)
        name = packed[start:] if end < 0 else packed[start:end]
        start = len(packed) + 1 if end < 0 else end + 1
        child = folder / name
        if child.is_dir():
            cohort = (child / COHORT_PATIENTS).is_file()
            if cohort:
                yield child
            if not child.is_symlink():
                yield from _walk(child, in_cohort or cohort, skipped)
        elif not in_cohort and child.name != COHORT_META and child.is_file():
            if child.suffix in CASE_SUFFIXES:
                yield child
            elif skipped is not None and not child.name.startswith("."):
                skipped.append(str(child))


class _SeenTokens:
    """Case identifiers read so far, in 8-16 bytes each rather than a dict of strings (a token
    and its source are ~300 bytes: 30 MB at 100,000 cases): 64-bit BLAKE2b digests in an
    open-addressing table. A digest can only say "maybe seen"; `load` then reads the earlier
    cases again to know for sure and to name the first source (see there)."""

    def __init__(self) -> None:
        self._slots = array("Q", bytes(8 * 1024))  # 0 = empty
        self._count = 0

    @staticmethod
    def _digest(token: str) -> int:
        value = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "big")
        return value or 1

    def maybe_seen(self, token: str) -> bool:
        digest, mask = self._digest(token), len(self._slots) - 1
        slot = digest & mask
        while self._slots[slot]:
            if self._slots[slot] == digest:
                return True
            slot = (slot + 1) & mask
        return False

    def add(self, token: str) -> None:
        if 3 * (self._count + 1) > 2 * len(self._slots):
            old = self._slots
            self._slots = array("Q", bytes(16 * len(old)))
            for digest in old:
                if digest:
                    self._put(digest)
        self._put(self._digest(token))
        self._count += 1

    def _put(self, digest: int) -> None:
        mask = len(self._slots) - 1
        slot = digest & mask
        while self._slots[slot]:
            slot = (slot + 1) & mask
        self._slots[slot] = digest


def _digest(token: str) -> str:
    """The short hash that names a case in messages (push labels use the same one)."""
    return hashlib.sha256(token.encode()).hexdigest()[:10]


def _loaded(path: Path, terms: Terminology, bundles: bool) -> Iterator[Loaded]:
    if path.is_dir():
        return _load_cohort(path, terms)
    return iter([_load_file(path, terms, bundles)])


def load(
    paths: Iterable[str | Path],
    terms: Terminology | None = None,
    skipped: list[str] | None = None,
    *,
    bundles: bool = False,
) -> Iterator[Loaded]:
    """Every case under `paths`; duplicate case identifiers are errors on the later one.

    With `bundles`, a JSON file holding a FHIR Bundle comes back as it is (`Loaded.bundle`)
    instead of failing as a case: each file is still read once.

    Identifiers are remembered as digests (`_SeenTokens`). At the first digest match the cases
    read so far are read again once, into token -> first source, and from then on that dict
    decides: duplicates cost a second read, a run without any costs ~12 bytes per case.
    """
    terms = terms or terminology()
    paths = list(paths)
    seen = _SeenTokens()
    sources: dict[str, str] | None = None

    def first_sources(stop_path: int, stop_case: int) -> dict[str, str]:
        found: dict[str, str] = {}
        for path_n, path in enumerate(discover(paths)):
            if path_n > stop_path:
                break
            for case_n, item in enumerate(_loaded(path, terms, bundles)):
                if (path_n, case_n) == (stop_path, stop_case):
                    break
                if item.case is not None:
                    found.setdefault(item.case.identifier.token, item.source)
        return found

    for path_n, path in enumerate(discover(paths, skipped)):
        for case_n, item in enumerate(_loaded(path, terms, bundles)):
            if item.case is not None:
                token = item.case.identifier.token
                if sources is None and seen.maybe_seen(token):
                    sources = first_sources(path_n, case_n)
                if sources is None:
                    seen.add(token)
                elif token in sources:
                    yield Loaded(
                        item.source,
                        error=InputError(
                            # The case id is an identifier (PHI): named by a hash.
                            f"case id #{_digest(token)} already read from {sources[token]}",
                            source=item.source,
                            path="identifier",
                        ),
                    )
                    continue
                else:
                    sources[token] = item.source
            yield item


# --- case files ---------------------------------------------------------------------------------


def _load_file(path: Path, terms: Terminology, bundles: bool = False) -> Loaded:
    source = str(path)
    try:
        data = read_structured(path)
        if not isinstance(data, dict):
            raise InputError(
                f"top level must be a mapping (one case), found {type(data).__name__}",
                source=source,
            )
        # Only JSON Bundles are passed through, as before this was one pass (a YAML file is a case).
        if bundles and path.suffix == ".json" and data.get("resourceType") == "Bundle":
            return Loaded(source, bundle=data)
        case = Case.model_validate(data)
        problems = check_case(case, terms)
        if problems:
            return Loaded.failed(
                source, [InputError(message, source=source, path=p) for p, message in problems]
            )
        return Loaded(source, case=case)
    except ValidationError as exc:
        return Loaded.failed(source, validation_errors(exc, source))
    except InputError as exc:
        return Loaded(source, error=exc)


# --- cohort CSV folders -------------------------------------------------------------------------


def _load_cohort(folder: Path, terms: Terminology) -> Iterator[Loaded]:
    """A cohort folder: cohort.yaml (identifier system), patients.csv, labs.csv (long format)."""
    return cohort_cases(folder, terms)
