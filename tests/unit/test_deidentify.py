"""export --deidentify: identifiers dropped, birth year kept, one date offset per patient."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from fhir_cyclo.case import Case, date_lower_bound
from fhir_cyclo.cli import main
from fhir_cyclo.deidentify import KeyFile, deidentify, shift_date
from tests.conftest import COHORT, load_cases


def _dates(case: Case) -> list[str]:
    out = [lab.date for lab in case.labs if isinstance(lab.date, str)]
    out += [t.start for t in case.treatments if isinstance(t.start, str)]
    return out


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("2020-02-28", 1, "2020-02-29"),
        ("2020-12-31T23:30:00+01:00", 1, "2021-01-01T23:30:00+01:00"),
        ("2011-12", 45, "2012-01"),
        ("2011", -1, "2010"),
    ],
)
def test_shift_date_keeps_precision(value: str, days: int, expected: str) -> None:
    assert shift_date(value, days) == expected


def test_every_date_moves_by_the_same_offset(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "k.json")
    for case in load_cases(COHORT):
        deid = deidentify(
            case.model_copy(
                update={
                    "patient": case.patient.model_copy(
                        update={
                            "name": "Mario Rossi",
                            "telecom": ("+39 02 555",),
                            "address": "via F. Sforza 35",
                        }
                    )
                }
            ),
            keys,
        )
        offset = keys.offsets[deid.identifier.value]
        assert offset != 0
        before, after = _dates(case), _dates(deid)
        assert len(before) == len(after) > 0
        for a, b in zip(before, after, strict=True):
            assert (date_lower_bound(b) - date_lower_bound(a)) == dt.timedelta(days=offset)
        assert (
            deid.patient.name is None
            and deid.patient.telecom == ()
            and deid.patient.address is None
        )
        assert (
            deid.patient.birth_date == (case.patient.birth_date or "")[:4]
            or deid.patient.birth_date is None
        )
        assert case.identifier.value not in deid.identifier.value


def test_key_file_makes_reexport_stable_and_is_private(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    for run in ("a", "b"):
        assert (
            main(
                [
                    "export",
                    str(COHORT),
                    "--out",
                    str(tmp_path / run),
                    "--deidentify",
                    "--key-file",
                    str(key),
                ]
            )
            == 0
        )
    files_a = sorted(p.name for p in (tmp_path / "a").glob("*.json"))
    assert files_a == sorted(p.name for p in (tmp_path / "b").glob("*.json"))
    for name in files_a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert key.stat().st_mode & 0o077 == 0
    text = " ".join((tmp_path / "a" / n).read_text() for n in files_a)
    for case in load_cases(COHORT):
        assert f'"{case.identifier.value}"' not in text
    assert len(json.loads(key.read_text())["offsets"]) == 13


def test_key_file_inside_output_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "export",
            str(COHORT),
            "--out",
            str(tmp_path),
            "--deidentify",
            "--key-file",
            str(tmp_path / "k.json"),
        ]
    )
    assert code == 1
    assert "must not be inside the output folder" in capsys.readouterr().err
