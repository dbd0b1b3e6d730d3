"""Turn FHIR resources (plain dicts) into per-patient scoring inputs, collecting warnings."""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from fhir_cyclo.errors import InputError
from fhir_cyclo.scoring.config import Analyte, ScoringConfig, icd_key, load_config
from fhir_cyclo.scoring.dates import Span, is_partial, parse_span
from fhir_cyclo.scoring.sources import SourceItem

# This path runs over every lab result of a cohort, so it works on the parsed dicts as they are
# (no model validation unless strict=True, no copies) and defers everything that needs the whole
# input (reference resolution, Medication lookups) to the end.

_IDENTIFIER = "identifier:"
# Observation date fallbacks after effectiveDateTime (effective[x] is a choice, then issued).
_OBSERVATION_DATES = ("effectivePeriod.start", "effectivePeriod.end", "effectiveInstant", "issued")
_NUMBER = (int, float)


@dataclass(frozen=True, slots=True)
class Note:
    """A warning about input that was skipped or interpreted: where, which field, and why."""

    source: str
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.path}" if self.path else self.source
        return f"{where}: {self.message}" if where else self.message


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

    @property
    def partial(self) -> bool:
        return is_partial(self.span)


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
    start: StartDate | None = None
    labs: dict[str, list[Measurement]] = field(default_factory=dict)
    transfusions: list[TransfusionEvent] = field(default_factory=list)

    @property
    def disease(self) -> str | None:
        """The disease scored: the first in precedence order."""
        return self.diseases[0] if self.diseases else None


@dataclass
class ScoringInputs:
    """Per-patient inputs (sorted by key) and the warnings raised while reading them."""

    patients: list[PatientInputs]
    notes: list[Note]


def _coding_list(concept: Any) -> list[dict[str, Any]]:
    if isinstance(concept, dict):
        codings = concept.get("coding")
        if isinstance(codings, list):
            return codings
    return []


def _strip_history(ref: str) -> str:
    cut = ref.find("/_history/")
    return ref if cut < 0 else ref[:cut]


def _type_id(ref: str, resource_type: str) -> str | None:
    """ "Type/id" of a relative or absolute literal reference to `resource_type`, else None."""
    head, _, rid = _strip_history(ref).rpartition("/")
    if rid and (head == resource_type or head.endswith("/" + resource_type)):
        return f"{resource_type}/{rid}"
    return None


class _Extractor:
    """One pass over the resources, then `finish()` links everything to patients."""

    def __init__(self, cfg: ScoringConfig, strict: bool) -> None:
        self.cfg = cfg
        self.strict = strict
        self.notes: list[Note] = []
        self.patients: dict[str, dict[str, Any]] = {}  # anchor -> Patient
        self.patient_urls: dict[str, str] = {}  # Bundle fullUrl -> anchor
        self.medications: dict[str, dict[str, Any]] = {}  # "Medication/id" and fullUrl -> res
        # Everything below is keyed by the raw subject key (reference or identifier token).
        self.labs: dict[str, list[Measurement]] = {}
        self.conditions: dict[str, list[tuple[tuple[str, ...], str]]] = {}
        self.transfusions: dict[str, list[TransfusionEvent]] = {}
        self.med_resources: list[tuple[dict[str, Any], str, str]] = []  # (res, ref, subject key)
        self._ucum = cfg.ucum
        self._validators: dict[str, Any] = {}
        self._by_identifier: dict[str, str] = {}  # "system|value" -> anchor, filled by finish()
        self._handlers = {
            "Observation": self._observation,
            "Condition": self._condition,
            "MedicationStatement": self._medication_use,
            "MedicationRequest": self._medication_use,
            "Procedure": self._procedure,
            "Patient": self._patient,
            "Medication": self._medication,
        }
        analytes = cfg.analytes
        self._loinc_analyte = {code: analytes[name] for code, name in cfg.loinc_analyte.items()}
        # Looked up once per lab result: kept as attributes, not re-read through cfg.
        self._loinc = cfg.loinc
        self._observation_skip = cfg.observation_skip_status
        # Date text -> span: a cohort's results share few distinct dates.
        self._spans: dict[str, Span] = {}

    # --- helpers ---------------------------------------------------------------------------

    def note(self, source: str, path: str, message: str) -> None:
        self.notes.append(Note(source, path, message))

    @staticmethod
    def _ref(resource: dict[str, Any], full_url: str | None, origin: str) -> str:
        rid = resource.get("id")
        if rid:
            return f"{resource['resourceType']}/{rid}"
        return full_url or f"{resource['resourceType']} (no id) in {origin}"

    def _subject(self, resource: dict[str, Any], ref: str) -> str | None:
        """Raw subject key: the literal reference, or an identifier token; None (noted) if none."""
        subject = resource.get("subject") or resource.get("patient")
        if isinstance(subject, dict):
            literal = subject.get("reference")
            if isinstance(literal, str) and literal:
                return literal
            ident = subject.get("identifier")
            if isinstance(ident, dict) and ident.get("value"):
                return f"{_IDENTIFIER}{ident.get('system') or ''}|{ident['value']}"
        self.note(ref, "subject", "no patient reference; skipped")
        return None

    def _validate(self, resource: dict[str, Any], ref: str) -> None:
        resource_type = resource["resourceType"]
        model: Any = self._validators.get(resource_type)
        if model is None:
            # Imported here: loading the R4B models takes seconds and only strict mode needs them.
            from fhir.resources.R4B import get_fhir_model_class

            try:
                model = get_fhir_model_class(resource_type)
            except KeyError:
                model = False  # not an R4B type: nothing to validate against
            self._validators[resource_type] = model
        if model is False:
            return
        from fhir_cyclo.r4b import shape_validator

        try:
            # model_validate's verdict and exception, answered from memory for repeated shapes.
            shape_validator().check(resource)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise InputError(f"not valid FHIR (R4B model): {exc}", source=ref) from exc

    def _date(
        self, resource: dict[str, Any], ref: str, fields: tuple[str, ...]
    ) -> tuple[Span, str, str] | None:
        """First present date among dotted `fields`, parsed; None (noted) when absent or bad."""
        for dotted in fields:
            name, _, sub = dotted.partition(".")
            value = resource.get(name)
            if sub:
                value = value.get(sub) if isinstance(value, dict) else None
            if value is None:
                continue
            try:
                return parse_span(value), value, dotted
            except (ValueError, TypeError):
                self.note(ref, dotted, f"not a FHIR date: {value!r}; skipped")
                return None
        self.note(ref, "/".join(fields), "no date; skipped")
        return None

    # --- resource handlers -------------------------------------------------------------------

    def add(self, resource: dict[str, Any], full_url: str | None, origin: str) -> None:
        handler = self._handlers.get(resource.get("resourceType"))  # type: ignore[arg-type]
        if handler is None:
            return
        if self.strict:
            self._validate(resource, self._ref(resource, full_url, origin))
        try:
            handler(resource, full_url, origin)
        except (AttributeError, TypeError, KeyError) as exc:
            # A structurally broken resource (e.g. a string where an object belongs): one
            # resource, not the whole run.
            self.note(self._ref(resource, full_url, origin), "", f"malformed, skipped ({exc})")

    def _patient(self, resource: dict[str, Any], full_url: str | None, origin: str) -> None:
        rid = resource.get("id")
        anchor = f"Patient/{rid}" if rid else full_url or f"Patient (no id) in {origin}"
        self.patients[anchor] = resource
        if full_url:
            self.patient_urls[full_url] = anchor

    def _medication(self, resource: dict[str, Any], full_url: str | None, origin: str) -> None:
        rid = resource.get("id")
        if rid:
            self.medications[f"Medication/{rid}"] = resource
        if full_url:
            self.medications[full_url] = resource

    def _observation(self, resource: dict[str, Any], full_url: str | None, origin: str) -> None:
        analyte = None
        code = resource.get("code")
        if not code:
            # No code at all is malformed (Observation.code is 1..1), unlike a code we do not use.
            self.note(self._ref(resource, full_url, origin), "code", "no code; skipped")
            return
        if code:
            loinc = self._loinc
            for coding in code.get("coding") or ():
                if coding.get("system") == loinc:
                    analyte = self._loinc_analyte.get(coding.get("code"))
                    if analyte is not None:
                        break
        if analyte is None:
            return
        rid = resource.get("id")
        ref = f"Observation/{rid}" if rid else self._ref(resource, full_url, origin)
        status = resource.get("status")
        if status in self._observation_skip:
            self.note(ref, "status", f"status {status}; skipped")
            return
        # The common literal reference inline; everything else (and its notes) in _subject.
        subject = resource.get("subject")
        literal = subject.get("reference") if type(subject) is dict else None
        if type(literal) is str and literal:
            subject = literal
        else:
            subject = self._subject(resource, ref)
            if subject is None:
                return

        quantity: dict[str, Any] = resource.get("valueQuantity") or {}
        raw = quantity.get("value")
        value: float | None = None
        factor = 1.0
        unit: str | None = None
        normal = False
        if raw is None:
            if analyte.name == "hemoglobin" and self._interpretation_normal(resource):
                normal = True  # PRCA only; dropped with a note for other diseases
            else:
                what = "valueQuantity.value" if quantity else "value[x]"
                other = next((k for k in resource if k.startswith("value") and k != what), None)
                absent = resource.get("dataAbsentReason")
                if other:
                    why = f" ({other} is not a quantity)"
                elif absent:
                    why = f" (dataAbsentReason {absent.get('text') or _codes(absent)})"
                else:
                    why = ""
                self.note(ref, what, f"no value{why}; skipped")
                return
        else:
            if isinstance(raw, bool) or not isinstance(raw, _NUMBER):
                self.note(ref, "valueQuantity.value", f"not a number: {raw!r}; skipped")
                return
            comparator = quantity.get("comparator")
            if comparator:
                self.note(
                    ref,
                    "valueQuantity.comparator",
                    f"{comparator}{raw} is a bound, not a measurement; skipped",
                )
                return
            unit_code = quantity.get("code")
            if unit_code and quantity.get("system") == self._ucum:  # _unit's common case, inline
                unit, unit_path = unit_code, "valueQuantity.code"
            else:
                unit, unit_path = self._unit(quantity)
            if not unit:
                self.note(ref, "valueQuantity.unit", f"no unit for {analyte.name}; skipped")
                return
            found = analyte.factor(unit)
            if found is None:
                self.note(ref, unit_path, f"unknown unit {unit!r} for {analyte.name}; skipped")
                return
            factor = found
            value = round(raw * factor, 4)

        text = resource.get("effectiveDateTime")
        if text is not None:  # the common case, kept off the generic path for speed
            span = self._spans.get(text) if type(text) is str else None
            if span is None:
                try:
                    span = parse_span(text)
                except (ValueError, TypeError):
                    self.note(ref, "effectiveDateTime", f"not a FHIR date: {text!r}; skipped")
                    return
                if type(text) is str:
                    self._spans[text] = span
            when: tuple[Span, str, str] | None = (span, text, "effectiveDateTime")
        else:
            when = self._date(resource, ref, _OBSERVATION_DATES)
        if when is None:
            return
        ranges = resource.get("referenceRange")
        low, high = (
            self._reference_range(ranges, analyte, factor, unit, ref) if ranges else (None, None)
        )
        measurement = Measurement(
            ref, analyte.name, value, when[0], when[1], when[2], low, high, normal
        )
        bucket = self.labs.get(subject)
        if bucket is None:
            self.labs[subject] = [measurement]
        else:
            bucket.append(measurement)

    def _unit(self, quantity: dict[str, Any]) -> tuple[str | None, str]:
        # UCUM code when the system says UCUM; else the display unit; a bare code last.
        code = quantity.get("code")
        if code and quantity.get("system") == self.cfg.ucum:
            return code, "valueQuantity.code"
        unit = quantity.get("unit")
        if unit:
            return unit, "valueQuantity.unit"
        return code, "valueQuantity.code"

    def _interpretation_normal(self, resource: dict[str, Any]) -> bool:
        system = self.cfg.interpretation
        for concept in resource.get("interpretation") or ():
            for coding in _coding_list(concept):
                if coding.get("system") == system and coding.get("code") == "N":
                    return True
        return False

    def _reference_range(
        self, ranges: list[Any], analyte: Analyte, factor: float, unit: str | None, ref: str
    ) -> tuple[float | None, float | None]:
        """Normalised (low, high) of the range of normal; bounds in the value's unit reuse its
        factor (the common case, kept cheap because every lab result passes here)."""
        chosen = ranges[0]
        if "type" in chosen:
            # A typed range may be "treatment"/"therapeutic": a target, not the limits of normal.
            chosen = next((c for c in ranges if _is_normal_range(c)), None)
            if chosen is None:
                return None, None
        return (
            self._bound(
                chosen.get("low"), "low", analyte=analyte, factor=factor, value_unit=unit, ref=ref
            ),
            self._bound(
                chosen.get("high"), "high", analyte=analyte, factor=factor, value_unit=unit, ref=ref
            ),
        )

    def _bound(
        self,
        quantity: Any,
        name: str,
        *,
        analyte: Analyte,
        factor: float,
        value_unit: str | None,
        ref: str,
    ) -> float | None:
        if not quantity:
            return None
        value = quantity.get("value")
        if value is None:
            return None
        code = quantity.get("code")
        unit = (
            code if code and quantity.get("system") == self._ucum else quantity.get("unit") or code
        )
        # A bound without a unit is in the value's unit.
        found = factor if unit is None or unit == value_unit else analyte.factor(unit)
        if found is None:
            self.note(ref, f"referenceRange.{name}", f"unknown unit {unit!r}; bound ignored")
            return None
        return round(float(value) * found, 4)

    def _condition(self, resource: dict[str, Any], full_url: str | None, origin: str) -> None:
        cfg = self.cfg
        found: list[str] = []
        for coding in _coding_list(resource.get("code")):
            code = coding.get("code")
            if not isinstance(code, str):
                continue
            system = coding.get("system")
            if system == cfg.snomed:
                disease = cfg.snomed_disease.get(code)
            elif system in cfg.icd10cm:
                disease = cfg.icd_disease.get(icd_key(code))
            else:
                continue
            if disease and disease not in found:
                found.append(disease)
        if not found:
            return
        ref = self._ref(resource, full_url, origin)
        verification = {
            str(c.get("code")) for c in _coding_list(resource.get("verificationStatus"))
        }
        skipped = verification & cfg.skip_verification
        if skipped:
            self.note(ref, "verificationStatus", f"{', '.join(sorted(skipped))}; skipped")
            return
        subject = self._subject(resource, ref)
        if subject is not None:
            self.conditions.setdefault(subject, []).append((tuple(found), ref))

    def _medication_use(self, resource: dict[str, Any], full_url: str | None, origin: str) -> None:
        # Referenced Medications may come later in the input: decide at finish().
        ref = self._ref(resource, full_url, origin)
        if "medicationCodeableConcept" in resource and not self._has_rxnorm(
            resource["medicationCodeableConcept"]
        ):
            return
        subject = self._subject(resource, ref)
        if subject is not None:
            self.med_resources.append((resource, ref, subject))

    def _procedure(self, resource: dict[str, Any], full_url: str | None, origin: str) -> None:
        code = resource.get("code")
        if not isinstance(code, dict):
            return
        texts = [code.get("text")] + [c.get("display") for c in _coding_list(code)]
        matcher = self.cfg.transfusion.matches
        text = next((t for t in texts if isinstance(t, str) and matcher(t)), None)
        if text is None:
            return
        ref = self._ref(resource, full_url, origin)
        status = str(resource.get("status"))
        counted = status in self.cfg.transfusion.count_status
        subject = self._subject(resource, ref)
        if subject is None:
            return
        span = self._performed(resource, ref, counted, status)
        if span is None:
            return
        self.transfusions.setdefault(subject, []).append(
            TransfusionEvent(ref, span, status, counted, text)
        )

    def _performed(
        self, resource: dict[str, Any], ref: str, counted: bool, status: str
    ) -> Span | None:
        when = resource.get("performedDateTime")
        period = resource.get("performedPeriod")
        try:
            if when is not None:
                return parse_span(when)
            if isinstance(period, dict) and (period.get("start") or period.get("end")):
                start = parse_span(period["start"]) if period.get("start") else None
                end = parse_span(period["end"]) if period.get("end") else None
                if end is not None:
                    return (start or end)[0], end[1]
                assert start is not None
                # A period still in progress without an end runs on: treat it as open-ended.
                return start[0], date.max if status == "in-progress" else start[1]
        except (ValueError, TypeError):
            self.note(ref, "performed[x]", "not a FHIR date; skipped")
            return None
        if counted:
            self.note(ref, "performed[x]", "transfusion without a usable date; skipped")
        return None

    # --- medication ---------------------------------------------------------------------

    def _has_rxnorm(self, concept: Any) -> bool:
        system, codes = self.cfg.rxnorm_system, self.cfg.rxnorm
        return any(
            c.get("system") == system and c.get("code") in codes for c in _coding_list(concept)
        )

    def _medication_is_cyclosporine(self, medication: dict[str, Any]) -> bool:
        if self._has_rxnorm(medication.get("code")):
            return True
        return any(
            isinstance(i, dict) and self._has_rxnorm(i.get("itemCodeableConcept"))
            for i in medication.get("ingredient") or ()
        )

    def _is_cyclosporine(self, resource: dict[str, Any], ref: str) -> bool:
        if "medicationCodeableConcept" in resource:
            return True  # already filtered in _medication_use
        target = (resource.get("medicationReference") or {}).get("reference")
        if not isinstance(target, str):
            return False
        if target.startswith("#"):
            medication = next(
                (
                    c
                    for c in resource.get("contained") or ()
                    if isinstance(c, dict)
                    and c.get("resourceType") == "Medication"
                    and c.get("id") == target[1:]
                ),
                None,
            )
        else:
            key = _type_id(target, "Medication")
            medication = self.medications.get(target) or (key and self.medications.get(key)) or None
        if medication is None:
            self.note(ref, "medicationReference", f"{target} not found; cannot tell the drug")
            return False
        return self._medication_is_cyclosporine(medication)

    def _start(self, resource: dict[str, Any], ref: str) -> StartDate | None:
        cfg = self.cfg
        status = resource.get("status")
        if resource["resourceType"] == "MedicationStatement":
            if status in cfg.statement_skip_status or resource.get("taken") == "n":
                self.note(ref, "status", f"status {status or 'taken=n'}; skipped")
                return None
            fields: tuple[str, ...] = ("effectivePeriod.start", "effectiveDateTime")
            when = self._date(resource, ref, fields)
        else:
            if status in cfg.request_skip_status:
                self.note(ref, "status", f"status {status}; skipped")
                return None
            if resource.get("intent") in cfg.request_skip_intent:
                self.note(ref, "intent", f"intent {resource.get('intent')}; skipped")
                return None
            when = self._request_date(resource, ref)
        if when is None:
            return None
        return StartDate(ref, when[0], when[1], when[2])

    def _request_date(self, resource: dict[str, Any], ref: str) -> tuple[Span, str, str] | None:
        candidates: list[tuple[str, str]] = []
        for i, dosage in enumerate(resource.get("dosageInstruction") or ()):
            bounds = (((dosage.get("timing") or {}).get("repeat") or {}).get("boundsPeriod")) or {}
            if bounds.get("start"):
                path = f"dosageInstruction[{i}].timing.repeat.boundsPeriod.start"
                candidates.append((bounds["start"], path))
        validity = (resource.get("dispenseRequest") or {}).get("validityPeriod") or {}
        if not candidates and validity.get("start"):
            candidates.append((validity["start"], "dispenseRequest.validityPeriod.start"))
        if not candidates and resource.get("authoredOn"):
            candidates.append((resource["authoredOn"], "authoredOn"))
        best: tuple[Span, str, str] | None = None
        for text, path in candidates:
            try:
                span = parse_span(text)
            except (ValueError, TypeError):
                self.note(ref, path, f"not a FHIR date: {text!r}; skipped")
                continue
            if best is None or span[0] < best[0][0]:
                best = (span, text, path)
        if best is None and not candidates:
            self.note(ref, "dosageInstruction/dispenseRequest/authoredOn", "no date; skipped")
        return best

    # --- linking ---------------------------------------------------------------------------

    def _anchor(self, raw: str) -> str | None:
        """Patient anchor for a raw subject key (reference, fullUrl or identifier token)."""
        found = self.patient_urls.get(raw)
        if found is not None:
            return found
        if raw.startswith(_IDENTIFIER):
            return self._by_identifier.get(raw[len(_IDENTIFIER) :])
        return _type_id(raw, "Patient")

    def finish(self) -> ScoringInputs:
        cfg = self.cfg
        for owner, patient in self.patients.items():
            for ident in patient.get("identifier") or ():
                if isinstance(ident, dict) and ident.get("value"):
                    token = f"{ident.get('system') or ''}|{ident['value']}"
                    self._by_identifier.setdefault(token, owner)

        resolved: dict[str, str | None] = {}

        def anchor_of(raw: str, ref: str) -> str | None:
            if raw not in resolved:
                resolved[raw] = self._anchor(raw)
            anchor = resolved[raw]
            if anchor is None:
                self.note(ref, "subject", f"{raw!r} is not a known Patient reference; skipped")
            return anchor

        # Several anchors (e.g. the same person from two exports) can share a key: merge them.
        by_key: dict[str, PatientInputs] = {}
        key_of: dict[str, str] = {}

        def inputs_for(anchor: str) -> PatientInputs:
            key = key_of.get(anchor)
            if key is None:
                patient = self.patients.get(anchor) or {}
                identifier = _first_identifier(patient)
                if identifier is not None:
                    key = f"{identifier[0]}|{identifier[1]}" if identifier[0] else identifier[1]
                else:
                    key = anchor
                key_of[anchor] = key
                if key not in by_key:
                    gender = patient.get("gender")
                    by_key[key] = PatientInputs(
                        key=key,
                        reference=anchor if anchor.startswith("Patient/") else None,
                        identifier=identifier,
                        gender=gender if isinstance(gender, str) else None,
                    )
                elif by_key[key].reference is None and anchor.startswith("Patient/"):
                    by_key[key].reference = anchor
            return by_key[key]

        for patient_anchor in self.patients:
            inputs_for(patient_anchor)

        for raw, measurements in self.labs.items():
            anchor = anchor_of(raw, measurements[0].ref)
            if anchor is None:
                continue
            labs = inputs_for(anchor).labs
            for m in measurements:
                labs.setdefault(m.analyte, []).append(m)

        found_diseases: dict[str, set[str]] = {}
        for raw, conditions in self.conditions.items():
            anchor = anchor_of(raw, conditions[0][1])
            if anchor is None:
                continue
            inputs = inputs_for(anchor)
            for diseases, ref in conditions:
                for disease in diseases:
                    found_diseases.setdefault(inputs.key, set()).add(disease)
                    inputs.condition_refs.setdefault(disease, ref)
        for key, coded in found_diseases.items():
            by_key[key].diseases = tuple(d for d in cfg.precedence if d in coded)

        statements: dict[str, list[StartDate]] = {}
        requests: dict[str, list[StartDate]] = {}
        for resource, ref, raw in self.med_resources:
            if not self._is_cyclosporine(resource, ref):
                continue
            anchor = anchor_of(raw, ref)
            if anchor is None:
                continue
            start = self._start(resource, ref)
            if start is None:
                continue
            target = statements if resource["resourceType"] == "MedicationStatement" else requests
            target.setdefault(inputs_for(anchor).key, []).append(start)
        for key in set(statements) | set(requests):
            inputs = by_key[key]
            # MedicationStatement says the drug was taken; a request only that it was ordered.
            found = statements.get(key)
            if not found:
                found = requests[key]
                self.note(
                    key, "cyclosporine start", "no MedicationStatement; MedicationRequest used"
                )
            inputs.start = min(found, key=lambda s: (s.span[0], s.ref))

        for raw, events in self.transfusions.items():
            anchor = anchor_of(raw, events[0].ref)
            if anchor is not None:
                inputs_for(anchor).transfusions.extend(events)

        for inputs in by_key.values():
            hemoglobin = inputs.labs.get("hemoglobin")
            if hemoglobin and inputs.disease != "PRCA":
                kept = []
                for m in hemoglobin:
                    if m.value is None:
                        self.note(
                            m.ref,
                            "valueQuantity.value",
                            "no value (interpretation N counts only for PRCA); skipped",
                        )
                    else:
                        kept.append(m)
                inputs.labs["hemoglobin"] = kept
        patients = sorted(by_key.values(), key=lambda p: p.key)
        return ScoringInputs(patients=patients, notes=self.notes)


def _is_normal_range(candidate: Any) -> bool:
    codes = {c.get("code") for c in _coding_list(candidate.get("type"))}
    return not codes or "normal" in codes


def _codes(concept: Any) -> str:
    return ",".join(str(c.get("code")) for c in _coding_list(concept)) or "?"


def _first_identifier(patient: dict[str, Any]) -> tuple[str, str] | None:
    for ident in patient.get("identifier") or ():
        if isinstance(ident, dict) and ident.get("value"):
            return str(ident.get("system") or ""), str(ident["value"])
    return None


def extract(
    items: Iterable[SourceItem | dict[str, Any]],
    *,
    config: ScoringConfig | None = None,
    strict: bool = False,
) -> ScoringInputs:
    """Per-patient scoring inputs from resources (SourceItems from `sources`, or plain dicts).

    Resources are linked to patients by subject/patient reference ("Patient/id", absolute URLs
    ending in Patient/id, urn:uuid fullUrls of Patient entries, or a logical identifier
    reference). With `strict`, every resource used is validated against the fhir.resources R4B
    model first (InputError when invalid); off by default because it is slow.
    """
    extractor = _Extractor(config or load_config(), strict)
    add = extractor.add
    with _gc_paused():
        for item in items:
            if isinstance(item, SourceItem):
                resource, full_url, origin = item  # unpacking beats three attribute reads
                add(resource, full_url, origin)
            else:
                add(item, None, "input")
    return extractor.finish()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while pages are parsed and read (the sources parse lazily, inside the loop).

    Parsed JSON trees hold no reference cycles, so reference counting frees every page; the
    collector would only walk the ever-larger heap of young dicts again and again (a third of
    the import time on 20,000 Observations). The previous state comes back afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
