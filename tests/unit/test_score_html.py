"""The HTML report without a browser: self-contained, escaped, one card per patient, atomic."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from fhir_cyclo.cli.app import main
from fhir_cyclo.readers.fhir import read_paths
from fhir_cyclo.report import html, to_json
from fhir_cyclo.report.summary import paper_figures
from fhir_cyclo.scoring.extract import Note, extract
from fhir_cyclo.scoring.rules import CohortScore, score

DATA = Path(__file__).parent / "scoring_data"


class Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        (self.styles if self._in_style else self.text).append(data)


@pytest.fixture(scope="module")
def cohort() -> CohortScore:
    return score(extract(read_paths([DATA / "cohort", DATA / "case_report_transaction.json"])))


@pytest.fixture(scope="module")
def page(cohort: CohortScore) -> Collect:
    parsed = Collect()
    parsed.feed(html.render(cohort))
    return parsed


def test_self_contained(page: Collect) -> None:
    names = {tag for tag, _ in page.tags}
    assert not names & {"script", "link", "iframe", "object", "embed", "base"}
    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    assert len(images) == 6
    assert all(src and src.startswith("data:image/svg+xml,") for src in images)
    for _, attrs in page.tags:
        for value in attrs.values():
            assert not (value or "").startswith(("http:", "https:", "//")), value
    css = "".join(page.styles)
    assert "@import" not in css and "url(" not in css


def test_one_card_per_patient_named_by_label(page: Collect, cohort: CohortScore) -> None:
    cards = [
        attrs["data-patient"]
        for tag, attrs in page.tags
        if "card" in (attrs.get("class") or "").split()
    ]
    assert cards == [p["label"] for p in to_json(cohort)["patients"]]
    assert cards == ["isshiki-2019", "aiha-1", "aiha-2", "itp-1", "itp-2", "prca-1"]  # JSON order
    text = " ".join(page.text)
    assert "urn:example:mrn|" not in text and "fhir/sid/case|" not in text


def test_paper_reference_beside_a_cohort_that_is_not_tagged_synthetic(page: Collect) -> None:
    text = " ".join(page.text)
    assert "SYNTHETIC DATA" not in text  # these test patients carry no synthetic tag
    assert paper_figures()["label"] in text
    assert "8/23 (35)" in text  # ITP month 12 CR in the paper's Table 2
    assert "WHO/NMH/NHD/MNM/11.1" in text and "Hirokawa M" in text and "Sawada K" in text


def test_text_is_escaped(cohort: CohortScore) -> None:
    hostile = CohortScore(
        cohort.patients,
        [*cohort.notes, Note("Observation/x", "code", "<script>x</script>")],
        cohort.config,
    )
    out = html.render(hostile)
    assert "<script>x</script>" not in out
    assert "&lt;script&gt;x&lt;/script&gt;" in out


def test_cli_writes_the_report_atomically(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "report.html"
    assert main(["score", str(DATA / "cohort"), "--report", str(target)]) == 0
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]  # no .partial left


def test_empty_cohort_report_says_so() -> None:
    empty = score(extract(read_paths([DATA / "cohort" / "Patient.ndjson"])))
    out = html.render(empty)
    assert "No patient could be scored" in out
    assert "not scored: " in out  # the patients read are accounted for, by reason
    assert 'class="card"' not in out
