"""Push baseline: POST pre-serialised transaction Bundles with a bare requests loop.

`python bench/bare_push.py BODIES BASE_URL WORKERS [OUT]` reads BODIES (one compact Bundle per line,
exactly the bytes `fhir-cyclo push` sends for the same cases), POSTs each to BASE_URL with
WORKERS threads (one Session per thread), checks every answer is 200, and prints the seconds
taken (from the first request to the last answer) and the resources sent, as JSON, on stdout or
into OUT.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def main(argv: list[str]) -> int:
    bodies = Path(argv[0]).read_bytes().splitlines()
    base, workers = argv[1], int(argv[2])
    local = threading.local()

    def post(body: bytes) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        response = session.post(base, data=body, headers=HEADERS, timeout=600)
        if response.status_code != 200:
            raise SystemExit(f"bare POST -> HTTP {response.status_code}: {response.text[:300]}")
        _ = response.content

    start = time.perf_counter()
    if workers == 1:
        for body in bodies:
            post(body)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(post, bodies))
    took = time.perf_counter() - start
    resources = sum(body.count(b'"request":') for body in bodies)
    line = json.dumps({"seconds": took, "bundles": len(bodies), "resources": resources})
    if len(argv) > 3:
        Path(argv[3]).write_text(line)
    else:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
