"""The command line as users meet it (issue 11): each rough edge of the "Why" list, as a test."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fhir_cyclo.cli.app import main
from fhir_cyclo.client.results import EntryResult, TransactionResult

REPO = Path(__file__).resolve().parents[2]
CASE = REPO / "fixtures" / "cases" / "thymoma-prca-isshiki.yaml"
COHORT = REPO / "fixtures" / "cohort"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_CYCLO")}
    return subprocess.run(
        [sys.executable, "-m", "fhir_cyclo.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=env,
        timeout=300,
    )


@pytest.fixture
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exported") / "bundles"
    assert main(["export", str(COHORT), str(CASE), "--out", str(out), "--ndjson"]) == 0
    return out


# --- user mistakes are usage errors, not internal errors ------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["score", "{b}", "--json", "{t}/a-file/x.json"], "is a file, not a folder"),
        (["export", str(CASE), "--out", "{t}/a-file"], "exists and is not a folder"),
        (["score", "{b}", "--plot", "{t}/a-file"], "exists and is not a folder"),
        (
            ["push", str(CASE), "--server", "http://127.0.0.1:9/fhir", "--workers", "0"],
            "--workers must be 1 or more",
        ),
        (["score"], "nothing to score"),
        (["score", "{b}", "--write-back"], "--write-back needs a server: give --server URL"),
        (["score", "{b}", "--server", "http://127.0.0.1:9/fhir"], "not both"),
    ],
)
def test_user_mistakes_exit_2_before_work(
    argv: list[str], message: str, exported: Path, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("x")
    args = [a.format(b=exported, t=tmp_path) for a in argv]
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message.format(t=tmp_path) in result.stderr
    assert "internal error" not in result.stderr and "scored" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


# --- units: one table, UCUM on both sides ------------------------------------------------------


def test_mm3_platelets_in_a_bundle_are_scored_not_dropped(exported: Path, tmp_path: Path) -> None:
    bundle_path = next(p for p in sorted(exported.glob("itp-01-*.json")))
    bundle = json.loads(bundle_path.read_text())
    changed = 0
    for entry in bundle["entry"]:
        q = entry["resource"].get("valueQuantity")
        if q and q.get("code") == "10*9/L":
            q.update(value=q["value"] * 1000, unit="/mm3", code="/mm3")
            changed += 1
    assert changed
    (tmp_path / "b.json").write_text(json.dumps(bundle))
    result = run("score", str(tmp_path / "b.json"), "--json", "-")
    original = run("score", str(bundle_path), "--json", "-")
    assert result.returncode == 0 and "unknown unit" not in result.stderr, result.stderr
    assert json.loads(result.stdout)["patients"] == json.loads(original.stdout)["patients"]


# --- messages that lead to the fix -----------------------------------------------------------


def test_validate_lists_every_problem_of_a_case_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        CASE.read_text()
        .replace("concept: prca_chronic_acquired", "concept: PRCA")
        .replace("drug: cyclosporine", "drug: ciclosporin", 1)
        .replace("analyte: hemoglobin", "analyte: haemoglobin", 1)
    )
    result = run("validate", str(bad))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("fhir-cyclo: error:")]
    assert len(errors) >= 3, result.stderr
    assert "(and " not in result.stderr
    joined = "\n".join(errors)
    assert "did you mean 'cyclosporine'?" in joined
    assert "unknown analyte 'haemoglobin'; did you mean 'hemoglobin'" in joined
    assert all(str(bad) in line for line in errors)
    assert result.stdout == ""


def test_validate_lists_every_r4b_error_of_a_bundle(exported: Path, tmp_path: Path) -> None:
    bundle = json.loads(next(exported.glob("*.json")).read_text())
    bundle["entry"][1]["resource"]["status"] = 7
    bundle["entry"][2]["resource"]["status"] = 8
    (tmp_path / "b.json").write_text(json.dumps(bundle))
    result = run("validate", str(tmp_path / "b.json"))
    assert result.returncode == 1
    r4b = [line for line in result.stderr.splitlines() if "R4B validation" in line]
    assert any("entry[1]" in line and ".status" in line for line in r4b), result.stderr
    assert any("entry[2]" in line and ".status" in line for line in r4b), result.stderr


def test_strict_errors_are_one_line_with_file_and_path(exported: Path, tmp_path: Path) -> None:
    bundle = json.loads(next(exported.glob("*.json")).read_text())
    observation = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")
    observation["resource"]["status"] = 7
    (tmp_path / "b.json").write_text(json.dumps(bundle))
    result = run("score", str(tmp_path / "b.json"), "--strict")
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert str(tmp_path / "b.json") in line and "status" in line and "R4B" in line
    assert "[p-" in line and ", item " in line


def test_warnings_name_file_case_and_item(exported: Path, tmp_path: Path) -> None:
    bundle_path = next(p for p in sorted(exported.glob("itp-01-*.json")))
    bundle = json.loads(bundle_path.read_text())
    observation = next(e for e in bundle["entry"] if e["resource"].get("valueQuantity"))
    observation["resource"]["valueQuantity"].update(unit="bananas", code="bananas")
    (tmp_path / "b.json").write_text(json.dumps(bundle))
    result = run("score", str(tmp_path / "b.json"), "--json", "-")
    warning = next(line for line in result.stderr.splitlines() if "bananas" in line)
    item = observation["resource"]["identifier"][0]["value"].rpartition("|")[2]
    assert str(tmp_path / "b.json") in warning and f"item {item}]" in warning
    assert "itp-01" not in warning  # the case identifier value is hashed, never printed


def test_imputed_date_warnings_name_file_case_and_item(exported: Path) -> None:
    # The scoring rules' own warnings (a partial date placed at a day) are located too.
    bundle_path = next(p for p in sorted(exported.glob("isshiki-*.json")))
    result = run("score", str(bundle_path), "--json", "-")
    imputed = [line for line in result.stderr.splitlines() if "imputed as" in line]
    assert imputed, result.stderr
    for line in imputed:
        assert "<case>" in line and "[p-" in line and ", item " in line, line
        assert "isshiki-thymoma-prca" not in line  # the case value is hashed, never printed
    assert any("item hb-2011]" in line and "(baseline)" in line for line in imputed)


def test_unreachable_server_is_one_line_with_the_cause(tmp_path: Path) -> None:
    for argv in (["score"], ["push", str(CASE), "--no-journal"]):
        result = run(*argv, "--server", "http://127.0.0.1:9/fhir", cwd=tmp_path)
        assert result.returncode == 3, result.stderr
        (line,) = result.stderr.splitlines()
        assert "cannot reach FHIR server at http://127.0.0.1:9/fhir" in line
        assert "connection refused" in line and "Max retries" not in line


def test_plain_http_refusal_names_the_option_not_the_parameter(tmp_path: Path) -> None:
    result = run("score", "--server", "http://fhir.example.invalid/fhir", cwd=tmp_path)
    assert result.returncode == 3
    assert "--allow-http" in result.stderr and "allow_http=" not in result.stderr


def test_score_of_a_json_case_file_says_run_export_first(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "case.json").write_text(json.dumps(yaml.safe_load(CASE.read_text())))
    result = run("score", str(tmp_path / "case.json"))
    assert result.returncode == 1
    assert (
        "a fhir-cyclo case file, not FHIR" in result.stderr and "fhir-cyclo export" in result.stderr
    )


# --- one stream for diagnostics, each failure once -------------------------------------------


class FakeServer:
    """Just enough of FhirClient for push: every entry comes back 200 without a change."""

    base_url = "http://127.0.0.1:1/fhir"
    sent = 0

    def capabilities(self) -> dict[str, Any]:
        return {"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"}

    def ensure_pool_size(self, workers: int) -> None:
        pass

    def transaction(self, bundle: bytes) -> TransactionResult:
        FakeServer.sent += 1
        entries = len(json.loads(bundle)["entry"])
        return TransactionResult(entries=tuple(EntryResult(status=200) for _ in range(entries)))


def test_push_failures_once_on_stderr_and_second_push_says_unchanged(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import fhir_cyclo.cli.options

    monkeypatch.setattr(fhir_cyclo.cli.options, "make_client", lambda server: FakeServer())
    bad = tmp_path / "bad.yaml"
    bad.write_text(CASE.read_text().replace("drug: cyclosporine", "drug: ciclosporin", 1))
    code = main(
        [
            "push",
            str(CASE),
            str(bad),
            "--server",
            FakeServer.base_url,
            "--no-journal",
            "--no-progress",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err.count("ciclosporin") == 1  # the bad file is reported once
    summary = err.strip().splitlines()[-1]
    assert summary.startswith("fhir-cyclo: pushed 1 case(s), skipped 0 (already there), failed 1")
    assert "unchanged (1 case(s) already up to date)" in summary


def test_dry_run_prints_what_it_would_send(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FHIR_CYCLO_SERVER", raising=False)
    monkeypatch.setenv("FHIR_CYCLO_CONFIG", str(tmp_path / "none.toml"))
    assert main(["push", str(CASE), "--dry-run", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    (line,) = out.splitlines()
    assert line.startswith(f"would send {CASE} [case #") and "PUT Patient" in line
    assert "POST" not in line or "PUT" in line
    assert "would push 1 case(s)" in err
    assert list(tmp_path.iterdir()) == []  # no journal, nothing written


def test_export_summary_on_stderr_and_data_streams_are_the_same_for_every_command(
    tmp_path: Path,
) -> None:
    result = run("export", str(CASE), "--out", str(tmp_path / "o"))
    assert result.returncode == 0 and result.stdout == ""
    assert result.stderr.startswith("fhir-cyclo: exported 1 case(s)")
    result = run("validate", str(CASE))
    assert result.returncode == 0 and result.stdout == ""
    assert "fhir-cyclo: checked 1 item(s): 0 problem(s)" in result.stderr


# --- a folder with Bundles and their NDJSON copy; skipped files ------------------------------


def test_folder_with_bundles_and_ndjson_copy_reads_each_resource_once(exported: Path) -> None:
    (exported / "notes.txt").write_text("not FHIR")
    both = run("score", str(exported), "--json", "-")
    bundles_only = run("score", *map(str, sorted(exported.glob("*.json"))), "--json", "-")
    ndjson_only = run("score", str(exported / "ndjson"), "--json", "-")
    assert both.returncode == bundles_only.returncode == ndjson_only.returncode == 0
    assert json.loads(both.stdout)["patients"] == json.loads(bundles_only.stdout)["patients"]
    assert len(json.loads(both.stdout)["patients"]) == len(
        json.loads(ndjson_only.stdout)["patients"]
    )
    skipped = [line for line in both.stderr.splitlines() if "skipped" in line]
    copy = [x for x in skipped if "the NDJSON copy of the Bundles" in x]
    other = [x for x in skipped if "non-FHIR file(s)" in x]
    assert len(copy) == 1 and f"{exported / 'ndjson'}: skipped" in copy[0], both.stderr
    assert len(other) == 1 and "skipped 1 non-FHIR file(s): notes.txt" in other[0], both.stderr
    assert not any("ndjson/Patient.ndjson" in x for x in both.stderr.splitlines())  # no per-file
    # warnings are not doubled by the copy
    warnings = lambda r: [  # noqa: E731
        x
        for x in r.stderr.splitlines()
        if ": warning: " in x and "NDJSON copy" not in x and "non-FHIR file(s)" not in x
    ]
    assert warnings(both) == warnings(bundles_only)


def test_validate_lists_skipped_files_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "case.yaml").write_text(CASE.read_text())
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.csv").write_text("x")
    result = run("validate", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if "skipped" in x]
    assert "skipped 2 file(s)" in line and "a.txt" in line and "b.csv" in line


# --- de-identification key file ---------------------------------------------------------------


def test_deidentify_key_file_rules(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run(
        "export",
        str(CASE),
        "--out",
        str(out),
        "--deidentify",
        "--key-file",
        str(tmp_path / "k1.json"),
    )
    assert first.returncode == 0, first.stderr
    assert f"created key file {tmp_path / 'k1.json'}" in first.stderr
    assert stat.S_IMODE((tmp_path / "k1.json").stat().st_mode) == 0o600
    again = run(
        "export",
        str(CASE),
        "--out",
        str(out),
        "--deidentify",
        "--key-file",
        str(tmp_path / "k1.json"),
    )
    assert again.returncode == 0 and "created key file" not in again.stderr
    other = run(
        "export",
        str(CASE),
        "--out",
        str(out),
        "--deidentify",
        "--key-file",
        str(tmp_path / "k2.json"),
    )
    assert other.returncode == 2 and "another key file" in other.stderr
    assert not (tmp_path / "k2.json").exists()
    assert len(list(out.glob("*.json"))) == 1  # one pseudonymous copy of the patient
    # A folder of plain (identified) Bundles does not take a de-identified export either.
    mixed = run("export", str(CASE), "--out", str(tmp_path / "o2"))
    assert mixed.returncode == 0
    refused = run(
        "export",
        str(CASE),
        "--out",
        str(tmp_path / "o2"),
        "--deidentify",
        "--key-file",
        str(tmp_path / "k1.json"),
    )
    assert refused.returncode == 2 and "not de-identified" in refused.stderr


def test_bundles_and_ndjson_get_the_same_file_mode(exported: Path) -> None:
    modes = {stat.S_IMODE(p.stat().st_mode) for p in exported.rglob("*.json*") if p.is_file()}
    assert len(modes) == 1, modes
    umask = os.umask(0)
    os.umask(umask)
    assert modes == {0o666 & ~umask}


def test_cohort_csv_values_ignore_case(tmp_path: Path) -> None:
    folder = tmp_path / "cohort"
    folder.mkdir()
    (folder / "cohort.yaml").write_text("identifier_system: http://example.org/sid/ci\n")
    (folder / "patients.csv").write_text(
        "case_id,sex,disease,csa_start,csa_status,dat_pattern\n"
        "a,Male,ITP,2020-01-01,Completed,\n"
        "b,FEMALE,Warm_AIHA,2020-01-01,ACTIVE,igg+c\n"
    )
    (folder / "labs.csv").write_text(
        "case_id,date,analyte,value,unit\na,2020-01-01,Platelets,12,K/uL\n"
    )
    result = run("export", str(folder), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "exported 2 case(s)" in result.stderr


def test_warnings_mask_the_case_value_in_exported_file_names(exported: Path) -> None:
    """Exported Bundles are named after the case value (an MRN in real data): warnings that name
    the file mask that part, so no identifier reaches a log line."""
    result = run("score", str(exported), "--json", "-")
    warnings = [x for x in result.stderr.splitlines() if "[p-" in x]
    assert warnings, result.stderr  # the case report has value-less labs: warned with the file
    assert all("<case>-" in w and "isshiki-thymoma-prca" not in w for w in warnings), warnings
