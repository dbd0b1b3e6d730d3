"""Write a seed corpus per fuzz target into DIR/<target>/: `python fuzz/seed.py DIR`.

Seeds are the project's own fixtures and bad-input files (and an export of the fixtures for the
FHIR readers), so the fuzzer starts from inputs that reach deep into each reader.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

MANIFEST = b"""{"transactionTime": "2026-01-01T00:00:00Z", "request": "https://fhir.example/$export",
 "requiresAccessToken": true,
 "output": [{"type": "Patient", "url": "https://fhir.example/files/Patient.ndjson", "count": 1},
            {"type": "Patient", "url": "Patient.ndjson"}],
 "error": []}"""


def seeds() -> dict[str, list[bytes]]:
    from fhir_cyclo.core.terminology import terminology
    from fhir_cyclo.export.writer import map_case
    from fhir_cyclo.fhir.bundle import dumps, transaction_bundle, with_local_references
    from fhir_cyclo.readers.case_files import load

    out: dict[str, list[bytes]] = {
        k: [] for k in ("case_file", "cohort_folder", "fhir_json", "ndjson", "manifest")
    }
    for path in sorted((REPO / "fixtures" / "cases").glob("*.y*ml")):
        out["case_file"].append(path.read_bytes())
    for path in sorted((REPO / "tests" / "bad_input" / "cases").iterdir()):
        out["case_file"].append(path.read_bytes())
    cohorts = [
        REPO / "fixtures" / "cohort",
        *sorted((REPO / "tests" / "bad_input" / "cohorts").iterdir()),
    ]
    for folder in cohorts:
        parts = [
            (folder / n).read_bytes() if (folder / n).exists() else b""
            for n in ("cohort.yaml", "patients.csv", "labs.csv")
        ]
        out["cohort_folder"].append(b"\x00".join(parts))
    terms = terminology()
    lines: list[bytes] = []
    for loaded in load([REPO / "fixtures"], terms):
        if loaded.case is None:
            continue
        resources = map_case(loaded.case, terms, validate=False)
        out["fhir_json"].append(
            dumps(transaction_bundle(loaded.case, terms, resources), pretty=False)
        )
        lines.extend(dumps(r, pretty=False) for r in with_local_references(resources))
    for path in sorted((REPO / "tests" / "bad_input" / "fhir").iterdir()):
        (out["ndjson"] if path.suffix == ".ndjson" else out["fhir_json"]).append(path.read_bytes())
    out["ndjson"].append(b"\n".join(lines[:60]) + b"\n")
    out["manifest"].append(MANIFEST)
    return out


def main() -> None:
    root = Path(sys.argv[1])
    for target, items in seeds().items():
        folder = root / target
        folder.mkdir(parents=True, exist_ok=True)
        for data in items:
            (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)  # noqa: S324 - a name
        print(f"{target}: {len(items)} seed(s) in {folder}")


if __name__ == "__main__":
    main()
