"""`fhir-cyclo validate` on FHIR others wrote (tests/realworld/data/SOURCES: Synthea, Oracle
Health, smart-on-fhir Bulk NDJSON): real defects only, every resource read as `score` reads it."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"
SYNTHEA = (
    DATA / "original" / "synthea-r4" / "Damion_Frami_9246eb82-afc3-4a9a-8d03-47fdc2273007.json"
)
ORACLE = DATA / "original" / "oracle-health"
BULK_NO_MANIFEST = DATA / "original" / "bulk-sample-10-patients"
BULK_GZ = DATA / "original" / "bulk-sample-gz" / "Condition.000.ndjson.gz"
BULK_MANIFEST = DATA / "variants" / "d1-damion-itp" / "bulk"


def validate(*paths: Path) -> tuple[int, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FHIR_CYCLO")}
    done = subprocess.run(
        [sys.executable, "-m", "fhir_cyclo.cli", "validate", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stderr.splitlines()


def lines_of(*files: Path) -> int:
    total = 0
    for f in files:
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rt", encoding="utf-8") as handle:
            total += sum(1 for line in handle if line.strip())
    return total


def test_synthea_bundle_is_valid_in_one_line() -> None:
    code, lines = validate(SYNTHEA)
    # Synthea codes (not in mappings/), its #coverage/#referral contained references and its
    # profiles are not errors in someone else's record.
    assert code == 0, "\n".join(lines[:20])
    entries = len(json.loads(SYNTHEA.read_text(encoding="utf-8"))["entry"])
    assert lines == [f"fhir-cyclo: checked {entries} resource(s) in 1 FHIR file(s): 0 problem(s)"]


def test_oracle_examples_name_exactly_their_defects() -> None:
    code, lines = validate(ORACLE)
    errors = [line for line in lines if line.startswith("fhir-cyclo: error:")]
    assert code == 1
    assert errors == [
        f"fhir-cyclo: error: {ORACLE / 'observation-entry.json'}: resourceType: a Bundle entry "
        "(fullUrl + resource), not a resource or a Bundle",
        f"fhir-cyclo: error: {ORACLE / 'observation-searchset-entered-in-error.json'}: entry[0] "
        "Observation.status: invalid code 'entered-in-error ': leading, trailing or repeated "
        "whitespace",
    ]
    assert lines[-1] == "fhir-cyclo: checked 35 resource(s) in 4 FHIR file(s): 2 problem(s)"


def test_bulk_folder_without_manifest_checks_every_line_and_skips_the_client_log() -> None:
    data = sorted(p for p in BULK_NO_MANIFEST.glob("*.ndjson") if p.name != "log.ndjson")
    code, lines = validate(BULK_NO_MANIFEST)
    assert code == 0, "\n".join(lines)
    log = BULK_NO_MANIFEST / "log.ndjson"
    assert lines == [
        f"fhir-cyclo: note: {log}: skipped: not FHIR NDJSON (line 1 has no resourceType)",
        f"fhir-cyclo: checked {lines_of(*data)} resource(s) in {len(data)} FHIR file(s): "
        "0 problem(s)",
    ]


def test_bulk_folder_is_read_through_its_manifest() -> None:
    data = sorted(BULK_MANIFEST.glob("*.ndjson.gz"))
    code, lines = validate(BULK_MANIFEST)
    assert code == 0, "\n".join(lines)
    log = BULK_MANIFEST / "log.ndjson"
    # manifest.json is not a case file; the client's log is not in it: a note, not an error.
    assert lines[:-1] == [
        f"fhir-cyclo: note: {log}: skipped: not listed in {BULK_MANIFEST / 'manifest.json'}"
    ]
    assert lines[-1] == (
        f"fhir-cyclo: checked {lines_of(*data)} resource(s) in {len(data)} FHIR file(s): "
        "0 problem(s)"
    )


def test_one_ndjson_file_and_one_gz_file_every_line() -> None:
    plain = BULK_NO_MANIFEST / "Encounter.000.ndjson"
    for path in (plain, BULK_GZ):
        code, lines = validate(path)
        assert code == 0, lines
        assert lines == [
            f"fhir-cyclo: checked {lines_of(path)} resource(s) in 1 FHIR file(s): 0 problem(s)"
        ]
