"""Units of measure: UCUM conversion through ucumvert, plus the one table of non-UCUM lab spellings.

Case input (inputs.py, the Observation mapper) and FHIR import (scoring) both convert here, so a
unit accepted on one side is accepted, with the same factor, on the other. ucumvert (a UCUM grammar
on top of pint) is loaded lazily: a unit equal to the target after alias normalisation never loads
it, and each (unit, target, substance) answer is cached.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from fhir_cyclo.core.errors import TerminologyError
from fhir_cyclo.core.tables import load_table

_TABLE = "mappings/units.yaml"
_MICRO = ("\u00b5", "\u03bc")


@dataclass(frozen=True)
class Alias:
    """A spelling labs print in place of a UCUM code, with where it comes from."""

    spelling: str
    ucum: str
    source: str


@dataclass(frozen=True)
class MolarMass:
    g_per_mol: float
    source: str


@dataclass(frozen=True)
class UnitTable:
    """mappings/units.yaml, checked."""

    aliases: dict[str, Alias]  # squeezed spelling -> alias
    aliases_ci: dict[str, Alias]  # lower-cased squeezed spelling -> alias
    molar_masses: dict[str, MolarMass]
    common: frozenset[str]  # UCUM codes known valid without parsing


def _squeeze(unit: str) -> str:
    """Drop spaces, write micro as "u" (the UCUM spelling) so "µL", "μL" and "uL" are one."""
    out = unit.replace(" ", "")
    for micro in _MICRO:
        out = out.replace(micro, "u")
    return out


def build_table(data: dict[str, Any]) -> UnitTable:
    """Check the parsed units table; TerminologyError naming the entry if it is malformed."""
    aliases: dict[str, Alias] = {}
    aliases_ci: dict[str, Alias] = {}
    raw_aliases = data.get("aliases")
    if not isinstance(raw_aliases, dict) or not raw_aliases:
        raise TerminologyError(f"{_TABLE}: aliases: must be a non-empty mapping")
    for spelling, entry in raw_aliases.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("ucum"), str):
            raise TerminologyError(f"{_TABLE}: aliases.{spelling}: needs `ucum`")
        source = entry.get("source")
        if not isinstance(source, str) or len(source) < 3:
            raise TerminologyError(f"{_TABLE}: aliases.{spelling}: needs a `source`")
        alias = Alias(str(spelling), entry["ucum"], source)
        aliases[_squeeze(str(spelling))] = alias
        aliases_ci.setdefault(_squeeze(str(spelling)).lower(), alias)
    masses: dict[str, MolarMass] = {}
    for name, entry in (data.get("molar_masses") or {}).items():
        value = entry.get("g_per_mol") if isinstance(entry, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise TerminologyError(f"{_TABLE}: molar_masses.{name}.g_per_mol: must be > 0")
        if not isinstance(entry.get("source"), str):
            raise TerminologyError(f"{_TABLE}: molar_masses.{name}: needs a `source`")
        masses[str(name)] = MolarMass(float(value), entry["source"])
    common = data.get("common") or []
    if not isinstance(common, list) or not all(isinstance(c, str) for c in common):
        raise TerminologyError(f"{_TABLE}: common: must be a list of UCUM codes")
    known = frozenset(common) | {a.ucum for a in aliases.values()}
    return UnitTable(aliases, aliases_ci, masses, known)


@functools.cache
def table() -> UnitTable:
    """The process-wide units table."""
    return build_table(load_table("units"))


@functools.cache
def _registry() -> Any:
    # Loading the UCUM grammar and pint registry takes about a second: only when needed.
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


@functools.cache
def _parse(code: str) -> Any:
    """A pint Quantity for a UCUM code, or None when the code is not valid UCUM."""
    if not code or len(code) > 64:  # no unit a lab prints is longer; keeps the parser bounded
        return None
    try:
        return _registry().from_ucum(code)
    except Exception:  # ucumvert raises lark and pint errors of many kinds for invalid input
        return None


def to_ucum(unit: str) -> str | None:
    """The UCUM code for a unit as written (alias table first, then UCUM itself), else None."""
    squeezed = _squeeze(unit.strip())
    tab = table()
    alias = tab.aliases.get(squeezed)
    if alias is not None:
        return alias.ucum
    if squeezed in tab.common:
        return squeezed
    if squeezed.startswith("mc") or "/mc" in squeezed:  # "mcg/L", "10*3/mcL": mc- means micro
        # Only a LEADING mc becomes u: "10*3/mcL" is 10*3/uL, not u10*3/uL.
        leading = "u" if squeezed.startswith("mc") else ""
        squeezed = leading + squeezed.removeprefix("mc").replace("/mc", "/u")
        alias = tab.aliases.get(squeezed)  # "x10^3/mcL" is the alias "x10^3/uL" spelt with mc
        if alias is not None:
            return alias.ucum
    if _parse(squeezed) is not None:
        return squeezed
    alias = tab.aliases_ci.get(squeezed.lower())
    return alias.ucum if alias is not None else None


# mappings/unit_factors.yaml: ucumvert's answers for every (listed code, analyte unit,
# substance), generated by `python -m fhir_cyclo.core.units`, compared by a unit test. Looked up
# before the parser, so a command whose units are all listed never loads it (0.6-1.2 s of start-up).
_FACTORS = "unit_factors"
_UNLISTED = object()


@functools.cache
def _listed_factors() -> dict[tuple[str, str, str], float | None]:
    rows = load_table(_FACTORS).get("factors")
    if not isinstance(rows, list):
        raise TerminologyError(f"mappings/{_FACTORS}.yaml: factors: must be a list")
    found: dict[tuple[str, str, str], float | None] = {}
    for i, row in enumerate(rows):
        ok = isinstance(row, list) and len(row) == 4 and all(isinstance(x, str) for x in row[:3])
        if not ok or not (row[3] is None or isinstance(row[3], float)):
            raise TerminologyError(
                f"mappings/{_FACTORS}.yaml: factors[{i}]: expected [code, target, substance, "
                f"factor or null]"
            )
        found[(row[0], row[1], row[2])] = row[3]
    return found


@functools.cache
def factor(unit: str, target: str, substance: str | None = None) -> float | None:
    """Factor converting a value in `unit` into `target` (UCUM), or None if it cannot convert.

    `substance` names a molar mass in mappings/units.yaml: with it, amount-of-substance units
    (mmol/L) convert to mass units (g/dL) and back.
    """
    code = to_ucum(unit)
    if code is None:
        return None
    if code == target:
        return 1.0
    listed = _listed_factors().get((code, target, substance or ""), _UNLISTED)
    if listed is not _UNLISTED:
        return listed  # type: ignore[return-value]
    return convert(code, target, substance)


def convert(code: str, target: str, substance: str | None = None) -> float | None:
    """The factor from UCUM `code` to UCUM `target` computed by ucumvert (no table, no cache)."""
    source, dest = _parse(code), _parse(target)
    if source is None or dest is None:
        return None
    if _arbitrary(code) != _arbitrary(target):
        # UCUM arbitrary units ([IU], [arb'U], ...) are dimensionless to pint: without this,
        # 1 [IU]/L would "convert" to 1e-09 10*9/L. They convert only into themselves.
        return None
    try:
        if source.dimensionality == dest.dimensionality:
            return _round((1 * source).to(dest).magnitude)
        mass = table().molar_masses.get(substance or "")
        if mass is None:
            return None
        molar = mass.g_per_mol * _parse("g/mol")
        for converted in (source * molar, source / molar):
            if converted.dimensionality == dest.dimensionality:
                return _round((1 * converted).to(dest).magnitude)
    except Exception:  # pint: offset units, overflow on absurd prefixes
        return None
    return None


_ARBITRARY = re.compile(r"\[[^\]]*(?:U|ID_50|Lf)\]")


def _arbitrary(code: str) -> frozenset[str]:
    """The UCUM arbitrary units in a code ("[IU]", "[arb'U]", "[TCID_50]", ...)."""
    return frozenset(_ARBITRARY.findall(code))


def _round(value: Any) -> float | None:
    # pint's float arithmetic leaves 0.0010000000000000002; 12 significant digits is exact enough.
    number = float(value)
    if not number > 0 or number == float("inf"):
        return None
    return float(f"{number:.12g}")


def unit_problem(unit: str, analyte: str, target: str) -> str:
    """The message for a unit that does not convert: what was understood and what would do."""
    code = to_ucum(unit)
    why = "is not UCUM nor a known lab spelling" if code is None else "has another dimension"
    return (
        f"unit {unit!r} cannot be converted for {analyte}: it {why}; give {target} or any UCUM "
        f"unit convertible to it (accepted spellings: docs/reference.md#units)"
    )


def describe(unit: str) -> str:
    """How a unit was understood, for messages: "K/uL (= 10*3/uL)" or the unit itself."""
    code = to_ucum(unit)
    return f"{unit} (= {code})" if code and code != unit else unit
