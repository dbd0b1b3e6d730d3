"""Per-patient course plots as SVG: the values, the windows, the thresholds, honest marks.

Drawn directly as SVG elements (xml.etree) instead of through matplotlib: measured on the 14
fixture patients, matplotlib took 0.24-0.47 s of CPU per plot (text layout of ticks and legends)
and gave 72-116 kB PNGs; this path takes a few milliseconds and gives a ~10 kB vector image that
stays sharp on screen and on paper. Every mark carries a class (and data-* values) so tests can
read what is drawn.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from xml.etree import ElementTree as ET

from fhir_cyclo.core.scoring_config import ScoringConfig
from fhir_cyclo.report.document import short_label
from fhir_cyclo.scoring.dates import add_months
from fhir_cyclo.scoring.rules import CohortScore, PatientScore, display_unit, label

RESPONSE_COLOUR = {"CR": "#1b7837", "PR": "#e08214", "NR": "#b2182b", "NE": "#777777"}
# A colour per response and a dash pattern per test within a rule, so two lines that nearly
# coincide (AIHA "Hb > 10" and "baseline + 2" at 9.9) still read as two.
_LINE_STYLES = {
    "CR": (("#1b7837", "7 4"), ("#4dac26", "2 3")),
    "PR": (("#e08214", "9 3 2 3"), ("#7b3294", "2 2")),
}
_BASELINE_COLOUR = "#2171b5"
_WIDTH, _LEFT, _PLOT_RIGHT = 940, 58, 640  # the legend lives right of the plot area
_MAIN_H, _MARKERS_H, _LANE_H, _GAP = 220, 100, 64, 14
# Below this many patients one process is quicker than workers. Measured on 947 registry-like
# patients (bench/synthetic, 3-300 results each): drawing costs 1.3-1.9 s of CPU in one process,
# while sending the scored patients to workers costs ~1 s of pickling alone, and with two
# workers the wall time was 7.8-9.6 s against 4.9-6.5 s serial on this shared 2-core machine.
_PARALLEL_FROM = 4000


def plot_filename(key: str, taken: set[str]) -> str:
    """A safe, unique SVG name for a patient label (a hash suffix when sanitising collides)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")[:100] or "patient"
    name = f"{stem}.svg"
    if name.lower() in taken:
        name = f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.svg"  # noqa: S324 - a name, not security
    taken.add(name.lower())
    return name


def _x_range(p: PatientScore, cfg: ScoringConfig) -> tuple[date, date]:
    """The dates shown: baseline window to the last window, widened so no interval is cut."""
    low = p.start - timedelta(days=cfg.baseline_days + 30)
    high = add_months(p.start, max(cfg.months)) + timedelta(days=cfg.window_days + 30)
    spans = [m.span for series in p.inputs.labs.values() for m in series]
    spans += [e.span for e in p.inputs.transfusions if e.span[1] != date.max]
    # Widen for intervals that reach into the shown range (a year-only "2011" baseline), not for
    # every old result of the patient.
    for first, last in spans:
        if first <= high and last >= low:
            low, high = min(low, first - timedelta(days=20)), max(high, last + timedelta(days=20))
    return low, high


@dataclass
class Threshold:
    """One drawn threshold line: its level and every rule test at that level (two tests at the
    same level share one line that names both, so neither hides the other)."""

    level: float
    texts: list[str]
    colour: str
    dash: str


def threshold_lines(p: PatientScore, cfg: ScoringConfig) -> list[Threshold]:
    """The thresholds of the disease's rules at their levels for this patient, in words."""
    criteria = cfg.criteria[p.disease]
    name, unit = label(criteria.analyte), display_unit(p.unit)
    base = p.baseline.value if p.baseline is not None else None
    lines: list[Threshold] = []
    for rule in criteria.rules:
        styles = iter(_LINE_STYLES[rule.response])
        for t in rule.tests:
            text = ""
            level: float | None = None
            if t.kind == "value":
                level, text = (
                    t.threshold,
                    f"{rule.response}: {name} {_op(t.op)} {t.threshold:g} {unit}",
                )
            elif t.kind == "ratio_to_baseline" and base is not None:
                level = round(t.threshold * base, 4)
                text = (
                    f"{rule.response}: {name} {_op(t.op)} {t.threshold:g} \u00d7 baseline = "
                    f"{level:g} {unit}"
                )
            elif t.kind == "rise_from_baseline" and base is not None:
                level = round(base + t.threshold, 4)
                text = (
                    f"{rule.response}: rise {_op(t.op)} {t.threshold:g} from baseline = "
                    f"{level:g} {unit}"
                )
            elif t.kind == "within_normal_range":
                level = next((a.normal_low for a in p.assessments if a.normal_low), None)
                if level is None:
                    gender = p.inputs.gender if p.inputs.gender in ("female", "male") else "other"
                    level = cfg.normal_low[gender]
                text = f"{rule.response}: {name} \u2265 lower limit of normal {level:g} {unit}"
            if level is None:
                continue
            colour, dash = next(styles)
            same = next((line for line in lines if abs(line.level - level) < 1e-9), None)
            if same is not None:
                same.texts.append(text)
            else:
                lines.append(Threshold(level, [text], colour, dash))
    return lines


class _Axes:
    """Date -> x and value -> y for one panel."""

    def __init__(self, x_min: date, x_max: date, top: float, height: float, y_max: float):
        self.x_min, self.days = x_min, max((x_max - x_min).days, 1)
        self.top, self.height, self.y_max = top, height, y_max or 1.0

    def x(self, day: date) -> float:
        return round(_LEFT + (day - self.x_min).days * (_PLOT_RIGHT - _LEFT) / self.days, 1)

    def y(self, value: float) -> float:
        value = min(max(value, 0.0), self.y_max)
        return round(self.top + self.height * (1 - value / self.y_max), 1)

    @property
    def bottom(self) -> float:
        return self.top + self.height


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: object) -> ET.Element:
    node = ET.SubElement(
        parent, tag, {k.rstrip("_").replace("_", "-"): str(v) for k, v in attrs.items()}
    )
    if text is not None:
        node.text = text
    return node


def _nice_ticks(top: float) -> list[float]:
    raw = top / 5
    magnitude = 10 ** len(str(int(raw))) / 10 if raw >= 1 else 0.1
    step = next(s * magnitude for s in (1, 2, 2.5, 5, 10) if s * magnitude >= raw)
    return [round(i * step, 6) for i in range(int(top / step) + 1)]


def _month_ticks(x_min: date, x_max: date) -> list[date]:
    months = (x_max.year - x_min.year) * 12 + x_max.month - x_min.month
    step = next(s for s in (1, 2, 3, 6, 12, 24) if months / s <= 9)
    day, out = date(x_min.year, x_min.month, 1), []
    while day <= x_max:
        if day >= x_min and (day.month - 1) % step == 0:
            out.append(day)
        day = add_months(day, 1)
    return out


class _Legend:
    """Legend entries right of the plot: a small sample of the mark and its words."""

    def __init__(self, svg: ET.Element, top: float):
        self.group = _el(svg, "g", class_="legend")
        self.y, self.seen = top + 8, set[str]()

    def add(self, text: str, draw: str, colour: str, dash: str = "", hollow: bool = False) -> None:
        if text in self.seen:
            return
        self.seen.add(text)
        x, y = _PLOT_RIGHT + 16, self.y
        g = _el(self.group, "g", class_="entry")
        if draw == "line":
            _el(
                g,
                "line",
                x1=x,
                y1=y,
                x2=x + 22,
                y2=y,
                stroke=colour,
                stroke_width=2,
                stroke_dasharray=dash or "none",
            )
        elif draw == "band":
            _el(g, "rect", x=x, y=y - 5, width=22, height=10, fill=colour, fill_opacity=0.3)
        else:
            _el(
                g,
                "circle",
                cx=x + 11,
                cy=y,
                r=4.5,
                fill="none" if hollow else colour,
                stroke=colour,
                stroke_width=2,
            )
        lines = _wrap(text, 40)
        for i, line in enumerate(lines):
            _el(g, "text", line, x=x + 28, y=y + 4 + 12 * i, font_size=11)
        self.y += 12 * len(lines) + 5


def _wrap(text: str, width: int) -> list[str]:
    words, lines, current = text.split(), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return [*lines, current] if current else lines


def svg(p: PatientScore, cfg: ScoringConfig, citations: Iterable[int] = ()) -> str:
    """The course plot of one scored patient as an SVG document (a string)."""
    criteria = cfg.criteria[p.disease]
    analyte = criteria.analyte
    name, unit = label(analyte), display_unit(p.unit)
    x_min, x_max = _x_range(p, cfg)
    markers_panel = p.disease == "AIHA"
    lane = p.disease == "PRCA" or bool(p.inputs.transfusions)
    top = 34
    height = top + _MAIN_H + 36 + (_MARKERS_H + _GAP) * markers_panel + (_LANE_H + _GAP) * lane
    height += 20  # the citation line
    root = ET.Element(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "viewBox": f"0 0 {_WIDTH} {height}",
            "width": str(_WIDTH),
            "height": str(height),
            "font-family": "DejaVu Sans, Arial, sans-serif",
            "role": "img",
            "data-patient": short_label(p.inputs),
        },
    )
    _el(root, "rect", x=0, y=0, width=_WIDTH, height=height, fill="white")
    _el(
        root,
        "text",
        f"{short_label(p.inputs)} \u2013 {p.disease}, {name} ({unit}), cyclosporine from {p.start}",
        x=_LEFT,
        y=20,
        font_size=14,
        font_weight="bold",
        class_="title",
    )
    legend = _Legend(root, top)

    series = p.inputs.labs.get(analyte, [])
    lines = threshold_lines(p, cfg)
    normal_low = next(
        (t.level for t in lines if any("lower limit" in text for text in t.texts)), None
    )
    levels = [m.value for m in series if m.value is not None and m.span[1] >= x_min]
    levels += [t.level for t in lines] + ([normal_low * 1.3] if normal_low else [])
    ticks = _nice_ticks(max(levels, default=1.0) * 1.25)
    y_top = ticks[-1] if ticks[-1] >= max(levels, default=1.0) * 1.15 else ticks[-1] * 1.2
    main = _Axes(x_min, x_max, top, _MAIN_H, y_top)
    panels = [main]
    next_top = main.bottom + _GAP
    if markers_panel:
        panels.append(_Axes(x_min, x_max, next_top, _MARKERS_H, 1.0))
        next_top += _MARKERS_H + _GAP
    if lane:
        panels.append(_Axes(x_min, x_max, next_top, _LANE_H, 1.0))

    # Windows first, so the data draws on top.
    base_lo = p.start - timedelta(days=cfg.baseline_days)
    for ax in panels:
        _el(
            root,
            "rect",
            x=ax.x(base_lo),
            y=ax.top,
            width=ax.x(p.start) - ax.x(base_lo),
            height=ax.height,
            fill="#9ecae1",
            fill_opacity=0.35,
            class_="baseline-window",
        )
        for a in p.assessments:
            _el(
                root,
                "rect",
                x=ax.x(a.window[0]),
                y=ax.top,
                width=max(ax.x(a.window[1]) - ax.x(a.window[0]), 1),
                height=ax.height,
                fill=RESPONSE_COLOUR[a.response],
                fill_opacity=0.12,
                class_="window",
            )
        _el(
            root,
            "line",
            x1=ax.x(p.start),
            y1=ax.top,
            x2=ax.x(p.start),
            y2=ax.bottom,
            stroke="black",
            stroke_width=1.4,
        )
        _el(
            root,
            "rect",
            x=_LEFT,
            y=ax.top,
            width=_PLOT_RIGHT - _LEFT,
            height=ax.height,
            fill="none",
            stroke="#999999",
        )
    legend.add("baseline window", "band", "#9ecae1")
    legend.add(f"cyclosporine start {p.start}", "line", "black")
    legend.add(f"timepoint window \u00b1 {cfg.window_days} days (tint = result)", "band", "#999999")
    for a in p.assessments:
        colour = RESPONSE_COLOUR[a.response]
        _el(
            root,
            "line",
            x1=main.x(a.target),
            y1=main.top,
            x2=main.x(a.target),
            y2=main.bottom,
            stroke=colour,
            stroke_dasharray="2 3",
        )
        _el(
            root,
            "text",
            f"M{a.month}: {a.response}",
            x=main.x(a.target),
            y=main.top + 14,
            text_anchor="middle",
            font_size=12,
            font_weight="bold",
            fill=colour,
            class_="response-label",
        )
    if p.baseline is None:
        _el(
            root,
            "text",
            "no baseline: every timepoint NE",
            x=main.x(base_lo) + 4,
            y=main.top + main.height / 2,
            font_size=11,
            fill="#555555",
        )

    # Axes: y ticks on the main panel, month ticks under the last panel.
    for value in ticks:
        y = main.y(value)
        _el(root, "line", x1=_LEFT, y1=y, x2=_PLOT_RIGHT, y2=y, stroke="#e6e6e6")
        _el(root, "text", f"{value:g}", x=_LEFT - 5, y=y + 4, text_anchor="end", font_size=11)
    _el(
        root,
        "text",
        f"{name} ({unit})",
        x=14,
        y=main.top + main.height / 2,
        font_size=12,
        text_anchor="middle",
        transform=f"rotate(-90 14 {main.top + main.height / 2})",
        class_="y-label",
    )
    last = panels[-1]
    for day in _month_ticks(x_min, x_max):
        x = last.x(day)
        _el(root, "line", x1=x, y1=last.bottom, x2=x, y2=last.bottom + 4, stroke="#555555")
        _el(
            root,
            "text",
            day.strftime("%Y-%m"),
            x=x,
            y=last.bottom + 16,
            text_anchor="middle",
            font_size=11,
        )

    # Thresholds: a line per level, its words at the right end (two tests at one level: one
    # line, both names).
    taken: list[float] = []  # label baselines already used: close lines get labels apart
    for t in sorted(lines, key=lambda line: -line.level):
        y = main.y(t.level)
        label_y = y - 3
        if any(abs(label_y - other) < 11 for other in taken):
            label_y = y + 11  # below its line instead of on top of the neighbour's label
        taken.append(label_y)
        group = _el(
            root, "g", class_="threshold", data_level=f"{t.level:g}", data_tests=str(len(t.texts))
        )
        _el(
            group,
            "line",
            x1=_LEFT,
            y1=y,
            x2=_PLOT_RIGHT,
            y2=y,
            stroke=t.colour,
            stroke_width=1.6,
            stroke_dasharray=t.dash,
        )
        _el(
            group,
            "text",
            " | ".join(t.texts),
            x=_PLOT_RIGHT - 4,
            y=label_y,
            text_anchor="end",
            font_size=10,
            fill=t.colour,
        )
        legend.add(" and ".join(t.texts), "line", t.colour, t.dash)

    points: list[tuple[date, float]] = []
    for m in series:
        first, last_day = max(m.span[0], x_min), min(m.span[1], x_max)
        if first > last_day:
            continue
        if m.value is None:
            # "Normal" without a number: a labelled band over the normal range, never a point.
            low = m.low if m.low is not None else normal_low
            if low is None:
                continue
            x0, x1 = main.x(first), main.x(last_day + timedelta(days=1))
            band = _el(root, "g", class_="normal-band", data_date=first.isoformat())
            band_top = main.y(y_top * 0.88)
            _el(
                band,
                "rect",
                x=x0,
                y=band_top,
                width=max(x1 - x0, 4),
                height=main.y(low) - band_top,
                fill="#1b7837",
                fill_opacity=0.18,
                stroke="#1b7837",
                stroke_dasharray="3 2",
            )
            _el(
                band,
                "text",
                "reported normal, no value",
                x=x0,
                y=main.y(low) + 13,
                font_size=10,
                fill="#1b7837",
            )
            legend.add(
                f"{name} reported normal, no value (a band, not a measurement)", "band", "#1b7837"
            )
        elif m.partial:
            y = main.y(m.value)
            x0, x1 = main.x(first), main.x(last_day + timedelta(days=1))
            group = _el(root, "g", class_="partial")
            _el(
                group,
                "line",
                x1=x0,
                y1=y,
                x2=x1,
                y2=y,
                stroke="#4d4d4d",
                stroke_width=3,
                stroke_opacity=0.7,
            )
            for x in (x0, x1):
                _el(group, "line", x1=x, y1=y - 5, x2=x, y2=y + 5, stroke="#4d4d4d")
            legend.add(f"{name}, partial date (the whole interval it may be)", "line", "#4d4d4d")
        else:
            points.append((m.span[0], m.value))
    points.sort()
    if points:
        _el(
            root,
            "polyline",
            points=" ".join(f"{main.x(d)},{main.y(v)}" for d, v in points),
            fill="none",
            stroke="#4d4d4d",
            stroke_width=1.2,
        )
        for d, v in points:
            _el(
                root,
                "circle",
                cx=main.x(d),
                cy=main.y(v),
                r=3,
                fill="#4d4d4d",
                class_="value",
                data_value=f"{v:g}",
                data_date=d.isoformat(),
            )
        legend.add(f"{name} ({unit})", "dot", "#4d4d4d")
    if not series:
        _el(
            root,
            "text",
            f"no {name} results",
            x=(_LEFT + _PLOT_RIGHT) / 2,
            y=main.top + main.height / 2,
            text_anchor="middle",
            font_size=12,
            fill="#555555",
        )

    # Rings: the values a result was decided on (baseline in blue, timepoints by response).
    if p.baseline is not None and p.baseline.value is not None:
        _el(
            root,
            "circle",
            cx=main.x(p.baseline.date),
            cy=main.y(p.baseline.value),
            r=7,
            fill="none",
            stroke=_BASELINE_COLOUR,
            stroke_width=2,
            class_="baseline-used",
        )
        legend.add(
            f"baseline used ({p.baseline.value:g} on {p.baseline.date})",
            "dot",
            _BASELINE_COLOUR,
            hollow=True,
        )
    for a in p.assessments:
        if a.pick is None:
            continue
        colour = RESPONSE_COLOUR[a.response]
        x = main.x(a.pick.date)
        if a.pick.value is None:
            # A mark on the date axis, not a point at a value nobody measured.
            y = main.bottom
            _el(
                root,
                "path",
                d=f"M{x} {y - 1} l-6 -11 h12 z",
                fill="none",
                stroke=colour,
                stroke_width=2,
                class_="scored-normal",
                data_date=a.pick.date.isoformat(),
            )
            legend.add(
                f"scored {a.response}: reported normal, no value (mark on the date axis)",
                "dot",
                colour,
                hollow=True,
            )
        else:
            _el(
                root,
                "circle",
                cx=x,
                cy=main.y(a.pick.value),
                r=7,
                fill="none",
                stroke=colour,
                stroke_width=2,
                class_="scored",
                data_value=f"{a.pick.value:g}",
            )
            legend.add(f"value scored, {a.response}", "dot", colour, hollow=True)

    if markers_panel:
        _markers_panel(root, panels[1], p, cfg, x_min=x_min, x_max=x_max, legend=legend)
    if lane:
        _transfusion_lane(root, panels[-1], p, cfg, x_min=x_min, x_max=x_max, legend=legend)
    cited = ", ".join(f"[{n}]" for n in citations)
    if cited:
        _el(
            root,
            "text",
            f"Criteria: sources {cited} (the numbered list of sources in the report)",
            x=_LEFT,
            y=height - 6,
            font_size=11,
            fill="#555555",
            class_="citations",
        )
    return ET.tostring(root, encoding="unicode")


def _markers_panel(
    root: ET.Element,
    ax: _Axes,
    p: PatientScore,
    cfg: ScoringConfig,
    *,
    x_min: date,
    x_max: date,
    legend: _Legend,
) -> None:
    """AIHA: LDH and indirect bilirubin as multiples of their upper limit, the limit at 1."""
    drawn: list[tuple[str, str, list[tuple[date, float]]]] = []
    for marker_name, colour in (("ldh", "#6a3d9a"), ("indirect_bilirubin", "#b15928")):
        uln_default = cfg.analytes[marker_name].default_upper_limit or 1.0
        pts = sorted(
            (m.span[0], m.value / (m.high or uln_default))
            for m in p.inputs.labs.get(marker_name, [])
            if m.value is not None and x_min <= m.span[0] <= x_max
        )
        drawn.append((marker_name, colour, pts))
    ax.y_max = max([1.5] + [v * 1.15 for _, _, pts in drawn for _, v in pts])
    y1 = ax.y(1.0)
    _el(
        root,
        "line",
        x1=_LEFT,
        y1=y1,
        x2=_PLOT_RIGHT,
        y2=y1,
        stroke="#1b7837",
        stroke_dasharray="7 4",
        stroke_width=1.4,
        class_="upper-limit",
    )
    legend.add("upper limit of normal (\u00d7 1.0)", "line", "#1b7837", "7 4")
    _el(
        root,
        "text",
        "\u00d7 upper limit",
        x=14,
        y=ax.top + ax.height / 2,
        font_size=11,
        text_anchor="middle",
        transform=f"rotate(-90 14 {ax.top + ax.height / 2})",
    )
    for value in (0.0, 1.0):
        _el(
            root,
            "text",
            f"{value:g}",
            x=_LEFT - 5,
            y=ax.y(value) + 4,
            text_anchor="end",
            font_size=11,
        )
    for marker_name, colour, pts in drawn:
        if not pts:
            continue
        unit = display_unit(cfg.analytes[marker_name].unit)
        uln = cfg.analytes[marker_name].default_upper_limit or 1.0
        _el(
            root,
            "polyline",
            points=" ".join(f"{ax.x(d)},{ax.y(v)}" for d, v in pts),
            fill="none",
            stroke=colour,
            stroke_width=1.2,
        )
        for d, v in pts:
            _el(root, "rect", x=ax.x(d) - 3, y=ax.y(v) - 3, width=6, height=6, fill=colour)
        legend.add(
            f"{label(marker_name)} \u00f7 upper limit of the lab's range (else {uln:g} {unit})",
            "dot",
            colour,
        )
    for a in p.assessments:
        for marker_name, pick in a.markers.items():
            if pick is None or pick.value is None:
                continue
            uln = cfg.analytes[marker_name].default_upper_limit or 1.0
            limit = pick.measurement.high or uln
            colour = RESPONSE_COLOUR[a.response]
            _el(
                root,
                "circle",
                cx=ax.x(pick.date),
                cy=ax.y(pick.value / limit),
                r=6,
                fill="none",
                stroke=colour,
                stroke_width=2,
            )
            legend.add(f"marker scored, {a.response}", "dot", colour, hollow=True)
    if not any(pts for _, _, pts in drawn):
        _el(
            root,
            "text",
            "no LDH or indirect bilirubin results (a CR needs both within the upper limit)",
            x=(_LEFT + _PLOT_RIGHT) / 2,
            y=ax.top + ax.height * 0.7,
            text_anchor="middle",
            font_size=11,
            fill="#333333",
        )


def _transfusion_lane(
    root: ET.Element,
    ax: _Axes,
    p: PatientScore,
    cfg: ScoringConfig,
    *,
    x_min: date,
    x_max: date,
    legend: _Legend,
) -> None:
    """Transfusions and the transfusion-free windows in their own lane (no y scale)."""
    days = cfg.transfusion.free_days
    free = timedelta(days=days)
    _el(
        root,
        "text",
        "transfusions",
        x=14,
        y=ax.top + ax.height / 2,
        font_size=11,
        text_anchor="middle",
        transform=f"rotate(-90 14 {ax.top + ax.height / 2})",
        class_="lane-label",
    )
    for a in p.assessments:
        if a.pick is None:
            continue
        colour = RESPONSE_COLOUR[a.response]
        x0, x1 = ax.x(max(a.pick.date - free, x_min)), ax.x(a.pick.date)
        _el(
            root,
            "rect",
            x=x0,
            y=ax.top + 8,
            width=max(x1 - x0, 1),
            height=10,
            fill=colour,
            fill_opacity=0.5,
            class_="free-window",
        )
        legend.add(
            f"transfusion-free window checked ({days} days before the value)", "band", colour
        )
    y = ax.top + ax.height * 0.7
    for e in p.inputs.transfusions:
        first, last_day = max(e.span[0], x_min), min(e.span[1], x_max)
        if first > last_day:
            continue
        x = ax.x(first)
        if not e.counted:
            # Not done (or not counted): a hollow tick with its words, never a filled bar.
            what = "not done" if e.status == "not-done" else f"not counted ({e.status})"
            group = _el(root, "g", class_="transfusion not-counted", data_status=e.status)
            _el(
                group,
                "path",
                d=f"M{x} {y} l-5 -9 h10 z",
                fill="white",
                stroke="#555555",
                stroke_width=1.5,
            )
            _el(group, "text", what, x=x + 7, y=y - 1, font_size=10, fill="#555555")
            legend.add(f"red-cell transfusion {what} (hollow)", "dot", "#555555", hollow=True)
        elif first == last_day:
            _el(
                root,
                "path",
                d=f"M{x} {y} l-5 -9 h10 z",
                fill="#b2182b",
                class_="transfusion counted",
            )
            legend.add("red-cell transfusion (counted)", "dot", "#b2182b")
        else:
            x1 = ax.x(last_day + timedelta(days=1))
            _el(
                root,
                "line",
                x1=x,
                y1=y - 4,
                x2=x1,
                y2=y - 4,
                stroke="#b2182b",
                stroke_width=3,
                class_="transfusion counted partial",
            )
            legend.add(
                "red-cell transfusion (counted, partial date: the whole interval)",
                "line",
                "#b2182b",
            )
    if not p.inputs.transfusions:
        _el(
            root,
            "text",
            "no transfusion records",
            x=(_LEFT + _PLOT_RIGHT) / 2,
            y=y,
            text_anchor="middle",
            font_size=11,
            fill="#555555",
        )


_OPS = {">=": "\u2265", "<=": "\u2264"}


def _op(op: str) -> str:
    return _OPS.get(op, op)


def _render(job: tuple[PatientScore, ScoringConfig, tuple[int, ...]]) -> str:
    return svg(*job)


def render_all(
    cohort: CohortScore, citations: dict[str, tuple[int, ...]] | None = None, workers: int = 0
) -> dict[str, str]:
    """Every scored patient's plot as SVG text, by patient key; drawn once, on all cores for a
    large cohort (`workers` 0 = one per CPU, 1 = in this process)."""
    cites = citations or {}
    jobs = [(p, cohort.config, cites.get(p.disease, ())) for p in cohort.patients]
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) < _PARALLEL_FROM:
        drawn = [_render(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            drawn = list(pool.map(_render, jobs, chunksize=max(len(jobs) // (workers * 4), 1)))
    return {p.key: text for p, text in zip(cohort.patients, drawn, strict=True)}


def write_plots(cohort: CohortScore, drawn: dict[str, str], out_dir: str | Path) -> list[Path]:
    """Write one SVG per scored patient into `out_dir` (created); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    written = []
    for p in sorted(cohort.patients, key=lambda s: s.key):
        path = out / plot_filename(short_label(p.inputs), taken)
        path.write_text(drawn[p.key], encoding="utf-8")
        written.append(path)
    return written


def plot(cohort: CohortScore, out_dir: str | Path) -> list[Path]:
    """Draw and write one SVG per scored patient into `out_dir`."""
    return write_plots(cohort, render_all(cohort), out_dir)
