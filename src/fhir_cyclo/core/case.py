"""The case model: everything a cyclosporine case report or cohort row says (pydantic v2)."""

from __future__ import annotations

import datetime as dt
import functools
import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from fhir_cyclo.core.units import to_ucum

# FHIR `date`/`dateTime` lexical forms, so any precision the source gives survives a round trip.
_PARTIAL_DATE = re.compile(
    r"^(?P<y>\d{4})(-(?P<m>\d{2})(-(?P<d>\d{2})"
    r"(T(?P<time>\d{2}:\d{2}(:\d{2}(\.\d+)?)?)(?P<tz>Z|[+-]\d{2}:\d{2}))?)?)?$"
)
_ITEM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


# Dates repeat across a cohort's labs: a valid one is checked once per process (a bounded LRU).
@functools.lru_cache(maxsize=4096)
def _check_partial_date(value: str) -> str:
    match = _PARTIAL_DATE.match(value)
    if not match:
        raise ValueError(
            f"{value!r} is not a date: use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss]+zz:zz"
        )
    # Reject impossible calendar dates (2011-02-30) that the pattern alone lets through.
    year, month, day = match["y"], match["m"], match["d"]
    try:
        dt.date(int(year), int(month or 1), int(day or 1))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a real calendar date") from exc
    if match["time"] and not match["tz"]:
        raise ValueError(f"{value!r}: a time needs a timezone (FHIR dateTime)")
    return value


PartialDate = Annotated[str, AfterValidator(_check_partial_date)]
"""A FHIR date/dateTime string at the precision the source gives (YYYY, YYYY-MM, ...)."""

ItemId = Annotated[str, Field(pattern=_ITEM_ID.pattern)]
"""Case-local key of an item; with the case identifier it makes the resource id and identifier."""


@functools.lru_cache(maxsize=4096)
def date_lower_bound(value: str) -> dt.date:
    """First calendar day a partial date can mean ("2011" -> 2011-01-01)."""
    return dt.date(int(value[0:4]), int(value[5:7] or 1), int(value[8:10] or 1))


class Model(BaseModel):
    """Strict base: unknown fields are input errors, not silently dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Age(Model):
    """An age in years, for events the source dates only by the patient's age."""

    # > 0: FHIR R4's Age requires a positive value (invariant age-1); "at birth" is a {text: ...}.
    age: Annotated[float, Field(gt=0, le=130)]


class RelativeTime(Model):
    """A time the source gives only relative to something else ("three weeks after ...")."""

    text: Annotated[str, Field(min_length=1)]


def _when_kind(value: object) -> str | None:
    if isinstance(value, str):
        return "When:date"
    if isinstance(value, Age) or (isinstance(value, dict) and "age" in value):
        return "When:age"
    if isinstance(value, RelativeTime) or (isinstance(value, dict) and "text" in value):
        return "When:text"
    return None


When = Annotated[
    Annotated[PartialDate, Tag("When:date")]
    | Annotated[Age, Tag("When:age")]
    | Annotated[RelativeTime, Tag("When:text")],
    Discriminator(
        _when_kind,
        custom_error_type="when",
        custom_error_message="expected a date (YYYY, YYYY-MM, YYYY-MM-DD), {age: N} or {text: ...}",
    ),
]
"""When something happened, exactly as precise as the source: a date, an age, or words."""


class Identifier(Model):
    system: Annotated[str, Field(min_length=1)]
    value: Annotated[str, Field(min_length=1)]

    @property
    def token(self) -> str:
        return f"{self.system}|{self.value}"


class Patient(Model):
    """Demographics. Names, telecom and address are PHI: `export --deidentify` drops them."""

    sex: Literal["female", "male", "other", "unknown"]
    birth_date: PartialDate | None = None
    deceased: bool | PartialDate | None = None
    synthetic: bool = False
    name: str | None = None
    telecom: tuple[str, ...] = ()  # phone numbers or e-mail addresses as written
    address: str | None = None

    @field_validator("birth_date")
    @classmethod
    def _date_only(cls, value: str | None) -> str | None:
        if value is not None and "T" in value:
            raise ValueError("birth_date is a FHIR date: no time of day")
        return value


class Histology(Model):
    """WHO histologic type and its ICD-O-3 morphology (thymoma)."""

    who_type: Literal["A", "AB", "B1", "B2", "B3", "C"]
    # ICD-O-3 morphology/behaviour key into mappings (e.g. "8583/3"); None = derive from who_type.
    icdo3: str | None = None
    text: str | None = None


class Stage(Model):
    system: Literal["masaoka"]
    value: Annotated[str, Field(pattern=r"^(I|IIa|IIb|II|III|IVa|IVb|IV)$")]
    text: str | None = None


ClinicalStatus = Literal["active", "recurrence", "relapse", "inactive", "remission", "resolved"]


class Diagnosis(Model):
    """A Condition: the disease, its episode dates, histology, stage and DAT pattern."""

    id: ItemId
    concept: str  # key into mappings/terminology.yaml `diagnoses`
    text: str | None = None
    onset: When | None = None
    abatement: When | None = None
    clinical_status: ClinicalStatus = "active"
    verification: Literal["confirmed", "provisional", "differential", "unconfirmed"] = "confirmed"
    histology: Histology | None = None
    stage: Stage | None = None
    # Direct antiglobulin test pattern of an AIHA (cohort paper: IgG, IgG+C, IgA).
    dat_pattern: Literal["IgG", "IgG+C", "IgA"] | None = None
    due_to: tuple[ItemId, ...] = ()  # ids of diagnoses this one is caused by (PRCA <- thymoma)
    body_site: str | None = None  # key into mappings `body_sites`
    note: str | None = None

    @model_validator(mode="after")
    def _abatement_needs_inactive_status(self) -> Diagnosis:
        # FHIR invariant con-4: an abated condition is inactive, resolved or in remission.
        if self.abatement is not None and self.clinical_status not in (
            "inactive",
            "resolved",
            "remission",
        ):
            raise ValueError(
                f"abatement given but clinical_status is {self.clinical_status!r}: "
                "use inactive, resolved or remission"
            )
        return self


class Dose(Model):
    """A daily dose as prescribed: 5 mg/kg/day, 150 mg/day, 1000 mg/day pulses."""

    value: Annotated[float, Field(gt=0)]
    unit: Literal["mg/kg/d", "mg/d"]
    doses_per_day: Annotated[int, Field(ge=1, le=12)] | None = None


class Pulses(Model):
    """Pulse courses: `courses` courses of `days` consecutive days each (2 x 3-day courses)."""

    courses: Annotated[int, Field(ge=1, le=50)]
    days: Annotated[int, Field(ge=1, le=60)]


class TroughTarget(Model):
    low: Annotated[float, Field(gt=0)]
    high: Annotated[float, Field(gt=0)]
    unit: Literal["ng/mL"] = "ng/mL"

    @model_validator(mode="after")
    def _ordered(self) -> TroughTarget:
        if self.low > self.high:
            raise ValueError(f"trough target low {self.low} is above high {self.high}")
        return self


class Treatment(Model):
    """A MedicationStatement: one drug over one phase of dosing."""

    id: ItemId
    drug: str  # key into mappings `drugs`
    text: str | None = None
    start: When | None = None
    end: When | None = None
    status: Literal["active", "completed", "stopped", "on-hold", "intended", "not-taken"] = (
        "completed"
    )
    dose: Dose | None = None
    pulses: Pulses | None = None
    route: Literal["oral", "intravenous"] | None = None
    line: Annotated[int, Field(ge=1, le=30)] | None = None  # line of therapy
    reasons: tuple[ItemId, ...] = ()  # diagnosis ids
    target_trough: TroughTarget | None = None
    dosage_text: str | None = None  # the prescription as written
    note: str | None = None


class ReferenceRange(Model):
    low: float | None = None
    high: float | None = None
    text: str | None = None


class Lab(Model):
    """A laboratory Observation: analyte, time, value (or interpretation only), reference range."""

    id: ItemId
    analyte: str  # key into mappings `analytes`
    date: When
    value: float | None = None
    unit: str | None = None  # UCUM code; must be the analyte's unit or a listed alternative
    interpretation: Literal["N", "L", "H", "LL", "HH", "U", "D", "POS", "NEG"] | None = None
    reference_range: ReferenceRange | None = None
    text: str | None = None
    note: str | None = None

    @field_validator("unit")
    @classmethod
    def _ucum_code(cls, unit: str | None) -> str | None:
        # Lab spellings (K/uL, x10^9/L, g/dl) become their UCUM code, so the Observation carries
        # a valid UCUM code and reads back equal; units that cannot be read stay as written and
        # are reported by inputs.check_case with the analyte they belong to.
        return None if unit is None else _ucum_or_as_written(unit)

    @model_validator(mode="after")
    def _value_or_interpretation(self) -> Lab:
        if self.value is None and self.interpretation is None:
            raise ValueError("a lab needs a value or an interpretation")
        if self.value is not None and self.unit is None:
            raise ValueError("a lab value needs a unit")
        if self.value is None and self.unit is not None:
            raise ValueError("a unit without a value")
        return self


@functools.lru_cache(maxsize=1024)
def _ucum_or_as_written(unit: str) -> str:
    return to_ucum(unit) or unit


ImagingResponse = Literal[
    "full_remission", "partial_remission", "improved", "stable", "worsened", "undetermined"
]


class Imaging(Model):
    """An imaging study and what it showed; with `response` it is a disease-status assessment."""

    id: ItemId
    date: When
    modality: Literal["CT", "chest radiography", "MRI", "PET-CT"]
    finding: Annotated[str, Field(min_length=1)]
    response: ImagingResponse | None = None
    focus: ItemId | None = None  # diagnosis id assessed
    size_mm: Annotated[float, Field(gt=0)] | None = None


class MarrowFinding(Model):
    """A bone-marrow examination finding (cellularity, megakaryocytes, fibrosis, infiltrate...)."""

    id: ItemId
    date: When | None = None
    finding: str  # key into mappings `marrow_findings`
    value_percent: Annotated[float, Field(ge=0, le=100)] | None = None
    value_text: str | None = None
    grade: Annotated[int, Field(ge=0, le=3)] | None = None  # WHO reticulin fibrosis grade

    @model_validator(mode="after")
    def _one_value(self) -> MarrowFinding:
        given = [v for v in (self.value_percent, self.value_text, self.grade) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of value_percent, value_text, grade")
        return self


class Procedure(Model):
    """A Procedure: surgery, splenectomy, transfusion; `not-done` records what was not done."""

    id: ItemId
    procedure: str  # key into mappings `procedures`
    text: str | None = None
    performed: When | None = None
    performed_end: PartialDate | None = None
    status: Literal["completed", "not-done", "in-progress"] = "completed"
    reasons: tuple[ItemId, ...] = ()
    outcome: str | None = None
    note: str | None = None


class AdverseEvent(Model):
    """An adverse event with its CTCAE v5.0 grade."""

    id: ItemId
    event: str  # key into mappings `adverse_events`
    text: str | None = None
    date: When | None = None
    grade: Annotated[int, Field(ge=1, le=5)]
    serious: bool = False
    suspect: tuple[ItemId, ...] = ()  # treatment ids
    outcome: Literal["resolved", "recovering", "ongoing", "fatal", "unknown"] | None = None


class Case(Model):
    """One patient's case: the unit that becomes one transaction Bundle."""

    identifier: Identifier
    patient: Patient
    diagnoses: tuple[Diagnosis, ...] = ()
    treatments: tuple[Treatment, ...] = ()
    labs: tuple[Lab, ...] = ()
    imaging: tuple[Imaging, ...] = ()
    marrow: tuple[MarrowFinding, ...] = ()
    procedures: tuple[Procedure, ...] = ()
    adverse_events: tuple[AdverseEvent, ...] = ()

    @field_validator(
        "diagnoses", "treatments", "labs", "imaging", "marrow", "procedures", "adverse_events"
    )
    @classmethod
    def _canonical_order(cls, items: tuple[Model, ...]) -> tuple[Model, ...]:
        # Items are kept sorted by id so a case read back from a server (any order) compares equal.
        return tuple(sorted(items, key=lambda item: str(getattr(item, "id"))))  # noqa: B009

    @model_validator(mode="after")
    def _ids_and_links(self) -> Case:
        """Item ids are unique per case and every cross-reference points at an existing item."""
        seen: dict[str, str] = {}
        groups: dict[str, tuple[Model, ...]] = {
            "diagnoses": self.diagnoses,
            "treatments": self.treatments,
            "labs": self.labs,
            "imaging": self.imaging,
            "marrow": self.marrow,
            "procedures": self.procedures,
            "adverse_events": self.adverse_events,
        }
        for group, items in groups.items():
            for item in items:
                item_id: str = getattr(item, "id")  # noqa: B009 - every item model has `id`
                if item_id in seen:
                    raise ValueError(
                        f"{group}: id {item_id!r} is used twice (also in {seen[item_id]})"
                    )
                seen[item_id] = group
        diagnosis_ids = {d.id for d in self.diagnoses}
        treatment_ids = {t.id for t in self.treatments}

        def check(ids: tuple[str, ...], known: set[str], where: str) -> None:
            for ref in ids:
                if ref not in known:
                    raise ValueError(f"{where} refers to {ref!r}, which is not defined")

        for d in self.diagnoses:
            check(d.due_to, diagnosis_ids, f"diagnoses[{d.id}].due_to")
        for t in self.treatments:
            check(t.reasons, diagnosis_ids, f"treatments[{t.id}].reasons")
        for p in self.procedures:
            check(p.reasons, diagnosis_ids, f"procedures[{p.id}].reasons")
        for i in self.imaging:
            check((i.focus,) if i.focus else (), diagnosis_ids, f"imaging[{i.id}].focus")
        for a in self.adverse_events:
            check(a.suspect, treatment_ids, f"adverse_events[{a.id}].suspect")
        return self
