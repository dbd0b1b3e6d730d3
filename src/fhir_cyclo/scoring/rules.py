"""The response rules: baseline, timepoint windows, closest measurement, per-disease criteria."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal, get_args

from fhir_cyclo.core.scoring_config import (
    Criteria,
    Derived,
    Response,
    RuleResponse,
    ScoringConfig,
    Test,
    TestKind,
    load_config,
)
from fhir_cyclo.scoring.dates import Span, add_months, clamp
from fhir_cyclo.scoring.model import (
    Measurement,
    Note,
    PatientInputs,
    ScoringInputs,
    Skipped,
    StartDate,
    TransfusionEvent,
    log_name,
)

# The kinds of reason an assessment can carry (the JSON "reasons[].kind"; see score.schema.json).
ReasonKind = Literal[
    "threshold_met",  # a test of a rule held (the value, the operator and the threshold)
    "threshold_missed",  # a test failed on a measured value
    "marker_missing",  # a test needed a value (LDH, indirect bilirubin) that the window lacks
    "normal_without_value",  # a value-less Hb with interpretation N counted as normal (PRCA)
    "transfusion_in_window",  # a counted red-cell transfusion inside the transfusion-free window
    "no_value_in_window",  # NE: no measurement of the scored analyte in the timepoint window
    "value_skipped",  # NE: a result in the window was read but skipped (unit, value, status)
    "no_baseline",  # NE: no baseline in [start - days, start]
    "date_imputed",  # a partial date was placed at a day of its interval
]
REASON_KINDS: tuple[ReasonKind, ...] = get_args(ReasonKind)


def _outcome(held: bool) -> ReasonKind:
    return "threshold_met" if held else "threshold_missed"


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

    rule: RuleResponse  # the response the rule gives
    test: TestKind
    held: bool
    kind: ReasonKind  # the reason kind it makes
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

    kind: ReasonKind
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
    response: Response
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
    # Results of a scored analyte read but skipped, by why ("unit not understood", ...).
    results_skipped: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """`read N patient(s): scored N, not scored N (reason: n; ...)`."""
        skipped = sum(self.not_scored.values())
        text = f"read {self.read} patient(s): scored {self.scored}, not scored {skipped}"
        if skipped:
            reasons = "; ".join(f"{r}: {n}" for r, n in sorted(self.not_scored.items()))
            text += f" ({reasons})"
        if self.results_skipped:
            counts = "; ".join(f"{r}: {n}" for r, n in sorted(self.results_skipped.items()))
            text += f"; lab results skipped ({counts})"
        return text

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "patients_read": self.read,
            "scored": self.scored,
            "not_scored": dict(sorted(self.not_scored.items())),
        }
        if self.results_skipped:  # only when some were: documents of clean data stay as before
            found["results_skipped"] = dict(sorted(self.results_skipped.items()))
        return found

    def add(self, part: Accounting) -> None:
        """Add the counts of a disjoint group of patients."""
        self.read += part.read
        self.scored += part.scored
        for mine, theirs in (
            (self.not_scored, part.not_scored),
            (self.results_skipped, part.results_skipped),
        ):
            for reason, count in theirs.items():
                mine[reason] = mine.get(reason, 0) + count


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


@dataclass(frozen=True, slots=True)
class _Context:
    """What the tests of one timepoint look at."""

    cfg: ScoringConfig
    inputs: PatientInputs
    baseline: Pick
    assessment: Assessment
    analyte: str  # the analyte scored

    @property
    def pick(self) -> Pick:
        """The scored measurement of the timepoint (classify is called only with one)."""
        assert self.assessment.pick is not None
        return self.assessment.pick

    @property
    def base(self) -> float:
        """The baseline value (pick_baseline picks only measurements with a value)."""
        assert self.baseline.value is not None
        return self.baseline.value

    @property
    def label(self) -> str:
        return label(self.analyte)

    @property
    def unit(self) -> str:
        return self.cfg.analytes[self.analyte].unit

    @property
    def shown_unit(self) -> str:
        return display_unit(self.unit)  # in sentences; the JSON fields keep UCUM

    def check(self, rule: RuleResponse, test: Test, register: bool) -> Check:
        """Evaluate one test; with `register`, keep what it looked up as evidence."""
        return _CHECKS[test.kind](self, rule, test, register)


# One function per test kind (mappings/scoring.yaml `criteria` comment): each takes the context,
# the response of the rule, the test and whether to register evidence on the assessment.
_CheckFn = Callable[[_Context, RuleResponse, Test, bool], Check]


def _compared(
    ctx: _Context,
    rule: RuleResponse,
    test: Test,
    sides: tuple[float, float],
    texts: tuple[str, str],
) -> Check:
    """A numeric test: `left op right`, with the sentence's two halves and the resources."""
    left, right = sides
    what, bound = texts
    held = _compare(test.op, left, right)
    text = f"{what} {test.op} {bound}" if held else f"{what} is not {test.op} {bound}"
    refs: tuple[str, ...] = (ctx.pick.measurement.ref,)
    if test.kind != "value":
        refs += (ctx.baseline.measurement.ref,)
    return Check(
        rule, test.kind, held, _outcome(held), text, left, test.op, right, ctx.unit, None, refs
    )


def _no_value(ctx: _Context, rule: RuleResponse, test: Test) -> Check:
    # Only a value-less PRCA Hb reaches a numeric test without a value, and PRCA has none.
    return Check(rule, test.kind, False, "marker_missing", f"{ctx.label} has no value")


def _check_value(ctx: _Context, rule: RuleResponse, test: Test, register: bool) -> Check:
    value = ctx.pick.value
    if value is None:
        return _no_value(ctx, rule, test)
    what = f"{ctx.label} {_num(value)} {ctx.shown_unit}"
    bound = f"{_num(test.threshold)} {ctx.shown_unit}"  # thresholds carry their unit
    return _compared(ctx, rule, test, (value, test.threshold), (what, bound))


def _check_ratio_to_baseline(
    ctx: _Context, rule: RuleResponse, test: Test, register: bool
) -> Check:
    value = ctx.pick.value
    if value is None:
        return _no_value(ctx, rule, test)
    # Multiply instead of dividing: a baseline of 0 is a valid platelet count.
    right = round(test.threshold * ctx.base, 4)
    what = f"{ctx.label} {_num(value)} {ctx.shown_unit}"
    bound = f"{_num(test.threshold)} x baseline {_num(ctx.base)} = {_num(right)} {ctx.shown_unit}"
    return _compared(ctx, rule, test, (value, right), (what, bound))


def _check_rise_from_baseline(
    ctx: _Context, rule: RuleResponse, test: Test, register: bool
) -> Check:
    value = ctx.pick.value
    if value is None:
        return _no_value(ctx, rule, test)
    # Rounded so that 9.1 - 7.1 counts as the 2.0 it is, not 1.9999999999999991.
    left = round(value - ctx.base, 4)
    what = (
        f"{ctx.label} rise {_num(left)} {ctx.shown_unit} "
        f"(baseline {_num(ctx.base)} to {_num(value)})"
    )
    bound = f"{_num(test.threshold)} {ctx.shown_unit}"
    return _compared(ctx, rule, test, (left, test.threshold), (what, bound))


def _check_marker_within_upper_limit(
    ctx: _Context, rule: RuleResponse, test: Test, register: bool
) -> Check:
    a = ctx.assessment
    analyte = ctx.cfg.analytes[test.analyte]
    marker_name = label(test.analyte)
    # The measured marker, else one derived from others (indirect = total - direct).
    marker = marker_pick(ctx.cfg, ctx.inputs, test.analyte, a.target)
    if register:
        a.markers[test.analyte] = marker
    if marker is None or marker.value is None:
        text = f"no {marker_name} in window {_span_text(a.window)}"
        derived = ctx.cfg.derived.get(test.analyte)
        if derived is not None:
            text += f" (nor {label(derived.minuend)} with {label(derived.subtrahend)} to derive it)"
        return Check(rule, test.kind, False, "marker_missing", text)
    limit = marker.measurement.high
    source = "the lab's reference range"
    if limit is None:
        limit = analyte.default_upper_limit
        source = "default: the lab gave no range"
    assert limit is not None  # scoring_config requires a default upper limit
    held = marker.value <= limit
    what = f"{marker_name} {_num(marker.value)} {display_unit(analyte.unit)} on {marker.date}"
    bound = f"upper limit {_num(limit)} {display_unit(analyte.unit)} ({source})"
    text = f"{what} <= {bound}" if held else f"{what} is above the {bound}"
    return Check(
        rule,
        test.kind,
        held,
        _outcome(held),
        text,
        marker.value,
        "<=",
        limit,
        analyte.unit,
        source,
        marker.measurement.derived_from or (marker.measurement.ref,),
    )


def _check_within_normal_range(
    ctx: _Context, rule: RuleResponse, test: Test, register: bool
) -> Check:
    pick = ctx.pick
    value, ref, name = pick.value, pick.measurement.ref, ctx.label
    if value is None:
        held = pick.measurement.normal
        return Check(
            rule,
            test.kind,
            held,
            "normal_without_value" if held else "marker_missing",
            f"{name} without a value, interpretation N (normal) "
            f"({pick.measurement.date_text}): counted as in the normal range",
            refs=(ref,),
        )
    low = pick.measurement.low
    source = "the lab's reference range"
    if low is None:
        gender = ctx.inputs.gender if ctx.inputs.gender in ("female", "male") else "other"
        low = ctx.cfg.normal_low[gender]
        source = f"WHO anaemia threshold, {gender}"  # cited as normal_low_source
    if register:
        ctx.assessment.normal_low = low
    held = value >= low
    what = f"{name} {_num(value)} {ctx.shown_unit}"
    bound = f"lower limit of normal {_num(low)} {ctx.shown_unit} ({source})"
    text = f"{what} >= {bound}" if held else f"{what} is below the {bound}"
    return Check(
        rule, test.kind, held, _outcome(held), text, value, ">=", low, ctx.unit, source, (ref,)
    )


def _check_transfusion_free(ctx: _Context, rule: RuleResponse, test: Test, register: bool) -> Check:
    days = ctx.cfg.transfusion.free_days
    end = ctx.pick.date
    start = end - timedelta(days=days)
    events = counted_transfusions(ctx.inputs.transfusions, start, end)
    if register:
        ctx.assessment.transfusions = events
    window = f"{start.isoformat()}..{end.isoformat()} ({days} d before the {ctx.label})"
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


_CHECKS: dict[TestKind, _CheckFn] = {
    "value": _check_value,
    "ratio_to_baseline": _check_ratio_to_baseline,
    "rise_from_baseline": _check_rise_from_baseline,
    "marker_within_upper_limit": _check_marker_within_upper_limit,
    "within_normal_range": _check_within_normal_range,
    "transfusion_free": _check_transfusion_free,
}


def classify(
    criteria: Criteria, cfg: ScoringConfig, inputs: PatientInputs, baseline: Pick, a: Assessment
) -> Response:
    """Response for an assessment with a pick: the first rule whose tests hold, else NR.

    Fills `a.checks` (every test evaluated) and `a.reasons` (what decided the response, and
    for each higher response the condition that failed or could not be assessed). When a rule
    fails with a marker test whose marker has no measurement in the window, every marker of that
    rule without one is listed in `a.missing_markers` (the better response was out of reach for
    want of data, not ruled out by it).
    """
    context = _Context(cfg, inputs, baseline, a, criteria.analyte)
    evaluated: list[tuple[RuleResponse, list[Check]]] = []
    missing: list[str] = []
    response: Response = "NR"
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
    a.reasons += [
        reason
        for rule_response, checks in evaluated
        for c in checks
        if (reason := _check_reason(c, rule_response, response)) is not None
    ]
    return response


def _check_reason(c: Check, rule_response: RuleResponse, response: Response) -> Reason | None:
    """What an evaluated test says about the response given (None: a failed test of it)."""
    if rule_response == response:
        return Reason(c.kind, f"{response}: {c.text}", c.refs) if c.held else None
    if c.held:
        return Reason(c.kind, f"{rule_response} condition met: {c.text}", c.refs)
    if c.kind == "marker_missing":
        return Reason(c.kind, f"{rule_response} not assessable: {c.text}", c.refs)
    return Reason(c.kind, f"{rule_response} missed: {c.text}", c.refs)


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


_SKIP_KINDS = {
    "unit": "unit not understood",
    "value": "no usable value",
    "status": "status",
    "other": "other",
}


def skipped_in(inputs: PatientInputs, analyte: str, window: Span) -> list[Skipped]:
    """Results of `analyte` dated inside `window` that were read but skipped."""
    return [
        s
        for s in inputs.skipped
        if s.analyte == analyte
        and s.span is not None
        and s.span[0] <= window[1]
        and s.span[1] >= window[0]
    ]


def _skipped_text(skips: list[Skipped]) -> str:
    return "; ".join(f"{s.ref} ({_when(s.span)}): {s.why}" for s in skips if s.span)


def _no_value_reason(
    series: list[Measurement], a: Assessment, name: str, skips: list[Skipped] | None = None
) -> Reason:
    if skips:
        # Measured, not understood: not the same as not measured (issue 24).
        return Reason(
            "value_skipped",
            f"NE: no usable {name} in window {_span_text(a.window)} (target "
            f"{a.target.isoformat()}): {len(skips)} result(s) there skipped: "
            f"{_skipped_text(skips)}",
            tuple(s.ref for s in skips),
        )
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


def _same_instant(series: list[Measurement], pick: Pick | None, role: str, name: str) -> list[Note]:
    """A note when other results were written at exactly the instant of the one used."""
    if pick is None:
        return []
    m = pick.measurement
    others = sorted(
        o.ref for o in series if o.date_text == m.date_text and o.ref != m.ref and not m.partial
    )
    if not others:
        return []
    values = sorted({str(o.value) for o in series if o.date_text == m.date_text})
    return [
        Note(
            m.ref,
            role,
            f"{len(others) + 1} {name} results at the same instant {m.date_text} (values "
            f"{', '.join(values)}; also {', '.join(others)}): used {m.ref} (the last by reference)",
        )
    ]


def _baseline_reason(inputs: PatientInputs, analyte: str, name: str, window: Span) -> Reason:
    """Why there is no baseline: nothing measured, or measured and skipped (issue 24)."""
    skips = skipped_in(inputs, analyte, window)
    if skips:
        return Reason(
            "value_skipped",
            f"no usable {name} value in the baseline window {_span_text(window)}: "
            f"{len(skips)} result(s) there skipped: {_skipped_text(skips)}; every timepoint NE",
            tuple(s.ref for s in skips),
        )
    return Reason(
        "no_baseline",
        f"no {name} value in the baseline window {_span_text(window)}: every timepoint NE",
    )


def _other_skips(
    inputs: PatientInputs, reasons: list[Reason], assessments: list[Assessment]
) -> list[Reason]:
    """Every other result read but skipped, named (issue 24: a unit still not understood is in
    that patient's reasons), so "not measured" and "not understood" never look alike."""
    named = {ref for r in reasons for ref in r.refs}
    named |= {ref for a in assessments for r in a.reasons for ref in r.refs}
    found = []
    for skip in inputs.skipped:
        if skip.ref not in named:
            named.add(skip.ref)
            when = _when(skip.span) if skip.span else "no date"
            found.append(
                Reason(
                    "value_skipped",
                    f"{label(skip.analyte)} result {skip.ref} ({when}) skipped: {skip.why}",
                    (skip.ref,),
                )
            )
    return found


def _assessment_notes(
    inputs: PatientInputs, a: Assessment, cfg: ScoringConfig, name: str
) -> list[Note]:
    """Warnings about a classified assessment (imputed dates, markers out of reach); the
    imputed dates are added to its reasons too."""
    assert a.pick is not None
    notes = []
    if a.pick.imputed:
        notes.append(_imputed_note(a.pick, f"month {a.month}"))
        a.reasons.append(_imputed_reason(a.pick, name))
    if a.missing_markers:
        notes.append(_missing_note(inputs, a, cfg))
    for marker_name, p in a.markers.items():
        if p is not None and p.imputed:
            notes.append(_imputed_note(p, f"month {a.month} {marker_name}"))
            a.reasons.append(_imputed_reason(p, label(marker_name)))
    return notes


def _no_baseline_note(inputs: PatientInputs, analyte: str, start: date, days: int) -> Note:
    return Note(
        log_name(inputs),
        analyte,
        f"no baseline within {days} days before {start.isoformat()}: every timepoint NE",
    )


def _partial_start_note(start: StartDate) -> Note:
    return Note(
        start.ref,
        start.date_field,
        f"partial date {start.date_text!r}: cyclosporine start taken as "
        f"{start.day.isoformat()} (first day)",
    )


def _partial_start_reason(start: StartDate) -> Reason:
    return Reason(
        "date_imputed",
        f"cyclosporine start dated {start.date_text!r} (partial): taken as "
        f"{start.day.isoformat()}, the first day of its interval",
        (start.ref,),
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
        notes.append(_partial_start_note(inputs.start))
        reasons.append(_partial_start_reason(inputs.start))
    baseline = pick_baseline(series, start, cfg.baseline_days)
    if baseline is None:
        notes.append(_no_baseline_note(inputs, criteria.analyte, start, cfg.baseline_days))
        base_window = (start - timedelta(days=cfg.baseline_days), start)
        reasons.append(_baseline_reason(inputs, criteria.analyte, name, base_window))
    elif baseline.imputed:
        notes.append(_imputed_note(baseline, "baseline"))
        reasons.append(_imputed_reason(baseline, f"baseline {name}"))
    notes += _same_instant(series, baseline, "baseline", name)
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
                skips = skipped_in(inputs, criteria.analyte, window)
                a.reasons.append(_no_value_reason(series, a, name, skips))
            else:
                a.response = classify(criteria, cfg, inputs, baseline, a)
                notes += _same_instant(series, a.pick, f"month {month}", name)
                notes += _assessment_notes(inputs, a, cfg, name)
                if (
                    a.normal_low is not None
                    and a.pick.measurement.low is None
                    and inputs.gender not in ("female", "male")
                ):
                    defaulted.append(month)
        assessments.append(a)
    reasons += _other_skips(inputs, reasons, assessments)
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


def _not_scored(p: PatientInputs) -> tuple[str, list[Note]]:
    """Why a patient without a disease or a start is not scored, and the warning, if any."""
    # Patients with neither are simply outside the cohort; half-documented ones are news.
    if p.disease is not None:
        note = Note(log_name(p), "MedicationStatement", "no cyclosporine start; not scored")
        return NO_START, [note]
    if p.start is not None:
        near = f" (near miss: {'; '.join(p.near_misses)})" if p.near_misses else ""
        return NO_CONDITION, [
            Note(log_name(p), "Condition", f"no ITP/AIHA/PRCA Condition{near}; not scored")
        ]
    return NO_BOTH, []


def score(inputs: ScoringInputs, config: ScoringConfig | None = None) -> CohortScore:
    """Score every patient that has both a scored disease and a cyclosporine start."""
    cfg = config or load_config()
    notes = list(inputs.notes)
    patients = []
    accounting = Accounting(read=len(inputs.patients))
    for p in inputs.patients:
        for skip in p.skipped:
            why = _SKIP_KINDS.get(skip.kind, skip.kind)
            accounting.results_skipped[why] = accounting.results_skipped.get(why, 0) + 1
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
            reason, note = _not_scored(p)
            accounting.not_scored[reason] = accounting.not_scored.get(reason, 0) + 1
            notes += note
            continue
        scored, more = score_patient(p, cfg)
        patients.append(scored)
        notes.extend(more)
    accounting.scored = len(patients)
    return CohortScore(patients=patients, notes=notes, config=cfg, accounting=accounting)
