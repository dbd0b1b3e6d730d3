"""Re-record the contract corpus (tests/contract/data/*-local-hapi88-*.json) from the HAPI server.

    python -m tests.contract.record_hapi            # starts the project's HAPI (hapi/, `make hapi`)
    python -m tests.contract.record_hapi --attach http://127.0.0.1:8091/fhir   # a running one
    python -m tests.contract.record_hapi --out /tmp/corpus   # elsewhere, to compare

The contract tests read ids and timestamps from the files, so a re-recording needs no test edits;
tests/integration/test_contract_corpus.py fails when the server's answers change shape.

Every file is the body the server answered, as it answered it, except one normalisation: the
server's base URL (a random loopback port) is written as LOCAL_BASE, so a re-recording only
differs where the server's answer did. The data is deleted before recording (the server must be
a test server). Raw `requests`, not FhirClient: the corpus must not pass through the code under
test. Prints one line per file: name, HTTP status, HAPI codes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from pathlib import Path
from typing import Any

import requests

from fhir_cyclo.server.hapi import HapiServer, reset_clinical_data

DATA = Path(__file__).parent / "data"
LOG = Path(__file__).resolve().parents[2] / "out" / "test-artifacts" / "hapi-record.log"
LOCAL_BASE = "http://localhost:8080/fhir"
FHIR_JSON = "application/fhir+json"
TAG = "hapi88"
# uuid5 ids like fhir-cyclo's, in a namespace new for each recording: a server that saw (and
# deleted) the ids of an earlier recording would answer with version 3 instead of 1.
NS = uuid.uuid4()
SID = "http://fhir-cyclo.example.org/fhir/sid/contract-recording"


def rid(name: str) -> str:
    return str(uuid.uuid5(NS, name))


def patient(value: str, gender: str = "female") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": SID, "value": value}],
        "gender": gender,
    }


def observation(name: str, subject: str, value: float = 9.8) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid(name),
        "status": "final",
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "718-7"}],
            "text": "Hemoglobin",
        },
        "subject": {"reference": subject},
        "effectiveDateTime": "2012-02-01",
        "valueQuantity": {
            "value": value,
            "unit": "g/dL",
            "system": "http://unitsofmeasure.org",
            "code": "g/dL",
        },
    }


def put(resource: dict[str, Any], url: str | None = None, full_url: str | None = None) -> Any:
    """A transaction entry PUTting `resource` to its id (or to the conditional `url`)."""
    target = url or f"{resource['resourceType']}/{resource['id']}"
    return {
        "fullUrl": full_url or f"urn:uuid:{resource.get('id') or rid(target)}",
        "resource": resource,
        "request": {"method": "PUT", "url": target},
    }


def transaction(*entries: Any) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


class Recorder:
    def __init__(self, base: str, data: Path) -> None:
        self.base = base
        self.data = data
        self.session = requests.Session()
        self.session.headers.update(
            {"Accept": FHIR_JSON, "Content-Type": FHIR_JSON, "Cache-Control": "no-cache"}
        )
        self.written: list[str] = []

    def send(self, method: str, path: str, body: Any = None, **params: str) -> requests.Response:
        url = path if path.startswith("http") else f"{self.base}/{path}".rstrip("/")
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        return self.session.request(method, url, data=data, params=params or None, timeout=120)

    def save(self, name: str, response: requests.Response, expect: int) -> dict[str, Any]:
        """Write the body to data/<name>; refuse a status other than `expect` (the server changed)."""
        if response.status_code != expect:
            raise SystemExit(
                f"{name}: expected HTTP {expect}, the server answered {response.status_code}: "
                f"{response.text[:500]}"
            )
        text = response.text.replace(self.base, LOCAL_BASE)
        body: dict[str, Any] = json.loads(text)
        (self.data / name).write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
        codes = sorted(set(re.findall(r"HAPI-\d{4}", text)))
        print(f"{name}: HTTP {response.status_code} {' '.join(codes)}".rstrip())
        self.written.append(name)
        return body


def record(base: str, data: Path = DATA) -> list[str]:
    """Reset the server and write every file of the corpus into `data`; the names written."""
    reset_clinical_data(base)
    rec = Recorder(base, data)
    p1 = f"Patient?identifier={SID}|p1"

    # --- transactions: what fhir-cyclo sends (conditional Patient PUT, Observations by id) ---
    # The Patient first: the recorded 2-entry create then refers to it by conditional URL.
    first = rec.send(
        "POST",
        "",
        transaction(
            put(patient("p1"), url=p1, full_url=f"urn:uuid:{rid('p1')}"),
            put(observation("obs-1", f"urn:uuid:{rid('p1')}")),
        ),
    )
    first.raise_for_status()
    rec.save(
        f"tx-response-local-{TAG}-create-2-observations.json",
        rec.send(
            "POST",
            "",
            transaction(
                put(observation("obs-2", p1)),
                put(observation("obs-3", p1)),
            ),
        ),
        200,
    )
    rec.save(
        f"tx-response-local-{TAG}-update200-and-create201.json",
        rec.send(
            "POST",
            "",
            transaction(
                put(patient("p1", gender="male"), url=p1, full_url=f"urn:uuid:{rid('p1')}"),
                put(observation("obs-4", f"urn:uuid:{rid('p1')}")),
                put(observation("obs-5", f"urn:uuid:{rid('p1')}")),
            ),
        ),
        200,
    )

    # --- refusals ---
    bad = observation("bad-status", p1)
    bad["status"] = "nonsense"
    rec.save(
        f"oo-local-{TAG}-422-validation-failure.json",
        rec.send("POST", "", transaction(put(bad))),
        422,
    )
    rec.save(
        f"oo-local-{TAG}-400-hapi-1094-unknown-reference-target.json",
        rec.send("POST", "", transaction(put(observation("orphan", "Patient/not-there")))),
        400,
    )
    rec.save(
        f"oo-local-{TAG}-400-hapi-0541-unresolved-placeholder.json",
        rec.send(
            "POST",
            "",
            transaction(put(observation("placeholder", f"urn:uuid:{rid('nowhere')}"))),
        ),
        400,
    )
    # Not HAPI-0450 as on the public server: the validating interceptor parses the body first
    # (HAPI-0331, which our server answers with 400, not HAPI's 500; so the public 0450 file
    # stays in the corpus).
    rec.save(
        f"oo-local-{TAG}-400-hapi-0331-parse-error.json",
        rec.send("POST", "", b'{"resourceType": "Bundle", "type": '),
        400,
    )
    for _ in range(2):  # two Patients with one identifier: plain creates, not conditional
        rec.send("POST", "Patient", patient("twin")).raise_for_status()
    rec.save(
        f"oo-local-{TAG}-412-hapi-2207-multiple-matches.json",
        rec.send(
            "POST",
            "",
            transaction(put(patient("twin"), url=f"Patient?identifier={SID}|twin")),
        ),
        412,
    )

    # --- reads ---
    rec.save(
        f"oo-local-{TAG}-404-hapi-2001-not-found.json",
        rec.send("GET", "Observation/not-there"),
        404,
    )
    rec.send("DELETE", f"Observation/{rid('obs-5')}").raise_for_status()
    rec.save(
        f"oo-local-{TAG}-410-deleted.json", rec.send("GET", f"Observation/{rid('obs-5')}"), 410
    )

    # --- searches ---
    subject = first.json()["entry"][0]["response"]["location"].split("/_history")[0]
    rec.save(
        f"searchset-local-{TAG}-observation-by-subject.json",
        rec.send("GET", "Observation", subject=subject),
        200,
    )
    rec.send(
        "POST",
        "",
        transaction(*(put(observation(f"page-{i}", p1, value=10 + i)) for i in range(22))),
    ).raise_for_status()
    page1 = rec.save(
        f"searchset-local-{TAG}-paging-page1.json",
        rec.send("GET", "Observation", subject=subject, _count="10", _sort="_id"),
        200,
    )
    next_url = next(link["url"] for link in page1["link"] if link["relation"] == "next")
    page2 = rec.save(
        f"searchset-local-{TAG}-paging-page2.json",
        rec.send("GET", next_url.replace(LOCAL_BASE, base)),
        200,
    )
    next_url = next(link["url"] for link in page2["link"] if link["relation"] == "next")
    rec.save(
        f"searchset-local-{TAG}-paging-page3-last.json",
        rec.send("GET", next_url.replace(LOCAL_BASE, base)),
        200,
    )

    # --- $validate (validate --server) ---
    rec.save(
        f"oo-local-{TAG}-422-validate-observation.json",
        rec.send("POST", "Observation/$validate", bad),
        422,
    )
    rec.save(
        f"oo-local-{TAG}-200-validate-observation.json",
        rec.send("POST", "Observation/$validate", observation("valid", "Patient/x")),
        200,
    )
    reset_clinical_data(base)
    return rec.written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--attach", help="record from this running test server (its data is lost)")
    parser.add_argument("--out", type=Path, default=DATA, help=f"folder to write (default {DATA})")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.attach:
        written = record(args.attach.rstrip("/"), args.out)
    else:
        with HapiServer(log_path=LOG) as hapi:
            print(f"HAPI ready in {hapi.started_in:.0f}s at {hapi.base_url}", file=sys.stderr)
            written = record(hapi.base_url, args.out)
    print(f"recorded {len(written)} file(s) into {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
