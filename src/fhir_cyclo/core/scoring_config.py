"""Typed, validated view of mappings/scoring.yaml (codes, units, windows, criteria, write-back)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

from fhir_cyclo.core import units
from fhir_cyclo.core.errors import TerminologyError
from fhir_cyclo.core.tables import load_table

DISEASES = ("ITP", "AIHA", "PRCA")
RESPONSES = ("CR", "PR", "NR", "NE")
OPS = (">", ">=", "<", "<=")
TESTS = (
    "value",
    "ratio_to_baseline",
    "rise_from_baseline",
    "marker_within_upper_limit",
    "within_normal_range",
    "transfusion_free",
)
_TABLE = "mappings/scoring.yaml"


def icd_key(code: str) -> str:
    """Normalise an ICD-10-CM code for lookup: no dot, no spaces, upper case."""
    return code.replace(".", "").replace(" ", "").upper()


@dataclass(frozen=True)
class Analyte:
    """One lab analyte: its LOINC codes, canonical unit and (for molar units) its substance."""

    name: str
    loinc: tuple[str, ...]
    unit: str
    substance: str | None  # key of mappings/units.yaml molar_masses
    default_upper_limit: float | None
    # unit -> factor, as units.factor answered: looked up for every lab result of a cohort,
    # where a plain dict beats building units.factor's three-argument cache key.
    _factors: dict[str, float | None] = field(default_factory=dict, compare=False, repr=False)

    def factor(self, unit: str) -> float | None:
        """Conversion factor to the canonical unit, or None for a unit that cannot convert.

        The same units.factor the case reader uses: one UCUM library, one alias table.
        """
        try:
            return self._factors[unit]
        except KeyError:
            found = self._factors[unit] = units.factor(unit, self.unit, self.substance)
            return found


@dataclass(frozen=True)
class Test:
    """One test inside a response rule (see the `criteria` comment in scoring.yaml)."""

    kind: str
    op: str = ">"
    threshold: float = 0.0
    analyte: str = ""


@dataclass(frozen=True)
class Rule:
    """Response given when all (mode "all") or any (mode "any") of the tests hold."""

    response: str
    mode: str
    tests: tuple[Test, ...]
    source: str


@dataclass(frozen=True)
class Criteria:
    """The response criteria of one disease."""

    disease: str
    analyte: str
    rules: tuple[Rule, ...]
    sources: tuple[str, ...]  # keys of ScoringConfig.sources


@dataclass(frozen=True)
class Transfusion:
    """How red-cell transfusions are recognised in Procedure text, and the free window."""

    count_status: frozenset[str]
    required: tuple[re.Pattern[str], ...]
    red_cell: tuple[re.Pattern[str], ...]
    generic: tuple[re.Pattern[str], ...]
    other_component: tuple[re.Pattern[str], ...]
    free_days: int
    source: str

    def matches(self, text: str) -> bool:
        """True when a Procedure text names a red-cell transfusion."""
        if not all(p.search(text) for p in self.required):
            return False
        if any(p.search(text) for p in self.red_cell):
            return True
        return any(p.search(text) for p in self.generic) and not any(
            p.search(text) for p in self.other_component
        )


@dataclass(frozen=True)
class TextNames:
    """Drug names matched in text (case-insensitive regular expressions) when no code says it."""

    patterns: tuple[re.Pattern[str], ...]
    source: str

    def matches(self, text: str) -> bool:
        """True when the text names the drug."""
        return any(p.search(text) for p in self.patterns)


@dataclass(frozen=True)
class NearMiss:
    """A code close to a scored disease but not scored (shown, never used to score)."""

    code: str
    display: str
    near: str  # the disease it is close to
    source: str


@dataclass(frozen=True)
class Derived:
    """An analyte computed from two others measured in the same window (minuend - subtrahend)."""

    analyte: str
    minuend: str
    subtrahend: str
    source: str


@dataclass(frozen=True)
class ScoringConfig:
    """Everything the scorer reads from mappings/scoring.yaml, checked once."""

    sources: dict[str, str]
    snomed: str
    icd10cm: frozenset[str]
    loinc: str
    rxnorm_system: str
    ucum: str
    interpretation: str
    precedence: tuple[str, ...]
    skip_verification: frozenset[str]
    snomed_disease: dict[str, str]
    icd_disease: dict[str, str]  # icd_key(code) -> disease
    rxnorm: frozenset[str]
    medication_text: TextNames
    statement_skip_status: frozenset[str]
    administration_skip_status: frozenset[str]
    request_skip_status: frozenset[str]
    request_skip_intent: frozenset[str]
    observation_skip_status: frozenset[str]
    analytes: dict[str, Analyte]
    loinc_analyte: dict[str, str]
    derived: dict[str, Derived]  # analyte -> how to compute it when it is not measured
    baseline_days: int
    months: tuple[int, ...]
    window_days: int
    timepoint_source: str
    normal_low: dict[str, float]
    normal_low_source: str
    transfusion: Transfusion
    criteria: dict[str, Criteria]
    writeback: dict[str, Any]
    # WHO ICD-10 (issue 24): systems and icd_key(code) -> disease.
    icd10: frozenset[str] = frozenset()
    icd10_disease: dict[str, str] = field(default_factory=dict)
    # Near misses: (system kind "snomed"/"icd10cm"/"icd10", key) -> NearMiss; text patterns.
    near_miss: dict[tuple[str, str], NearMiss] = field(default_factory=dict)
    near_miss_text: tuple[re.Pattern[str], ...] = ()

    def cite(self, key: str) -> str:
        """Full citation for a `sources` key (the key itself when it is free text)."""
        return self.sources.get(key, key)


def _get(data: dict[str, Any], path: str) -> Any:
    """Follow a dotted path; a missing key is a TerminologyError naming the table and path."""
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise TerminologyError(f"{_TABLE}: {path}: missing")
        node = node[part]
    return node


def _strs(data: dict[str, Any], path: str) -> tuple[str, ...]:
    value = _get(data, path)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TerminologyError(f"{_TABLE}: {path}: must be a list of strings")
    return tuple(value)


def _num(data: dict[str, Any], path: str) -> float:
    value = _get(data, path)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TerminologyError(f"{_TABLE}: {path}: must be a number")
    return float(value)


def _str(data: dict[str, Any], path: str) -> str:
    value = _get(data, path)
    if not isinstance(value, str):
        raise TerminologyError(f"{_TABLE}: {path}: must be a string")
    return value


def _analyte(name: str, raw: dict[str, Any]) -> Analyte:
    path = f"analytes.{name}"
    unit = _str(raw, "unit")  # UCUM validity is a unit test: parsing it here costs a second
    if "factors" in raw:
        raise TerminologyError(
            f"{_TABLE}: {path}.factors: units convert through the UCUM library and "
            "mappings/units.yaml; give `substance` for mmol/L or umol/L instead"
        )
    substance = raw.get("substance")
    if substance is not None and substance not in units.table().molar_masses:
        raise TerminologyError(
            f"{_TABLE}: {path}.substance: {substance!r} is not in mappings/units.yaml molar_masses"
        )
    uln = raw.get("default_upper_limit")
    if uln is not None and (isinstance(uln, bool) or not isinstance(uln, int | float)):
        raise TerminologyError(f"{_TABLE}: {path}.default_upper_limit: must be a number")
    return Analyte(
        name=name,
        loinc=_strs(raw, "loinc"),
        unit=unit,
        substance=substance,
        default_upper_limit=None if uln is None else float(uln),
    )


def _test(raw: Any, path: str, analytes: dict[str, Analyte]) -> Test:
    if not isinstance(raw, dict):
        raise TerminologyError(f"{_TABLE}: {path}: must be a mapping")
    kind = raw.get("test")
    if kind not in TESTS:
        raise TerminologyError(f"{_TABLE}: {path}.test: {kind!r} is not one of {TESTS}")
    if kind in ("value", "ratio_to_baseline", "rise_from_baseline"):
        op = raw.get("op")
        if op not in OPS:
            raise TerminologyError(f"{_TABLE}: {path}.op: {op!r} is not one of {OPS}")
        return Test(kind=kind, op=op, threshold=_num(raw, "threshold"))
    if kind == "marker_within_upper_limit":
        analyte = raw.get("analyte")
        if analyte not in analytes or analytes[analyte].default_upper_limit is None:
            raise TerminologyError(
                f"{_TABLE}: {path}.analyte: {analyte!r} needs an analyte with default_upper_limit"
            )
        return Test(kind=kind, analyte=analyte)
    return Test(kind=kind)


def _criteria(
    disease: str, raw: Any, analytes: dict[str, Analyte], sources: dict[str, str]
) -> Criteria:
    path = f"criteria.{disease}"
    if not isinstance(raw, dict):
        raise TerminologyError(f"{_TABLE}: {path}: must be a mapping")
    analyte = _str(raw, "analyte")
    if analyte not in analytes:
        raise TerminologyError(f"{_TABLE}: {path}.analyte: unknown analyte {analyte!r}")
    rules_raw = _get(raw, "rules")
    if not isinstance(rules_raw, list):
        raise TerminologyError(f"{_TABLE}: {path}.rules: must be a list")
    rules = []
    for i, rule in enumerate(rules_raw):
        rpath = f"{path}.rules[{i}]"
        if not isinstance(rule, dict):
            raise TerminologyError(f"{_TABLE}: {rpath}: must be a mapping")
        response = rule.get("response")
        if response not in ("CR", "PR"):
            raise TerminologyError(f"{_TABLE}: {rpath}.response: must be CR or PR")
        modes = [m for m in ("all_of", "any_of") if m in rule]
        if len(modes) != 1 or not isinstance(rule[modes[0]], list) or not rule[modes[0]]:
            raise TerminologyError(f"{_TABLE}: {rpath}: needs exactly one non-empty all_of/any_of")
        tests = tuple(
            _test(t, f"{rpath}.{modes[0]}[{j}]", analytes) for j, t in enumerate(rule[modes[0]])
        )
        rules.append(
            Rule(
                response=response,
                mode=modes[0][:3],
                tests=tests,
                source=_str(rule, "source").strip(),
            )
        )
    keys = _get(raw, "source")
    keys = [keys] if isinstance(keys, str) else keys
    if not isinstance(keys, list) or not keys or any(k not in sources for k in keys):
        raise TerminologyError(f"{_TABLE}: {path}.source: must name keys of `sources`")
    return Criteria(disease=disease, analyte=analyte, rules=tuple(rules), sources=tuple(keys))


def _near_misses(data: dict[str, Any]) -> dict[tuple[str, str], NearMiss]:
    raw = (data["diseases"].get("near_miss") or {}) if isinstance(data["diseases"], dict) else {}
    found: dict[tuple[str, str], NearMiss] = {}
    for kind in ("snomed", "icd10cm", "icd10"):
        for code, entry in (raw.get(kind) or {}).items():
            path = f"diseases.near_miss.{kind}.{code}"
            if not isinstance(entry, dict) or entry.get("near") not in DISEASES:
                raise TerminologyError(f"{_TABLE}: {path}: needs `near` (one of {DISEASES})")
            key = str(code) if kind == "snomed" else icd_key(str(code))
            found[(kind, key)] = NearMiss(
                str(code), _str(entry, "display"), entry["near"], _str(entry, "source")
            )
    return found


def build_config(data: dict[str, Any]) -> ScoringConfig:
    """Check a parsed scoring table and build the ScoringConfig; TerminologyError if broken."""
    sources_raw = _get(data, "sources")
    if not isinstance(sources_raw, dict):
        raise TerminologyError(f"{_TABLE}: sources: must be a mapping")
    sources = {str(k): " ".join(str(v).split()) for k, v in sources_raw.items()}

    precedence = _strs(data, "diseases.precedence")
    if sorted(precedence) != sorted(DISEASES):
        raise TerminologyError(f"{_TABLE}: diseases.precedence: must list {DISEASES} once each")
    snomed_disease: dict[str, str] = {}
    icd_disease: dict[str, str] = {}
    icd10_disease: dict[str, str] = {}
    for disease in DISEASES:
        for code in _strs(data, f"diseases.codes.{disease}.snomed"):
            snomed_disease[code] = disease
        for code in _strs(data, f"diseases.codes.{disease}.icd10cm"):
            icd_disease[icd_key(code)] = disease
        for code in data["diseases"]["codes"][disease].get("icd10") or ():
            icd10_disease[icd_key(str(code))] = disease
    near_miss = _near_misses(data)
    try:
        near_text = tuple(
            re.compile(p, re.IGNORECASE)
            for p in (data["diseases"].get("near_miss") or {}).get("text") or ()
        )
    except re.error as exc:
        raise TerminologyError(f"{_TABLE}: diseases.near_miss.text: bad pattern: {exc}") from exc

    analytes_raw = _get(data, "analytes")
    if not isinstance(analytes_raw, dict):
        raise TerminologyError(f"{_TABLE}: analytes: must be a mapping")
    analytes = {str(name): _analyte(str(name), raw) for name, raw in analytes_raw.items()}
    for required in ("hemoglobin", "platelets", "ldh", "indirect_bilirubin"):
        if required not in analytes:
            raise TerminologyError(f"{_TABLE}: analytes.{required}: missing")
    loinc_analyte = {code: a.name for a in analytes.values() for code in a.loinc}

    criteria_raw = _get(data, "criteria")
    criteria = {d: _criteria(d, _get(criteria_raw, d), analytes, sources) for d in DISEASES}

    tr = _get(data, "transfusion")
    try:
        transfusion = Transfusion(
            count_status=frozenset(_strs(tr, "count_status")),
            required=tuple(re.compile(p, re.IGNORECASE) for p in _strs(tr, "required")),
            red_cell=tuple(re.compile(p, re.IGNORECASE) for p in _strs(tr, "red_cell")),
            generic=tuple(re.compile(p, re.IGNORECASE) for p in _strs(tr, "generic")),
            other_component=tuple(
                re.compile(p, re.IGNORECASE) for p in _strs(tr, "other_component")
            ),
            free_days=int(_num(tr, "free_days")),
            source=_str(tr, "source"),
        )
    except re.error as exc:
        raise TerminologyError(f"{_TABLE}: transfusion: bad pattern: {exc}") from exc

    derived: dict[str, Derived] = {}
    derived_raw = data.get("derived") or {}
    if not isinstance(derived_raw, dict):
        raise TerminologyError(f"{_TABLE}: derived: must be a mapping")
    for name, raw in derived_raw.items():
        path = f"derived.{name}"
        parts = {k: _str(raw, k) for k in ("minuend", "subtrahend")}
        for key in (str(name), *parts.values()):
            if key not in analytes:
                raise TerminologyError(f"{_TABLE}: {path}: unknown analyte {key!r}")
        derived[str(name)] = Derived(
            analyte=str(name), **parts, source=" ".join(_str(raw, "source").split())
        )

    try:
        text_names = TextNames(
            patterns=tuple(
                re.compile(p, re.IGNORECASE) for p in _strs(data, "medication.text_names")
            ),
            source=" ".join(_str(data, "medication.text_names_source").split()),
        )
    except re.error as exc:
        raise TerminologyError(f"{_TABLE}: medication.text_names: bad pattern: {exc}") from exc

    months_raw = _get(data, "timepoints.months")
    if not isinstance(months_raw, list) or not all(
        isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in months_raw
    ):
        raise TerminologyError(f"{_TABLE}: timepoints.months: must be positive whole months")
    months = tuple(months_raw)
    writeback = _get(data, "writeback")
    for response in RESPONSES:
        _str(writeback, f"responses.{response}.display")
    for key in ("code_system", "identifier_system", "code.code", "month_component.code"):
        _str(writeback, key)

    return ScoringConfig(
        sources=sources,
        snomed=_str(data, "systems.snomed"),
        icd10cm=frozenset(_strs(data, "systems.icd10cm")),
        icd10=frozenset(_strs(data, "systems.icd10")),
        icd10_disease=icd10_disease,
        near_miss=near_miss,
        near_miss_text=near_text,
        loinc=_str(data, "systems.loinc"),
        rxnorm_system=_str(data, "systems.rxnorm"),
        ucum=_str(data, "systems.ucum"),
        interpretation=_str(data, "systems.interpretation"),
        precedence=precedence,
        skip_verification=frozenset(_strs(data, "diseases.skip_verification")),
        snomed_disease=snomed_disease,
        icd_disease=icd_disease,
        rxnorm=frozenset(_strs(data, "medication.rxnorm")),
        medication_text=text_names,
        statement_skip_status=frozenset(_strs(data, "medication.statement_skip_status")),
        administration_skip_status=frozenset(_strs(data, "medication.administration_skip_status")),
        request_skip_status=frozenset(_strs(data, "medication.request_skip_status")),
        request_skip_intent=frozenset(_strs(data, "medication.request_skip_intent")),
        observation_skip_status=frozenset(_strs(data, "observation.skip_status")),
        analytes=analytes,
        loinc_analyte=loinc_analyte,
        derived=derived,
        baseline_days=int(_num(data, "baseline.days_before_start")),
        months=months,
        window_days=int(_num(data, "timepoints.window_days")),
        timepoint_source=_str(data, "timepoints.source"),
        normal_low={k: _num(data, f"prca_normal_low.{k}") for k in ("female", "male", "other")},
        normal_low_source=_str(data, "prca_normal_low.source"),
        transfusion=transfusion,
        criteria=criteria,
        writeback=writeback,
    )


@functools.cache
def load_config() -> ScoringConfig:
    """The ScoringConfig from mappings/scoring.yaml, read and checked once per process."""
    return build_config(load_table("scoring"))
