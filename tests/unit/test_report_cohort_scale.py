"""Issue 23: the report at cohort scale: one name per patient, clinical words, drawn once, fast."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from markupsafe import escape

from fhir_cyclo.cli.app import main
from fhir_cyclo.core.scoring_config import load_config
from tests.conftest import FIXTURES, ROOT

# Config keys and FHIR element names that are not clinical words (the examples).
INTERNAL = re.compile(
    r"prca_normal_low|transfusion\.free_days|free_days|referenceRange|indirect_bilirubin|"
    r"total_bilirubin|direct_bilirubin|\bno ldh\b|10\*9/L|\[(?:threshold|marker|date)_[a-z_]+\]"
)


def score(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "fhir_cyclo.cli", "score", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export")
    assert main(["export", str(FIXTURES), "--out", str(out / "b"), "--ndjson"]) == 0
    return out


@pytest.fixture(scope="module")
def outputs(exported: Path) -> dict[str, Any]:
    html, doc = exported / "r.html", exported / "s.json"
    bundles = score(str(exported / "b"), "--report", str(html), "--json", str(doc), "--table")
    assert bundles.returncode == 0, bundles.stderr
    ndjson = score(str(exported / "b" / "ndjson"), "--json", "-")
    assert ndjson.returncode == 0, ndjson.stderr
    return {
        "html": html.read_text(),
        "doc": json.loads(doc.read_text()),
        "bundle_log": bundles.stderr,
        "table": bundles.stdout,
        "ndjson_log": ndjson.stderr,
        "ndjson_doc": json.loads(ndjson.stdout),
    }


def warning_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith("fhir-cyclo: warning:")]


def test_same_token_for_bundle_and_ndjson_input(outputs: dict[str, Any]) -> None:
    bundle = {p["label"]: p["token"] for p in outputs["doc"]["patients"]}
    ndjson = {p["label"]: p["token"] for p in outputs["ndjson_doc"]["patients"]}
    assert bundle == ndjson
    assert all(re.fullmatch(r"p-[0-9a-f]{8}", t) for t in bundle.values())
    # The AIHA month-3 warning names aiha-05 by the same token whatever the input format.
    for log in (outputs["bundle_log"], outputs["ndjson_log"]):
        (line,) = [w for w in warning_lines(log) if "CR not reachable" in w]
        assert bundle["aiha-05"] in line


def test_every_warning_names_its_patient_by_token_never_an_identifier(
    outputs: dict[str, Any],
) -> None:
    tokens = {p["token"] for p in outputs["doc"]["patients"]}
    for log in (outputs["bundle_log"], outputs["ndjson_log"]):
        # (A folder notice is about files, not a patient.)
        lines = [w for w in warning_lines(log) if "NDJSON copy" not in w]
        assert lines
        for line in lines:
            assert any(t in line for t in tokens), line
            assert "patient#" not in line and "isshiki-thymoma-prca" not in line
            assert "Patient/" not in line.split(": warning: ", 1)[1].split(" ", 1)[0]


def test_report_shows_token_beside_label_and_warnings_by_patient(outputs: dict[str, Any]) -> None:
    page = outputs["html"]
    prca = next(p for p in outputs["doc"]["patients"] if p["disease"] == "PRCA")
    card = page[page.index(f'data-token="{prca["token"]}"') :]
    card = card[: card.index("</section>")]
    assert f'<span class="token">{prca["token"]}</span>' in card
    # The skipped week-3 Hb of the case report shows on its own card.
    assert "value[x]: no value; skipped" in card
    # The global list: grouped under the patient's label and token.
    everything = page[page.index('id="accounting"') :]
    owner = everything.index(f'data-token="{prca["token"]}"')
    assert everything.index("value[x]: no value; skipped", owner) > owner


def test_clinical_words_only(outputs: dict[str, Any]) -> None:
    page = re.sub(r"<style>.*?</style>", "", outputs["html"], flags=re.S)
    text = re.sub(r"<[^>]+>", " ", page)
    assert not INTERNAL.findall(text)
    assert "\u00d710\u2079/L" in text
    table = outputs["table"]
    assert "10*9/L" not in table and "\u00d710\u2079/L" in table
    for line in warning_lines(outputs["bundle_log"]):
        assert not INTERNAL.findall(line), line
    assert "upper limit 250 U/L" in text or "upper limit of the lab" in text


def test_value_used_is_a_short_link_to_the_appendix(outputs: dict[str, Any]) -> None:
    page = outputs["html"]
    used = re.findall(r'<td class="used">(.*?)</td>', page, flags=re.S)
    assert used
    for cell in used:
        assert "Observation/" not in cell  # the full reference lives in the appendix
    links = re.findall(r'href="#(ref-\d+)"', page)
    assert links and all(f'id="{ref}"' in page for ref in links)


def test_citations_once_per_report(outputs: dict[str, Any]) -> None:
    cfg = load_config()
    page = outputs["html"]
    for key in outputs["doc"]["criteria"]["sources"]:
        assert page.count(str(escape(cfg.cite(key)))) == 1, key


def test_plot_and_report_drawn_once_and_fast(exported: Path) -> None:
    # The 14 fixture patients with --plot and --report took ~31 s (every plot drawn twice).
    started = time.perf_counter()
    result = score(
        str(exported / "b"),
        "--plot",
        str(exported / "plots"),
        "--report",
        str(exported / "both.html"),
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert len(list((exported / "plots").glob("*.svg"))) == 14
    assert elapsed < 10, elapsed  # ~2 s here, most of it start-up and reading
    assert (exported / "both.html").stat().st_size < 14 * 40_000  # was ~160 kB a patient
