"""Typed, validated view of mappings/scoring.yaml (codes, units, windows, criteria, write-back)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from fhir_cyclo.core import units
from fhir_cyclo.core.errors import TerminologyError
from fhir_cyclo.core.tables import load_table

Disease = Literal["ITP", "AIHA", "PRCA"]
Response = Literal["CR", "PR", "NR", "NE"]
RuleResponse = Literal["CR", "PR"]  # what a rule can give; NR and NE are what is left
Op = Literal[">", ">=", "<", "<="]
TestKind = Literal[
    "value",
    "ratio_to_baseline",
    "rise_from_baseline",
    "marker_within_upper_limit",
    "within_normal_range",
    "transfusion_free",
]
Mode = Literal["all", "any"]

DISEASES: tuple[Disease, ...] = get_args(Disease)
RESPONSES: tuple[Response, ...] = get_args(Response)
OPS: tuple[Op, ...] = get_args(Op)
TESTS: tuple[TestKind, ...] = get_args(TestKind)
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

    kind: TestKind
    op: Op = ">"
    threshold: float = 0.0
    analyte: str = ""


@dataclass(frozen=True)
class Rule:
    """Response given when all (mode "all") or any (mode "any") of the tests hold."""

    response: RuleResponse
    mode: Mode
    tests: tuple[Test, ...]
    source: str


@dataclass(frozen=True)
class Criteria:
    """The response criteria of one disease."""

    disease: Disease
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
    precedence: tuple[Disease, ...]
    skip_verification: frozenset[str]
    snomed_disease: dict[str, Disease]
    icd_disease: dict[str, Disease]  # icd_key(code) -> disease
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
    icd10_disease: dict[str, Disease] = field(default_factory=dict)
    # Near misses: (system kind "snomed"/"icd10cm"/"icd10", key) -> NearMiss; text patterns.
    near_miss: dict[tuple[str, str], NearMiss] = field(default_factory=dict)
    near_miss_text: tuple[re.Pattern[str], ...] = ()

    def cite(self, key: str) -> str:
        """Full citation for a `sources` key (the key itself when it is free text)."""
        return self.sources.get(key, key)


# --- the table as written: pydantic models (shapes, types, one-of values) ----------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _absent_section_is_empty(cls, data: Any) -> Any:
        # A missing section is read as an empty one, so the error names the first missing leaf
        # ("baseline.days_before_start: missing") instead of the section alone.
        if isinstance(data, dict):
            for name, info in cls.model_fields.items():
                kind = info.annotation
                if (
                    name not in data
                    and info.is_required()
                    and isinstance(kind, type)
                    and issubclass(kind, BaseModel)
                ):
                    data = {**data, name: {}}
        return data


Text = Annotated[str, Field(min_length=1)]
Number = StrictFloat  # an int or float, never a bool
WholeDays = Annotated[StrictInt, Field(ge=0)]


def _folded(text: str) -> str:
    return " ".join(text.split())


def _patterns(values: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    try:
        return tuple(re.compile(p, re.IGNORECASE) for p in values)
    except re.error as exc:
        raise ValueError(f"bad pattern: {exc}") from None


class _Systems(_Strict):
    snomed: Text
    icd10cm: tuple[Text, ...]
    icd10: tuple[Text, ...] = ()
    loinc: Text
    rxnorm: Text
    ucum: Text
    interpretation: Text


class _DiseaseCodes(_Strict):
    snomed: tuple[Text, ...]
    icd10cm: tuple[Text, ...]
    icd10: tuple[Text, ...] = ()


class _NearMissEntry(_Strict):
    display: Text
    near: Disease
    source: Text


class _NearMiss(_Strict):
    snomed: dict[str, _NearMissEntry] = Field(default_factory=dict)
    icd10cm: dict[str, _NearMissEntry] = Field(default_factory=dict)
    icd10: dict[str, _NearMissEntry] = Field(default_factory=dict)
    text: tuple[Text, ...] = ()

    @field_validator("text")
    @classmethod
    def _compiles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _patterns(value)
        return value


class _Diseases(_Strict):
    precedence: tuple[Disease, ...]
    skip_verification: tuple[Text, ...]
    codes: dict[Disease, _DiseaseCodes]
    near_miss: _NearMiss = Field(default_factory=_NearMiss)

    @field_validator("precedence")
    @classmethod
    def _each_once(cls, value: tuple[Disease, ...]) -> tuple[Disease, ...]:
        if sorted(value) != sorted(DISEASES):
            raise ValueError(f"must list {DISEASES} once each")
        return value

    @field_validator("codes")
    @classmethod
    def _every_disease(cls, value: dict[Disease, _DiseaseCodes]) -> dict[Disease, _DiseaseCodes]:
        missing = [d for d in DISEASES if d not in value]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return value


class _Medication(_Strict):
    rxnorm: tuple[Text, ...]
    text_names: tuple[Text, ...]
    text_names_source: Text
    statement_skip_status: tuple[Text, ...]
    administration_skip_status: tuple[Text, ...]
    request_skip_status: tuple[Text, ...]
    request_skip_intent: tuple[Text, ...]

    @field_validator("text_names")
    @classmethod
    def _compiles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _patterns(value)
        return value


class _Observation(_Strict):
    skip_status: tuple[Text, ...]


class _Analyte(_Strict):
    loinc: tuple[Text, ...]
    unit: Text  # UCUM validity is a unit test: parsing it here costs a second
    substance: Text | None = None  # key of mappings/units.yaml molar_masses
    default_upper_limit: Number | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_factors(cls, data: Any) -> Any:
        if isinstance(data, dict) and "factors" in data:
            raise ValueError(
                "`factors`: units convert through the UCUM library and mappings/units.yaml; "
                "give `substance` for mmol/L or umol/L instead"
            )
        return data


class _Derived(_Strict):
    minuend: Text
    subtrahend: Text
    source: Text


class _Baseline(_Strict):
    days_before_start: WholeDays


class _Timepoints(_Strict):
    months: Annotated[tuple[Annotated[StrictInt, Field(gt=0)], ...], Field(min_length=1)]
    window_days: WholeDays
    source: Text


class _NormalLow(_Strict):
    female: Number
    male: Number
    other: Number
    source: Text


class _Transfusion(_Strict):
    count_status: tuple[Text, ...]
    required: tuple[Text, ...]
    red_cell: tuple[Text, ...]
    generic: tuple[Text, ...]
    other_component: tuple[Text, ...]
    free_days: WholeDays
    source: Text

    @field_validator("required", "red_cell", "generic", "other_component")
    @classmethod
    def _compiles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _patterns(value)
        return value


_NUMERIC_TESTS = ("value", "ratio_to_baseline", "rise_from_baseline")


class _Test(_Strict):
    test: TestKind
    op: Op | None = None
    threshold: Number | None = None
    analyte: Text | None = None

    @model_validator(mode="after")
    def _fields_of_its_kind(self) -> _Test:
        numeric = self.test in _NUMERIC_TESTS
        if numeric and (self.op is None or self.threshold is None):
            raise ValueError(f"test {self.test} needs `op` (one of {OPS}) and `threshold`")
        if self.test == "marker_within_upper_limit" and self.analyte is None:
            raise ValueError("test marker_within_upper_limit needs `analyte`")
        return self


class _Rule(_Strict):
    response: Literal["CR", "PR"]
    all_of: tuple[_Test, ...] = ()
    any_of: tuple[_Test, ...] = ()
    source: Text

    @model_validator(mode="after")
    def _one_mode(self) -> _Rule:
        if bool(self.all_of) == bool(self.any_of):
            raise ValueError("needs exactly one non-empty all_of/any_of")
        return self


class _Criteria(_Strict):
    analyte: Text
    source: Text | Annotated[tuple[Text, ...], Field(min_length=1)]
    rules: tuple[_Rule, ...]


class _Coding(_Strict):
    code: Text
    display: Text | None = None


class _WritebackResponse(_Strict):
    display: Text
    snomed: Text | None = None
    snomed_display: Text | None = None

    @model_validator(mode="after")
    def _snomed_has_display(self) -> _WritebackResponse:
        if self.snomed is not None and self.snomed_display is None:
            raise ValueError("`snomed` needs `snomed_display`")
        return self


class _Writeback(_Strict):
    code_system: Text
    identifier_system: Text
    code: _Coding
    month_component: _Coding
    responses: dict[Response, _WritebackResponse]

    @field_validator("responses")
    @classmethod
    def _every_response(
        cls, value: dict[Response, _WritebackResponse]
    ) -> dict[Response, _WritebackResponse]:
        missing = [r for r in RESPONSES if r not in value]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return value


class _Table(_Strict):
    version: Literal[1]
    sources: dict[str, Text]
    systems: _Systems
    diseases: _Diseases
    medication: _Medication
    observation: _Observation
    analytes: dict[str, _Analyte]
    derived: dict[str, _Derived] = {}
    baseline: _Baseline
    timepoints: _Timepoints
    prca_normal_low: _NormalLow
    transfusion: _Transfusion
    criteria: dict[Disease, _Criteria]
    writeback: _Writeback

    @field_validator("criteria")
    @classmethod
    def _every_disease(cls, value: dict[Disease, _Criteria]) -> dict[Disease, _Criteria]:
        missing = [d for d in DISEASES if d not in value]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return value


# --- from the table to the ScoringConfig: references between sections ---------------------


def _where(loc: tuple[int | str, ...]) -> str:
    """A pydantic location as the table's path: criteria.ITP.rules[0].all_of[1].op."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# pydantic messages that would name our model classes, said in the table's terms instead.
_PLAIN = {
    "missing": "missing",
    "extra_forbidden": "unknown key",
    "model_type": "must be a mapping",
    "dict_type": "must be a mapping",
}


def _parse(data: dict[str, Any]) -> _Table:
    try:
        return _Table.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] in _PLAIN:
            message = _PLAIN[first["type"]]
        elif isinstance(first.get("input"), str | int | float):  # bools are ints
            message += f" (got {first['input']!r})"
        where = _where(first["loc"])
        more = exc.error_count() - 1
        tail = f" (and {more} more problem(s))" if more else ""
        raise TerminologyError(
            f"{_TABLE}: {where}: {message}{tail}" if where else f"{_TABLE}: {message}{tail}"
        ) from None


def _error(path: str, message: str) -> TerminologyError:
    return TerminologyError(f"{_TABLE}: {path}: {message}")


def _analytes(table: _Table) -> dict[str, Analyte]:
    molar_masses = units.table().molar_masses
    out: dict[str, Analyte] = {}
    for name, raw in table.analytes.items():
        if raw.substance is not None and raw.substance not in molar_masses:
            raise _error(
                f"analytes.{name}.substance",
                f"{raw.substance!r} is not in mappings/units.yaml molar_masses",
            )
        out[name] = Analyte(
            name=name,
            loinc=raw.loinc,
            unit=raw.unit,
            substance=raw.substance,
            default_upper_limit=raw.default_upper_limit,
        )
    for required in ("hemoglobin", "platelets", "ldh", "indirect_bilirubin"):
        if required not in out:
            raise _error(f"analytes.{required}", "missing")
    return out


def _test(raw: _Test, path: str, analytes: dict[str, Analyte]) -> Test:
    if raw.test == "marker_within_upper_limit":
        marker = analytes.get(raw.analyte or "")
        if marker is None or marker.default_upper_limit is None:
            raise _error(
                f"{path}.analyte", f"{raw.analyte!r} needs an analyte with default_upper_limit"
            )
        return Test(kind=raw.test, analyte=marker.name)
    if raw.op is not None and raw.threshold is not None:  # a numeric test (checked by _Test)
        return Test(kind=raw.test, op=raw.op, threshold=raw.threshold)
    return Test(kind=raw.test)


def _criteria(
    disease: Disease, raw: _Criteria, analytes: dict[str, Analyte], sources: dict[str, str]
) -> Criteria:
    path = f"criteria.{disease}"
    if raw.analyte not in analytes:
        raise _error(f"{path}.analyte", f"unknown analyte {raw.analyte!r}")
    rules = []
    for i, rule in enumerate(raw.rules):
        mode: Mode = "all" if rule.all_of else "any"  # _Rule: exactly one is non-empty
        tests = rule.all_of or rule.any_of
        where = f"{path}.rules[{i}].{mode}_of"
        rules.append(
            Rule(
                response=rule.response,
                mode=mode,
                tests=tuple(_test(t, f"{where}[{j}]", analytes) for j, t in enumerate(tests)),
                source=rule.source.strip(),
            )
        )
    keys = (raw.source,) if isinstance(raw.source, str) else raw.source
    if any(k not in sources for k in keys):
        raise _error(f"{path}.source", "must name keys of `sources`")
    return Criteria(disease=disease, analyte=raw.analyte, rules=tuple(rules), sources=keys)


def _derived(table: _Table, analytes: dict[str, Analyte]) -> dict[str, Derived]:
    out: dict[str, Derived] = {}
    for name, raw in table.derived.items():
        for key in (name, raw.minuend, raw.subtrahend):
            if key not in analytes:
                raise _error(f"derived.{name}", f"unknown analyte {key!r}")
        out[name] = Derived(
            analyte=name,
            minuend=raw.minuend,
            subtrahend=raw.subtrahend,
            source=_folded(raw.source),
        )
    return out


def _transfusion(raw: _Transfusion) -> Transfusion:
    return Transfusion(
        count_status=frozenset(raw.count_status),
        required=_patterns(raw.required),
        red_cell=_patterns(raw.red_cell),
        generic=_patterns(raw.generic),
        other_component=_patterns(raw.other_component),
        free_days=raw.free_days,
        source=raw.source,
    )


def build_config(data: dict[str, Any]) -> ScoringConfig:
    """Check a parsed scoring table and build the ScoringConfig; TerminologyError if broken."""
    table = _parse(data)
    sources = {k: _folded(v) for k, v in table.sources.items()}
    diseases = table.diseases
    snomed_disease: dict[str, Disease] = {}
    icd_disease: dict[str, Disease] = {}
    icd10_disease: dict[str, Disease] = {}
    for disease in DISEASES:
        for code in diseases.codes[disease].snomed:
            snomed_disease[code] = disease
        for code in diseases.codes[disease].icd10cm:
            icd_disease[icd_key(code)] = disease
        for code in diseases.codes[disease].icd10:
            icd10_disease[icd_key(code)] = disease
    near = diseases.near_miss
    near_miss = {
        (kind, code if kind == "snomed" else icd_key(code)): NearMiss(
            code, entry.display, entry.near, entry.source
        )
        for kind, entries in (
            ("snomed", near.snomed),
            ("icd10cm", near.icd10cm),
            ("icd10", near.icd10),
        )
        for code, entry in entries.items()
    }
    analytes = _analytes(table)
    medication = table.medication
    normal = table.prca_normal_low
    return ScoringConfig(
        sources=sources,
        snomed=table.systems.snomed,
        icd10cm=frozenset(table.systems.icd10cm),
        icd10=frozenset(table.systems.icd10),
        icd10_disease=icd10_disease,
        near_miss=near_miss,
        near_miss_text=_patterns(near.text),
        loinc=table.systems.loinc,
        rxnorm_system=table.systems.rxnorm,
        ucum=table.systems.ucum,
        interpretation=table.systems.interpretation,
        precedence=diseases.precedence,
        skip_verification=frozenset(diseases.skip_verification),
        snomed_disease=snomed_disease,
        icd_disease=icd_disease,
        rxnorm=frozenset(medication.rxnorm),
        medication_text=TextNames(
            patterns=_patterns(medication.text_names),
            source=_folded(medication.text_names_source),
        ),
        statement_skip_status=frozenset(medication.statement_skip_status),
        administration_skip_status=frozenset(medication.administration_skip_status),
        request_skip_status=frozenset(medication.request_skip_status),
        request_skip_intent=frozenset(medication.request_skip_intent),
        observation_skip_status=frozenset(table.observation.skip_status),
        analytes=analytes,
        loinc_analyte={code: a.name for a in analytes.values() for code in a.loinc},
        derived=_derived(table, analytes),
        baseline_days=table.baseline.days_before_start,
        months=table.timepoints.months,
        window_days=table.timepoints.window_days,
        timepoint_source=table.timepoints.source,
        normal_low={"female": normal.female, "male": normal.male, "other": normal.other},
        normal_low_source=normal.source,
        transfusion=_transfusion(table.transfusion),
        criteria={d: _criteria(d, table.criteria[d], analytes, sources) for d in DISEASES},
        writeback=table.writeback.model_dump(exclude_none=True),
    )


@functools.cache
def load_config() -> ScoringConfig:
    """The ScoringConfig from mappings/scoring.yaml, read and checked once per process."""
    return build_config(load_table("scoring"))
