"""Lab results for scoring: Observation values, components, DiagnosticReport panels, units."""

from __future__ import annotations

from typing import Any

from fhir_cyclo.core.scoring_config import Analyte, ScoringConfig
from fhir_cyclo.scoring.dates import Span, parse_span
from fhir_cyclo.scoring.model import Measurement, Skipped, codes_text, coding_list
from fhir_cyclo.scoring.reader import ReaderBase, raw_subject

# This path runs over every lab result of a cohort, so it works on the parsed dicts as they are
# (no model validation unless strict=True, no copies) and keeps the common shapes inline.

# Observation date fallbacks after effectiveDateTime (effective[x] is a choice, then issued).
_OBSERVATION_DATES = ("effectivePeriod.start", "effectivePeriod.end", "effectiveInstant", "issued")
_NUMBER = (int, float)
# Observation.status (FHIR R4, required binding). Anything else (e.g. Oracle Health's published
# "entered-in-error " with a trailing space) is invalid input: named and skipped, never guessed.
_STATUSES = frozenset(
    [
        "registered",
        "preliminary",
        "final",
        "amended",
        "corrected",
        "cancelled",
        "entered-in-error",
        "unknown",
    ]
)
# What a DiagnosticReport lends to the Observations it contains when they lack their own.
# Prefixes: "effective" covers the whole effective[x] choice.
_REPORT_INHERITS = ("subject", "effective", "issued")


def _is_normal_range(candidate: Any) -> bool:
    codes = {c.get("code") for c in coding_list(candidate.get("type"))}
    return not codes or "normal" in codes


class LabReader(ReaderBase):
    """Reads Observations (and the components and report panels EHRs wrap them in)."""

    def __init__(self, cfg: ScoringConfig, strict: bool) -> None:
        super().__init__(cfg, strict)
        analytes = cfg.analytes
        self._loinc_analyte = {code: analytes[name] for code, name in cfg.loinc_analyte.items()}
        # Looked up once per lab result: kept as attributes, not re-read through cfg.
        self._loinc = cfg.loinc
        self._ucum = cfg.ucum
        self._observation_skip = cfg.observation_skip_status
        # Date text -> span: a cohort's results share few distinct dates.
        self._spans: dict[str, Span] = {}

    def _analyte_of(self, code: Any) -> Analyte | None:
        if not isinstance(code, dict):
            return None
        loinc = self._loinc
        for coding in code.get("coding") or ():
            if coding.get("system") == loinc:
                analyte = self._loinc_analyte.get(coding.get("code"))
                if analyte is not None:
                    return analyte
        return None

    def _observation(self, resource: dict[str, Any], full_url: str | None, origin: str) -> None:
        code = resource.get("code")
        if not code:
            # No code at all is malformed (Observation.code is 1..1), unlike a code we do not use.
            self.note(self._ref(resource, full_url, origin), "code", "no code; skipped")
            return
        analyte = self._analyte_of(code)
        components = resource.get("component")
        # Which components hold a scored analyte (a blood-count or bilirubin panel sent as one
        # Observation with components instead of one Observation per result).
        parts: list[tuple[int, dict[str, Any], Analyte]] = []
        if components:
            for i, component in enumerate(components):
                found = self._analyte_of(component.get("code"))
                if found is not None:
                    parts.append((i, component, found))
            if analyte is None and not parts:
                return
        elif analyte is None:
            return
        rid = resource.get("id")
        ref = f"Observation/{rid}" if rid else self._ref(resource, full_url, origin)
        status = resource.get("status")
        if status in self._observation_skip or (status is not None and status not in _STATUSES):
            if status in self._observation_skip:
                why = f"status {status}"
                self.note(ref, "status", f"{why}; skipped")
            else:
                near = " (trailing/leading space)" if str(status).strip() in _STATUSES else ""
                why = f"status {status!r} is not an Observation.status code{near}"
                self.note(ref, "status", f"{why[7:]}; skipped (invalid input)")
            first = analyte or parts[0][2]
            self._remember_skip(resource, ref, raw_subject(resource), first, why, "status")
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
        if analyte is not None:
            self._measure(resource, resource, analyte, ref, subject)
        if components:
            for i, component, part in parts:
                self._measure(component, resource, part, ref, subject, prefix=f"component[{i}].")

    def _measure(
        self,
        holder: dict[str, Any],
        resource: dict[str, Any],
        analyte: Analyte,
        ref: str,
        subject: str,
        *,
        prefix: str = "",
    ) -> None:
        """One measurement from `holder` (the Observation or one of its components), dated by
        the Observation; warnings name the element path (prefixed for components)."""
        quantity: dict[str, Any] = holder.get("valueQuantity") or {}
        raw = quantity.get("value")
        value: float | None = None
        factor = 1.0
        unit: str | None = None
        normal = False
        if raw is None:
            if analyte.name == "hemoglobin" and self._interpretation_normal(holder):
                normal = True  # PRCA only; dropped with a note for other diseases
            else:
                what = "valueQuantity.value" if quantity else "value[x]"
                other = next((k for k in holder if k.startswith("value") and k != what), None)
                absent = holder.get("dataAbsentReason")
                if other:
                    why = f" ({other} is not a quantity)"
                elif absent:
                    why = f" (dataAbsentReason {absent.get('text') or codes_text(absent)})"
                else:
                    why = ""
                self.note(ref, prefix + what, f"no value{why}; skipped")
                self._remember_skip(resource, ref, subject, analyte, f"no value{why}", "value")
                return
        else:
            if isinstance(raw, bool) or not isinstance(raw, _NUMBER):
                self.note(ref, prefix + "valueQuantity.value", f"not a number: {raw!r}; skipped")
                self._remember_skip(resource, ref, subject, analyte, "not a number", "value")
                return
            comparator = quantity.get("comparator")
            if comparator:
                self.note(
                    ref,
                    prefix + "valueQuantity.comparator",
                    f"{comparator}{raw} is a bound, not a measurement; skipped",
                )
                why = f"{comparator}{raw} is a bound"
                self._remember_skip(resource, ref, subject, analyte, why, "value")
                return
            unit_code = quantity.get("code")
            if unit_code and quantity.get("system") == self._ucum:  # _unit's common case, inline
                unit, unit_path = unit_code, "valueQuantity.code"
            else:
                unit, unit_path = self._unit(quantity)
            if not unit:
                path = prefix + "valueQuantity.unit"
                self.note(ref, path, f"no unit for {analyte.name}; skipped")
                self._remember_skip(resource, ref, subject, analyte, "no unit", "unit")
                return
            found = analyte.factor(unit)
            if found is None:
                self.note(
                    ref, prefix + unit_path, f"unknown unit {unit!r} for {analyte.name}; skipped"
                )
                why = f"unit {unit!r} not understood"
                self._remember_skip(resource, ref, subject, analyte, why, "unit")
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
        low = high = None
        ranges = holder.get("referenceRange")
        if ranges:
            chosen = ranges[0]
            if "type" in chosen:
                # A typed range may be "treatment"/"therapeutic": a target, not the limits of
                # normal.
                chosen = next((c for c in ranges if _is_normal_range(c)), None)
            if chosen is not None:
                # Positional calls: this runs twice for nearly every lab result of a cohort.
                low = self._bound(chosen.get("low"), "low", analyte, factor, unit, ref)
                high = self._bound(chosen.get("high"), "high", analyte, factor, unit, ref)
        span = when[0]
        measurement = Measurement(
            ref, analyte.name, value, span, when[1], when[2], low, high, normal
        )
        if span[0] != span[1]:  # dates.is_partial, inline
            measurement.context = self.context()
        bucket = self.labs.get(subject)
        if bucket is None:
            self.labs[subject] = [measurement]
        else:
            bucket.append(measurement)

    def _remember_skip(  # noqa: PLR0917 - one call per skip path above
        self,
        resource: dict[str, Any],
        ref: str,
        subject: str,
        analyte: Analyte,
        why: str,
        kind: str,
    ) -> None:
        """Keep a skipped result of a scored analyte, dated when it can be, for the reasons
        ("a PLT in the window was skipped because ...") and --explain. Only skips: rare."""
        if not subject:
            return
        span = None
        for path in ("effectiveDateTime", *_OBSERVATION_DATES):
            head, _, tail = path.partition(".")
            value = resource.get(head)
            value = value.get(tail) if tail and isinstance(value, dict) else value
            if isinstance(value, str):
                try:
                    span = parse_span(value)
                    break
                except (ValueError, TypeError):
                    continue
        self.skipped.setdefault(subject, []).append(Skipped(ref, analyte.name, span, why, kind))

    def _diagnostic_report(
        self, resource: dict[str, Any], full_url: str | None, origin: str
    ) -> None:
        """Observations contained in a report panel; they inherit its subject and date.

        Results that are separate resources (`result` references to Observation/<id>) are read
        where they stand, like any Observation, so they are not counted twice.
        """
        contained = resource.get("contained")
        if not contained:
            return
        report_ref = self._ref(resource, full_url, origin)
        for item in contained:
            if not isinstance(item, dict) or item.get("resourceType") != "Observation":
                continue
            observation = dict(item)
            local_id = observation.pop("id", None)
            for prefix in _REPORT_INHERITS:
                if not any(k.startswith(prefix) for k in observation):
                    observation.update((k, v) for k, v in resource.items() if k.startswith(prefix))
            # "DiagnosticReport/r1#o1": a contained id means nothing outside its container.
            self._observation(observation, f"{report_ref}#{local_id or '?'}", origin)

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
            for coding in coding_list(concept):
                if coding.get("system") == system and coding.get("code") == "N":
                    return True
        return False

    def _bound(  # noqa: PLR0917 - positional on purpose: called twice per lab result
        self,
        quantity: Any,
        name: str,
        analyte: Analyte,
        factor: float,
        value_unit: str | None,
        ref: str,
    ) -> float | None:
        """A reference-range bound normalised to the analyte's unit; one in the value's unit
        reuses its factor (the common case)."""
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
