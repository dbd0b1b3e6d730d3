"""`fhir-cyclo import`: export then import gives the same case files (data; bytes once canonical),
what FHIR cannot carry back is named per case, and the output rules hold."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from fhir_cyclo.cli import main
from fhir_cyclo.core.case import Case
from fhir_cyclo.export.writer import bundle_filename
from fhir_cyclo.fhir.bundle import dumps, transaction_bundle
from fhir_cyclo.importing.canonical import MARKER, dump_case, file_name
from fhir_cyclo.importing.run import ImportOptions, run_import
from tests.conftest import CASE_REPORT, FIXTURES, load_cases
from tests.unit.strategies import cases


def tree(folder: Path) -> dict[str, bytes]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


def read_cases(folder: Path) -> list[Case]:
    return sorted(load_cases(folder), key=lambda c: c.identifier.token)


def by_token(items: list[Case]) -> list[Case]:
    return sorted(items, key=lambda c: c.identifier.token)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "bundles"
    assert main(["export", str(FIXTURES), "--out", str(out), "--ndjson"]) == 0
    return out


def test_every_fixture_comes_back_equal_as_data(
    exported: Path,
    tmp_path: Path,
    all_fixture_cases: list[Case],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "cases"
    assert main(["import", str(exported), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "imported 14 case(s)" in err
    assert "not carried back" not in err  # our own exports lose nothing the model holds
    assert read_cases(out) == by_token(all_fixture_cases)
    assert all(p.read_bytes().startswith(MARKER) for p in out.iterdir())
    # No identifier value in any log line (they may be MRNs); files are named by a hash.
    for case in all_fixture_cases:
        assert case.identifier.value not in err
        assert (out / file_name(case)).is_file()
        assert case.identifier.value not in file_name(case)


def test_import_of_ndjson_and_bulk_folder_gives_the_same_files(
    exported: Path, tmp_path: Path
) -> None:
    assert main(["import", str(exported), "--out", str(tmp_path / "bundles")]) == 0
    ndjson = exported / "ndjson"
    assert main(["import", str(ndjson), "--out", str(tmp_path / "ndjson")]) == 0
    bulk = tmp_path / "bulk"
    bulk.mkdir()
    outputs = []
    for part in sorted(ndjson.iterdir()):
        (bulk / part.name).write_bytes(part.read_bytes())
        outputs.append({"type": part.name.split(".")[0], "url": part.name})
    (bulk / "unlisted.ndjson").write_text("{ not even JSON\n")  # not in the manifest: skipped
    manifest = {"transactionTime": "2026-01-01T00:00:00Z", "request": "x", "output": outputs}
    (bulk / "manifest.json").write_text(json.dumps(manifest))
    assert main(["import", str(bulk), "--out", str(tmp_path / "from-bulk")]) == 0
    first = tree(tmp_path / "bundles")
    assert len(first) == 14
    assert tree(tmp_path / "ndjson") == first
    assert tree(tmp_path / "from-bulk") == first


def test_files_written_by_import_come_back_byte_equal(exported: Path, tmp_path: Path) -> None:
    assert main(["import", str(exported), "--out", str(tmp_path / "a")]) == 0
    assert main(["export", str(tmp_path / "a"), "--out", str(tmp_path / "b")]) == 0
    assert main(["import", str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 0
    assert tree(tmp_path / "c") == tree(tmp_path / "a")
    # Importing again into the same folder rewrites nothing.
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "c").iterdir()}
    assert main(["import", str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "c").iterdir()} == before


def test_case_report_file_is_written_canonically(exported: Path, tmp_path: Path) -> None:
    (case,) = load_cases(CASE_REPORT)
    assert main(["import", str(exported), "--out", str(tmp_path)]) == 0
    text = (tmp_path / file_name(case)).read_text()
    # Partial dates stay strings at their precision, ages are numbers, defaults are left out.
    assert "onset: '2011'" in text
    assert "abatement: '2013-03'" in text
    assert "age: 50\n" in text
    assert "status: completed" not in text
    assert text.index("identifier:") < text.index("patient:") < text.index("diagnoses:")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_generated_cases_survive_export_and_import(case: Case) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "in").mkdir()
        (folder / "in" / "case.json").write_bytes(dumps(transaction_bundle(case)))
        errors: list[str] = []
        notices: list[str] = []
        summary = run_import(
            ImportOptions(out=folder / "out", paths=(str(folder / "in"),)),
            on_error=errors.append,
            on_notice=notices.append,
        )
        assert (summary.cases, errors, notices) == (1, [], [])
        written = folder / "out" / file_name(case)
        assert written.read_bytes() == dump_case(case)
        # The model, not `validate`: generated lab values may be outside the plausible ranges.
        assert Case.model_validate(yaml.safe_load(written.read_text())) == case


def _bundle_with_foreign_data(exported: Path) -> dict[str, object]:
    (case,) = load_cases(CASE_REPORT)
    bundle: dict[str, object] = orjson.loads((exported / bundle_filename(case)).read_bytes())
    entries = bundle["entry"]
    assert isinstance(entries, list)
    patient_url = entries[0]["fullUrl"]
    for entry in entries:
        res = entry["resource"]
        if res["resourceType"] == "Observation":
            res["performer"] = [{"display": "Dr. Someone"}]  # someone edited it on the server
            break
    entries.append(
        {
            "fullUrl": "urn:uuid:0d6b4c1e-0000-4000-8000-000000000001",
            "resource": {
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"code": "AMB"},
                "subject": {"reference": patient_url},
            },
        }
    )
    return bundle


def test_what_fhir_cannot_carry_back_is_named_per_case(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "edited.json").write_bytes(dumps(_bundle_with_foreign_data(exported)))
    assert main(["import", str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    (case,) = load_cases(CASE_REPORT)
    name = file_name(case)
    lines = [line for line in err.splitlines() if "not carried back" in line]
    assert lines == [
        f"fhir-cyclo: not carried back: case #{name[5:15]} ({name}): not written by fhir-cyclo, "
        "left out: 1 Encounter",
        f"fhir-cyclo: not carried back: case #{name[5:15]} ({name}): elements the mappers do not "
        "read back: Observation.performer.display (1)",
    ]
    assert "1 with data FHIR did not carry back" in err
    assert read_cases(tmp_path / "out") == [case]


def test_resources_of_a_missing_patient_fail_by_name(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _bundle_with_foreign_data(exported)
    entries = bundle["entry"]
    assert isinstance(entries, list)
    bundle["entry"] = entries[1:]  # the Patient left out
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "partial.json").write_bytes(dumps(bundle))
    assert main(["import", str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "partial.json" in err
    assert "which is not in the input: read the Patient too" in err
    assert list((tmp_path / "out").iterdir()) == []


def test_bad_json_is_named_and_the_rest_imported(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "broken.json").write_text('{"resourceType": "Bundle", ')
    src = next(exported.glob("*.json"))
    (tmp_path / "in" / src.name).write_bytes(src.read_bytes())
    assert main(["import", str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "broken.json" in err
    assert "Traceback" not in err
    assert len(list((tmp_path / "out").iterdir())) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--patient", "Patient/1"], "--patient selects on a server"),
        (["--identifier", "sys|v", "--patient", "Patient/1"], "give one of"),
        (["--server", "http://127.0.0.1:9/fhir"], "not both"),
    ],
)
def test_usage_errors(
    exported: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    assert main(["import", str(exported), "--out", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_identifier_needs_system_and_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["import", "--server", "http://127.0.0.1:9/fhir", "--identifier", "just-a-value"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    assert "SYSTEM|VALUE" in capsys.readouterr().err


def test_out_inside_an_input_is_refused_and_the_input_untouched(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree(exported)
    assert main(["import", str(exported), "--out", str(exported / "cases")]) == 2
    assert main(["import", str(exported), "--out", str(exported)]) == 2
    assert "would write over or inside the input" in capsys.readouterr().err
    assert tree(exported) == before


def test_an_existing_case_file_not_written_by_import_is_never_replaced(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (case,) = load_cases(CASE_REPORT)
    out = tmp_path / "out"
    out.mkdir()
    mine = out / file_name(case)
    mine.write_bytes(CASE_REPORT.read_bytes())  # a hand-written case file under that name
    assert main(["import", str(exported), "--out", str(out)]) == 2
    assert "was not written by import" in capsys.readouterr().err
    assert mine.read_bytes() == CASE_REPORT.read_bytes()
    assert [p.name for p in out.iterdir()] == [mine.name]


def test_a_foreign_bulk_export_gives_demographics_and_names_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An EHR's Bulk Data folder (manifest, error file, non-FHIR files): its Patients become
    # cases, and every resource and element the case model does not hold is named.
    folder = Path(__file__).parent / "ehr_data" / "bulk-folder"
    assert main(["import", str(folder), "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "imported 3 case(s)" in err and "3 with data FHIR did not carry back" in err
    assert "left out 1 resource(s) of no patient: 1 Medication" in err
    assert "left out: 1 Condition, 1 MedicationAdministration, 4 Observation" in err
    assert "Patient.name.family (1)" in err
    assert "BULK-000" not in err  # the MRNs
    cases = read_cases(tmp_path / "out")
    assert [c.identifier.value for c in cases] == ["BULK-0001", "BULK-0002", "BULK-0003"]
    assert all(not c.diagnoses and not c.labs for c in cases)
