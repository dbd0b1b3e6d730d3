"""The HTML report in a real browser: headless Debian chromium opens it from a file URL.

Checks the DOM against the --json document written by the same command (summary numbers, one
card per patient, plots decoded), that the page made no request beyond its own file, and keeps a
screenshot and a PDF print at fixed paths (printed in the log) for people and CI artifacts.
Skipped, with the reason, only when no chromium executable is installed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_cyclo.cli.app import main
from tests.conftest import FIXTURES, ROOT

ARTIFACTS = Path(os.environ.get("FHIR_CYCLO_ARTIFACTS", ROOT / "out" / "test-artifacts"))
CHROMIUM = os.environ.get("FHIR_CYCLO_CHROMIUM") or shutil.which("chromium") or ""
# No background services, no updates, no sync: the browser must have no reason to go online.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM,
    reason="no chromium executable (Debian: apt-get install -y chromium); "
    "set FHIR_CYCLO_CHROMIUM to use another",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("report")
    assert main(["export", str(FIXTURES), "--out", str(out / "bundles")]) == 0
    html, doc = out / "report.html", out / "scores.json"
    assert main(["score", str(out / "bundles"), "--json", str(doc), "--report", str(html)]) == 0
    return html, json.loads(doc.read_text())


@pytest.fixture(scope="module")
def page(report: tuple[Path, dict[str, Any]]) -> Iterator[tuple[Any, list[str]]]:
    from playwright.sync_api import sync_playwright

    html, _ = report
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1800})
        page.on("request", lambda r: requests.append(r.url))
        page.goto(html.as_uri(), wait_until="load")
        yield page, requests
        browser.close()


def test_no_request_beyond_the_file(page: tuple[Any, list[str]], report: Any) -> None:
    _, requests = page
    html, _ = report
    assert html.as_uri() in requests  # the listener saw the page itself, so it was listening
    outside = [u for u in requests if not u.startswith(("file:", "data:"))]
    assert outside == []


def test_the_request_check_would_catch_an_external_image(
    page: tuple[Any, list[str]], tmp_path: Path
) -> None:
    # The same listener on a page that does reach out (loopback discard port: no internet).
    p, requests = page
    other = tmp_path / "leaky.html"
    other.write_text('<!DOCTYPE html><img src="http://127.0.0.1:9/x.png">')
    before = len(requests)
    p.goto(other.as_uri(), wait_until="load")
    assert "http://127.0.0.1:9/x.png" in requests[before:]
    p.go_back(wait_until="load")  # the report again, for the tests after this one
    del requests[before:]


def test_summary_numbers_equal_the_json(page: tuple[Any, list[str]], report: Any) -> None:
    p, _ = page
    _, doc = report
    assert doc["summary"], "the fixtures score in every disease"
    for row in doc["summary"]:
        disease = row["disease"]
        shown = p.inner_text(f'[data-disease="{disease}"][data-field="patients"]')
        assert int(shown) == row["patients"]
        # The JSON's own patients give the same counts (the summary is not trusted blindly).
        own = [x for x in doc["patients"] if x["disease"] == disease]
        assert len(own) == row["patients"]
        for t in row["timepoints"]:
            responses = [
                a["response"] for x in own for a in x["assessments"] if a["month"] == t["month"]
            ]
            for field in ("CR", "PR", "NR", "NE", "evaluable"):
                cell = p.locator(
                    f'table.summary[data-disease="{disease}"] tr[data-month="{t["month"]}"] '
                    f'td[data-field="{field}"]'
                )
                assert cell.count() == 1
                value = int(cell.get_attribute("data-value"))
                expected = t[field]
                assert value == expected, (disease, t["month"], field)
                if field != "evaluable":
                    assert value == responses.count(field)
            text = p.inner_text(
                f'table.summary[data-disease="{disease}"] tr[data-month="{t["month"]}"] '
                'td[data-field="CR"]'
            )
            assert text == f"{t['CR']}/{t['evaluable']} ({t['CR_percent']})"


def test_one_card_per_patient_with_its_plot(page: tuple[Any, list[str]], report: Any) -> None:
    p, _ = page
    _, doc = report
    cards = p.locator("section.card")
    assert cards.count() == len(doc["patients"]) == 14
    labels = [cards.nth(i).get_attribute("data-patient") for i in range(cards.count())]
    assert labels == [x["label"] for x in doc["patients"]]
    for i, entry in enumerate(doc["patients"]):
        card = cards.nth(i)
        card.scroll_into_view_if_needed()  # off-screen cards are not laid out (content-visibility)
        badges = card.locator('[data-field="response"]')
        assert [badges.nth(j).inner_text() for j in range(badges.count())] == [
            a["response"] for a in entry["assessments"]
        ]
        # Every result carries at least one reason, shown on the card.
        for a in entry["assessments"]:
            row = card.locator(f'table.results tr[data-month="{a["month"]}"] li')
            assert row.count() == len(a["reasons"]) >= 1
    # Every plot decoded (an undecodable data URI has naturalWidth 0); lazily, so scrolled to.
    p.wait_for_function(
        "[...document.querySelectorAll('section.card img')].every(i => i.complete)",
        timeout=30_000,
    )
    widths = p.eval_on_selector_all("section.card img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(widths) == 14
    assert all(w > 500 for w in widths)


def test_no_identifier_url_on_the_page(page: tuple[Any, list[str]]) -> None:
    p, _ = page
    text = p.inner_text("body")
    assert "/fhir/sid/" not in text  # patients are named by label, warnings are scrubbed
    assert "aiha-05" in text


def test_synthetic_cohort_says_so_and_shows_the_paper(page: tuple[Any, list[str]]) -> None:
    p, _ = page
    assert "SYNTHETIC DATA" in p.inner_text("#synthetic-banner")
    itp = p.inner_text('table.summary[data-disease="ITP"]')
    assert "12/29 (41)" in itp  # the paper's Table 2, month 3 CR, as printed


def test_screenshot_and_print(
    page: tuple[Any, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    p, _ = page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    top, full, pdf = (
        ARTIFACTS / "report.png",
        ARTIFACTS / "report-full.png",
        ARTIFACTS / "report.pdf",
    )
    p.screenshot(path=str(top))
    p.screenshot(path=str(full), full_page=True)
    p.emulate_media(media="print")
    assert p.locator("nav#contents").is_hidden()  # print CSS applies
    p.pdf(path=str(pdf), format="A4", print_background=True)
    p.emulate_media(media="screen")
    assert top.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert pdf.read_bytes().count(b"/Type /Page") > 5  # a multi-page print, not one clipped page
    with capsys.disabled():
        print(f"\nreport screenshot: {top}\nfull page: {full}\nprinted PDF: {pdf}")
