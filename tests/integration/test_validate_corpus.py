"""Everything fhir-cyclo writes passes the server's $validate with 0 errors; warnings are known.

Fixture Bundles, every NDJSON resource of their export, the score write-back Bundles (from files
and from the server) and >= 200 Hypothesis-generated cases. Each warning kind that remains must
have a row in docs/validation.md saying why it stays, so a new kind of warning fails here.
"""

from __future__ import annotations

import itertools
import os
import random
import re
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

from fhir_cyclo.core.case import Case
from fhir_cyclo.export.writer import export
from fhir_cyclo.fhir.bundle import transaction_bundle
from fhir_cyclo.readers.fhir import iter_from_server, read_paths
from fhir_cyclo.scoring.extract import extract
from fhir_cyclo.scoring.rules import score
from fhir_cyclo.scoring.writeback import to_bundle
from fhir_cyclo.server.push import push_bundles
from fhir_cyclo.validation.server import Finding, Target, collect, target_for, validate_all
from tests.conftest import FIXTURES, ROOT
from tests.integration.conftest import Server
from tests.unit.strategies import cases

pytestmark = pytest.mark.integration

DOC = ROOT / "docs" / "validation.md"
HYPOTHESIS_CASES = 200
SEED_ENV = "FHIR_CYCLO_VALIDATE_SEED"
_SYSTEM = re.compile(r"CodeSystem is unknown and can't be validated: (\S+)")


def kind(finding: Finding) -> tuple[str, str]:
    """(validator message id, code system or ""): the rows of docs/validation.md."""
    match = _SYSTEM.search(finding.message)
    return finding.message_id or finding.message, match.group(1) if match else ""


def documented_kinds() -> set[tuple[str, str]]:
    """(message id, system) of every table row of docs/validation.md (system column may be -)."""
    rows = set()
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 3 and cells[0] not in ("", "message id"):
            rows.add((cells[0], "" if cells[1] in ("-", "") else cells[1]))
    return rows


def check(server: Server, targets: Iterable[Target | Finding]) -> tuple[int, list[Finding]]:
    """$validate every target; assert no error and no undocumented warning; (count, findings)."""
    with server.client() as client:
        results = list(validate_all(client, targets, workers=2))
    found = [f for _, fs in results for f in fs]
    errors = [f.line() for f in found if f.is_error]
    assert not errors, "\n".join(errors[:50])
    undocumented = {kind(f) for f in found if f.severity == "warning"} - documented_kinds()
    assert not undocumented, f"warnings without a reason in {DOC}: {sorted(undocumented)}"
    sent = sum(1 for target, _ in results if target is not None)
    return sent, found


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export")
    summary = export([FIXTURES], out, ndjson=True)
    assert not summary.failed
    return out


def test_fixture_bundles_pass_validate(server: Server, exported: Path) -> None:
    bundles = sorted(exported.glob("*.json"))
    assert len(bundles) == 14  # the case report + 13 cohort patients
    sent, found = check(server, collect(bundles))
    assert sent == len(bundles)
    assert found  # the known warnings are there: the server did look at them


def test_deidentified_export_passes_validate(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Shifted dates, birth year only, pseudonymised identifiers: still valid R4."""
    out = tmp_path_factory.mktemp("deid")
    key = tmp_path_factory.mktemp("key") / "key.json"
    summary = export([FIXTURES], out, deidentify_keys=key)
    assert not summary.failed
    bundles = sorted(out.glob("*.json"))
    assert len(bundles) == 14
    sent, _ = check(server, collect(bundles))
    assert sent == len(bundles)


def test_every_ndjson_resource_passes_validate(server: Server, exported: Path) -> None:
    files = sorted((exported / "ndjson").glob("*.ndjson"))
    lines = sum(len(f.read_text().splitlines()) for f in files)
    assert lines > 100
    sent, _ = check(server, collect(files))
    assert sent == lines  # one $validate per NDJSON line


def test_write_back_bundle_from_files_passes_validate(server: Server, exported: Path) -> None:
    bundle = to_bundle(score(extract(read_paths([exported]))))
    assert len(bundle["entry"]) >= 13  # at least one assessment per scored patient
    sent, _ = check(server, [target_for("write-back (files)", bundle)])
    assert sent == 1


def test_write_back_bundle_from_the_server_passes_validate(
    server: Server, all_fixture_cases: list[Case]
) -> None:
    """Scored from the server, the Observations refer to server ids (Patient/123)."""
    with server.client() as client:
        summary = push_bundles(
            client, ((c.identifier.token, transaction_bundle(c)) for c in all_fixture_cases)
        )
        assert summary.failed == 0
        # One identifier at a time: on a shared server ($FHIR_BASE_URL) only our cases are read.
        items = itertools.chain.from_iterable(
            iter_from_server(client, identifier=c.identifier.token) for c in all_fixture_cases
        )
        bundle = to_bundle(score(extract(items)))
    assert len(bundle["entry"]) >= 13
    assert all(
        e["resource"]["subject"]["reference"].startswith("Patient/") for e in bundle["entry"]
    )
    check(server, [target_for("write-back (server)", bundle)])


def generated_cases(n: int, rng_seed: int) -> list[Case]:
    """`n` cases from the property-test strategy (generation only: nothing to shrink here)."""
    out: list[Case] = []

    @seed(rng_seed)
    @settings(
        max_examples=n,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(cases())
    def draw(case: Case) -> None:
        out.append(case)

    draw()
    return out


def test_hypothesis_cases_pass_validate(server: Server) -> None:
    """A new seed each run (printed, so a failure can be replayed with $SEED_ENV=seed)."""
    rng_seed = int(os.environ.get(SEED_ENV) or random.randrange(2**32))
    print(f"\nHypothesis seed {rng_seed} (replay: {SEED_ENV}={rng_seed})")
    drawn = generated_cases(HYPOTHESIS_CASES, rng_seed)
    assert len(drawn) >= HYPOTHESIS_CASES, f"only {len(drawn)} cases drawn (seed {rng_seed})"
    targets = [
        target_for(f"hypothesis case {i} (seed {rng_seed})", transaction_bundle(case))
        for i, case in enumerate(drawn)
    ]
    sent, _ = check(server, targets)
    assert sent == len(drawn)
