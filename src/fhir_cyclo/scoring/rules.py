"""The response rules: baseline, timepoint windows, closest measurement, per-disease criteria."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from fhir_cyclo.scoring.config import Criteria, ScoringConfig, Test, load_config
from fhir_cyclo.scoring.dates import Span, add_months, clamp
from fhir_cyclo.scoring.extract import (
    Measurement,
    Note,
    PatientInputs,
    ScoringInputs,
    TransfusionEvent,
)

# All rules are pure functions of their arguments. Dates are day intervals (see dates.py): a
# measurement takes part when its interval overlaps the window, at its representative date, the
# point of the interval closest to the reference point. For full dates both are the date itself.


@dataclass(frozen=True, slots=True)
class Pick:
    """A measurement chosen for a role, at its representative date."""

    measurement: Measurement
    date: date

    @property
    def value(self) -> float | None:
        return self.measurement.value

    @property
    def imputed(self) -> bool:
        """True when the date was chosen inside a partial (year/month) date."""
        return self.measurement.partial


@dataclass
class Assessment:
    """The response at one timepoint and the evidence behind it."""

    month: int
    target: date
    window: Span
    response: str  # CR / PR / NR / NE
    pick: Pick | None = None
    markers: dict[str, Pick | None] = field(default_factory=dict)  # AIHA: analyte -> pick
    transfusions: tuple[TransfusionEvent, ...] = ()  # PRCA: counted ones in the free window
    normal_low: float | None = None  # PRCA: the lower limit of normal applied

    @property
    def date(self) -> date | None:
        return self.pick.date if self.pick else None


@dataclass
class PatientScore:
    """One scored patient."""

    inputs: PatientInputs
    disease: str
    start: date
    baseline: Pick | None
    assessments: list[Assessment]

    unit: str  # unit of the scored analyte

    @property
    def key(self) -> str:
        return self.inputs.key


@dataclass
class CohortScore:
    """Scored patients (sorted by key), every warning, and the configuration used."""

    patients: list[PatientScore]
    notes: list[Note]
    config: ScoringConfig


def log_name(inputs: Any) -> str:
    """How warnings name a patient: Patient/id, else a hash; identifier values are PHI."""
    reference = getattr(inputs, "reference", None)
    if reference:
        return str(reference)
    digest = hashlib.sha256(str(getattr(inputs, "key", "")).encode()).hexdigest()[:10]
    return f"patient#{digest}"


def _later_key(pick: Pick) -> tuple[date, bool, str, str]:
    # Ties on the date: an exact date beats an imputed one, then the later written time, then
    # the reference, so the choice never depends on input order.
    m = pick.measurement
    return pick.date, not m.partial, m.date_text, m.ref


def pick_baseline(measurements: Iterable[Measurement], start: date, days: int) -> Pick | None:
    """Latest measurement with a value in [start - days, start] (inclusive), or None."""
    low = start - timedelta(days=days)
    best: Pick | None = None
    for m in measurements:
        first, last = m.span
        if m.value is None or first > start or last < low:
            continue
        pick = Pick(m, min(last, start))
        if best is None or _later_key(pick) > _later_key(best):
            best = pick
    return best


def pick_closest(measurements: Iterable[Measurement], target: date, days: int) -> Pick | None:
    """Measurement closest to `target` within target +/- days (inclusive), later one on a tie."""
    low, high = target - timedelta(days=days), target + timedelta(days=days)
    best: Pick | None = None
    best_key: tuple[int, date, bool, str, str] | None = None
    for m in measurements:
        first, last = m.span
        if first > high or last < low:
            continue
        pick = Pick(m, clamp(target, m.span))
        key = (-abs((pick.date - target).days), *_later_key(pick))
        if best_key is None or key > best_key:
            best, best_key = pick, key
    return best


def counted_transfusions(
    events: Iterable[TransfusionEvent], first: date, last: date
) -> tuple[TransfusionEvent, ...]:
    """Counted (completed/in-progress) transfusions whose interval overlaps [first, last]."""
    return tuple(e for e in events if e.counted and e.span[0] <= last and e.span[1] >= first)


def _compare(op: str, left: float, right: float) -> bool:
    if op == ">":
        return left > right
    if op == ">=":
        return left >= right
    if op == "<":
        return left < right
    return left <= right


class _Context:
    """What the tests of one timepoint look at."""

    def __init__(
        self,
        cfg: ScoringConfig,
        inputs: PatientInputs,
        baseline: Pick,
        assessment: Assessment,
    ) -> None:
        self.cfg = cfg
        self.inputs = inputs
        self.baseline = baseline
        self.assessment = assessment

    def holds(self, test: Test) -> bool:
        a = self.assessment
        assert a.pick is not None
        value = a.pick.value
        base = self.baseline.value
        assert base is not None
        if test.kind == "value":
            return value is not None and _compare(test.op, value, test.threshold)
        if test.kind == "ratio_to_baseline":
            # Multiply instead of dividing: a baseline of 0 is a valid platelet count.
            return value is not None and _compare(test.op, value, round(test.threshold * base, 4))
        if test.kind == "rise_from_baseline":
            # Rounded so that 9.1 - 7.1 counts as the 2.0 it is, not 1.9999999999999991.
            return value is not None and _compare(test.op, round(value - base, 4), test.threshold)
        if test.kind == "marker_within_upper_limit":
            marker = pick_closest(
                self.inputs.labs.get(test.analyte, ()), a.target, self.cfg.window_days
            )
            a.markers[test.analyte] = marker
            if marker is None or marker.value is None:
                return False
            limit = marker.measurement.high
            if limit is None:
                limit = self.cfg.analytes[test.analyte].default_upper_limit
            return limit is not None and marker.value <= limit
        if test.kind == "within_normal_range":
            if value is None:
                return a.pick.measurement.normal
            low = a.pick.measurement.low
            if low is None:
                gender = self.inputs.gender if self.inputs.gender in ("female", "male") else "other"
                low = self.cfg.normal_low[gender]
            a.normal_low = low
            return value >= low
        if test.kind == "transfusion_free":
            end = a.pick.date
            start = end - timedelta(days=self.cfg.transfusion.free_days)
            a.transfusions = counted_transfusions(self.inputs.transfusions, start, end)
            return not a.transfusions
        raise AssertionError(test.kind)  # config.py only lets known tests through


def classify(
    criteria: Criteria, cfg: ScoringConfig, inputs: PatientInputs, baseline: Pick, a: Assessment
) -> str:
    """Response for an assessment with a pick: the first rule whose tests hold, else NR."""
    context = _Context(cfg, inputs, baseline, a)
    for rule in criteria.rules:
        # Lazy and in order, like the rule reads: markers are only looked up (and reported as
        # evidence) once the hemoglobin threshold before them holds.
        results = (context.holds(t) for t in rule.tests)
        if all(results) if rule.mode == "all" else any(results):
            return rule.response
    return "NR"


def _imputed_note(pick: Pick, role: str) -> Note:
    m = pick.measurement
    return Note(
        m.ref,
        m.date_field,
        f"partial date {m.date_text!r} imputed as {pick.date.isoformat()} ({role})",
    )


def score_patient(
    inputs: PatientInputs, cfg: ScoringConfig | None = None
) -> tuple[PatientScore, list[Note]]:
    """Score one patient who has a disease and a cyclosporine start; returns notes too."""
    cfg = cfg or load_config()
    disease = inputs.disease
    assert disease is not None, "caller checks scorability"
    assert inputs.start is not None, "caller checks scorability"
    notes: list[Note] = []
    criteria = cfg.criteria[disease]
    series = inputs.labs.get(criteria.analyte, [])
    start = inputs.start.day
    if inputs.start.span[0] != inputs.start.span[1]:
        notes.append(
            Note(
                inputs.start.ref,
                inputs.start.date_field,
                f"partial date {inputs.start.date_text!r}: cyclosporine start taken as "
                f"{start.isoformat()} (first day)",
            )
        )
    baseline = pick_baseline(series, start, cfg.baseline_days)
    if baseline is None:
        notes.append(
            Note(
                log_name(inputs),
                criteria.analyte,
                f"no baseline within {cfg.baseline_days} days before {start.isoformat()}: "
                "every timepoint NE",
            )
        )
    elif baseline.imputed:
        notes.append(_imputed_note(baseline, "baseline"))
    assessments = []
    defaulted: list[int] = []  # months that used the sex-less lower limit of normal
    for month in cfg.months:
        target = add_months(start, month)
        window = (
            target - timedelta(days=cfg.window_days),
            target + timedelta(days=cfg.window_days),
        )
        a = Assessment(month=month, target=target, window=window, response="NE")
        if baseline is not None:
            a.pick = pick_closest(series, target, cfg.window_days)
            if a.pick is not None:
                a.response = classify(criteria, cfg, inputs, baseline, a)
                if a.pick.imputed:
                    notes.append(_imputed_note(a.pick, f"month {month}"))
                notes.extend(
                    _imputed_note(p, f"month {month} {name}")
                    for name, p in a.markers.items()
                    if p is not None and p.imputed
                )
                if (
                    a.normal_low is not None
                    and a.pick.measurement.low is None
                    and inputs.gender not in ("female", "male")
                ):
                    defaulted.append(month)
        assessments.append(a)
    if defaulted:
        notes.append(
            Note(
                log_name(inputs),
                "Patient.gender",
                f"{inputs.gender or 'missing'}: lower limit of normal Hb "
                f"{cfg.normal_low['other']} g/dL used (months {', '.join(map(str, defaulted))})",
            )
        )
    score = PatientScore(
        inputs=inputs,
        disease=disease,
        start=start,
        baseline=baseline,
        assessments=assessments,
        unit=cfg.analytes[criteria.analyte].unit,
    )
    return score, notes


def score(inputs: ScoringInputs, config: ScoringConfig | None = None) -> CohortScore:
    """Score every patient that has both a scored disease and a cyclosporine start."""
    cfg = config or load_config()
    notes = list(inputs.notes)
    patients = []
    for p in inputs.patients:
        if len(p.diseases) > 1:
            notes.append(
                Note(
                    log_name(p),
                    "Condition",
                    f"codes for {', '.join(p.diseases)}; scored as {p.diseases[0]} "
                    f"(precedence {' > '.join(cfg.precedence)})",
                )
            )
        if p.disease is None or p.start is None:
            # Patients with neither are simply outside the cohort; half-documented ones are news.
            if p.disease is not None:
                notes.append(
                    Note(log_name(p), "MedicationStatement", "no cyclosporine start; not scored")
                )
            elif p.start is not None:
                notes.append(
                    Note(log_name(p), "Condition", "no ITP/AIHA/PRCA Condition; not scored")
                )
            continue
        scored, more = score_patient(p, cfg)
        patients.append(scored)
        notes.extend(more)
    return CohortScore(patients=patients, notes=notes, config=cfg)
