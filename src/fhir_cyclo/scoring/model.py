"""The scoring input model: warnings, measurements, starts, transfusions, per-patient inputs."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fhir_cyclo.scoring.dates import Span, is_partial


@dataclass(frozen=True, slots=True)
class Note:
    """A warning about input that was skipped or interpreted: where, which field, and why."""

    source: str
    path: str
    message: str
    context: str = ""  # file, case (hashed) and item of the resource, when known

    def __str__(self) -> str:
        where = f"{self.source}: {self.path}" if self.path else self.source
        where = f"{self.context} {where}" if self.context else where
        return f"{where}: {self.message}" if where else self.message


_CASE_ITEM = "http://fhir-cyclo.example.org/fhir/sid/case-item"


def item_context(resource: dict[str, Any], origin: str) -> str:
    """ "file [p-token, item id]" for a warning: where to fix it, never an identifier value."""
    for ident in resource.get("identifier") or ():
        if isinstance(ident, dict) and ident.get("system") == _CASE_ITEM:
            case, _, item = str(ident.get("value", "")).rpartition("|")
            digest = patient_token(case)  # the case token is the patient's key
            # Exported Bundle files are named after the case value (export.bundle_filename): an
            # MRN in a file name must not reach a log line, so that part of the path is masked.
            value = case.rpartition("|")[2]
            slug = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-")[:60]
            if len(slug) >= 3:
                origin = origin.replace(slug, "<case>")
            return f"{origin} [{digest}, item {item}]"
    return "" if origin == "input" else origin  # plain dicts from a caller: no file to name


@dataclass(slots=True)
class Measurement:
    """One usable lab result, value normalised to the analyte's unit."""

    ref: str  # "Observation/<id>" as read (fullUrl or origin when the resource has no id)
    analyte: str
    value: float | None  # None only for a value-less Hb whose interpretation is N
    span: Span
    date_text: str
    date_field: str
    low: float | None = None  # referenceRange.low, normalised
    high: float | None = None  # referenceRange.high, normalised
    normal: bool = False  # interpretation N without a value
    derived_from: tuple[str, ...] = ()  # the measurements a derived value was computed from
    # File, case (hashed) and item, for the warning a partial date's imputation gives; kept
    # only for partial dates (the only ones warned about), so full dates cost nothing.
    context: str = ""

    @property
    def partial(self) -> bool:
        return is_partial(self.span)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A result of a scored analyte that was read but not used, and why (reasons, --explain)."""

    ref: str
    analyte: str
    span: Span | None  # its date, when it has a usable one
    why: str
    kind: str  # "unit", "value", "status", "other": counted per kind in the accounting


@dataclass(slots=True)
class TransfusionEvent:
    """A Procedure whose text names a red-cell transfusion (counted or not, by status)."""

    ref: str
    span: Span
    status: str
    counted: bool
    text: str


@dataclass(slots=True)
class StartDate:
    """The cyclosporine start and where it was read."""

    ref: str
    span: Span
    date_text: str
    date_field: str
    kind: str = "MedicationStatement"  # the resource type that gave the start

    @property
    def day(self) -> date:
        """The start: the first day of the interval."""
        return self.span[0]


@dataclass
class PatientInputs:
    """Everything scoring needs for one patient."""

    key: str  # "system|value" of the first identifier, else "Patient/<id>"
    reference: str | None  # "Patient/<id>" when known (write-back subject)
    identifier: tuple[str, str] | None  # (system, value) of the first identifier
    gender: str | None
    diseases: tuple[str, ...] = ()  # every scored disease coded, in precedence order
    condition_refs: dict[str, str] = field(default_factory=dict)  # disease -> first Condition
    condition_codes: dict[str, str] = field(default_factory=dict)  # disease -> its codes, shown
    start: StartDate | None = None
    labs: dict[str, list[Measurement]] = field(default_factory=dict)
    transfusions: list[TransfusionEvent] = field(default_factory=list)
    tags: tuple[str, ...] = ()  # Patient.meta.tag as "system|code" (synthetic data), for reports
    skipped: list[Skipped] = field(default_factory=list)  # results read but not used
    near_misses: list[str] = field(default_factory=list)  # codes/names close to scored ones

    @property
    def disease(self) -> str | None:
        """The disease scored: the first in precedence order."""
        return self.diseases[0] if self.diseases else None


@dataclass
class ScoringInputs:
    """Per-patient inputs (sorted by key) and the warnings raised while reading them."""

    patients: list[PatientInputs]
    notes: list[Note]


def log_name(inputs: Any) -> str:
    """How warnings name a patient: its pseudonymous token (identifier values are PHI)."""
    return patient_token(str(getattr(inputs, "key", "")))


def key_hash(key: str) -> str:
    """A patient key ("system|value") as it may appear in logs: its token, never the value."""
    return patient_token(key)


def patient_token(key: str) -> str:
    """One pseudonymous name per patient for logs, the JSON and the report: "p-" and 8 hex of
    the SHA-256 of its key (first identifier "system|value", else "Patient/<id>"), so the same
    whatever the input format (Bundles, NDJSON, Bulk, server). Not a secret: a stable alias."""
    return "p-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def coding_list(concept: Any) -> list[dict[str, Any]]:
    """The `coding` list of a CodeableConcept, or [] for anything else."""
    if isinstance(concept, dict):
        codings = concept.get("coding")
        if isinstance(codings, list):
            return codings
    return []


def codes_text(concept: Any) -> str:
    """The codes of a CodeableConcept joined by commas, for messages."""
    return ",".join(str(c.get("code")) for c in coding_list(concept)) or "?"


def strip_history(ref: str) -> str:
    cut = ref.find("/_history/")
    return ref if cut < 0 else ref[:cut]


def type_id(ref: str, resource_type: str) -> str | None:
    """ "Type/id" of a relative or absolute literal reference to `resource_type`, else None."""
    head, _, rid = strip_history(ref).rpartition("/")
    if rid and (head == resource_type or head.endswith("/" + resource_type)):
        return f"{resource_type}/{rid}"
    return None
