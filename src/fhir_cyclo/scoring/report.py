"""Scoring output: the --json document, the Table 2 style cohort summary, and per-patient plots."""

from __future__ import annotations

import hashlib
import re
import textwrap
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from fhir_cyclo.scoring.config import Criteria, ScoringConfig, Test
from fhir_cyclo.scoring.dates import add_months
from fhir_cyclo.scoring.rules import CohortScore, PatientScore

_LABEL = {"platelets": "PLT", "hemoglobin": "Hb", "ldh": "LDH", "indirect_bilirubin": "ind. bili"}
_RESPONSE_COLOUR = {"CR": "#1b7837", "PR": "#e08214", "NR": "#b2182b", "NE": "#777777"}


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day is not None else None


def to_json(cohort: CohortScore) -> dict[str, Any]:
    """The fixed --json shape: {"patients": [...]}, patients sorted by key."""
    patients = []
    for p in sorted(cohort.patients, key=lambda s: s.key):
        baseline = None
        if p.baseline is not None:
            baseline = {"date": _iso(p.baseline.date), "value": p.baseline.value, "unit": p.unit}
        assessments = []
        for a in p.assessments:
            value = a.pick.value if a.pick else None
            assessment: dict[str, Any] = {
                "month": a.month,
                "response": a.response,
                "date": _iso(a.date),
                "value": value,
                "unit": p.unit if value is not None else None,
            }
            if a.missing_markers:
                # Why a better response was out of reach: markers without data in the window.
                assessment["missing_markers"] = list(a.missing_markers)
            assessments.append(assessment)
        patients.append(
            {
                "patient": p.key,
                "disease": p.disease,
                "cyclosporine_start": p.start.isoformat(),
                "baseline": baseline,
                "assessments": assessments,
            }
        )
    return {"patients": patients, "accounting": cohort.accounting.to_json()}


# --- table -------------------------------------------------------------------------------------


def _percent(n: int, total: int) -> str:
    # Half up, in integers: the paper prints whole percents and 12/29 must read 41, 1/8 read 13.
    return "-" if total == 0 else str((200 * n + total) // (2 * total))


def _describe(test: Test, criteria: Criteria, cfg: ScoringConfig) -> str:
    label = _LABEL.get(criteria.analyte, criteria.analyte)
    if test.kind == "value":
        return f"{label} {test.op} {test.threshold:g}"
    if test.kind == "ratio_to_baseline":
        return f"{label} {test.op} {test.threshold:g} x baseline"
    if test.kind == "rise_from_baseline":
        return f"{label} - baseline {test.op} {test.threshold:g}"
    if test.kind == "marker_within_upper_limit":
        uln = cfg.analytes[test.analyte].default_upper_limit
        unit = cfg.analytes[test.analyte].unit
        name = _LABEL.get(test.analyte, test.analyte)
        return f"{name} <= upper limit (referenceRange.high, else {uln:g} {unit})"
    if test.kind == "within_normal_range":
        low = cfg.normal_low
        return (
            f"{label} >= lower limit of normal (referenceRange.low, else female "
            f"{low['female']:g} / male {low['male']:g} g/dL)"
        )
    return f"no counted red-cell transfusion in the {cfg.transfusion.free_days} days before"


def criteria_text(cfg: ScoringConfig, diseases: list[str]) -> list[str]:
    """Human-readable criteria with their citations, for the table and the README."""
    lines = ["Criteria"]
    cited: list[str] = [cfg.timepoint_source]
    for disease in diseases:
        criteria = cfg.criteria[disease]
        unit = cfg.analytes[criteria.analyte].unit
        parts = []
        for rule in criteria.rules:
            joiner = " and " if rule.mode == "all" else " or "
            parts.append(
                f"{rule.response} if "
                + joiner.join(_describe(t, criteria, cfg) for t in rule.tests)
            )
        lines.append(
            f"  {disease} ({criteria.analyte}, {unit}): " + "; ".join(parts) + "; else NR."
        )
        lines.append("    [" + "; ".join(criteria.sources) + "]")
        cited += criteria.sources
        if disease == "PRCA":
            cited += [cfg.normal_low_source, cfg.transfusion.source]
            lines.append(
                f"    lower limit of normal [{cfg.normal_low_source}]; transfusion-free window "
                f"{cfg.transfusion.free_days} days [{cfg.transfusion.source}]"
            )
    lines.append(
        f"  Baseline: latest value in [start - {cfg.baseline_days} d, start]; timepoints: start + "
        f"{'/'.join(map(str, cfg.months))} months +/- {cfg.window_days} d, value closest to the "
        f"target (later on a tie); no baseline or no value -> NE [{cfg.timepoint_source}]"
    )
    lines.append("Sources")
    for key in dict.fromkeys(cited):
        lines.append(f"  [{key}] {cfg.cite(key)}")
    return lines


def to_table(cohort: CohortScore) -> str:
    """Cohort summary laid out like Table 2 of the cohort paper, with criteria and citations."""
    cfg = cohort.config
    diseases = [d for d in ("ITP", "AIHA", "PRCA") if any(p.disease == d for p in cohort.patients)]
    header = ["Month"]
    for disease in diseases:
        total = sum(1 for p in cohort.patients if p.disease == disease)
        header.append(f"{disease} (N = {total})")
    rows = [header]
    for month in cfg.months:
        row = [str(month)]
        for disease in diseases:
            responses = [
                a.response
                for p in cohort.patients
                if p.disease == disease
                for a in p.assessments
                if a.month == month
            ]
            evaluable = sum(1 for r in responses if r != "NE")
            cr, pr = responses.count("CR"), responses.count("PR")
            row.append(
                f"CR {cr}/{evaluable} ({_percent(cr, evaluable)})"
                f" - PR {pr}/{evaluable} ({_percent(pr, evaluable)})"
            )
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "Hematologic response to cyclosporine, N (%) CR - PR (layout of Fattizzo et al. 2022, "
        "Table 2)",
        "N in a cell = evaluable patients (response not NE); N in the header = patients scored",
        "",
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    if not diseases:
        lines.append("(no patient could be scored)")
    lines.append("")
    lines += criteria_text(cfg, diseases)
    return "\n".join(lines) + "\n"


# --- plots -------------------------------------------------------------------------------------


def plot_filename(key: str, taken: set[str]) -> str:
    """A safe, unique PNG name for a patient key (a hash suffix when sanitising collides)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._")[:100] or "patient"
    name = f"{stem}.png"
    if name.lower() in taken:
        name = f"{stem}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.png"  # noqa: S324 - a name, not security
    taken.add(name.lower())
    return name


def _plot_patient(p: PatientScore, cfg: ScoringConfig, path: Path) -> None:
    # Imported here: matplotlib costs a noticeable start-up time and only plotting needs it.
    # The object API with an Agg canvas leaves pyplot's global backend state alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.transforms import blended_transform_factory

    criteria = cfg.criteria[p.disease]
    analyte = criteria.analyte
    label = _LABEL.get(analyte, analyte)
    x_min = p.start - timedelta(days=cfg.baseline_days + 30)
    x_max = add_months(p.start, max(cfg.months)) + timedelta(days=cfg.window_days + 30)
    markers_panel = p.disease == "AIHA"
    fig = Figure(figsize=(10, 6.5 if markers_panel else 5), layout="constrained")
    FigureCanvasAgg(fig)
    if markers_panel:
        ax, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1.4))
    else:
        ax, ax2 = fig.subplots(1, 1), None

    # Windows first, so the data draws on top.
    base_lo = p.start - timedelta(days=cfg.baseline_days)
    ax.axvspan(base_lo, p.start, color="#9ecae1", alpha=0.35, lw=0, label="baseline window")
    top = blended_transform_factory(ax.transData, ax.transAxes)
    for a in p.assessments:
        colour = _RESPONSE_COLOUR[a.response]
        for axis in (ax, ax2):
            if axis is not None:
                axis.axvspan(a.window[0], a.window[1], color=colour, alpha=0.12, lw=0)
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
    ax.axvline(p.start, color="black", lw=1.2, label=f"cyclosporine start {p.start}")
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
    normal_low = cfg.normal_low["female" if p.inputs.gender == "female" else "male"]
    levels: list[float] = []  # everything drawn on the y axis, for the limits
    points: list[tuple[date, float]] = []
    partial_label = f"{label}, partial date (its interval)"
    normal_label = f"{label} normal, no value (interpretation N)"
    for m in series:
        first, last = max(m.span[0], x_min), min(m.span[1], x_max)
        if first > last:
            continue
        level = m.value if m.value is not None else (m.low or normal_low)
        levels.append(level)
        if m.value is None or m.partial:
            # An interval, not a point: draw it as one so no day inside looks preferred.
            colour = "#1b7837" if m.value is None else "#4d4d4d"
            ax.plot(
                [first, last],
                [level, level],
                color=colour,
                lw=2.5,
                alpha=0.7,
                marker="|",
                ms=10,
                label=normal_label if m.value is None else partial_label,
            )
        else:
            points.append((m.span[0], level))
    points.sort()
    ax.plot(
        [x for x, _ in points],
        [y for _, y in points],
        marker="o",
        ms=4,
        color="#4d4d4d",
        lw=1,
        label=f"{label} ({p.unit})",
    )
    picks = [(a.pick, _RESPONSE_COLOUR[a.response]) for a in p.assessments if a.pick]
    if p.baseline is not None:
        picks.append((p.baseline, "#2171b5"))
    for pick, colour in picks:
        y = pick.value if pick.value is not None else (pick.measurement.low or normal_low)
        ax.plot([pick.date], [y], marker="o", ms=11, mfc="none", mec=colour, mew=2, ls="")

    # Threshold lines from the rules themselves, so the plot can never disagree with the table.
    base = p.baseline.value if p.baseline is not None else None
    for rule in criteria.rules:
        style = "--" if rule.response == "CR" else "-."
        for t in rule.tests:
            line_at: float | None = None
            text = ""
            if t.kind == "value":
                line_at, text = t.threshold, f"{rule.response}: {label} {t.op} {t.threshold:g}"
            elif t.kind == "ratio_to_baseline" and base is not None:
                line_at, text = t.threshold * base, f"{rule.response}: {t.threshold:g} x baseline"
            elif t.kind == "rise_from_baseline" and base is not None:
                line_at, text = base + t.threshold, f"{rule.response}: baseline + {t.threshold:g}"
            elif t.kind == "within_normal_range":
                line_at = next((a.normal_low for a in p.assessments if a.normal_low), normal_low)
                text = f"{rule.response}: lower limit of normal {line_at:g}"
            if line_at is not None:
                levels.append(line_at)
                ax.axhline(
                    line_at, color=_RESPONSE_COLOUR[rule.response], ls=style, lw=1, label=text
                )
    counted = [e for e in p.inputs.transfusions if e.counted]
    skipped = [e for e in p.inputs.transfusions if not e.counted]
    bottom = blended_transform_factory(ax.transData, ax.transAxes)
    for events, marker, colour, text in (
        (counted, "v", "#b2182b", "RBC transfusion"),
        (skipped, "x", "#777777", "transfusion not done / not counted"),
    ):
        days = [max(e.span[0], x_min) for e in events if e.span[0] <= x_max]
        if days:
            ax.plot(
                days,
                [0.03] * len(days),
                marker=marker,
                ls="",
                color=colour,
                ms=8,
                transform=bottom,
                label=text,
            )
    if any(t.kind == "transfusion_free" for rule in criteria.rules for t in rule.tests):
        free = timedelta(days=cfg.transfusion.free_days)
        for a in p.assessments:
            if a.pick is not None:
                ax.plot(
                    [a.pick.date - free, a.pick.date],
                    [0.09, 0.09],
                    color=_RESPONSE_COLOUR[a.response],
                    lw=3,
                    alpha=0.5,
                    solid_capstyle="butt",
                    transform=bottom,
                    label=f"transfusion-free window ({cfg.transfusion.free_days} d)",
                )

    ax.set_xlim(x_min, x_max)
    ax.set_ylabel(f"{label} ({p.unit})")
    # Headroom above the highest line for the response labels.
    ax.set_ylim(0, max(levels, default=1.0) * 1.3)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))  # one entry per label
    ax.legend(
        unique.values(),
        unique.keys(),
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        fontsize=8,
        frameon=False,
    )
    # Two lines: identifier keys (system|value) are long enough to be clipped on one.
    ax.set_title(f"{p.key}\n{p.disease}, cyclosporine from {p.start}", fontsize=10)

    if ax2 is not None:
        ratios = [1.5]  # keeps the limit line off the top edge when there is no data
        for marker_name, colour in (("ldh", "#6a3d9a"), ("indirect_bilirubin", "#b15928")):
            uln_default = cfg.analytes[marker_name].default_upper_limit or 1.0
            pts = sorted(
                (m.span[0], m.value / (m.high or uln_default))
                for m in p.inputs.labs.get(marker_name, [])
                if m.value is not None and x_min <= m.span[0] <= x_max
            )
            ratios += [v for _, v in pts]
            if pts:
                ax2.plot(
                    [d for d, _ in pts],
                    [v for _, v in pts],
                    marker="s",
                    ms=4,
                    color=colour,
                    lw=1,
                    label=f"{_LABEL[marker_name]} / upper limit",
                )
        ax2.axhline(1.0, color="#1b7837", ls="--", lw=1, label="upper limit")
        ax2.set_ylabel("x upper limit")
        ax2.set_ylim(0, max(ratios) * 1.15)
        ax2.grid(alpha=0.3)
        ax2.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    source = "; ".join(cfg.cite(k) for k in criteria.sources)
    fig.supxlabel(f"Criteria: {textwrap.shorten(source, 160)}", fontsize=7, color="#555555")
    fig.savefig(path, dpi=100)


def plot(cohort: CohortScore, out_dir: str | Path) -> list[Path]:
    """Write one PNG per scored patient into `out_dir` (created); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    written = []
    for p in sorted(cohort.patients, key=lambda s: s.key):
        path = out / plot_filename(p.key, taken)
        _plot_patient(p, cohort.config, path)
        written.append(path)
    return written
