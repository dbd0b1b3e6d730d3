"""Read cases from case files (YAML/JSON) and cohort CSV folders, checked against the tables.

Each reader yields one case at a time (streaming) or an InputError naming the file and field;
one bad case never hides the good ones around it.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import hashlib
import json
import os
import re
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import ValidationError

from fhir_cyclo.core.case import Age, Case, Lab, date_lower_bound
from fhir_cyclo.core.errors import InputError
from fhir_cyclo.core.terminology import Terminology, terminology

CASE_SUFFIXES = (".yaml", ".yml", ".json")
COHORT_PATIENTS = "patients.csv"
COHORT_LABS = "labs.csv"
COHORT_META = "cohort.yaml"


@dataclass(frozen=True)
class Loaded:
    """A case read from `source`, or the error that stopped it."""

    source: str
    case: Case | None = None
    error: InputError | None = None  # the first problem, "(and N more)" when there are more
    problems: tuple[InputError, ...] = ()  # every problem found (validate lists them all)
    # A FHIR Bundle file met by `load(..., bundles=True)` (push sends those as they are).
    bundle: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.error is not None and not self.problems:
            object.__setattr__(self, "problems", (self.error,))

    @classmethod
    def failed(cls, source: str, problems: list[InputError]) -> Loaded:
        first = problems[0]
        if len(problems) > 1:
            first = InputError(
                f"{first.message} (and {len(problems) - 1} more; `fhir-cyclo validate` lists all)",
                source=first.source,
                path=first.path,
            )
        return cls(source, error=first, problems=tuple(problems))


def pydantic_path(loc: Iterable[Any]) -> str:
    """('labs', 2, 'value') -> 'labs[2].value'."""
    out = ""
    for part in loc:
        if isinstance(part, str) and part.startswith(("When:", "function-")):
            continue  # union branch tags, not fields the user wrote
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_errors(exc: ValidationError, source: str) -> list[InputError]:
    """Every model error as an InputError, once per field (union branches report alike)."""
    out: list[InputError] = []
    seen: set[str] = set()
    for err in exc.errors():
        path = pydantic_path(err["loc"])
        if path in seen:
            continue
        seen.add(path)
        message = str(err["msg"]).removeprefix("Value error, ")
        out.append(InputError(message, source=source, path=path))
    return out


def from_validation_error(exc: ValidationError, source: str) -> InputError:
    errors = validation_errors(exc, source)
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return InputError(first.message + more, source=source, path=first.path)


# --- discovery ----------------------------------------------------------------------------------


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


def read_structured(path: Path) -> Any:
    source = str(path)
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", source=source) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=source) from None
    if not text.strip():
        raise InputError("file is empty", source=source)
    try:
        if path.suffix == ".json":
            return _json(text, raw)
        return yaml.safe_load(text)
    except RecursionError:  # "[[[[..." thousands deep: the parsers recurse per level
        raise InputError("nested too deeply to read (thousands of levels)", source=source) from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", source=source
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise InputError(f"invalid YAML: {problem}{where}", source=source) from None


# Twenty digits in a row may be an integer beyond 64 bits, which orjson reads as a float. Found
# by mapping every ASCII digit to "0" and everything else to " " (UTF-8 continuation bytes are
# >= 0x80, so a run in the bytes is a run of ASCII digits in the text): bytes.translate and a
# substring search take ~20 us on a 29 KB case file where re's `\d{20}` took ~370 us.
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_TWENTY_ZEROS = b"0" * 20


def _json(text: str, raw: bytes) -> Any:
    # orjson reads a case file ~4x faster than json; a file it refuses (or that may hold a huge
    # integer) goes to json, whose rules decide and whose message (line, column) the user sees.
    # `raw` is the UTF-8 encoding of `text`.
    if _TWENTY_ZEROS in raw.translate(_DIGITS_AS_ZERO):
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


# --- checks against the tables and the calendar -------------------------------------------------


def check_case(
    case: Case, terms: Terminology, today: dt.date | None = None
) -> list[tuple[str, str]]:
    """(path, message) for every problem the model alone cannot see: unknown keys, units, values.

    Paths name items by id (`labs[hb-2011].value`): the case keeps items sorted by id, so a
    position would not match the file.
    """
    today = today or dt.date.today()
    problems: list[tuple[str, str]] = []

    def unknown(kind: str, name: str, group: Mapping[str, object], anchor: str) -> str:
        return unknown_name(kind, name, group, anchor)

    def future(when: object, path: str) -> None:
        if isinstance(when, str) and date_lower_bound(when) > today:
            problems.append((path, f"date {when} is in the future"))

    def order(start: object, end: object, path: str) -> None:
        if (
            isinstance(start, str)
            and isinstance(end, str)
            and end[: len(start)] < start[: len(end)]
        ):
            problems.append((path, f"end {end} is before start {start}"))
        if isinstance(start, Age) and isinstance(end, Age) and end.age < start.age:
            problems.append((path, f"end age {end.age} is before start age {start.age}"))

    future(case.patient.birth_date, "patient.birth_date")
    for d in case.diagnoses:
        i = d.id
        if d.concept not in terms.diagnoses:
            problems.append(
                (
                    f"diagnoses[{i}].concept",
                    unknown("diagnosis", d.concept, terms.diagnoses, "diagnoses"),
                )
            )
        if d.body_site and d.body_site not in terms.body_sites:
            problems.append(
                (
                    f"diagnoses[{i}].body_site",
                    unknown("body site", d.body_site, terms.body_sites, "body-sites"),
                )
            )
        future(d.onset, f"diagnoses[{i}].onset")
        order(d.onset, d.abatement, f"diagnoses[{i}].abatement")
    for t in case.treatments:
        i = t.id
        if t.drug not in terms.drugs:
            problems.append(
                (f"treatments[{i}].drug", unknown("drug", t.drug, terms.drugs, "drugs"))
            )
        future(t.start, f"treatments[{i}].start")
        order(t.start, t.end, f"treatments[{i}].end")
    for lab in case.labs:
        i = lab.id
        problems.extend(_check_lab(lab, f"labs[{i}]", terms))
        future(lab.date, f"labs[{i}].date")
    for m in case.marrow:
        i = m.id
        if m.finding not in terms.marrow_findings:
            problems.append(
                (
                    f"marrow[{i}].finding",
                    unknown("marrow finding", m.finding, terms.marrow_findings, "marrow-findings"),
                )
            )
    for p in case.procedures:
        i = p.id
        if p.procedure not in terms.procedures:
            problems.append(
                (
                    f"procedures[{i}].procedure",
                    unknown("procedure", p.procedure, terms.procedures, "procedures"),
                )
            )
        future(p.performed, f"procedures[{i}].performed")
        order(p.performed, p.performed_end, f"procedures[{i}].performed_end")
    for ae in case.adverse_events:
        i = ae.id
        if ae.event not in terms.adverse_events:
            problems.append(
                (
                    f"adverse_events[{i}].event",
                    unknown("adverse event", ae.event, terms.adverse_events, "adverse-events"),
                )
            )
        future(ae.date, f"adverse_events[{i}].date")
    for img in case.imaging:
        i = img.id
        future(img.date, f"imaging[{i}].date")
    return problems


def close_matches(name: str, group: Mapping[str, object], limit: int = 3) -> list[str]:
    """Keys of `group` close to `name`: same key ignoring case and separators first, then keys
    or concept labels (`text`) that look alike."""
    fold = re.sub(r"[\s_-]+", "", name).lower()
    exact = [k for k in group if re.sub(r"[\s_-]+", "", k).lower() == fold]
    if exact:
        return exact
    labels: dict[str, str] = {}
    for key, concept in group.items():
        labels[key.lower()] = key
        text = getattr(concept, "text", None) or getattr(concept, "display", None)
        if isinstance(text, str):
            labels.setdefault(text.lower(), key)
    found = difflib.get_close_matches(name.lower(), list(labels), n=limit * 2, cutoff=0.6)
    prefix = [k for k in group if k.startswith(name.lower()) or name.lower().startswith(k)]
    out: list[str] = []
    for key in [*prefix, *(labels[f] for f in found)]:
        if key not in out:
            out.append(key)
    return out[:limit]


def unknown_name(kind: str, name: str, group: Mapping[str, object], anchor: str) -> str:
    """'unknown drug 'ciclosporin'; did you mean 'cyclosporine'? (valid names: ...)'."""
    matches = close_matches(name, group)
    hint = f"; did you mean {' or '.join(repr(m) for m in matches)}?" if matches else ""
    return (
        f"unknown {kind} {name!r}{hint} (valid names: docs/reference.md#{anchor}, from "
        "mappings/terminology.yaml)"
    )


def _check_lab(lab: Lab, path: str, terms: Terminology) -> list[tuple[str, str]]:
    concept = terms.analytes.get(lab.analyte)
    if concept is None:
        return [
            (f"{path}.analyte", unknown_name("analyte", lab.analyte, terms.analytes, "analytes"))
        ]
    if lab.value is None or lab.unit is None:
        return []
    if concept.qualitative:
        return [(f"{path}.value", f"{lab.analyte} is qualitative: give interpretation POS/NEG")]
    factor = concept.factor_to_unit(lab.unit)
    if factor is None:
        return [(f"{path}.unit", unit_problem(lab.unit, lab.analyte, concept.unit or ""))]
    if concept.plausible:
        low, high = concept.plausible
        value = lab.value * factor
        if not low <= value <= high:
            return [
                (
                    f"{path}.value",
                    f"{lab.value} {lab.unit} is impossible for {lab.analyte} "
                    f"(accepted {low}-{high} {concept.unit})",
                )
            ]
    return []


def unit_problem(unit: str, analyte: str, target: str) -> str:
    """The message for a unit that does not convert: what was understood and what would do."""
    from fhir_cyclo.core.units import to_ucum

    code = to_ucum(unit)
    why = "is not UCUM nor a known lab spelling" if code is None else "has another dimension"
    return (
        f"unit {unit!r} cannot be converted for {analyte}: it {why}; give {target} or any UCUM "
        f"unit convertible to it (accepted spellings: docs/reference.md#units)"
    )


# --- cohort CSV folders -------------------------------------------------------------------------


def _load_cohort(folder: Path, terms: Terminology) -> Iterator[Loaded]:
    """A cohort folder: cohort.yaml (identifier system), patients.csv, labs.csv (long format)."""
    from fhir_cyclo.readers.cohort import cohort_cases  # the CSV layout lives with its builder

    yield from cohort_cases(folder, terms)


def read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV with the required columns, or an InputError naming the missing ones."""
    source = str(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise InputError("file missing", source=source) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", source=source) from None
    try:
        reader = csv.DictReader(text.splitlines())
        columns = reader.fieldnames or []
        missing = [c for c in required if c not in columns]
        if missing:
            raise InputError(
                f"missing column(s): {', '.join(missing)}", source=source, path="header"
            )
        rows = list(reader)
    except csv.Error as exc:  # a NUL byte, an unterminated quote, a field over the size limit
        raise InputError(f"not a readable CSV: {exc}", source=source) from None
    for line, row in enumerate(rows, start=2):
        # DictReader fills a short row with None and files a long row's extras under None.
        if None in row or any(v is None for v in row.values()):
            fields = len(columns) + len(row.get(None) or []) - sum(v is None for v in row.values())
            raise InputError(
                f"row has {fields} field(s), the header has {len(columns)}",
                source=f"{source}:{line}",
            )
    return rows
