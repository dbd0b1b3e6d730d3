"""`fhir-cyclo validate --server` on the HAPI server: each value that R4B accepts is reported."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fhir_cyclo.cli.app import main
from tests.integration.conftest import Server

pytestmark = pytest.mark.integration

Resource = dict[str, Any]

# A valid R4 Observation: the control shows it has no error, so each error below comes from the
# one value the test changes.
OBSERVATION: Resource = {
    "resourceType": "Observation",
    "id": "hb-1",
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "laboratory",
                }
            ]
        }
    ],
    "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}], "text": "Hemoglobin"},
    "subject": {"reference": "Patient/p-1"},
    "effectiveDateTime": "2012-02-01",
    "valueQuantity": {
        "value": 12.5,
        "unit": "g/dL",
        "system": "http://unitsofmeasure.org",
        "code": "g/dL",
    },
}
PATIENT: Resource = {"resourceType": "Patient", "id": "p-1", "active": True, "gender": "female"}


def write(tmp_path: Path, name: str, doc: Any) -> Path:
    """`doc` as a JSON file (a list of resources as NDJSON when the name ends in .ndjson)."""
    path = tmp_path / name
    if name.endswith(".ndjson"):
        path.write_text("\n".join(json.dumps(d) for d in doc) + "\n")
    else:
        path.write_text(json.dumps(doc, indent=2))
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    assert captured.out == ""  # issues are diagnostics: stderr, like every command's
    lines = [line.removeprefix("fhir-cyclo: ") for line in captured.err.splitlines()]
    return code, lines, captured.err


def observation(change: Callable[[Resource], None]) -> Resource:
    doc = copy.deepcopy(OBSERVATION)
    change(doc)
    return doc


def _set(path: str, value: Any) -> Callable[[Resource], None]:
    def change(doc: Resource) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value

    return change


def test_control_observation_and_patient_have_no_error(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obs = write(tmp_path, "obs.json", OBSERVATION)
    pat = write(tmp_path, "patient.json", PATIENT)
    code, lines, err = cli(capsys, "validate", "--server", server.base_url, str(obs), str(pat))
    assert code == 0, lines
    assert not [line for line in lines if ": error: " in line]
    assert "validated 2 resource(s)" in err and "0 error(s)" in err


# (test id, the document, the FHIRPath the issue must name, a fragment of the server's message)
REFUSED = [
    ("status-nonsense", observation(_set("status", "nonsense")), "Observation.status", "nonsense"),
    ("id-65-chars", observation(_set("id", "a" * 65)), "Observation.id", "Too long (65 chars)"),
    ("id-255-chars", observation(_set("id", "a" * 255)), "Observation.id", "Too long (255 chars)"),
    (
        "uri-with-space",
        observation(_set("code.coding.0.system", "http://loinc .org")),
        "Observation.code.coding[0].system",
        "whitespace",
    ),
    (
        "decimal-as-string",
        observation(_set("valueQuantity.value", "5.5")),
        "Observation.value[x].value",
        "must be a number",
    ),
    ("boolean-as-1", {**PATIENT, "active": 1}, "Patient.active", "must be a boolean"),
    ("empty-array", observation(_set("category", [])), "Observation.category", "cannot be empty"),
    ("empty-object", observation(_set("code", {})), "Observation.code", "must have some content"),
]


@pytest.mark.parametrize("case", [pytest.param(c[1:], id=c[0]) for c in REFUSED])
def test_value_r4b_accepts_is_an_error(
    server: Server,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: tuple[Resource, str, str],
) -> None:
    doc, location, fragment = case
    path = write(tmp_path, "bad.json", doc)
    code, lines, err = cli(capsys, "validate", "--server", server.base_url, str(path))
    assert code == 1, lines
    wanted = f"{path}"
    hits = [
        line
        for line in lines
        if line.startswith(wanted) and f": error: {location}: " in line and fragment in line
    ]
    assert hits, "\n".join(lines)
    assert "0 error(s)" not in err


def test_whitespace_only_string_is_reported(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """R4's string regex allows it, so the HL7 validator warns (it does not refuse); a warning
    does not fail the command, but it is listed with its FHIRPath."""
    path = write(tmp_path, "ws.json", observation(_set("code.text", "   ")))
    code, lines, _ = cli(capsys, "validate", "--server", server.base_url, str(path))
    assert code == 0
    assert any(
        ": warning: Observation.code.text: " in line and "whitespace" in line for line in lines
    ), lines


def test_whitespace_only_code_is_an_error(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """For a `code` (no whitespace-only value is in its regex) the same value is an error."""
    path = write(tmp_path, "ws-code.json", observation(_set("status", "   ")))
    code, lines, _ = cli(capsys, "validate", "--server", server.base_url, str(path))
    assert code == 1
    assert any(": error: Observation.status: " in line for line in lines), lines


DEVICE_ID = "0e5a1c3e-1d6c-4f43-9b43-6a1b2c3d4e5f"


def test_medication_statement_about_a_device_is_an_error(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The validator resolves the reference inside the Bundle and checks its target type."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{DEVICE_ID}",
                "resource": {"resourceType": "Device", "id": DEVICE_ID},
                "request": {"method": "PUT", "url": f"Device/{DEVICE_ID}"},
            },
            {
                "fullUrl": "urn:uuid:5b0c1d2e-3f40-4152-8364-758697a8b9ca",
                "resource": {
                    "resourceType": "MedicationStatement",
                    "id": "ms-1",
                    "status": "active",
                    "medicationCodeableConcept": {"text": "cyclosporine"},
                    "subject": {"reference": f"urn:uuid:{DEVICE_ID}"},
                },
                "request": {"method": "PUT", "url": "MedicationStatement/ms-1"},
            },
        ],
    }
    path = write(tmp_path, "device.json", bundle)
    code, lines, _ = cli(capsys, "validate", "--server", server.base_url, str(path))
    assert code == 1
    hits = [
        line
        for line in lines
        if line.startswith(f"{path} entry[1] MedicationStatement/ms-1: error: ")
        and "Bundle.entry[1].resource.subject" in line
        and "Device" in line
    ]
    assert hits, lines


def test_medication_statement_with_a_typed_device_reference_is_an_error(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Alone (no Bundle to resolve in), the reference's `type` is what the validator checks."""
    doc = {
        "resourceType": "MedicationStatement",
        "id": "ms-2",
        "status": "active",
        "medicationCodeableConcept": {"text": "cyclosporine"},
        "subject": {"reference": "Device/d-1", "type": "Device"},
    }
    path = write(tmp_path, "ms.json", doc)
    code, lines, _ = cli(capsys, "validate", "--server", server.base_url, str(path))
    assert code == 1
    assert any(
        ": error: MedicationStatement.subject: " in line and "Device" in line for line in lines
    ), lines


def test_ndjson_lines_are_named_and_information_needs_v(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = OBSERVATION
    bad = observation(_set("status", "nonsense"))
    path = write(tmp_path, "obs.ndjson", [good, {**bad, "id": "hb-2"}])
    code, lines, err = cli(capsys, "validate", "--server", server.base_url, str(path))
    assert code == 1
    assert any(
        line.startswith(f"{path}:2 Observation/hb-2: error: Observation.status: ") for line in lines
    ), lines
    assert not any(line.startswith(f"{path}:1 ") and ": error: " in line for line in lines)
    assert "validated 2 resource(s)" in err
    assert not any(": information: " in line for line in lines)


def test_case_files_are_mapped_and_validated(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import CASE_REPORT, COHORT

    code, lines, err = cli(
        capsys, "validate", "--server", server.base_url, str(CASE_REPORT), str(COHORT)
    )
    assert code == 0, [line for line in lines if ": error: " in line]
    assert "validated 14 resource(s)" in err  # 1 case report + 13 cohort patients, one Bundle each
    assert any(line.startswith(str(CASE_REPORT)) for line in lines)  # its warnings, named


def test_unreadable_input_is_an_error_and_the_rest_is_validated(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"resourceType": "Observation",')
    good = write(tmp_path, "good.json", OBSERVATION)
    code, lines, err = cli(capsys, "validate", "--server", server.base_url, str(broken), str(good))
    assert code == 1
    assert any(line.startswith(f"{broken}: error: ") for line in lines), lines
    assert "validated 1 resource(s)" in err


def test_information_is_listed_only_with_information(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A clean resource (narrative included) gets one information issue: shown with
    --information only (it was `-v`, which is the global verbosity now)."""
    div = '<div xmlns="http://www.w3.org/1999/xhtml">female patient</div>'
    path = write(tmp_path, "clean.json", {**PATIENT, "text": {"status": "generated", "div": div}})
    code, quiet, _ = cli(capsys, "validate", "--server", server.base_url, str(path))
    assert code == 0
    assert quiet[:-1] == []  # only the summary line
    assert "0 error(s), 0 warning(s), 1 information" in quiet[-1]
    code, verbose, _ = cli(
        capsys, "validate", "--information", "--server", server.base_url, str(path)
    )
    assert code == 0
    assert verbose[:-1] == [
        f"{path} Patient/p-1: information: No issues detected during validation"
    ]
