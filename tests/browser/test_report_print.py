"""The report on paper and at cohort scale, in headless Debian chromium.

Print: the fixture report printed to PDF on A4 and on Letter; poppler's `pdftotext -bbox` gives
each word's page and position, so the test sees where every card starts and ends: no card split
across pages, no near-empty page, pages against cards. Scale: a 1,000-patient report opens within
5 s and its CSS-only filters work. Skipped, with the reason, only without chromium or poppler.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_cyclo.cli.app import main
from tests.browser.test_report_browser import CHROMIUM, FLAGS
from tests.conftest import FIXTURES

PDFTOTEXT = shutil.which("pdftotext") or ""
pytestmark = pytest.mark.skipif(
    not CHROMIUM or not PDFTOTEXT,
    reason="needs chromium and pdftotext (Debian: apt-get install -y chromium poppler-utils)",
)
_PAGE = re.compile(r'<page width="([\d.]+)" height="([\d.]+)">')
_WORD = re.compile(
    r'<word xMin="[\d.]+" yMin="([\d.]+)" xMax="[\d.]+" yMax="([\d.]+)">(.*?)</word>'
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def fixture_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("print")
    assert main(["export", str(FIXTURES), "--out", str(out / "b")]) == 0
    page, doc = out / "report.html", out / "scores.json"
    assert main(["score", str(out / "b"), "--report", str(page), "--json", str(doc)]) == 0
    return page, json.loads(doc.read_text())


def words_by_page(pdf: Path) -> list[tuple[float, list[tuple[float, float, str]]]]:
    """Per page: its height and its words (top, bottom, text), in reading order."""
    text = subprocess.run(
        [PDFTOTEXT, "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    pages = []
    for chunk in text.split("<page ")[1:]:
        size = _PAGE.search("<page " + chunk)
        assert size is not None
        words = [(float(a), float(b), html.unescape(w)) for a, b, w in _WORD.findall(chunk)]
        pages.append((float(size.group(2)), words))
    return pages


def card_places(pages: Any, patients: list[dict[str, Any]]) -> dict[str, tuple[int, float, int]]:
    """token -> (page of the card's header, its top as a fraction of the page, page of its end)."""
    starts: dict[str, tuple[int, float]] = {}
    ends: dict[str, int] = {}
    labels = {p["token"]: p["label"] for p in patients}
    for n, (height, words) in enumerate(pages):
        texts = [w for _, _, w in words]
        for i, (top, _, word) in enumerate(words):
            # The header: "label token disease ·" (the index and warning lists have no "·").
            after = texts[i + 1 : i + 3][-1:]
            if word in labels and i > 0 and texts[i - 1] == labels[word] and after == ["\u00b7"]:
                starts[word] = (n, top / height)
            if word.startswith("(p-") and i >= 2 and texts[i - 2] == "of":
                ends[word.strip("()")] = n
    assert set(starts) == set(labels) == set(ends), (starts, ends)
    return {t: (starts[t][0], starts[t][1], ends[t]) for t in labels}


@pytest.mark.parametrize("paper", ["A4", "Letter"])
def test_print_keeps_cards_whole(
    browser: Any, fixture_report: tuple[Path, dict[str, Any]], paper: str, tmp_path: Path
) -> None:
    page_file, doc = fixture_report
    page = browser.new_page()
    page.goto(page_file.as_uri(), wait_until="load")
    page.emulate_media(media="print")
    pdf = tmp_path / f"report-{paper}.pdf"
    page.pdf(path=str(pdf), format=paper, print_background=True)
    page.close()
    pages = words_by_page(pdf)
    places = card_places(pages, doc["patients"])
    for token, (start, top, end) in places.items():
        # Whole cards: a card that starts low on a page (last fifth) must still end there.
        assert start == end, f"{paper}: card {token} runs from page {start + 1} to {end + 1}"
        assert top < 0.8 or start == end
    # No empty or near-empty page (the old print had a page holding only "none").
    for n, (_, words) in enumerate(pages):
        assert len(words) >= 10, f"{paper}: page {n + 1} holds only {[w for *_, w in words]}"
    cards = len(doc["patients"])
    assert len(pages) <= cards + 4, f"{paper}: {len(pages)} pages for {cards} cards"


@pytest.fixture(scope="module")
def cohort_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bench.synthetic import write_scoring_export

    out = tmp_path_factory.mktemp("cohort")
    write_scoring_export(out / "ndjson", 1000)
    assert main(["score", str(out / "ndjson"), "--report", str(out / "report.html")]) == 0
    return out / "report.html"


def test_thousand_patient_report_opens_within_5_s(browser: Any, cohort_report: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    started = time.perf_counter()
    page.goto(cohort_report.as_uri(), wait_until="load", timeout=60_000)
    seconds = time.perf_counter() - started
    cards = page.locator("section.card").count()
    lazy = page.locator('section.card img[loading="lazy"][decoding="async"]').count()
    print(
        f"1,000-patient report: {cohort_report.stat().st_size} bytes, {cards} cards, "
        f"load {seconds:.2f} s"
    )
    assert cards > 900 and lazy == cards
    assert seconds <= 5.0
    # CSS-only filters: PRCA only, then PRCA with best response CR.
    page.click('label[for="d-PRCA"]')
    shown = page.locator("section.card:visible")
    assert 0 < shown.count() < cards
    assert all("d-PRCA" in (c or "") for c in shown.evaluate_all("e => e.map(x => x.className)"))
    page.click('label[for="r-CR"]')
    classes = page.locator("section.card:visible").evaluate_all("e => e.map(x => x.className)")
    assert all("d-PRCA" in c and "r-CR" in c for c in classes)
    page.close()
