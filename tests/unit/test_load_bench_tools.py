"""The load bench's own arithmetic: journal rates, the issue's keys, the report tables."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson

from bench.jfr_top import OTHER, layer_of
from bench.load import journal_rates, keys
from bench.load_report import ablation, matrix, tenk


def m(rate: float, cpu: float = 2.0) -> dict[str, float]:
    return {"resources_per_s": rate, "hapi_cpu_s_per_1000": cpu, "postgres_cpu_s_per_1000": 0.5}


def test_journal_rates_per_block_of_cases(tmp_path: Path) -> None:
    t0 = dt.datetime(2026, 12, 7, tzinfo=dt.UTC)
    rows = [
        # 4 cases of 10 resources, one per second; then 2 cases of 30, one per 2 s
        *({"entries": 10, "at": (t0 + dt.timedelta(seconds=i)).isoformat()} for i in range(4)),
        *(
            {"entries": 30, "at": (t0 + dt.timedelta(seconds=3 + 2 * i)).isoformat()}
            for i in (1, 2)
        ),
    ]
    journal = tmp_path / "j.jsonl"
    journal.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    rates = journal_rates(journal, 4)
    # First block: 40 resources from the first stamp to the fourth (3 s); the first case's own
    # time is unknown, so the first block is measured from its first acknowledgement.
    assert rates[0] == {"resources": 40, "resources_per_s": round(40 / 3, 1)}
    assert rates[1] == {"resources": 60, "resources_per_s": 15.0}  # 60 in the 4 s after


def test_keys_come_from_the_same_run() -> None:
    run: dict[str, Any] = {
        "push": {
            "h2_everyday": {"4": m(200)},
            "pg_everyday": {"4": m(300)},
            "pg_load": {"4": m(500)},
        },
        "import_pg_load": m(250),
    }
    assert keys(run) == {
        "pg_vs_h2_push_4w": 1.5,
        "import_resources_per_s": 250,
        "import_vs_push": 0.5,
    }
    assert keys({"push": {"pg_load": {"4": m(500)}}}) == {}  # nothing measured, no key


def test_report_tables_show_min_median_max() -> None:
    runs = [
        {
            "push": {"pg_load": {"1": m(r), "4": m(2 * r)}},
            "import_pg_load": m(r, 3.0) | {"resources": 9},
        }
        for r in (100.0, 300.0, 200.0)
    ]
    text = "\n".join(matrix({"runs": runs, "cases_per_slice": 100, "summary": {}}))
    assert (
        "| pg_load | 100.0 / 200.0 / 300.0 | - | 200.0 / 400.0 / 600.0 | - | 2.00 | 0.50 |" in text
    )
    assert "100.0 / 200.0 / 300.0 resources/s" in text
    abl = [
        {"push_4w": {"loading profile": m(b), "without x": m(b / 2, 4.0)}} for b in (100, 200, 400)
    ]
    table = "\n".join(ablation({"runs": abl}))
    assert "| without x | 50.0 / 100.0 / 200.0 | 0.50 / 0.50 / 0.50 | 4.00 / 4.00 / 4.00 |" in table
    ten = [
        {
            "cases": 10,
            "resources": 350,
            "push_pg_load_4w": {"seconds": 3.5 * k, **m(100 / k)}
            | {"per_1000_cases": [{"resources_per_s": 99}]},
            "import_pg_load": {"seconds": 1.75 * k, **m(200 / k)},
        }
        for k in (2, 1, 4)
    ]
    ten[1] = {k: v for k, v in ten[1].items() if k != "import_pg_load"}  # --paths push
    text = "\n".join(tenk(ten))
    assert "| `$import` | 2 | 3.5 / 5.2 / 7.0 | 50.0 / 75.0 / 100.0 |" in text
    assert "| push, 4 workers | 3 | 3.5 / 7.0 / 14.0 |" in text
    assert text.count("push resources/s per 1,000 cases: 99.") == 3


def test_jfr_layers_take_the_first_named_layer() -> None:
    assert layer_of("org.hibernate.engine.spi.ActionQueue") == "Hibernate ORM"
    assert layer_of("ca.uhn.fhir.jpa.searchparam.extractor.SearchParamExtractorR4").startswith(
        "search-parameter"
    )
    assert layer_of("ca.uhn.fhir.jpa.dao.BaseHapiFhirDao") == "HAPI JPA storage (DAO, transaction)"
    assert layer_of("java.util.HashMap") is None
    assert OTHER == "JDK / other"
