"""The plots explain themselves: labels, units, distinct thresholds with values, honest marks."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from matplotlib.collections import PolyCollection
from matplotlib.dates import num2date

from fhir_cyclo.readers.fhir import read_paths
from fhir_cyclo.report.plots import figure
from fhir_cyclo.scoring.extract import extract
from fhir_cyclo.scoring.rules import CohortScore, PatientScore, score
from tests.conftest import FIXTURES

DATA = Path(__file__).parent / "scoring_data"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> CohortScore:
    from fhir_cyclo.cli.app import main

    out = tmp_path_factory.mktemp("bundles")
    assert main(["export", str(FIXTURES), "--out", str(out)]) == 0
    return score(extract(read_paths([out])))


def patient(cohort: CohortScore, label: str) -> PatientScore:
    return next(p for p in cohort.patients if p.key.endswith("|" + label))


def legend_texts(ax: Any) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_title_and_unit_are_readable(cohort: CohortScore) -> None:
    fig = figure(patient(cohort, "itp-04"), cohort.config)
    ax = fig.axes[0]
    assert ax.get_title(loc="left").startswith("itp-04 - ITP")
    assert "/fhir/sid/" not in ax.get_title(loc="left")
    assert ax.get_ylabel() == "PLT (\u00d710\u2079/L)"
    assert "10*9/L" not in " ".join(legend_texts(ax))


def test_threshold_lines_distinct_with_values(cohort: CohortScore) -> None:
    fig = figure(patient(cohort, "aiha-05"), cohort.config)
    ax = fig.axes[0]
    texts = legend_texts(ax)
    assert "CR: Hb > 12 g/dL" in texts
    assert "PR: Hb > 10 g/dL" in texts
    assert "PR: rise >= 2 from baseline = 9.9 g/dL" in texts  # the value, not only the rule
    lines = {line.get_label(): line for line in ax.get_lines()}
    pr_value, pr_rise = lines["PR: Hb > 10 g/dL"], lines["PR: rise >= 2 from baseline = 9.9 g/dL"]
    cr = lines["CR: Hb > 12 g/dL"]
    # Three lines, three colours (they were one orange style for both PR lines before).
    assert len({pr_value.get_color(), pr_rise.get_color(), cr.get_color()}) == 3


def test_every_marker_in_the_legend(cohort: CohortScore) -> None:
    fig = figure(patient(cohort, "itp-04"), cohort.config)
    texts = legend_texts(fig.axes[0])
    assert any(t.startswith("baseline used (40") for t in texts)
    for response in ("NR", "PR", "CR"):
        assert f"value scored, {response}" in texts


def test_valueless_normal_hb_is_a_band_and_transfusions_have_a_lane(cohort: CohortScore) -> None:
    p = patient(cohort, "isshiki-thymoma-prca")
    fig = figure(p, cohort.config)
    main, lane = fig.axes[0], fig.axes[1]
    assert lane.get_ylabel() == "transfusions"
    # No line of the Hb axis sits exactly on the lower limit at a single date (a made-up point).
    for line in main.get_lines():
        ys = list(line.get_ydata())
        xs = list(line.get_xdata())
        if len(xs) == 1 and ys == [12.0]:
            raise AssertionError(f"a point drawn at the lower limit: {line.get_label()}")
    bands = [
        c
        for c in main.collections
        if isinstance(c, PolyCollection) and "normal range" in str(c.get_label())
    ]
    assert len(bands) == 1
    assert "transfusion-free window checked (56 d)" in legend_texts(lane)
    assert "transfusion-free window checked (56 d)" not in legend_texts(main)


def test_year_only_baseline_interval_not_clipped(cohort: CohortScore) -> None:
    fig = figure(patient(cohort, "isshiki-thymoma-prca"), cohort.config)
    left, right = (num2date(x).date() for x in fig.axes[0].get_xlim())
    assert left < date(2011, 1, 1) and right > date(2012, 12, 1)  # the baseline is "2011"


def test_empty_marker_panel_says_so(cohort: CohortScore) -> None:
    fig = figure(patient(cohort, "aiha-03"), cohort.config)
    notes = [t.get_text() for t in fig.axes[1].texts]
    assert any(n.startswith("no LDH or indirect bilirubin results") for n in notes)
    fig = figure(patient(cohort, "aiha-05"), cohort.config)
    assert not fig.axes[1].texts


def test_full_citations_under_the_prca_plot(cohort: CohortScore) -> None:
    fig = figure(patient(cohort, "isshiki-thymoma-prca"), cohort.config)
    footer = fig.get_supxlabel().replace("\n", " ")
    for source in cohort.config.criteria["PRCA"].sources:
        assert cohort.config.cite(source) in footer  # both PRCA sources, uncut
    assert cohort.config.cite("who_anaemia") in footer
    assert "[...]" not in footer
