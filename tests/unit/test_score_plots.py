"""The plots explain themselves: labels, units, distinct thresholds with values, honest marks."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from fhir_cyclo.readers.fhir import read_paths
from fhir_cyclo.report import plots
from fhir_cyclo.report.plots import svg
from fhir_cyclo.scoring.extract import extract
from fhir_cyclo.scoring.rules import CohortScore, PatientScore, score
from tests.conftest import FIXTURES

NS = {"s": "http://www.w3.org/2000/svg"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> CohortScore:
    from fhir_cyclo.cli.app import main

    out = tmp_path_factory.mktemp("bundles")
    assert main(["export", str(FIXTURES), "--out", str(out)]) == 0
    return score(extract(read_paths([out])))


def patient(cohort: CohortScore, label: str) -> PatientScore:
    return next(p for p in cohort.patients if p.key.endswith("|" + label))


def drawing(cohort: CohortScore, label: str) -> ET.Element:
    return ET.fromstring(svg(patient(cohort, label), cohort.config))


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


def of_class(root: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in root.iter() if name in (e.get("class") or "").split()]


def test_title_and_unit_are_readable(cohort: CohortScore) -> None:
    root = drawing(cohort, "itp-04")
    (title,) = of_class(root, "title")
    assert (title.text or "").startswith("itp-04 \u2013 ITP")
    assert "/fhir/sid/" not in (title.text or "")
    assert of_class(root, "y-label")[0].text == "PLT (\u00d710\u2079/L)"
    assert not any("10*9/L" in t for t in texts(root))


def test_threshold_lines_distinct_with_values(cohort: CohortScore) -> None:
    root = drawing(cohort, "aiha-05")
    words = texts(root)
    assert "CR: Hb > 12 g/dL" in words
    assert "PR: Hb > 10 g/dL" in words
    assert "PR: rise \u2265 2 from baseline = 9.9 g/dL" in words  # the value, not only the rule
    lines = {g.get("data-level"): g.find("s:line", NS) for g in of_class(root, "threshold")}
    assert set(lines) == {"12", "10", "9.9"}
    assert len({line.get("stroke") for line in lines.values() if line is not None}) == 3


def test_coinciding_thresholds_both_named(cohort: CohortScore) -> None:
    # itp-08: PLT > 30 and 2 x baseline 15 = 30: one line that names both tests, never one
    # line hiding the other.
    root = drawing(cohort, "itp-08")
    at_30 = [g for g in of_class(root, "threshold") if g.get("data-level") == "30"]
    assert len(at_30) == 1 and at_30[0].get("data-tests") == "2"
    label = at_30[0].find("s:text", NS)
    assert label is not None and label.text is not None
    assert "PLT > 30" in label.text and "2 \u00d7 baseline = 30" in label.text


def test_every_marker_in_the_legend(cohort: CohortScore) -> None:
    words = " ".join(texts(drawing(cohort, "itp-04")))
    assert "baseline used (40" in words
    for response in ("NR", "PR", "CR"):
        assert f"value scored, {response}" in words


def test_valueless_normal_hb_is_a_band_and_a_mark_on_the_axis(cohort: CohortScore) -> None:
    p = patient(cohort, "isshiki-thymoma-prca")
    root = ET.fromstring(svg(p, cohort.config))
    assert of_class(root, "lane-label")[0].text == "transfusions"
    (band,) = of_class(root, "normal-band")
    assert "reported normal, no value" in texts(band)
    # The scored value-less Hb: a mark on the date axis, no ring at a made-up value.
    (mark,) = of_class(root, "scored-normal")
    assert mark.get("data-date") == "2012-02-29"
    assert not of_class(root, "scored")  # no ring (a measured value) for it
    assert not any(e.get("data-value") == "12" for e in root.iter())


def test_not_done_transfusion_is_a_hollow_tick(cohort: CohortScore) -> None:
    root = drawing(cohort, "isshiki-thymoma-prca")
    skipped = of_class(root, "not-counted")
    assert skipped, "the not-done transfusion is drawn"
    for group in skipped:
        tick = group.find("s:path", NS)
        assert tick is not None and tick.get("fill") == "white"  # hollow
        assert any(t.startswith("not done") or t.startswith("not counted") for t in texts(group))
    assert not of_class(root, "counted")  # no bar for a transfusion that did not happen


def test_empty_marker_panel_says_so(cohort: CohortScore) -> None:
    words = texts(drawing(cohort, "aiha-03"))
    assert any(t.startswith("no LDH or indirect bilirubin results") for t in words)
    words = texts(drawing(cohort, "aiha-05"))
    assert not any(t.startswith("no LDH or indirect bilirubin results") for t in words)


def test_citations_by_number_not_in_full(cohort: CohortScore) -> None:
    p = patient(cohort, "isshiki-thymoma-prca")
    root = ET.fromstring(svg(p, cohort.config, (1, 3, 4)))
    (line,) = of_class(root, "citations")
    assert "[1], [3], [4]" in (line.text or "")
    for source in cohort.config.criteria["PRCA"].sources:
        assert cohort.config.cite(source) not in " ".join(texts(root))


def test_drawn_once_for_plot_and_report(
    cohort: CohortScore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fhir_cyclo.report import publish

    calls: list[str] = []
    real = plots.svg

    def counting(p: PatientScore, *args: object) -> str:
        calls.append(p.key)
        return real(p, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(plots, "svg", counting)
    lines = list(publish(cohort, plot_dir=tmp_path / "p", report=tmp_path / "r.html"))
    assert len(lines) == 2
    assert sorted(calls) == sorted(p.key for p in cohort.patients)  # once each, not twice
    assert len(list((tmp_path / "p").glob("*.svg"))) == len(cohort.patients)


def test_parallel_drawing_equals_serial(
    cohort: CohortScore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plots, "_PARALLEL_FROM", 1)
    assert plots.render_all(cohort, workers=2) == plots.render_all(cohort, workers=1)
