"""The response rules: baseline, timepoint windows, closest measurement, per-disease criteria."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from fhir_cyclo.core.scoring_config import Criteria, Derived, ScoringConfig, Test, load_config
from fhir_cyclo.scoring.dates import Span, add_months, clamp
from fhir_cyclo.scoring.model import (
    Measurement,
    Note,
    PatientInputs,
    ScoringInputs,
    TransfusionEvent,
    log_name,
)

# The kinds of reason an assessment can carry (the JSON "reasons[].kind"; see score.schema.json).
REASON_KINDS = (
    "threshold_met",  # a test of a rule held (the value, the operator and the threshold)
    "threshold_missed",  # a test failed on a measured value
    "marker_missing",  # a test needed a value (LDH, indirect bilirubin) that the window lacks
    "normal_without_value",  # a value-less Hb with interpretation N counted as normal (PRCA)
    "transfusion_in_window",  # a counted red-cell transfusion inside the transfusion-free window
    "no_value_in_window",  # NE: no measurement of the scored analyte in the timepoint window
    "no_baseline",  # NE: no baseline in [start - days, start]
    "date_imputed",  # a partial date was placed at a day of its interval
)

_LABEL = {
    "platelets": "PLT",
    "hemoglobin": "Hb",
    "ldh": "LDH",
    "indirect_bilirubin": "ind. bili",
    "total_bilirubin": "total bili",
    "direct_bilirubin": "direct bili",
}

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


@dataclass(frozen=True, slots=True)
class Check:
    """One test of a rule as evaluated: the values compared, the threshold, and the outcome."""

    rule: str  # the response the rule gives (CR / PR)
    test: str  # the test kind (config.TESTS)
    held: bool
    kind: str  # the reason kind it makes (REASON_KINDS)
    text: str  # e.g. "Hb 12.4 g/dL > 12", "no LDH in window 2011-03-10..2011-05-11"
    value: float | None = None  # the left side compared (after rounding, as compared)
    op: str | None = None
    threshold: float | None = None  # the right side compared (e.g. 2 x baseline, the limit)
    unit: str | None = None
    threshold_source: str | None = None  # where a limit came from (referenceRange, default)
    refs: tuple[str, ...] = ()  # the resources whose values were compared


@dataclass(frozen=True, slots=True)
class Reason:
    """A sentence saying what decided (or blocked) a result, with its kind and resources."""

    kind: str  # one of REASON_KINDS
    text: str
    refs: tuple[str, ...] = ()


def label(analyte: str) -> str:
    """Short display name of an analyte (PLT, Hb, LDH, ind. bili)."""
    return _LABEL.get(analyte, analyte)


_UNIT_DISPLAY = {"10*9/L": "\u00d710\u2079/L", "10*3/uL": "\u00d710\u00b3/\u00b5L"}


def display_unit(ucum: str) -> str:
    """A UCUM unit as people write it ("10*9/L" -> "x10^9/L" with a real times sign)."""
    return _UNIT_DISPLAY.get(ucum, ucum)


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
    checks: list[Check] = field(default_factory=list)  # every test evaluated, in rule order
    reasons: list[Reason] = field(default_factory=list)  # what decided the response

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
    reasons: list[Reason] = field(default_factory=list)  # patient-level: start, baseline

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


def _span_text(span: Span) -> str:
    return f"{span[0].isoformat()}..{span[1].isoformat()}"


def _when(span: Span) -> str:
    return span[0].isoformat() if span[0] == span[1] else _span_text(span)


def _num(value: float) -> str:
    return f"{value:g}"


class _Context:
    """What the tests of one timepoint look at."""

    def __init__(
        self,
        cfg: ScoringConfig,
        criteria: Criteria,
        inputs: PatientInputs,
        baseline: Pick,
        assessment: Assessment,
    ) -> None:
        self.cfg = cfg
        self.inputs = inputs
        self.baseline = baseline
        self.assessment = assessment
        self.analyte = criteria.analyte
        self.label = label(criteria.analyte)
        self.unit = cfg.analytes[criteria.analyte].unit
        self.shown_unit = display_unit(self.unit)  # in sentences; the JSON fields keep UCUM

    def check(self, rule: str, test: Test, register: bool) -> Check:
        """Evaluate one test; with `register`, keep what it looked up as evidence."""
        a = self.assessment
        assert a.pick is not None
        value = a.pick.value
        ref = a.pick.measurement.ref
        base = self.baseline.value
        assert base is not None
        name, unit, shown = self.label, self.unit, self.shown_unit
        if test.kind in ("value", "ratio_to_baseline", "rise_from_baseline"):
            if value is None:
                # Only a value-less PRCA Hb gets here, and PRCA has no numeric tests.
                return Check(rule, test.kind, False, "marker_missing", f"{name} has no value")
            if test.kind == "value":
                left, right = value, test.threshold
                what = f"{name} {_num(left)} {shown}"
                bound = f"{_num(right)} {shown}"  # thresholds carry their unit
                refs: tuple[str, ...] = (ref,)
            elif test.kind == "ratio_to_baseline":
                # Multiply instead of dividing: a baseline of 0 is a valid platelet count.
                left, right = value, round(test.threshold * base, 4)
                what = f"{name} {_num(left)} {shown}"
                bound = f"{_num(test.threshold)} x baseline {_num(base)} = {_num(right)} {shown}"
                refs = (ref, self.baseline.measurement.ref)
            else:
                # Rounded so that 9.1 - 7.1 counts as the 2.0 it is, not 1.9999999999999991.
                left, right = round(value - base, 4), test.threshold
                what = f"{name} rise {_num(left)} {shown} (baseline {_num(base)} to {_num(value)})"
                bound = f"{_num(right)} {shown}"
                refs = (ref, self.baseline.measurement.ref)
            held = _compare(test.op, left, right)
            text = f"{what} {test.op} {bound}" if held else f"{what} is not {test.op} {bound}"
            kind = "threshold_met" if held else "threshold_missed"
            return Check(rule, test.kind, held, kind, text, left, test.op, right, unit, None, refs)
        if test.kind == "marker_within_upper_limit":
            analyte = self.cfg.analytes[test.analyte]
            marker_name = label(test.analyte)
            # The measured marker, else one derived from others (indirect = total - direct).
            marker = marker_pick(self.cfg, self.inputs, test.analyte, a.target)
            if register:
                a.markers[test.analyte] = marker
            if marker is None or marker.value is None:
                text = f"no {marker_name} in window {_span_text(a.window)}"
                derived = self.cfg.derived.get(test.analyte)
                if derived is not None:
                    text += (
                        f" (nor {label(derived.minuend)} with {label(derived.subtrahend)} to "
                        "derive it)"
                    )
                return Check(rule, test.kind, False, "marker_missing", text)
            limit = marker.measurement.high
            source = "the lab's reference range"
            if limit is None:
                limit = analyte.default_upper_limit
                source = "default: the lab gave no range"
            assert limit is not None  # config.py requires a default upper limit
            held = marker.value <= limit
            what = (
                f"{marker_name} {_num(marker.value)} {display_unit(analyte.unit)} on {marker.date}"
            )
            bound = f"upper limit {_num(limit)} {display_unit(analyte.unit)} ({source})"
            text = f"{what} <= {bound}" if held else f"{what} is above the {bound}"
            return Check(
                rule,
                test.kind,
                held,
                "threshold_met" if held else "threshold_missed",
                text,
                marker.value,
                "<=",
                limit,
                analyte.unit,
                source,
                marker.measurement.derived_from or (marker.measurement.ref,),
            )
        if test.kind == "within_normal_range":
            if value is None:
                held = a.pick.measurement.normal
                return Check(
                    rule,
                    test.kind,
                    held,
                    "normal_without_value" if held else "marker_missing",
                    f"{name} without a value, interpretation N (normal) "
                    f"({a.pick.measurement.date_text}): counted as in the normal range",
                    refs=(ref,),
                )
            low = a.pick.measurement.low
            source = "the lab's reference range"
            if low is None:
                gender = self.inputs.gender if self.inputs.gender in ("female", "male") else "other"
                low = self.cfg.normal_low[gender]
                source = f"WHO anaemia threshold, {gender}"  # cited as normal_low_source
            if register:
                a.normal_low = low
            held = value >= low
            what = f"{name} {_num(value)} {shown}"
            bound = f"lower limit of normal {_num(low)} {shown} ({source})"
            text = f"{what} >= {bound}" if held else f"{what} is below the {bound}"
            kind = "threshold_met" if held else "threshold_missed"
            return Check(rule, test.kind, held, kind, text, value, ">=", low, unit, source, (ref,))
        if test.kind == "transfusion_free":
            days = self.cfg.transfusion.free_days
            end = a.pick.date
            start = end - timedelta(days=days)
            events = counted_transfusions(self.inputs.transfusions, start, end)
            if register:
                a.transfusions = events
            window = f"{start.isoformat()}..{end.isoformat()} ({days} d before the {name})"
            if not events:
                text = f"no counted red-cell transfusion in {window}"
                return Check(rule, test.kind, True, "threshold_met", text, threshold=days)
            listed = ", ".join(f"{e.text!r} ({e.status}, {_when(e.span)})" for e in events)
            return Check(
                rule,
                test.kind,
                False,
                "transfusion_in_window",
                f"red-cell transfusion in {window}: {listed}",
                threshold=days,
                refs=tuple(e.ref for e in events),
            )
        raise AssertionError(test.kind)  # config.py only lets known tests through


def classify(
    criteria: Criteria, cfg: ScoringConfig, inputs: PatientInputs, baseline: Pick, a: Assessment
) -> str:
    """Response for an assessment with a pick: the first rule whose tests hold, else NR.

    Fills `a.checks` (every test evaluated) and `a.reasons` (what decided the response, and
    for each higher response the condition that failed or could not be assessed). When a rule
    fails with a marker test whose marker has no measurement in the window, every marker of that
    rule without one is listed in `a.missing_markers` (the better response was out of reach for
    want of data, not ruled out by it).
    """
    context = _Context(cfg, criteria, inputs, baseline, a)
    evaluated: list[tuple[str, list[Check]]] = []
    missing: list[str] = []
    response = "NR"
    for rule in criteria.rules:
        checks: list[Check] = []
        lazy = True  # still on the path the rule reads ("Hb > 12 and then the markers")
        for test in rule.tests:
            # Markers are kept as evidence (write-back derivedFrom) only once the tests before
            # them hold; they are still looked at so the reasons can name every one missing.
            checked = context.check(rule.response, test, register=lazy)
            checks.append(checked)
            if rule.mode == "any" and checked.held:
                break
            if rule.mode == "all" and not checked.held:
                lazy = False
                if checked.test != "marker_within_upper_limit":
                    break  # a failed value makes the rest of the rule moot
        a.checks.extend(checks)
        evaluated.append((rule.response, checks))
        held = all(c.held for c in checks) if rule.mode == "all" else any(c.held for c in checks)
        if held:
            response = rule.response
            break
        markers = [t.analyte for t in rule.tests if t.kind == "marker_within_upper_limit"]
        if any(m in a.markers and a.markers[m] is None for m in markers):
            missing += [
                m
                for m in markers
                if m not in missing and marker_pick(cfg, inputs, m, a.target) is None
            ]
    a.missing_markers = tuple(missing)
    for rule_response, checks in evaluated:
        for c in checks:
            if rule_response == response:
                if c.held:
                    a.reasons.append(Reason(c.kind, f"{response}: {c.text}", c.refs))
            elif c.held:
                a.reasons.append(Reason(c.kind, f"{rule_response} condition met: {c.text}", c.refs))
            elif c.kind == "marker_missing":
                a.reasons.append(
                    Reason(c.kind, f"{rule_response} not assessable: {c.text}", c.refs)
                )
            else:
                a.reasons.append(Reason(c.kind, f"{rule_response} missed: {c.text}", c.refs))
    return response


def _imputed_note(pick: Pick, role: str) -> Note:
    m = pick.measurement
    return Note(
        m.ref,
        m.date_field,
        f"partial date {m.date_text!r} imputed as {pick.date.isoformat()} ({role})",
        m.context,
    )


def _missing_note(inputs: PatientInputs, a: Assessment, cfg: ScoringConfig) -> Note:
    better = "CR" if a.response != "CR" else "?"
    names = []
    for name in a.missing_markers:
        rule = cfg.derived.get(name)
        extra = (
            f" (nor {label(rule.minuend)} with {label(rule.subtrahend)} to derive it)"
            if rule
            else ""
        )
        names.append(label(name) + extra)
    return Note(
        log_name(inputs),
        f"month {a.month}",
        f"{a.response}: {better} not reachable, no {' and no '.join(names)} in the window "
        f"{a.window[0].isoformat()}..{a.window[1].isoformat()}",
    )


def _imputed_reason(pick: Pick, what: str) -> Reason:
    m = pick.measurement
    return Reason(
        "date_imputed",
        f"{what} dated {m.date_text!r} (partial): taken as {pick.date.isoformat()}, the day of "
        "its interval closest to the reference point",
        (m.ref,),
    )


def _nearest_outside(series: Iterable[Measurement], target: date) -> Measurement | None:
    """The measurement nearest to `target` (for saying what lies just outside a window)."""
    best: tuple[int, str, Measurement] | None = None
    for m in series:
        distance = abs((clamp(target, m.span) - target).days)
        if best is None or (distance, m.ref) < best[:2]:
            best = (distance, m.ref, m)
    return best[2] if best else None


def _no_value_reason(series: list[Measurement], a: Assessment, name: str) -> Reason:
    text = f"NE: no {name} in window {_span_text(a.window)} (target {a.target.isoformat()})"
    nearest = _nearest_outside(series, a.target)
    if nearest is None:
        return Reason("no_value_in_window", text + f"; no {name} at all")
    day = clamp(a.target, nearest.span)
    side = "after" if day > a.window[1] else "before"
    gap = (day - a.window[1]).days if side == "after" else (a.window[0] - day).days
    return Reason(
        "no_value_in_window",
        f"{text}; nearest {nearest.date_text}, {gap} d {side} the window",
        (nearest.ref,),
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
    reasons: list[Reason] = []
    criteria = cfg.criteria[disease]
    name = label(criteria.analyte)
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
        reasons.append(
            Reason(
                "date_imputed",
                f"cyclosporine start dated {inputs.start.date_text!r} (partial): taken as "
                f"{start.isoformat()}, the first day of its interval",
                (inputs.start.ref,),
            )
        )
    baseline = pick_baseline(series, start, cfg.baseline_days)
    base_window = (start - timedelta(days=cfg.baseline_days), start)
    if baseline is None:
        notes.append(
            Note(
                log_name(inputs),
                criteria.analyte,
                f"no baseline within {cfg.baseline_days} days before {start.isoformat()}: "
                "every timepoint NE",
            )
        )
        reasons.append(
            Reason(
                "no_baseline",
                f"no {name} value in the baseline window {_span_text(base_window)}: "
                "every timepoint NE",
            )
        )
    elif baseline.imputed:
        notes.append(_imputed_note(baseline, "baseline"))
        reasons.append(_imputed_reason(baseline, f"baseline {name}"))
    assessments = []
    defaulted: list[int] = []  # months that used the sex-less lower limit of normal
    for month in cfg.months:
        target = add_months(start, month)
        window = (
            target - timedelta(days=cfg.window_days),
            target + timedelta(days=cfg.window_days),
        )
        a = Assessment(month=month, target=target, window=window, response="NE")
        if baseline is None:
            a.reasons.append(Reason("no_baseline", f"NE: no baseline {name}"))
        else:
            a.pick = pick_closest(series, target, cfg.window_days)
            if a.pick is None:
                a.reasons.append(_no_value_reason(series, a, name))
            else:
                a.response = classify(criteria, cfg, inputs, baseline, a)
                if a.pick.imputed:
                    notes.append(_imputed_note(a.pick, f"month {month}"))
                    a.reasons.append(_imputed_reason(a.pick, name))
                if a.missing_markers:
                    notes.append(_missing_note(inputs, a, cfg))
                for marker_name, p in a.markers.items():
                    if p is not None and p.imputed:
                        notes.append(_imputed_note(p, f"month {month} {marker_name}"))
                        a.reasons.append(_imputed_reason(p, label(marker_name)))
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
        reasons=reasons,
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
