"""Per-patient course plots (matplotlib, no display): the values, the windows, the thresholds."""

from __future__ import annotations

import hashlib
import io
import re
import textwrap
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from fhir_cyclo.core.scoring_config import ScoringConfig
from fhir_cyclo.report.criteria import cited_sources
from fhir_cyclo.report.document import short_label
from fhir_cyclo.scoring.dates import add_months
from fhir_cyclo.scoring.rules import CohortScore, PatientScore, display_unit, label

RESPONSE_COLOUR = {"CR": "#1b7837", "PR": "#e08214", "NR": "#b2182b", "NE": "#777777"}
# Threshold lines: a colour per response and a dash pattern per test within a rule, so two lines
# that nearly coincide (AIHA "Hb > 10" and "baseline + 2" at 9.9) still read as two.
_LINE_STYLES = {
    "CR": (("#1b7837", (0, (6, 3))), ("#4dac26", (0, (2, 2)))),
    "PR": (("#e08214", (0, (8, 2, 2, 2))), ("#7b3294", (0, (2, 1.5)))),
}
_BASELINE_COLOUR = "#2171b5"
_DPI = 110


def plot_filename(key: str, taken: set[str]) -> str:
    """A safe, unique PNG name for a patient label (a hash suffix when sanitising collides)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")[:100] or "patient"
    name = f"{stem}.png"
    if name.lower() in taken:
        name = f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.png"  # noqa: S324 - a name, not security
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


def _threshold_lines(p: PatientScore, cfg: ScoringConfig) -> list[tuple[float, str, Any, Any]]:
    """(level, legend text with its value, colour, dash) for every threshold of the rules."""
    criteria = cfg.criteria[p.disease]
    name, unit = label(criteria.analyte), display_unit(p.unit)
    base = p.baseline.value if p.baseline is not None else None
    lines = []
    for rule in criteria.rules:
        styles = iter(_LINE_STYLES[rule.response])
        for t in rule.tests:
            text = ""
            level: float | None = None
            if t.kind == "value":
                level, text = t.threshold, f"{rule.response}: {name} {t.op} {t.threshold:g} {unit}"
            elif t.kind == "ratio_to_baseline" and base is not None:
                level = round(t.threshold * base, 4)
                text = (
                    f"{rule.response}: {name} {t.op} {t.threshold:g} x baseline = {level:g} {unit}"
                )
            elif t.kind == "rise_from_baseline" and base is not None:
                level = round(base + t.threshold, 4)
                text = (
                    f"{rule.response}: rise {t.op} {t.threshold:g} from baseline = {level:g} {unit}"
                )
            elif t.kind == "within_normal_range":
                level = next((a.normal_low for a in p.assessments if a.normal_low), None)
                if level is None:
                    gender = p.inputs.gender if p.inputs.gender in ("female", "male") else "other"
                    level = cfg.normal_low[gender]
                text = f"{rule.response}: {name} >= lower limit of normal {level:g} {unit}"
            if level is not None:
                colour, dash = next(styles)
                lines.append((level, text, colour, dash))
    return lines


def figure(p: PatientScore, cfg: ScoringConfig) -> Any:
    """The course plot of one scored patient as a matplotlib Figure (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.transforms import blended_transform_factory

    criteria = cfg.criteria[p.disease]
    analyte = criteria.analyte
    name, unit = label(analyte), display_unit(p.unit)
    x_min, x_max = _x_range(p, cfg)
    markers_panel = p.disease == "AIHA"
    transfusion_lane = p.disease == "PRCA" or bool(p.inputs.transfusions)
    rows: list[str] = ["main"]
    ratios: list[float] = [3.0]
    if markers_panel:
        rows.append("markers")
        ratios.append(1.4)
    if transfusion_lane:
        rows.append("transfusions")
        ratios.append(0.7)
    sources = "; ".join(f"[{key}] {text}" for key, text in cited_sources(cfg, [p.disease]).items())
    footer = textwrap.wrap(f"Criteria: {sources}", 165)
    # The citations are printed in full, so the figure grows with them rather than the plot
    # shrinking.
    height = 4.4 + 1.9 * markers_panel + 1.0 * transfusion_lane + 0.14 * len(footer)
    fig = Figure(figsize=(10.5, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 1, sharex=True, height_ratios=ratios, squeeze=False)[:, 0]
    panel = dict(zip(rows, axes, strict=True))
    ax = panel["main"]

    # Windows first, so the data draws on top.
    base_lo = p.start - timedelta(days=cfg.baseline_days)
    for axis in axes:
        axis.axvspan(base_lo, p.start, color="#9ecae1", alpha=0.35, lw=0)
        axis.axvline(p.start, color="black", lw=1.2)
        for a in p.assessments:
            axis.axvspan(a.window[0], a.window[1], color=RESPONSE_COLOUR[a.response], alpha=0.12)
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for a in p.assessments:
        colour = RESPONSE_COLOUR[a.response]
        ax.axvline(a.target, color=colour, lw=0.8, ls=":")
        ax.text(
            a.target,
            0.97,
            f"M{a.month}: {a.response}",
            transform=top,
            ha="center",
            va="top",
            fontsize=10,
            fontweight="bold",
            color=colour,
        )
    handles: list[Any] = [
        ax.fill_between([], [], color="#9ecae1", alpha=0.35, lw=0, label="baseline window"),
        Line2D([], [], color="black", lw=1.2, label=f"cyclosporine start {p.start}"),
        ax.fill_between(
            [],
            [],
            color="#999999",
            alpha=0.25,
            lw=0,
            label=f"timepoint window +/- {cfg.window_days} d (tint = result)",
        ),
    ]
    if p.baseline is None:
        ax.text(
            base_lo + (p.start - base_lo) / 2,
            0.5,
            "no baseline: every timepoint NE",
            transform=top,
            rotation=90,
            ha="center",
            va="center",
            fontsize=9,
            color="#555555",
        )

    series = p.inputs.labs.get(analyte, [])
    levels: list[float] = []  # everything drawn on the y axis, for the limits
    points: list[tuple[date, float]] = []
    partial: list[tuple[date, date, float]] = []
    normal_bands: list[tuple[date, date, float]] = []
    lines = _threshold_lines(p, cfg)
    normal_low = next((level for level, text, *_ in lines if "lower limit" in text), None)
    for m in series:
        first, last = max(m.span[0], x_min), min(m.span[1], x_max)
        if first > last:
            continue
        if m.value is None:
            # "Normal" without a number: a band over the normal range, never a made-up point.
            low = m.low if m.low is not None else normal_low
            if low is not None:
                normal_bands.append((first, last + timedelta(days=1), low))
                levels.append(low)
        elif m.partial:
            partial.append((first, last + timedelta(days=1), m.value))
            levels.append(m.value)
        else:
            points.append((m.span[0], m.value))
            levels.append(m.value)
    points.sort()
    if points:
        handles += ax.plot(
            [x for x, _ in points],
            [y for _, y in points],
            marker="o",
            ms=4,
            color="#4d4d4d",
            lw=1,
            label=f"{name} ({unit})",
        )
    for first, last, value in partial:
        handles += ax.plot(
            [first, last],
            [value, value],
            color="#4d4d4d",
            lw=2.5,
            alpha=0.7,
            marker="|",
            ms=10,
            label=f"{name}, partial date (the whole interval it may be)",
        )
    if not series:
        ax.text(
            0.5,
            0.5,
            f"no {name} results",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=11,
            color="#555555",
        )

    for level, text, colour, dash in lines:
        levels.append(level)
        handles.append(ax.axhline(level, color=colour, ls=dash, lw=1.4, label=text))

    y_top = max(levels, default=1.0) * 1.3
    band_top = y_top * 0.86  # below the response labels at the top
    for first, last, low in normal_bands:
        handles.append(
            ax.fill_between(
                [first, last],
                [low, low],
                [band_top, band_top],
                color="#1b7837",
                alpha=0.18,
                hatch="//",
                lw=0,
                label=f"{name} in normal range, no value (interpretation N)",
            )
        )

    # Rings: the values the result was decided on (baseline in blue, timepoints by response).
    if p.baseline is not None and p.baseline.value is not None:
        handles += ax.plot(
            [p.baseline.date],
            [p.baseline.value],
            marker="o",
            ms=12,
            mfc="none",
            mec=_BASELINE_COLOUR,
            mew=2,
            ls="",
            label=f"baseline used ({p.baseline.value:g} on {p.baseline.date})",
        )
    for a in p.assessments:
        if a.pick is None:
            continue
        colour = RESPONSE_COLOUR[a.response]
        if a.pick.value is None:
            low = a.pick.measurement.low or normal_low or 0.0
            y, marker = (low + band_top) / 2, "D"
            text = f"value scored, {a.response} (normal, no value)"
        else:
            y, marker, text = a.pick.value, "o", f"value scored, {a.response}"
        handles += ax.plot(
            [a.pick.date],
            [y],
            marker=marker,
            ms=12,
            mfc="none",
            mec=colour,
            mew=2,
            ls="",
            label=text,
        )

    ax.set_xlim(x_min, x_max)
    ax.set_ylim(0, y_top)
    ax.set_ylabel(f"{name} ({unit})", fontsize=10)
    ax.grid(alpha=0.3)
    _side_legend(ax, {h.get_label(): h for h in handles})  # one legend entry per label
    ax.set_title(
        f"{short_label(p.inputs)} - {p.disease}, {name} ({unit}), cyclosporine from {p.start}",
        fontsize=11,
        loc="left",
    )
    if "markers" in panel:
        _markers_panel(panel["markers"], p, cfg, x_min, x_max)
    if "transfusions" in panel:
        _transfusion_lane(panel["transfusions"], p, cfg, x_min, x_max)

    fig.supxlabel(
        "\n".join(footer),
        fontsize=7.5,
        color="#555555",
        ha="left",
        x=0.01,
    )
    return fig


def _markers_panel(ax2: Any, p: PatientScore, cfg: ScoringConfig, x_min: date, x_max: date) -> None:
    """AIHA: LDH and indirect bilirubin as multiples of their upper limit, the limit at 1."""
    ratios = [1.5]  # keeps the limit line off the top edge
    drawn = False
    for marker_name, colour in (("ldh", "#6a3d9a"), ("indirect_bilirubin", "#b15928")):
        analyte = cfg.analytes[marker_name]
        uln_default = analyte.default_upper_limit or 1.0
        pts = sorted(
            (m.span[0], m.value / (m.high or uln_default))
            for m in p.inputs.labs.get(marker_name, [])
            if m.value is not None and x_min <= m.span[0] <= x_max
        )
        ratios += [v for _, v in pts]
        if pts:
            drawn = True
            ax2.plot(
                [d for d, _ in pts],
                [v for _, v in pts],
                marker="s",
                ms=4,
                color=colour,
                lw=1,
                label=f"{label(marker_name)} / upper limit (else {uln_default:g} {analyte.unit})",
            )
        for a in p.assessments:
            pick = a.markers.get(marker_name)
            if pick is None or pick.value is None:
                continue
            response = a.response
            limit = pick.measurement.high or uln_default
            ax2.plot(
                [pick.date],
                [pick.value / limit],
                marker="o",
                ms=11,
                mfc="none",
                mec=RESPONSE_COLOUR[response],
                mew=2,
                ls="",
                label=f"marker scored, {response}",
            )
    ax2.axhline(1.0, color="#1b7837", ls=(0, (6, 3)), lw=1.2, label="upper limit (x 1.0)")
    if not drawn:
        ax2.text(
            0.5,
            0.3,
            "no LDH or indirect bilirubin results (a CR needs both within the upper limit)",
            transform=ax2.transAxes,
            ha="center",
            va="center",
            fontsize=10,
            color="#333333",
            bbox={"facecolor": "white", "edgecolor": "#bbbbbb", "boxstyle": "round"},
        )
    ax2.set_ylabel("x upper limit", fontsize=9)
    ax2.set_ylim(0, max(ratios) * 1.15)
    ax2.grid(alpha=0.3)
    handles, labels = ax2.get_legend_handles_labels()
    _side_legend(ax2, dict(zip(labels, handles, strict=True)))


def _side_legend(ax: Any, by_label: dict[str, Any]) -> None:
    """The legend right of the axes, outside the data, one entry per label."""
    ax.legend(
        by_label.values(),
        by_label.keys(),
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        fontsize=9,
        frameon=False,
    )


def _transfusion_lane(
    lane: Any, p: PatientScore, cfg: ScoringConfig, x_min: date, x_max: date
) -> None:
    """Transfusions and the transfusion-free windows in their own lane (no y scale)."""
    free = timedelta(days=cfg.transfusion.free_days)
    for a in p.assessments:
        if a.pick is not None:
            lane.plot(
                [a.pick.date - free, a.pick.date],
                [0.65, 0.65],
                color=RESPONSE_COLOUR[a.response],
                lw=6,
                alpha=0.6,
                solid_capstyle="butt",
                label=f"transfusion-free window checked ({cfg.transfusion.free_days} d)",
            )
    counted = [e for e in p.inputs.transfusions if e.counted]
    skipped = [e for e in p.inputs.transfusions if not e.counted]
    for events, marker, colour, text in (
        (counted, "v", "#b2182b", "RBC transfusion (counted)"),
        (skipped, "x", "#555555", "RBC transfusion not done / not counted"),
    ):
        for e in events:
            first, last = max(e.span[0], x_min), min(e.span[1], x_max)
            if first > last:
                continue
            if first == last:
                lane.plot([first], [0.25], marker=marker, ls="", color=colour, ms=9, label=text)
            else:
                lane.plot(
                    [first, last + timedelta(days=1)],
                    [0.25, 0.25],
                    color=colour,
                    lw=2,
                    marker="|",
                    ms=9,
                    label=text + " (partial date)",
                )
    if not p.inputs.transfusions:
        lane.text(
            0.5,
            0.25,
            "no transfusion records",
            transform=lane.transAxes,
            ha="center",
            va="center",
            fontsize=8,
            color="#555555",
        )
    lane.set_ylim(0, 1)
    lane.set_yticks([])
    lane.set_ylabel("transfusions", fontsize=9)
    handles, labels = lane.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    if unique:
        lane.legend(
            unique.values(),
            unique.keys(),
            loc="upper left",
            bbox_to_anchor=(1.01, 1),
            fontsize=9,
            frameon=False,
        )


def png_bytes(p: PatientScore, cfg: ScoringConfig, dpi: int = _DPI) -> bytes:
    """The course plot as PNG bytes (for embedding)."""
    buffer = io.BytesIO()
    figure(p, cfg).savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def plot(cohort: CohortScore, out_dir: str | Path) -> list[Path]:
    """Write one PNG per scored patient into `out_dir` (created); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    written = []
    for p in sorted(cohort.patients, key=lambda s: s.key):
        path = out / plot_filename(short_label(p.inputs), taken)
        path.write_bytes(png_bytes(p, cohort.config))
        written.append(path)
    return written
