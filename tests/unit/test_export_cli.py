"""Export/validate CLI: determinism, bad input handling, atomic output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fhir_cyclo.cli.app import main
from tests.conftest import CASE_REPORT, FIXTURES

GOOD = CASE_REPORT.read_text(encoding="utf-8")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhir_cyclo.cli", *args], capture_output=True, text=True, check=False
    )


def test_export_twice_is_byte_identical(tmp_path: Path) -> None:
    assert main(["export", str(FIXTURES), "--out", str(tmp_path / "a"), "--ndjson"]) == 0
    assert main(["export", str(FIXTURES), "--out", str(tmp_path / "b"), "--ndjson"]) == 0
    files_a = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    files_b = sorted(
        p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file()
    )
    assert files_a == files_b and len(files_a) == 14 + 6  # 14 bundles + 6 NDJSON types
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_ids_do_not_depend_on_the_machine() -> None:
    # uuid5 of a fixed namespace: pinned so an accidental change (orphaning server data) fails here.
    from fhir_cyclo.core.case import Identifier
    from fhir_cyclo.core.ids import resource_id

    case = Identifier(
        system="http://fhir-cyclo.example.org/fhir/sid/case-report", value="isshiki-thymoma-prca"
    )
    # The literal below was computed once; if it changes, every resource on every server is orphaned.
    assert resource_id(case, "Condition", "prca") == "1e7ccf32-f00a-5632-b191-62da8571659c"
    assert resource_id(case, "Condition", "prca") != resource_id(case, "Observation", "prca")
    assert len({resource_id(case, "Condition", f"x{i}") for i in range(100)}) == 100


BAD = [
    ("syntax.yaml", "identifier: [unclosed\n", "invalid YAML"),
    ("syntax.json", '{"identifier": }', "invalid JSON"),
    ("empty.yaml", "  \n", "file is empty"),
    ("list.yaml", "- 1\n- 2\n", "top level must be a mapping"),
    ("missing.yaml", GOOD.replace("patient:\n  sex: female\n", ""), "patient: Field required"),
    ("sex.yaml", GOOD.replace("sex: female", "sex: woman"), "patient.sex"),
    (
        "hb.yaml",
        GOOD.replace("value: 4.6", "value: 400"),
        "labs[hb-2011].value: 400.0 g/dL is impossible",
    ),
    (
        "unit.yaml",
        GOOD.replace("unit: g/dL", "unit: mg/kg"),
        "labs[hb-2011].unit: unit 'mg/kg' cannot be converted",
    ),
    (
        "analyte.yaml",
        GOOD.replace("analyte: achr_binding_ab", "analyte: unobtainium"),
        "unknown analyte 'unobtainium'",
    ),
    (
        "drug.yaml",
        GOOD.replace("drug: methylprednisolone", "drug: aspirin"),
        "unknown drug 'aspirin'",
    ),
    (
        "dx.yaml",
        GOOD.replace("concept: prca_chronic_acquired", "concept: flu", 1),
        "unknown diagnosis 'flu'",
    ),
    ("date.yaml", GOOD.replace('onset: "2015-11"', 'onset: "2015-13"'), "not a real calendar date"),
    ("future.yaml", GOOD.replace('date: "2012-02"', 'date: "2099-02"'), "in the future"),
    ("order.yaml", GOOD.replace('end: "2014-01"', 'end: "2010-01"'), "before start"),
    ("negative.yaml", GOOD.replace("value: 1000\n", "value: -5\n"), "impossible"),
    ("ref.yaml", GOOD.replace("reasons: [prca-relapse]", "reasons: [ghost]"), "refers to 'ghost'"),
    ("dup-id.yaml", GOOD.replace("- id: retic-2011", "- id: hb-2011"), "used twice"),
    (
        "extra.yaml",
        GOOD.replace("patient:\n", "patient:\n  nickname: Jane\n"),
        "patient.nickname: Extra inputs",
    ),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_case_file_is_reported_with_file_and_field(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / name).write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    result = run("export", str(src), "--out", str(out))
    assert result.returncode == 1, result.stderr
    assert str(src / name) in result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert [p for p in out.rglob("*") if p.is_file()] == []  # nothing half-written


def test_non_utf8_and_good_case_in_same_run(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "latin1.yaml").write_bytes("identifier: caf\xe9\n".encode("latin-1"))
    (src / "good.yaml").write_text(GOOD, encoding="utf-8")
    out = tmp_path / "out"
    result = run("export", str(src), "--out", str(out))
    assert result.returncode == 1
    assert "latin1.yaml: not UTF-8" in result.stderr
    assert len(list(out.glob("*.json"))) == 1  # the valid case still went through


def test_duplicate_case_ids_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(GOOD, encoding="utf-8")
    result = run("export", str(tmp_path), "--out", str(tmp_path.with_name(tmp_path.name + "-out")))
    assert result.returncode == 1 and "already read from" in result.stderr


def test_missing_path_is_a_clean_error(tmp_path: Path) -> None:
    result = run("export", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    # A path on the command line that does not exist is a usage error, found before any work.
    assert result.returncode == 2 and "no such file or folder" in result.stderr
    assert not (tmp_path / "out").exists()
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("patients", "labs", "message"),
    [
        (
            "case_id,sex\nx,female\n",
            "case_id,date,analyte,value,unit\n",
            "missing column(s): disease, csa_start",
        ),
        (
            "case_id,sex,disease,csa_start\nx,female,itp,2020-02-30\n",
            "case_id,date,analyte,value,unit\n",
            "patients.csv:2",
        ),
        (
            "case_id,sex,disease,csa_start\nx,female,itp,2020-02-03\n",
            "case_id,date,analyte,value,unit\ny,2020-02-01,platelets,5,10*9/L\n",
            "labs.csv:2: case_id: lab row for unknown patient 'y'",
        ),
        (
            "case_id,sex,disease,csa_start\nx,female,itp,2020-02-03\n",
            "case_id,date,analyte,value,unit\nx,2020-02-01,platelets,five,10*9/L\n",
            "'five' is not a number",
        ),
    ],
)
def test_bad_cohort_csv(tmp_path: Path, patients: str, labs: str, message: str) -> None:
    (tmp_path / "cohort.yaml").write_text("identifier_system: http://example.org/sid\n")
    (tmp_path / "patients.csv").write_text(patients)
    (tmp_path / "labs.csv").write_text(labs)
    result = run("export", str(tmp_path), "--out", str(tmp_path.with_name(tmp_path.name + "-out")))
    assert result.returncode == 1
    assert message in result.stderr, result.stderr


def test_validate_lists_every_problem_with_its_path(tmp_path: Path) -> None:
    import json

    from fhir_cyclo.fhir.bundle import transaction_bundle
    from tests.conftest import load_cases

    (case,) = load_cases(CASE_REPORT)
    bundle = transaction_bundle(case)
    bundle["entry"][1]["resource"]["subject"] = {"reference": "urn:uuid:missing"}
    bundle["entry"][2]["resource"]["status"] = 7
    (tmp_path / "b.json").write_text(json.dumps(bundle))
    result = run("validate", str(tmp_path / "b.json"), str(CASE_REPORT))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()  # diagnostics go to stderr, for every command
    assert any(
        "entry[1] Condition.subject: reference urn:uuid:missing does not resolve" in line
        for line in lines
    )
    assert any("R4B validation" in line for line in lines)
    assert not any(
        "thymoma-prca-isshiki.yaml" in line for line in lines
    )  # the fixture itself is clean
