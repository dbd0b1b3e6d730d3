"""The response rules: baseline, timepoint windows, closest measurement, per-disease criteria."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from fhir_cyclo.scoring.config import Criteria, Derived, ScoringConfig, Test, load_config
from fhir_cyclo.scoring.dates import Span, add_months, clamp
from fhir_cyclo.scoring.model import (
    Measurement,
    Note,
    PatientInputs,
    ScoringInputs,
    TransfusionEvent,
    log_name,
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
    # Markers a better response needed that had no measurement in the window (AIHA CR).
    missing_markers: tuple[str, ...] = ()

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


# Why a patient read from the input was not scored (keys of Accounting.not_scored).
NO_START = "no cyclosporine start"
NO_CONDITION = "no ITP/AIHA/PRCA condition"
NO_BOTH = "no ITP/AIHA/PRCA condition and no cyclosporine start"


@dataclass
class Accounting:
    """Patients read, scored, and not scored grouped by reason (summary line and JSON)."""

    read: int = 0
    scored: int = 0
    not_scored: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """`read N patient(s): scored N, not scored N (reason: n; ...)`."""
        skipped = sum(self.not_scored.values())
        text = f"read {self.read} patient(s): scored {self.scored}, not scored {skipped}"
        if skipped:
            reasons = "; ".join(f"{r}: {n}" for r, n in sorted(self.not_scored.items()))
            text += f" ({reasons})"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "patients_read": self.read,
            "scored": self.scored,
            "not_scored": dict(sorted(self.not_scored.items())),
        }


@dataclass
class CohortScore:
    """Scored patients (sorted by key), every warning, and the configuration used."""

    patients: list[PatientScore]
    notes: list[Note]
    config: ScoringConfig
    accounting: Accounting = field(default_factory=Accounting)


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


def derive(
    rule: Derived, labs: dict[str, list[Measurement]], target: date, days: int
) -> Pick | None:
    """A derived marker (indirect = total - direct bilirubin) from the minuend and subtrahend
    each closest to the target in the same window; None unless both are there."""
    first = pick_closest(labs.get(rule.minuend, ()), target, days)
    second = pick_closest(labs.get(rule.subtrahend, ()), target, days)
    if first is None or second is None or first.value is None or second.value is None:
        return None
    day = max(first.date, second.date)
    a, b = first.measurement, second.measurement
    measurement = Measurement(
        ref=f"{rule.analyte} derived from {a.ref} - {b.ref}",
        analyte=rule.analyte,
        # A direct result above the total (rounding, different runs) is not a negative amount.
        value=max(0.0, round(first.value - second.value, 4)),
        span=(day, day),
        date_text=f"{a.date_text} - {b.date_text}",
        date_field="derived",
        derived_from=(a.ref, b.ref),
    )
    return Pick(measurement, day)


def marker_pick(
    cfg: ScoringConfig, inputs: PatientInputs, analyte: str, target: date
) -> Pick | None:
    """The marker closest to the target in its window, else its derived value, else None."""
    found = pick_closest(inputs.labs.get(analyte, ()), target, cfg.window_days)
    if found is None and analyte in cfg.derived:
        found = derive(cfg.derived[analyte], inputs.labs, target, cfg.window_days)
    return found


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
            marker = marker_pick(self.cfg, self.inputs, test.analyte, a.target)
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
    """Response for an assessment with a pick: the first rule whose tests hold, else NR.

    When a rule fails with a marker test whose marker has no measurement in the window, every
    marker of that rule without one is listed in `a.missing_markers` (the better response was
    out of reach for want of data, not ruled out by it).
    """
    context = _Context(cfg, inputs, baseline, a)
    missing: list[str] = []
    for rule in criteria.rules:
        # Lazy and in order, like the rule reads: markers are only looked up (and reported as
        # evidence) once the hemoglobin threshold before them holds.
        results = (context.holds(t) for t in rule.tests)
        if all(results) if rule.mode == "all" else any(results):
            a.missing_markers = tuple(missing)
            return rule.response
        markers = [t.analyte for t in rule.tests if t.kind == "marker_within_upper_limit"]
        if any(m in a.markers and a.markers[m] is None for m in markers):
            missing += [
                m
                for m in markers
                if m not in missing and marker_pick(cfg, inputs, m, a.target) is None
            ]
    a.missing_markers = tuple(missing)
    return "NR"


def _imputed_note(pick: Pick, role: str) -> Note:
    m = pick.measurement
    return Note(
        m.ref,
        m.date_field,
        f"partial date {m.date_text!r} imputed as {pick.date.isoformat()} ({role})",
    )


def _missing_note(inputs: PatientInputs, a: Assessment, cfg: ScoringConfig) -> Note:
    better = "CR" if a.response != "CR" else "?"
    names = []
    for name in a.missing_markers:
        rule = cfg.derived.get(name)
        extra = f" (nor {rule.minuend} with {rule.subtrahend} to derive it)" if rule else ""
        names.append(name + extra)
    return Note(
        log_name(inputs),
        f"month {a.month}",
        f"{a.response}: {better} not reachable, no {' and no '.join(names)} in the window "
        f"{a.window[0].isoformat()}..{a.window[1].isoformat()}",
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
                if a.missing_markers:
                    notes.append(_missing_note(inputs, a, cfg))
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
    accounting = Accounting(read=len(inputs.patients))
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
            reason = (
                NO_BOTH
                if p.disease is None and p.start is None
                else (NO_START if p.disease is not None else NO_CONDITION)
            )
            accounting.not_scored[reason] = accounting.not_scored.get(reason, 0) + 1
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
    accounting.scored = len(patients)
    return CohortScore(patients=patients, notes=notes, config=cfg, accounting=accounting)
