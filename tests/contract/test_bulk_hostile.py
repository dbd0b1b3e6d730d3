"""Bulk Data client against the in-test export server playing the servers of issue 25: missing
types, refused or ignored _typeFilter, transient and rate-limited status answers, partial exports,
`deleted`, refused credentials, empty Groups, duplicates and hostile manifests."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from fhir_cyclo.cli.app import main
from fhir_cyclo.client import FhirClient, RetryPolicy
from fhir_cyclo.client.bulk import (
    DEFAULT_TYPES,
    MANIFEST,
    NDJSON,
    STATE_FILE,
    BulkExporter,
    BulkExportError,
    BulkRequest,
)
from fhir_cyclo.readers.fhir import read_paths

from .smart_server import BulkBehaviour, Running, SmartServer, ndjson, outcome
from .test_bulk import CONDITION, OBSERVATIONS, PATIENTS
from .test_smart_auth import pem, public_jwk

LOINC = "http://loinc.org"
REQUEST = {
    "resourceType": "MedicationRequest",
    "id": "r1",
    "status": "active",
    "intent": "order",
    "medicationCodeableConcept": {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "3008"}]
    },
    "subject": {"reference": "Patient/p1"},
    "authoredOn": "2022-01-10",
}
# An Observation the scoring _typeFilter does not ask for (a local code, no claim about LOINC).
OTHER_OBS = {
    "resourceType": "Observation",
    "id": "other",
    "status": "final",
    "code": {"coding": [{"system": "urn:example:local", "code": "temp"}]},
    "subject": {"reference": "Patient/p1"},
}
NO_MEDICATION_STATEMENT = [
    "Patient",
    "Group",
    "Condition",
    "MedicationRequest",
    "Observation",
    "Procedure",
]
# The types data() has: asked for alone, nothing is missing and no second export is asked for.
WITH_DATA = ["Patient", "Group", "Condition", "MedicationRequest", "Observation"]
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def data() -> dict[str, list[dict[str, Any]]]:
    return {
        "Patient": [dict(p) for p in PATIENTS],
        "Condition": [CONDITION],
        "MedicationRequest": [REQUEST],
        "Observation": [*OBSERVATIONS, OTHER_OBS],
    }


@pytest.fixture
def bulk() -> BulkBehaviour:
    return BulkBehaviour(resources=data())


@pytest.fixture
def server(bulk: BulkBehaviour) -> Iterator[SmartServer]:
    with Running(SmartServer(bulk=bulk)) as running:
        yield running


def cli(
    server: SmartServer,
    out: Path,
    capsys: pytest.CaptureFixture[str],
    *extra: str,
    base: str | None = None,
) -> tuple[int, str]:
    argv = ["bulk-export", "--server", base or server.base_url, "--out", str(out)]
    code = main([*argv, "--no-progress", *extra])
    return code, capsys.readouterr().err


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in path.read_bytes().splitlines() if raw.strip()]


def exporter(server: SmartServer, folder: Path, sleeps: list[float], **kw: Any) -> BulkExporter:
    client = FhirClient(
        server.base_url, retry=RetryPolicy(retries=1, backoff=0.0, sleep=sleeps.append)
    )
    notices: list[str] = []
    made = BulkExporter(client, folder, progress=False, on_notice=notices.append, **kw)
    made.notices = notices  # type: ignore[attr-defined]
    return made


def notices(made: BulkExporter) -> list[str]:
    found: list[str] = made.notices  # type: ignore[attr-defined]
    return found


# --- 1. the default request on a server without MedicationStatement/-Administration ----------


def test_default_request_fits_what_the_server_supports(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bulk.supported = NO_MEDICATION_STATEMENT
    code, err = cli(server, tmp_path / "out", capsys)
    assert code == 0, err
    kick, again = bulk.kickoffs
    asked = kick["_type"][0].split(",")
    assert "MedicationStatement" not in asked and "MedicationAdministration" not in asked
    assert asked == ["Patient", "Condition", "MedicationRequest", "Observation", "Procedure"]
    # No Procedure came: asked again without _typeFilter (the server has none: still none).
    assert again == {"_outputFormat": [NDJSON], "_type": ["Procedure"]}
    note = [line for line in err.splitlines() if "lacks" in line]
    assert len(note) == 1 and "MedicationStatement, MedicationAdministration" in note[0]
    written = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert {o["type"] for o in written["output"]} == {
        "Patient",
        "Condition",
        "MedicationRequest",
        "Observation",
    }


def test_type_option_still_overrides(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = cli(server, tmp_path / "out", capsys, "--type", "Patient", "--type", "Condition")
    assert code == 0, err
    assert bulk.kickoffs[0]["_type"] == ["Patient,Condition"]


def test_score_bulk_on_a_server_without_medication_statement(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bulk.supported = NO_MEDICATION_STATEMENT
    out = tmp_path / "scores.json"
    argv = ["score", "--server", server.base_url, "--bulk", "--bulk-dir", str(tmp_path / "b")]
    code = main([*argv, "--json", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["accounting"]["patients_read"] == 2
    assert [a["response"] for a in doc["patients"][0]["assessments"]] == ["CR", "PR", "NE"]


# --- 2. _typeFilter refused or ignored; types that did not come back --------------------------


def test_type_filter_refused_is_asked_again_without_and_filtered_here(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bulk.type_filter = "refuse"
    code, err = cli(server, tmp_path / "out", capsys)
    assert code == 0, err
    assert len(bulk.kickoffs) == 2
    assert "_typeFilter" in bulk.kickoffs[0] and "_typeFilter" not in bulk.kickoffs[1]
    assert "refused _typeFilter" in err and "filtered here" in err
    kept = lines(tmp_path / "out" / "Observation.000.ndjson")
    assert [o["id"] for o in kept] == ["b", "m3", "m6"]
    written = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert {"type": "Observation", "url": "Observation.000.ndjson", "count": 3} in written["output"]


def test_type_filter_ignored_is_applied_here(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bulk.type_filter = "ignore"
    code, err = cli(server, tmp_path / "out", capsys)
    assert code == 0, err
    # The second export is only for the types that did not come (none of them exist here).
    assert [k["_type"] for k in bulk.kickoffs] == [
        [",".join(DEFAULT_TYPES)],
        ["MedicationStatement,MedicationAdministration,Procedure"],
    ]
    kept = lines(tmp_path / "out" / "Observation.000.ndjson")
    assert [o["id"] for o in kept] == ["b", "m3", "m6"]
    assert "1 Observation(s) outside _typeFilter" in err


def test_type_filter_misapplied_types_are_asked_again_without_it(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The SMART reference server with fhir-cyclo's default request: no MedicationStatement /
    # MedicationAdministration, and with _typeFilter no Patient, Observation, Procedure at all.
    bulk.supported = NO_MEDICATION_STATEMENT
    bulk.filter_drops = ("Patient", "Observation", "Procedure")
    out = tmp_path / "out"
    code, err = cli(server, out, capsys)
    assert code == 0, err
    first, again = bulk.kickoffs
    assert "_typeFilter" in first
    assert again == {"_outputFormat": [NDJSON], "_type": ["Patient,Observation,Procedure"]}
    assert "came back without Patient, Observation, Procedure" in err
    assert "1 Observation(s) outside _typeFilter dropped here (the server misapplied it)" in err
    # Only the type the server has none of is still named missing.
    missing = [line for line in err.splitlines() if "not in the export" in line]
    assert len(missing) == 1 and "export: Procedure (" in missing[0]
    written = json.loads((out / MANIFEST).read_text())
    assert sorted((o["type"], o["count"]) for o in written["output"]) == [
        ("Condition", 1),
        ("MedicationRequest", 1),
        ("Observation", 3),
        ("Patient", 2),
    ]
    assert [o["id"] for o in lines(out / "Observation.000.ndjson")] == ["b", "m3", "m6"]
    assert len(bulk.deletes) == 2 and not bulk.jobs  # both jobs cleaned up
    assert not (out / STATE_FILE).exists()
    # The folder is a complete input for scoring.
    code = main(["score", str(out), "--json", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert code == 0, err
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["accounting"]["patients_read"] == 2
    assert [a["response"] for a in doc["patients"][0]["assessments"]] == ["CR", "PR", "NE"]


def test_no_medication_statement_and_type_filter_refused_default_options(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bulk.supported = NO_MEDICATION_STATEMENT
    bulk.type_filter = "refuse"
    out = tmp_path / "out"
    code, err = cli(server, out, capsys)
    assert code == 0, err
    assert "lacks MedicationStatement, MedicationAdministration" in err
    assert "refused _typeFilter" in err and "filtered here" in err
    assert [("_typeFilter" in k) for k in bulk.kickoffs] == [True, False]
    written = json.loads((out / MANIFEST).read_text())
    assert sorted((o["type"], o["count"]) for o in written["output"]) == [
        ("Condition", 1),
        ("MedicationRequest", 1),
        ("Observation", 3),
        ("Patient", 2),
    ]
    assert len(bulk.deletes) == 1 and not bulk.jobs


@pytest.mark.parametrize(
    "case",
    [
        ("served", ("_outputFormat", "_since", "_type"), False),
        ("served", ("_outputFormat", "_since", "_type", "_typeFilter"), True),
        ("missing", (), True),  # named but absent: tolerated, the filter is sent
    ],
)
def test_export_operation_definition_decides_on_type_filter(
    server: SmartServer,
    bulk: BulkBehaviour,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: tuple[str, tuple[str, ...], bool],
) -> None:
    definition, parameters, sent = case
    bulk.supported = WITH_DATA
    bulk.export_definition = definition
    bulk.export_parameters = parameters
    out = tmp_path / "out"
    code, err = cli(server, out, capsys)
    assert code == 0, err
    assert bulk.definition_requests == 1
    (kick,) = bulk.kickoffs
    assert ("_typeFilter" in kick) is sent
    assert ("OperationDefinition has no _typeFilter" in err) is not sent
    assert [o["id"] for o in lines(out / "Observation.000.ndjson")] == ["b", "m3", "m6"]
    if not sent:
        assert "1 Observation(s) outside _typeFilter dropped here" in err


def drop_types(*types: str) -> Any:
    def hook(manifest: dict[str, Any], _files: str) -> dict[str, Any]:
        manifest["output"] = [o for o in manifest["output"] if o["type"] not in types]
        return manifest

    return hook


def test_types_missing_from_the_export_are_named(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bulk.manifest_hook = drop_types("Patient", "Observation")
    code, err = cli(server, tmp_path / "out", capsys)
    assert code == 0, err
    missing = [line for line in err.splitlines() if "not in the export" in line]
    assert len(missing) == 1 and "Patient" in missing[0] and "Observation" in missing[0]
    code, err = cli(server, tmp_path / "out2", capsys, "--strict")
    assert code == 1, err
    # score says its Bulk input has no Patients and no Observations.
    code = main(["score", str(tmp_path / "out"), "--json", str(tmp_path / "s.json")])
    err = capsys.readouterr().err
    assert "no Patient" in err and "no Observation" in err


# --- 3. status polling ------------------------------------------------------------------------


def test_transient_status_answers_keep_polling(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path
) -> None:
    transient = outcome("transient", "database busy, try again")
    bulk.status_script = [(500, transient, {})] * 6
    sleeps: list[float] = []
    made = exporter(server, tmp_path, sleeps)
    result = made.run(BulkRequest(types=("Patient",)))
    assert result.resources == 2
    assert bulk.status_requests == 7
    assert len(sleeps) == 6
    assert sum("transient" in n for n in notices(made)) == 1  # one line, not six
    assert len(bulk.deletes) == 1


def test_fatal_status_answer_ends_the_job_and_deletes_it(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path
) -> None:
    bulk.status_script = [(500, outcome("exception", "out of disk", "fatal"), {})]
    with pytest.raises(BulkExportError, match=r"the export job failed \(HTTP 500\): out of disk"):
        exporter(server, tmp_path, []).run(BulkRequest(types=("Patient",)))
    assert len(bulk.deletes) == 1
    assert not (tmp_path / STATE_FILE).exists()


def test_rate_limited_status_backs_off_with_a_capped_wait(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path
) -> None:
    bulk.status_script = [(429, outcome("throttled", "slow down"), {"Retry-After": "86400"})] * 4
    sleeps: list[float] = []
    made = exporter(server, tmp_path, sleeps)
    result = made.run(BulkRequest(types=("Patient",)))
    assert result.resources == 2
    assert sleeps == [120.0] * 4  # the default cap
    capped = [n for n in notices(made) if "86400" in n]
    assert len(capped) == 1 and "120 s" in capped[0]
    # The cap is a setting.
    bulk.status_script = [(429, None, {"Retry-After": "86400"})] * 2
    sleeps.clear()
    exporter(server, tmp_path / "2", sleeps, max_rate_limit_wait=7.0).run(BulkRequest())
    assert sleeps == [7.0, 7.0]


def test_interrupted_poll_deletes_the_job(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path
) -> None:
    bulk.status_script = [(202, None, {"X-Progress": "1%"})] * 3

    def interrupt(_seconds: float) -> None:
        raise KeyboardInterrupt

    client = FhirClient(server.base_url, retry=RetryPolicy(sleep=interrupt))
    made = BulkExporter(client, tmp_path, progress=False, on_notice=lambda _t: None)
    with pytest.raises(KeyboardInterrupt):
        made.run(BulkRequest(types=("Patient",)))
    assert len(bulk.deletes) == 1
    assert not (tmp_path / STATE_FILE).exists()


# --- 4. error files and deleted entries --------------------------------------------------------

ERROR_LINE = outcome("processing", "Procedure: search failed")


def test_error_file_count_mismatch_is_a_warning(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bulk.error_files = [([ERROR_LINE], 639)]
    bulk.supported = WITH_DATA
    code, err = cli(server, tmp_path / "out", capsys)
    assert code == 1  # an error issue: some resources did not come
    assert "manifest says 639" in err and "warning" in err
    written = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert written["error"] == [{"type": "OperationOutcome", "url": "error.000.ndjson", "count": 1}]
    assert len(lines(tmp_path / "out" / "Patient.000.ndjson")) == 2


def test_deleted_entries_are_downloaded_and_not_scored(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bulk.deleted = [("Observation", "m6")]
    bulk.supported = WITH_DATA
    code, err = cli(server, tmp_path / "out", capsys)
    assert code == 0, err
    assert "1 deleted" in err
    written = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert written["deleted"] == [{"type": "Bundle", "url": "deleted.000.ndjson", "count": 1}]
    assert (tmp_path / "out" / "deleted.000.ndjson").is_file()
    notes: list[str] = []
    ids = [i.resource["id"] for i in read_paths([tmp_path / "out"], on_notice=notes.append)]
    assert "m6" not in ids and "m3" in ids
    assert any("deleted" in n for n in notes)


# --- 5. hostile manifests ------------------------------------------------------------------


def test_hostile_type_does_not_choose_a_path(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def hook(manifest: dict[str, Any], files: str) -> dict[str, Any]:
        pat = manifest["output"][0]["url"]
        manifest["output"].append({"type": "../../../escaped", "url": pat})
        return manifest

    bulk.manifest_hook = hook
    bulk.supported = WITH_DATA
    out = tmp_path / "a" / "b" / "out"
    code, err = cli(server, out, capsys)
    assert code == 1
    assert not list(tmp_path.rglob("escaped*"))
    assert "'../../../escaped' is not a FHIR R4 resource type" in err
    written = json.loads((out / MANIFEST).read_text())
    assert "Patient.000.ndjson" in [o["url"] for o in written["output"]]


def _set(kind: str, index: int, **fields: Any) -> Any:
    def hook(manifest: dict[str, Any], files: str) -> dict[str, Any]:
        manifest[kind][index].update(fields)
        for key, value in fields.items():
            if value is None:
                del manifest[kind][index][key]
        return manifest

    return hook


@pytest.mark.parametrize(
    ("hook", "expected"),
    [
        (_set("output", 0, type="Patient/../../x"), "not a FHIR R4 resource type"),
        (_set("output", 0, type="Basic2"), "not a FHIR R4 resource type"),
        (_set("output", 0, type=None), "no type"),
        (_set("output", 0, url="file:///etc/passwd"), "not an http(s) URL"),
        (_set("output", 0, url=["x"]), "no url"),
        (_set("output", 0, url="http://[::1"), "not an http(s) URL"),
        (_set("error", 0, type="../err"), "not a FHIR R4 resource type"),
    ],
)
def test_hostile_manifest_entries_are_named_and_skipped(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, hook: Any, expected: str
) -> None:
    bulk.error_files = [([ERROR_LINE], 1)]
    bulk.manifest_hook = hook
    made = exporter(server, tmp_path / "out", [])
    result = made.run(BulkRequest(types=("Patient", "Condition")))
    assert any(expected in r for r in result.rejected), result.rejected
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [MANIFEST, *[f["url"] for f in result.files + result.errors]]
    )
    assert all(p.is_relative_to(tmp_path / "out") for p in tmp_path.rglob("*") if p.is_file())


@pytest.mark.parametrize("count", ["2", -1, True, 10**30, 2.0])
def test_hostile_counts_are_ignored_with_a_note(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, count: Any
) -> None:
    bulk.manifest_hook = _set("output", 0, count=count)
    made = exporter(server, tmp_path, [])
    result = made.run(BulkRequest(types=("Patient",)))
    assert result.files == [{"type": "Patient", "url": "Patient.000.ndjson", "count": 2}]
    assert any("count" in n and "ignored" in n for n in notices(made))


def test_hostile_size_is_bounded(server: SmartServer, bulk: BulkBehaviour, tmp_path: Path) -> None:
    # A gzip body that inflates far beyond its size (a "zip bomb" in miniature).
    bomb = gzip.compress(ndjson([{"resourceType": "Patient", "id": "x" * 60}] * 20000))

    def hook(manifest: dict[str, Any], files: str) -> dict[str, Any]:
        manifest["output"] = [{"type": "Patient", "url": f"{files}/bomb"}]
        return manifest

    bulk.manifest_hook = hook
    bulk.extra_files = {"bomb": bomb}
    made = exporter(server, tmp_path, [], max_file_bytes=100_000)
    result = made.run(BulkRequest(types=("Patient",)))
    assert any("100,000 byte limit" in r for r in result.rejected)
    assert not list(tmp_path.glob("Patient*"))


def test_hostile_top_level_fields_are_not_copied(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path
) -> None:
    def hook(manifest: dict[str, Any], files: str) -> dict[str, Any]:
        manifest["transactionTime"] = {"$gt": 1}
        manifest["request"] = "x" * 100_000
        manifest["requiresAccessToken"] = "false"  # a string: treated as true, origin checked
        return manifest

    bulk.manifest_hook = hook
    made = exporter(server, tmp_path, [])
    made.run(BulkRequest(types=("Patient",)))
    written = json.loads((tmp_path / MANIFEST).read_text())
    assert written["transactionTime"] is None and written["request"] is None


def test_duplicate_ids_across_lines_are_reported(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bulk.resources["Patient"].append({"resourceType": "Patient", "id": "p1"})
    code, err = cli(server, tmp_path / "out", capsys)
    assert code == 0, err
    dup = [line for line in err.splitlines() if "more than one line" in line]
    assert len(dup) == 1 and "Patient: 1 id(s)" in dup[0]


def test_line_of_another_type_is_an_error_entry(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bulk.supported = WITH_DATA
    bulk.resources["Patient"].append({**OBSERVATIONS[0], "id": "x9"})  # in the Patient file
    out = tmp_path / "out"
    code, err = cli(server, out, capsys)
    assert code == 1, err
    assert (
        "manifest output[0] (Patient.000.ndjson): 1 line(s) whose resourceType is not Patient "
        "(first: line 3, resourceType 'Observation'); not kept"
    ) in err
    assert [p["id"] for p in lines(out / "Patient.000.ndjson")] == ["p1", "p2"]
    written = json.loads((out / MANIFEST).read_text())
    assert {"type": "Patient", "url": "Patient.000.ndjson", "count": 2} in written["output"]


def test_duplicate_ids_across_an_interrupted_run_are_reported(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path
) -> None:
    def hook(manifest: dict[str, Any], files: str) -> dict[str, Any]:
        manifest["output"].append({"type": "Patient", "url": f"{files}/Patient-2.ndjson"})
        return manifest

    bulk.manifest_hook = hook
    bulk.extra_files = {"Patient-2.ndjson": ndjson([{"resourceType": "Patient", "id": "p1"}])}
    bulk.file_failures = {"Patient-2.ndjson": 2}  # both attempts of the first run
    with pytest.raises(BulkExportError, match="failed after 2 attempts"):
        exporter(server, tmp_path, []).run(BulkRequest(types=("Patient",)))
    assert (tmp_path / STATE_FILE).is_file() and (tmp_path / "Patient.000.ndjson").is_file()
    made = exporter(server, tmp_path, [])
    result = made.run(BulkRequest(types=("Patient",)))
    assert result.fetched == 1  # only the second file; the first was finished before
    dup = [n for n in notices(made) if "more than one line" in n]
    assert dup == [
        "Patient: 1 id(s) on more than one line (first: Patient.001.ndjson line 1); a reader "
        "keeps one or counts both"
    ]


def test_lines_dropped_here_are_counted_across_an_interrupted_run(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path
) -> None:
    def hook(manifest: dict[str, Any], files: str) -> dict[str, Any]:
        manifest["output"].append({"type": "Observation", "url": f"{files}/Observation-2.ndjson"})
        return manifest

    bulk.type_filter = "ignore"  # OTHER_OBS comes in the first file and is dropped here
    bulk.manifest_hook = hook
    bulk.extra_files = {"Observation-2.ndjson": ndjson([{**OTHER_OBS, "id": "other2"}])}
    bulk.file_failures = {"Observation-2.ndjson": 2}
    request = BulkRequest(
        types=("Observation",),
        type_filters=(f"Observation?code={LOINC}|718-7,{LOINC}|777-3",),
    )
    with pytest.raises(BulkExportError, match="failed after 2 attempts"):
        exporter(server, tmp_path, []).run(request)
    made = exporter(server, tmp_path, [])
    made.run(request)
    assert "2 Observation(s) outside _typeFilter dropped here (the server ignored it)" in (
        notices(made)
    )


# --- 2. (empty Group) ----------------------------------------------------------------------


def test_empty_group_is_a_warning_or_with_strict_a_failure(
    server: SmartServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = cli(server, tmp_path / "out", capsys, "--group", "NoSuchGroup")
    assert code == 0
    assert "Group NoSuchGroup" in err and "empty" in err
    code, err = cli(server, tmp_path / "out2", capsys, "--group", "NoSuchGroup", "--strict")
    assert code == 1


# --- 6. credentials and ways out -----------------------------------------------------------


def smart_cli(server: SmartServer, out: Path, client_id: str, tmp_path: Path) -> list[str]:
    key = tmp_path / "key.pem"
    key.write_text(pem(KEY))
    key.chmod(0o600)
    return [
        "bulk-export",
        "--server",
        server.base_url,
        "--out",
        str(out),
        "--no-progress",
        "--smart-client-id",
        client_id,
        "--smart-key-file",
        str(key),
        "--smart-kid",
        "k1",
    ]


def test_401_at_kick_off_is_exit_3(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.clients["bulk-client"] = {"keys": [public_jwk(KEY, "k1")]}
    server.reject_all = True
    bulk.require_auth = True
    code = main(smart_cli(server, tmp_path / "out", "bulk-client", tmp_path))
    err = capsys.readouterr().err
    assert code == 3, err
    assert "HTTP 401" in err and "token invalid" in err


def test_long_client_id_is_shortened(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bulk.require_auth = True
    client_id = "eyJ" + "a" * 1000  # signed client ids are long
    code = main(smart_cli(server, tmp_path / "out", client_id, tmp_path))
    err = capsys.readouterr().err
    assert code == 3
    assert client_id not in err
    assert "eyJaaaa" in err  # still recognisable
    assert max(len(line) for line in err.splitlines()) < 400


def test_status_url_on_another_host_is_refused_and_the_job_deleted(
    server: SmartServer, bulk: BulkBehaviour, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bulk.status_origin = server.origin  # 127.0.0.1, while the client was given localhost
    code, err = cli(
        server, tmp_path / "out", capsys, base=server.base_url.replace("127.0.0.1", "localhost")
    )
    assert code == 3
    assert "refusing to send credentials there" in err
    assert len(bulk.deletes) == 1 and not bulk.jobs
