"""Where HAPI's CPU goes: summarise JDK Flight Recorder execution samples (`bench/load.py --jfr`).

    python bench/jfr_top.py RECORDING.jfr [...] [--top 20] [--json OUT]

Each `jdk.ExecutionSample` is one Java thread seen running. A sample is charged to the layer of
the deepest frame (nearest the leaf) that belongs to a named layer, so JDK collections called by
Hibernate count as Hibernate; "inclusive" is the share of samples with that layer anywhere on the
stack (validation inclusive holds the parsing and terminology work validation causes). Also: the
hottest methods by self samples, and samples per thread group.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

# (layer, prefixes of the frame's class name); the first layer that matches a frame names it.
LAYERS = (
    (
        "validation (HL7 validator, terminology)",
        (
            "org.hl7.fhir.validation",
            "org.hl7.fhir.r5.utils.validation",
            "ca.uhn.fhir.validation",
            "org.hl7.fhir.common.hapi.validation",
            "org.hl7.fhir.r5.terminologies",
            "org.hl7.fhir.convertors",
            "ca.uhn.fhir.rest.server.interceptor.RequestValidating",
        ),
    ),
    (
        "search-parameter indexing",
        (
            "ca.uhn.fhir.jpa.searchparam.extractor",
            "ca.uhn.fhir.jpa.dao.index",
            "ca.uhn.fhir.jpa.model.entity.ResourceIndexed",
            "org.hl7.fhir.r4.fhirpath",
            "org.hl7.fhir.r4.utils.FHIRPathEngine",
            "ca.uhn.fhir.fhirpath",
        ),
    ),
    ("FHIR parse / serialise", ("ca.uhn.fhir.parser", "com.google.gson", "com.fasterxml.jackson")),
    ("JDBC driver", ("org.postgresql", "org.h2", "com.zaxxer.hikari", "org.apache.commons.dbcp2")),
    ("Hibernate ORM", ("org.hibernate",)),
    ("batch2 ($import job framework)", ("ca.uhn.fhir.batch2", "ca.uhn.fhir.jpa.batch2")),
    ("HAPI JPA storage (DAO, transaction)", ("ca.uhn.fhir.jpa",)),
    (
        "HAPI REST server / model",
        (
            "ca.uhn.fhir.rest",
            "ca.uhn.fhir.context",
            "ca.uhn.fhir.model",
            "org.hl7.fhir.r4.model",
            "ca.uhn.fhir.util",
        ),
    ),
    (
        "Spring, Tomcat, logging",
        (
            "org.springframework",
            "org.apache.catalina",
            "org.apache.coyote",
            "org.apache.tomcat",
            "ch.qos.logback",
            "org.slf4j",
        ),
    ),
)
OTHER = "JDK / other"


def layer_of(cls: str) -> str | None:
    for name, prefixes in LAYERS:
        if cls.startswith(prefixes):
            return name
    return None


def samples(path: Path) -> list[dict[str, Any]]:
    raw = subprocess.run(
        [
            "jfr",
            "print",
            "--json",
            "--stack-depth",
            "128",
            "--events",
            "jdk.ExecutionSample",
            str(path),
        ],
        check=True,
        capture_output=True,
    ).stdout
    events: list[dict[str, Any]] = json.loads(raw)["recording"]["events"]
    return events


def thread_group(name: str) -> str:
    return re.sub(r"[-_#]?\d+$", "", name) or name


def summarise(paths: list[Path], top: int) -> dict[str, Any]:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    methods: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        for event in samples(path):
            frames = event["values"]["stackTrace"]["frames"]
            names = [f["method"]["type"]["name"].replace("/", ".") for f in frames]  # leaf first
            total += 1
            if frames:
                m = frames[0]["method"]
                methods[f"{m['type']['name'].replace('/', '.')}.{m['name']}"] += 1
            layers = [layer_of(n) for n in names]
            own[next((x for x in layers if x), OTHER)] += 1
            for x in {x for x in layers if x}:
                inclusive[x] += 1
            threads[thread_group(event["values"]["sampledThread"]["javaName"] or "?")] += 1
    pct = (lambda n: round(100 * n / total, 1)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "layer_percent": {k: pct(v) for k, v in own.most_common()},
        "inclusive_percent": {k: pct(v) for k, v in inclusive.most_common()},
        "top_methods_percent": {k: pct(v) for k, v in methods.most_common(top)},
        "thread_percent": {k: pct(v) for k, v in threads.most_common(8)},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recordings", nargs="+", type=Path)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result = summarise(args.recordings, args.top)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['samples']} samples from {', '.join(p.name for p in args.recordings)}")
    for section in ("layer_percent", "inclusive_percent", "top_methods_percent", "thread_percent"):
        print(f"\n{section}:")
        for k, v in result[section].items():
            print(f"  {v:5.1f}  {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
