"""`load` ($import) against HAPI's recorded answers (hapi-recordings/), the files really served."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import responses

from fhir_cyclo.cli.app import main
from fhir_cyclo.core.errors import FatalTransportError, InputError
from fhir_cyclo.server.load import FileServer, Loader, find_ndjson, served
from tests.conftest import ROOT

from .helpers import BASE, MakeClient

RECORDINGS = ROOT / "hapi-recordings"
KICKOFF = f"{BASE}/$import"
STATUS = f"{BASE}/$import-poll-status?_jobId=515ae443-1840-4153-b722-168726523833"
RECORDED_FILES = "http://127.0.0.1:18230"  # where the recorded job fetched its files


def recorded(name: str) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((RECORDINGS / name).read_bytes())
    return data["response"]


def answer(name: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """A recorded response as a `responses` callback answer (headers as HAPI sent them)."""
    rec = recorded(name)
    keep = {k: v for k, v in rec["headers"].items() if k.lower() != "transfer-encoding"}
    keep.update(headers)
    return rec["status"], keep, orjson.dumps(rec["body"])


def write_ndjson(folder: Path) -> Path:
    """An `export --ndjson` layout: DIR/ndjson/<Type>.ndjson, deterministic ids."""
    nd = folder / "ndjson"
    nd.mkdir(parents=True)
    patients = [{"resourceType": "Patient", "id": f"p{i}", "gender": "female"} for i in range(3)]
    conditions = [
        {"resourceType": "Condition", "id": f"c{i}", "subject": {"reference": f"Patient/p{i}"}}
        for i in range(3)
    ]
    for rtype, rows in (("Patient", patients), ("Condition", conditions)):
        (nd / f"{rtype}.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    (nd / "Procedure.ndjson").write_bytes(b"")  # an empty type: left out of the job
    return folder


CONFLICT = "conflict"  # a poll answer: the job FAILED on HAPI-0825 (below)
CONFLICT_ERROR = (
    "HAPI-0550: HAPI-0825: Error flushing transaction with resource types: [Patient] - The "
    "operation has failed with a client-assigned ID constraint failure. This typically means that "
    "multiple client threads are trying to create a new resource with the same client-assigned ID "
    "at the same time, and this thread was chosen to be rejected."
)


def conflict_answer() -> tuple[int, dict[str, str], bytes]:
    """The recorded FAILED answer with HAPI-0825 for its errors: the error line as HAPI 8.8 wrote
    it in a 10,000-case load (bench/results/load-10k-2.log, Patient.ndjson)."""
    status, headers, body = answer("import-everyday-refintegrity-failed-poll-500.json")
    text = body.decode()
    text = re.sub(r"HAPI-1094: [^\\\"]*", CONFLICT_ERROR, text)
    assert CONFLICT_ERROR in text
    return status, headers, text.encode()


class FakeHapi:
    """Plays the recorded job; at kick-off it fetches every input URL, as HAPI's first step does."""

    def __init__(self, rsps: responses.RequestsMock, polls: list[str]) -> None:
        self.polls = polls
        self.kickoffs: list[dict[str, Any]] = []
        self.fetched: dict[str, tuple[str, bytes]] = {}
        self.prefer: list[str | None] = []
        self.events: list[str] = []  # "kick-off Patient", "poll ...-200.json", in order
        rsps.add_callback(responses.POST, KICKOFF, callback=self.kick_off)
        rsps.add_callback(responses.GET, STATUS, callback=self.poll)

    def kick_off(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        self.prefer.append(request.headers.get("Prefer"))
        body = orjson.loads(request.body)
        self.kickoffs.append(body)
        types = [
            part["valueCode"]
            for p in body["parameter"]
            if p["name"] == "input"
            for part in p["part"]
            if part["name"] == "type"
        ]
        self.events.append(f"kick-off {' '.join(types)}")
        for p in body["parameter"]:
            if p["name"] != "input":
                continue
            url = next(part["valueUri"] for part in p["part"] if part["name"] == "url")
            if url.startswith(RECORDED_FILES):
                continue  # --base-url: the user serves them (not running in this test)
            with urllib.request.urlopen(url, timeout=10) as got:
                self.fetched[url] = (got.headers["Content-Type"], got.read())
        status, headers, _ = answer("import-ok-load-pg-01-kickoff.json")
        headers["Content-Location"] = STATUS
        return status, headers, orjson.dumps({"resourceType": "OperationOutcome", "issue": []})

    def poll(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        name = self.polls.pop(0)
        self.events.append(f"poll {name}")
        return conflict_answer() if name == CONFLICT else answer(name)


def test_load_serves_the_files_kicks_off_polls_and_reports(
    rsps: responses.RequestsMock, make_client: MakeClient, sleeps: list[float], tmp_path: Path
) -> None:
    hapi = FakeHapi(
        rsps,
        [
            "import-ok-load-pg-02-poll-202.json",
            "import-ok-load-pg-04-poll-200.json",
            "import-ok-load-pg-03-poll-202.json",
            "import-ok-load-pg-04-poll-200.json",
        ],
    )
    files = find_ndjson(write_ndjson(tmp_path))
    assert [(f.path.name, f.resource_type, f.count) for f in files] == [
        ("Condition.ndjson", "Condition", 3),
        ("Patient.ndjson", "Patient", 3),
    ]
    said: list[str] = []
    with make_client() as client, served(files, None) as urls:
        result = Loader(client, progress=said.append).run(files, urls)

    # The Patients (the target of the Conditions' references) in a job of their own, finished
    # before the Conditions' job starts: no chunk of the second can race one of the first.
    assert hapi.events == [
        "kick-off Patient",
        "poll import-ok-load-pg-02-poll-202.json",
        "poll import-ok-load-pg-04-poll-200.json",
        "kick-off Condition",
        "poll import-ok-load-pg-03-poll-202.json",
        "poll import-ok-load-pg-04-poll-200.json",
    ]
    assert hapi.prefer == ["respond-async"] * 2
    inputs = []
    for params in hapi.kickoffs:
        assert params["parameter"][0] == {
            "name": "inputFormat",
            "valueCode": "application/fhir+ndjson",
        }
        inputs += [
            {part["name"]: part.get("valueCode") or part.get("valueUri") for part in p["part"]}
            for p in params["parameter"][1:]
            if p["name"] == "input"
        ]
    assert [i["type"] for i in inputs] == ["Patient", "Condition"]
    # Each file went out whole, as application/fhir+ndjson (HAPI refuses octet-stream).
    for f, i in zip(reversed(files), inputs, strict=True):
        assert hapi.fetched[i["url"]] == ("application/fhir+ndjson", f.path.read_bytes())
    assert (result.jobs, result.retried) == (2, 0)
    # HAPI's constant Retry-After: 120 is capped (5 s), one wait per 202 answer.
    assert sleeps == [5.0, 5.0]
    assert result.completed and result.ok
    assert any("QUEUED" in line for line in said)
    # The recorded report is per source URL (the recorded job's); the outcomes are parsed.
    report = result.by_file[f"{RECORDED_FILES}/Observation.ndjson"]
    assert report.outcomes == {"SUCCESSFUL_UPDATE": 57, "SUCCESSFUL_UPDATE_AS_CREATE": 4341}
    assert result.by_file[f"{RECORDED_FILES}/Patient.ndjson"].outcomes == {
        "SUCCESSFUL_UPDATE_AS_CREATE": 100
    }


def test_a_failed_job_names_each_files_errors_and_exits_1(
    rsps: responses.RequestsMock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("time.sleep", lambda _s: None)
    hapi = FakeHapi(
        rsps,
        ["import-ok-load-pg-02-poll-202.json", "import-everyday-refintegrity-failed-poll-500.json"],
    )
    # The recorded job's file names: the user serves them at --base-url.
    nd = tmp_path / "ndjson"
    nd.mkdir()
    for rtype in ("AdverseEvent", "Condition", "Observation"):
        (nd / f"{rtype}.ndjson").write_text(f'{{"resourceType": "{rtype}", "id": "x1"}}\n')
    code = main(
        [
            "load",
            str(tmp_path),
            "--server",
            BASE,
            "--base-url",
            RECORDED_FILES,
            "--max-poll-wait",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1, err
    assert len(hapi.kickoffs) == 1
    errors = [
        line for line in err.splitlines() if line.startswith("fhir-cyclo: Condition.ndjson: error:")
    ]
    # The recording keeps 8 of the 33 error lines (trimmed; the report is cut short there).
    assert len(errors) == 8
    assert all("HAPI-1094" in line for line in errors)
    assert "Condition.ndjson: FAILURE 33, SUCCESSFUL_UPDATE_AS_CREATE 94" in err
    assert "error: $import failed on the server: Job is in FAILED state" in err
    assert "AdverseEvent.ndjson: error" not in err  # only the file that failed


def test_a_bad_line_is_named_before_any_request(
    rsps: responses.RequestsMock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "Patient.ndjson").write_text(
        '{"resourceType": "Patient", "id": "p1"}\n{"resourceType": "Patient"}\n'
    )
    with pytest.raises(InputError, match=r"Patient.ndjson:2: id: missing"):
        find_ndjson(tmp_path)
    (tmp_path / "Patient.ndjson").write_text(
        '{"resourceType": "Patient", "id": "p1"}\n{"resourceType": "Condition", "id": "c"}\n'
    )
    assert main(["load", str(tmp_path), "--server", BASE, "--base-url", RECORDED_FILES]) == 1
    err = capsys.readouterr().err
    assert "Patient.ndjson:2: resourceType: Condition in a file of Patient" in err
    assert len(rsps.calls) == 0  # nothing was sent


def test_each_message_names_its_file_once(
    rsps: responses.RequestsMock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("no NDJSON here\n")
    assert main(["load", str(tmp_path), "--server", BASE, "--base-url", RECORDED_FILES]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"fhir-cyclo: error: {tmp_path}: no *.ndjson files (in it or in its ndjson/)"
    (tmp_path / "Patient.ndjson").write_text("{not json\n")
    assert main(["load", str(tmp_path), "--server", BASE, "--base-url", RECORDED_FILES]) == 1
    err = capsys.readouterr().err
    assert err.count("Patient.ndjson") == 1, err
    assert "Patient.ndjson:1: not JSON" in err
    assert len(rsps.calls) == 0


def test_the_file_server_serves_only_the_files(tmp_path: Path) -> None:
    files = find_ndjson(write_ndjson(tmp_path))
    (tmp_path / "ndjson" / "secret.txt").write_text("not served")
    with FileServer(files) as server:
        ok = urllib.request.urlopen(f"{server.base_url}/Patient.ndjson", timeout=10)
        assert ok.read() == files[1].path.read_bytes()
        host = server.base_url.rsplit("/", 1)[0]
        for path in (f"{server.base_url}/secret.txt", f"{host}/Patient.ndjson", f"{host}/"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(path, timeout=10)
            assert refused.value.code == 404
    assert server.requests == ["Patient.ndjson"]


def test_a_status_url_on_another_origin_is_refused(
    rsps: responses.RequestsMock, make_client: MakeClient, tmp_path: Path
) -> None:
    rsps.add(
        responses.POST,
        KICKOFF,
        status=202,
        headers={"Content-Location": "https://elsewhere.example/poll?_jobId=1"},
    )
    files = find_ndjson(write_ndjson(tmp_path))
    with make_client() as client, pytest.raises(FatalTransportError, match="another origin"):
        Loader(client).run(files, ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"])
    assert len(rsps.calls) == 1  # no poll went to the other origin


def test_storage_detail_chunks_by_patient_unless_told_otherwise(
    rsps: responses.RequestsMock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hapi = FakeHapi(rsps, ["import-ok-load-pg-04-poll-200.json"] * 6)  # two waves a load
    folder = write_ndjson(tmp_path)
    base = ["load", str(folder), "--server", BASE, "--base-url", RECORDED_FILES]
    base += ["--max-poll-wait", "0.01"]
    assert main(base) == 0
    assert main([*base, "--batch-size", "2000"]) == 0
    assert main([*base, "--chunks", "server"]) == 0
    default, sized, plain = hapi.kickoffs[::2]  # each load's first wave (Patient)

    def detail(params: dict[str, Any]) -> list[dict[str, str]]:
        (found,) = [p for p in params["parameter"] if p["name"] == "storageDetail"]
        parts: list[dict[str, str]] = found["part"]
        return parts

    # HAPI's names (BulkDataImportProvider); it reads the parts as strings.
    by_patient = {"name": "chunkByCompartmentName", "valueString": "Patient"}
    assert detail(default) == [by_patient]
    assert detail(sized) == [{"name": "maxBatchResourceCount", "valueString": "2000"}, by_patient]
    assert [p["name"] for p in plain["parameter"]] == ["inputFormat", "input"]
    capsys.readouterr()
    assert main([*base, "--batch-size", "0"]) == 2
    assert "--batch-size must be greater than 0" in capsys.readouterr().err
    assert len(hapi.kickoffs) == 6  # the usage error sent nothing


def test_a_job_failed_on_a_chunk_conflict_runs_again_and_later_waves_wait(
    rsps: responses.RequestsMock, make_client: MakeClient, sleeps: list[float], tmp_path: Path
) -> None:
    ok = "import-ok-load-pg-04-poll-200.json"
    # Patient wave: a conflict, then done; Condition wave: done.
    hapi = FakeHapi(rsps, [CONFLICT, ok, ok])
    files = find_ndjson(write_ndjson(tmp_path))
    said: list[str] = []
    with make_client() as client, served(files, None) as urls:
        result = Loader(client, progress=said.append).run(files, urls)
    assert hapi.events == [
        "kick-off Patient",
        f"poll {CONFLICT}",
        "kick-off Patient",  # the same files again: their ids make it an update
        f"poll {ok}",
        "kick-off Condition",
        f"poll {ok}",
    ]
    assert result.ok and (result.jobs, result.retried) == (3, 1)
    assert any("running the same files again" in line for line in said)

    # Bounded: a conflict every time gives up after two more jobs, and the later wave is not
    # sent (its references would point at Patients that are not there); `load` names it.
    rsps.calls.reset()
    hapi.polls[:] = [CONFLICT] * 3
    hapi.events.clear()
    with make_client() as client, served(files, None) as urls:
        result = Loader(client).run(files, urls)
    assert hapi.events == ["kick-off Patient", f"poll {CONFLICT}"] * 3
    assert not result.completed and (result.jobs, result.retried) == (3, 2)
    assert [f.path.name for f in result.not_sent] == ["Condition.ndjson"]
    # The report's errors were read (keyed by the recorded job's URL): where the conflict shows.
    assert "HAPI-0825" in result.by_file[f"{RECORDED_FILES}/Condition.ndjson"].errors[0]


def test_load_names_the_files_a_failed_wave_left_unsent(
    rsps: responses.RequestsMock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    FakeHapi(rsps, ["import-everyday-refintegrity-failed-poll-500.json"])  # not a conflict
    folder = write_ndjson(tmp_path)
    argv = ["load", str(folder), "--server", BASE, "--base-url", RECORDED_FILES]
    assert main([*argv, "--max-poll-wait", "0.01"]) == 1
    err = capsys.readouterr().err
    assert "not sent (a later wave; run the same load again): Condition.ndjson" in err
    assert "1 job)" in err and "run again" not in err  # HAPI-1094 is not retried
