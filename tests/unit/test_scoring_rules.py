"""Date arithmetic, windows, baseline and closest-measurement selection, and the table check."""

from __future__ import annotations

import copy
from datetime import date, timedelta

import pytest

from fhir_cyclo.core.errors import TerminologyError
from fhir_cyclo.core.scoring_config import build_config, load_config
from fhir_cyclo.core.tables import load_table
from fhir_cyclo.scoring.dates import add_months, clamp, parse_span
from fhir_cyclo.scoring.extract import Measurement, TransfusionEvent
from fhir_cyclo.scoring.rules import counted_transfusions, pick_baseline, pick_closest

START = date(2020, 1, 15)


def meas(when: str, value: float | None = 1.0, ref: str = "") -> Measurement:
    span = parse_span(when)
    return Measurement(ref or f"Observation/{when}", "platelets", value, span, when, "x")


# --- dates -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "first", "last"),
    [
        ("2011", date(2011, 1, 1), date(2011, 12, 31)),
        ("2012-02", date(2012, 2, 1), date(2012, 2, 29)),
        ("2011-02", date(2011, 2, 1), date(2011, 2, 28)),
        ("2012-02-03", date(2012, 2, 3), date(2012, 2, 3)),
        # the date part as written: no conversion of 23:30 at +09:00 to the previous UTC day
        ("2012-02-03T23:30:00+09:00", date(2012, 2, 3), date(2012, 2, 3)),
        ("2012-02-03T00:10:00.123Z", date(2012, 2, 3), date(2012, 2, 3)),
    ],
)
def test_parse_span(text: str, first: date, last: date) -> None:
    assert parse_span(text) == (first, last)


@pytest.mark.parametrize(
    "text", ["", "20120203", "2012-2", "2012-13", "2012-02-30", "12-02-03", "x"]
)
def test_parse_span_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match=r".*"):
        parse_span(text)


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (date(2021, 1, 31), 3, date(2021, 4, 30)),  # clamped to April's end
        (date(2021, 1, 31), 6, date(2021, 7, 31)),
        (date(2021, 1, 31), 12, date(2022, 1, 31)),
        (date(2019, 11, 30), 3, date(2020, 2, 29)),  # leap February
        (date(2020, 11, 30), 3, date(2021, 2, 28)),
        (date(2011, 12, 1), 3, date(2012, 3, 1)),
        (date(2020, 10, 15), 3, date(2021, 1, 15)),  # across the year
    ],
)
def test_add_months_clamps_to_month_end(start: date, months: int, expected: date) -> None:
    assert add_months(start, months) == expected


def test_clamp() -> None:
    span = (date(2012, 2, 1), date(2012, 2, 29))
    assert clamp(date(2012, 3, 1), span) == date(2012, 2, 29)
    assert clamp(date(2012, 1, 1), span) == date(2012, 2, 1)
    assert clamp(date(2012, 2, 10), span) == date(2012, 2, 10)


# --- baseline ----------------------------------------------------------------------------------


def test_baseline_window_edges() -> None:
    at_edge = meas((START - timedelta(days=30)).isoformat())
    outside = meas((START - timedelta(days=31)).isoformat())
    assert pick_baseline([outside], START, 30) is None
    picked = pick_baseline([outside, at_edge], START, 30)
    assert picked is not None
    assert picked.measurement is at_edge


def test_baseline_on_start_day_counts_and_after_start_does_not() -> None:
    on_start = meas(START.isoformat())
    after = meas((START + timedelta(days=1)).isoformat())
    picked = pick_baseline([after, on_start], START, 30)
    assert picked is not None
    assert picked.measurement is on_start


def test_baseline_is_latest_in_window() -> None:
    older = meas("2020-01-01", 5)
    newer = meas("2020-01-10", 7)
    picked = pick_baseline([newer, older], START, 30)
    assert picked is not None
    assert picked.value == 7


def test_baseline_needs_a_value() -> None:
    assert pick_baseline([meas("2020-01-10", None)], START, 30) is None


def test_baseline_partial_year_takes_latest_point_of_overlap() -> None:
    picked = pick_baseline([meas("2019")], date(2019, 12, 1), 30)
    assert picked is not None
    assert picked.date == date(2019, 12, 1)
    assert picked.imputed
    picked = pick_baseline([meas("2019")], date(2020, 1, 10), 30)  # window reaches into 2019
    assert picked is not None
    assert picked.date == date(2019, 12, 31)


def test_baseline_exact_date_beats_partial_on_same_day() -> None:
    exact = meas("2019-12-31", 3, ref="Observation/exact")
    partial = meas("2019-12", 9, ref="Observation/partial")
    picked = pick_baseline([partial, exact], date(2020, 1, 5), 30)
    assert picked is not None
    assert picked.measurement is exact


# --- timepoint windows -------------------------------------------------------------------------

TARGET = date(2020, 4, 15)


@pytest.mark.parametrize(("offset", "inside"), [(31, True), (32, False), (-31, True), (-32, False)])
def test_timepoint_window_edges(offset: int, inside: bool) -> None:
    m = meas((TARGET + timedelta(days=offset)).isoformat())
    picked = pick_closest([m], TARGET, 31)
    assert (picked is not None) is inside


def test_timepoint_closest_wins() -> None:
    near = meas((TARGET + timedelta(days=3)).isoformat(), 1)
    far = meas((TARGET - timedelta(days=4)).isoformat(), 2)
    picked = pick_closest([far, near], TARGET, 31)
    assert picked is not None
    assert picked.measurement is near


def test_timepoint_tie_later_wins() -> None:
    before = meas((TARGET - timedelta(days=5)).isoformat(), 1)
    after = meas((TARGET + timedelta(days=5)).isoformat(), 2)
    for order in ([before, after], [after, before]):
        picked = pick_closest(order, TARGET, 31)
        assert picked is not None
        assert picked.measurement is after


def test_timepoint_same_day_tie_is_order_independent() -> None:
    morning = Measurement(
        "Observation/a", "platelets", 1, (TARGET, TARGET), "2020-04-15T08:00", "x"
    )
    evening = Measurement(
        "Observation/b", "platelets", 2, (TARGET, TARGET), "2020-04-15T20:00", "x"
    )
    assert pick_closest([morning, evening], TARGET, 31).measurement is evening  # type: ignore[union-attr]
    assert pick_closest([evening, morning], TARGET, 31).measurement is evening  # type: ignore[union-attr]


def test_timepoint_partial_month_overlapping_window() -> None:
    # March 2020 ends 15 days before the target: representative date 2020-03-31
    picked = pick_closest([meas("2020-03")], TARGET, 31)
    assert picked is not None
    assert picked.date == date(2020, 3, 31)
    # February 2020 ends 46 days before: no overlap with the window
    assert pick_closest([meas("2020-02")], TARGET, 31) is None
    # the target's own month: the target itself
    picked = pick_closest([meas("2020-04")], TARGET, 31)
    assert picked is not None
    assert picked.date == TARGET


def test_counted_transfusions_overlap_and_status() -> None:
    day = date(2020, 4, 1)
    done = TransfusionEvent("Procedure/1", (day, day), "completed", True, "RBC transfusion")
    not_done = TransfusionEvent("Procedure/2", (day, day), "not-done", False, "RBC transfusion")
    assert counted_transfusions([done, not_done], day, day) == (done,)
    assert counted_transfusions([done], day + timedelta(days=1), day + timedelta(days=5)) == ()


# --- the table ---------------------------------------------------------------------------------


def test_shipped_table_loads() -> None:
    cfg = load_config()
    assert cfg.months == (3, 6, 12)
    assert cfg.window_days == 31
    assert cfg.baseline_days == 30
    assert cfg.icd_disease["D5919"] == "AIHA"
    assert cfg.loinc_analyte["59260-0"] == "hemoglobin"
    assert cfg.transfusion.free_days == 56


@pytest.mark.parametrize(
    ("path", "bad", "message"),
    [
        (("criteria", "ITP", "rules", 0, "all_of", 0, "op"), "=>", "op"),
        (("criteria", "ITP", "rules", 0, "all_of", 0, "test"), "magic", "test"),
        (("criteria", "ITP", "rules", 0, "response"), "XR", "response"),
        (("criteria", "AIHA", "source"), "nobody", "source"),
        (("analytes", "hemoglobin", "substance"), "unobtainium", "substance"),
        (("diseases", "precedence"), ["ITP"], "precedence"),
        (("timepoints", "months"), [3, "six"], "months"),
        (("transfusion", "red_cell"), ["(unclosed"], "pattern"),
    ],
)
def test_broken_table_is_a_terminology_error(
    path: tuple[object, ...], bad: object, message: str
) -> None:
    data = copy.deepcopy(load_table("scoring"))
    node = data
    for part in path[:-1]:
        node = node[part]  # type: ignore[index]
    node[path[-1]] = bad  # type: ignore[index]
    with pytest.raises(TerminologyError, match=message):
        build_config(data)


@pytest.mark.parametrize(
    ("path", "bad", "message"),
    [
        (
            ("criteria", "ITP", "rules", 0, "all_of", 0, "threshold"),
            True,
            r"criteria\.ITP\.rules\[0\]\.all_of\[0\]\.threshold: .*number",
        ),
        (
            ("criteria", "AIHA", "rules", 0, "all_of", 1, "analyte"),
            "platelets",
            r"criteria\.AIHA\.rules\[0\]\.all_of\[1\]\.analyte: .*default_upper_limit",
        ),
        (("analytes", "ldh", "factors"), {"U/L": 1}, r"analytes\.ldh: `factors`: .*substance"),
        (("baseline", "days_before_start"), 30.5, r"baseline\.days_before_start: .*integer"),
        (
            ("writeback", "responses", "NE"),
            "Not evaluable",
            r"writeback\.responses\.NE: must be a mapping",
        ),
        (("timepoints", "window"), 31, r"timepoints\.window: unknown key"),  # a typo is no default
        (
            ("criteria", "ITP", "rules", 0, "all_of", 0, "op"),
            "=>",
            r"criteria\.ITP\.rules\[0\]\.all_of\[0\]\.op: .*'>='.* \(got '=>'\)$",
        ),
    ],
)
def test_table_error_names_the_file_and_the_field_path(
    path: tuple[object, ...], bad: object, message: str
) -> None:
    data = copy.deepcopy(load_table("scoring"))
    node = data
    for part in path[:-1]:
        node = node[part]  # type: ignore[index]
    node[path[-1]] = bad  # type: ignore[index]
    with pytest.raises(TerminologyError, match=r"^mappings/scoring\.yaml: " + message):
        build_config(data)


def test_rule_needs_exactly_one_list_of_tests() -> None:
    data = copy.deepcopy(load_table("scoring"))
    rule = data["criteria"]["ITP"]["rules"][0]
    rule["any_of"] = rule["all_of"]
    with pytest.raises(TerminologyError, match=r"criteria\.ITP\.rules\[0\]: needs exactly one"):
        build_config(data)


def test_missing_key_names_the_path() -> None:
    data = copy.deepcopy(load_table("scoring"))
    del data["baseline"]
    with pytest.raises(TerminologyError, match=r"scoring\.yaml: baseline\.days_before_start"):
        build_config(data)


def test_every_test_kind_has_a_check_function() -> None:
    # The dispatch table is keyed by the TestKind Literal; a kind added to the table's model
    # without a function here would pass the config check and fail only when scored.
    from fhir_cyclo.core.scoring_config import TESTS
    from fhir_cyclo.scoring.rules import _CHECKS

    assert set(_CHECKS) == set(TESTS)
    assert len(set(_CHECKS.values())) == len(TESTS)  # one function per kind
