"""Export ceiling: the same case files read, Bundles built as plain dicts, the same files written.

`python bench/ceiling.py CASES_DIR OUT_DIR` does what `fhir-cyclo export CASES_DIR --out OUT_DIR
--ndjson` does for the benchmark's synthetic cases, as a hand-written exporter with no model and no
validation would: `orjson.loads` each case file, build its transaction Bundle from literal dicts
(`baseline.PlainBuilder`), write the pretty Bundle file and append each resource to its type's
NDJSON file with `urn:uuid:` references made `Type/id`. `run.py` checks that both write the very
same bytes before it compares their times.

`python bench/ceiling.py --checks CASES_DIR OUT_DIR` adds the two checks export may not drop,
done the fastest way this project knows: each case file through the input model and its table
checks (`Case.model_validate`, `inputs.check_case`: what turns a bad file into a message naming
file and field) and each built resource through the R4B shape-memoised validator (`r4b.py`: the
verdicts of fhir.resources' `model_validate`). What is left between it and export is mapping,
Bundle and file work; what is left between the plain ceiling and it is the price of the checks.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import IO, Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline import PlainBuilder
from fhir_cyclo.core.terminology import terminology

_URN = re.compile(rb'"reference":"urn:uuid:([0-9a-f-]{36})"')


def _filename(identifier: dict[str, str]) -> str:
    # The name export gives a Bundle file (export.bundle_filename), from the raw identifier.
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", identifier["value"]).strip("-")[:60] or "case"
    token = f"{identifier['system']}|{identifier['value']}"
    return f"{slug}-{hashlib.sha256(token.encode()).hexdigest()[:8]}.json"


def main(argv: list[str]) -> int:
    checks = argv[:1] == ["--checks"]
    if checks:
        argv = argv[1:]
    cases, out = Path(argv[0]), Path(argv[1])
    terms = terminology()
    builder = PlainBuilder(terms)
    check_input = check_resource = None
    if checks:
        from fhir_cyclo.core.case import Case
        from fhir_cyclo.fhir.r4b import shape_validator
        from fhir_cyclo.readers.case_files import check_case

        def check_input(data: dict[str, Any], path: Path) -> None:
            if check_case(Case.model_validate(data), terms):
                raise SystemExit(f"ceiling --checks: {path} fails the input checks")

        check_resource = shape_validator().check
    (out / "ndjson").mkdir(parents=True, exist_ok=True)
    files: dict[str, IO[bytes]] = {}
    count = 0
    for path in sorted(cases.glob("*.json")):
        case: dict[str, Any] = orjson.loads(path.read_bytes())
        if check_input is not None:
            check_input(case, path)
        bundle = builder.bundle(case)
        if check_resource is not None:
            for entry in bundle["entry"]:
                res = entry["resource"]
                # The Patient goes into a transaction without its id; export validates it with.
                check_resource(res if "id" in res else {**res, "id": entry["fullUrl"][9:]})
        (out / _filename(case["identifier"])).write_bytes(
            orjson.dumps(bundle, option=orjson.OPT_INDENT_2) + b"\n"
        )
        local = {}
        for entry in bundle["entry"]:
            res = entry["resource"]
            rid = entry["fullUrl"][9:]
            local[rid.encode()] = f'"reference":"{res["resourceType"]}/{rid}"'.encode()

        def swap(match: re.Match[bytes], local: dict[bytes, bytes] = local) -> bytes:
            return local.get(match.group(1), match.group(0))

        for entry in bundle["entry"]:
            res = entry["resource"]
            rtype = res["resourceType"]
            if "id" not in res:  # the Patient's body has no id in a transaction (server's)
                res = {"resourceType": rtype, "id": entry["fullUrl"][9:], **res}
            fh = files.get(rtype)
            if fh is None:
                fh = files[rtype] = (out / "ndjson" / f"{rtype}.ndjson").open("wb")
            fh.write(_URN.sub(swap, orjson.dumps(res)) + b"\n")
        count += 1
    for fh in files.values():
        fh.close()
    print(f"ceiling wrote {count} case(s) to {os.fspath(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
