"""`fhir-cyclo score` end to end, including on our own exporter's output for the case report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from fhir_cyclo.cli import score as scoring_cli
from fhir_cyclo.cli.app import main

DATA = Path(__file__).parent / "scoring_data"
REPO = Path(__file__).resolve().parents[2]


def test_json_to_stdout_and_warnings_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["score", str(DATA / "case_report_transaction.json"), "--json", "-"])
    out, err = capsys.readouterr()
    assert code == 0
    doc = json.loads(out)
    assert [a["response"] for a in doc["patients"][0]["assessments"]] == ["CR", "NE", "NE"]
    assert "case_report_transaction.json Observation/7c0f3a52-1111-5d7e-9c1a-000000000005" in err


def test_default_is_the_table_and_files_can_be_plotted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["score", str(DATA / "cohort"), "--table", "--plot", str(tmp_path / "png")])
    out, err = capsys.readouterr()
    assert code == 0
    assert out.startswith("Hematologic response to cyclosporine")
    assert len(list((tmp_path / "png").glob("*.svg"))) == 5
    assert "wrote 5 plot(s)" in err
    assert main(["score", str(DATA / "cohort")]) == 0
    assert capsys.readouterr().out.startswith("Hematologic response")


def test_json_file_and_patient_filter(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    code = main(
        [
            "score",
            str(DATA / "cohort"),
            "--identifier",
            "urn:example:mrn|itp-2",
            "--json",
            str(target),
        ]
    )
    assert code == 0
    doc = json.loads(target.read_text())
    assert [p["patient"] for p in doc["patients"]] == ["urn:example:mrn|itp-2"]


def test_bad_input_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert main(["score", str(bad)]) == 1
    assert f"{bad}: not valid JSON" in capsys.readouterr().err
    assert main(["score", str(DATA / "cohort"), "--patient", "nobody"]) == 1


class RecordingClient:
    """Server double: answers searches from the cohort fixture and records the transaction."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def search(self, resource_type: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        path = DATA / "cohort" / f"{resource_type}.ndjson"
        lines = path.read_text().splitlines() if path.exists() else []
        for resource in map(json.loads, lines):
            subject = (resource.get("subject") or {}).get("reference")
            if "subject" in params and subject != params["subject"]:
                continue
            if "_id" in params and resource.get("id") != params["_id"]:
                continue
            yield resource

    def transaction(self, bundle: dict[str, Any]) -> Any:
        self.sent.append(bundle)
        return SimpleNamespace(created=len(bundle["entry"]), updated=0)


def test_server_mode_with_write_back(capsys: pytest.CaptureFixture[str]) -> None:
    client = RecordingClient()
    opts = scoring_cli.ScoreOptions(
        patient="Patient/prca-1",
        outputs=scoring_cli.ScoreOutputs(json="-", write_back=True),
    )
    assert scoring_cli.run(opts, client) == 0
    out, err = capsys.readouterr()
    assert [p["patient"] for p in json.loads(out)["patients"]] == ["urn:example:mrn|prca-1"]
    assert len(client.sent) == 1
    assert [e["request"]["method"] for e in client.sent[0]["entry"]] == ["PUT"] * 3
    assert "wrote back 3 response Observation(s): 3 created, 0 updated" in err


def test_write_back_needs_a_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FHIR_CYCLO_SERVER", raising=False)
    monkeypatch.setenv("FHIR_CYCLO_CONFIG", str(tmp_path / "missing.toml"))
    monkeypatch.setenv("HOME", str(tmp_path))
    # A usage error (exit 2), found before anything is scored: nothing but the one line.
    assert main(["score", str(DATA / "cohort"), "--write-back"]) == 2
    err = capsys.readouterr().err
    assert "--write-back needs a server: give --server URL" in err and len(err.splitlines()) == 1


def test_our_exporter_case_report_scores_as_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = REPO / "fixtures" / "cases" / "thymoma-prca-isshiki.yaml"
    assert main(["export", str(case), "--out", str(tmp_path), "--ndjson"]) == 0
    capsys.readouterr()
    for source in (tmp_path, tmp_path / "ndjson"):  # transaction Bundle, then NDJSON
        bundles = [str(p) for p in sorted(source.glob("*.json"))] or [str(source)]
        assert main(["score", *bundles, "--json", "-"]) == 0
        doc = json.loads(capsys.readouterr().out)
        (patient,) = doc["patients"]
        assert patient["disease"] == "PRCA"
        assert patient["cyclosporine_start"] == "2011-12-01"
        baseline = patient["baseline"]
        assert (baseline["date"], baseline["value"], baseline["unit"]) == (
            "2011-12-01",
            4.6,
            "g/dL",
        )
        assert [(a["month"], a["response"], a["date"]) for a in patient["assessments"]] == [
            (3, "CR", "2012-02-29"),
            (6, "NE", None),
            (12, "NE", None),
        ]
