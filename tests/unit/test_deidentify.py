"""export --deidentify: identifiers dropped, birth year kept, one date offset per patient."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhir_cyclo.cli.app import main
from fhir_cyclo.core.case import Case, date_lower_bound
from fhir_cyclo.export.deidentify import KeyFile, deidentify, shift_date
from tests.conftest import COHORT, load_cases


def _dates(case: Case) -> list[str]:
    out = [lab.date for lab in case.labs if isinstance(lab.date, str)]
    out += [t.start for t in case.treatments if isinstance(t.start, str)]
    return out


@pytest.mark.parametrize(
    ("value", "years", "expected"),
    [
        ("2020-02-29", -8, "2012-02-29"),
        ("1904-02-29", -4, "1900-02-28"),  # 1900 is not a leap year
        ("2020-12-31T23:30:00+01:00", -4, "2016-12-31T23:30:00+01:00"),
        ("2011-12", -40, "1971-12"),
        ("2011", -4, "2007"),
    ],
)
def test_shift_date_keeps_precision(value: str, years: int, expected: str) -> None:
    assert shift_date(value, years) == expected


def test_every_date_moves_by_the_same_offset(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "k.json")
    phi = {"name": "Mario Rossi", "telecom": ("+39 02 555",), "address": "via F. Sforza 35"}
    for case in load_cases(COHORT):
        with_phi = case.model_copy(update={"patient": case.patient.model_copy(update=phi)})
        deid = deidentify(with_phi, keys)
        offset = keys.offsets[deid.identifier.value]
        assert offset < 0 and offset % 4 == 0
        before, after = _dates(case), _dates(deid)
        assert len(before) == len(after) > 0
        for a, b in zip(before, after, strict=True):
            assert int(b[:4]) - int(a[:4]) == offset and a[4:] == b[4:]
        # intervals in days between any two dates are unchanged
        first_a, first_b = date_lower_bound(before[0]), date_lower_bound(after[0])
        assert [date_lower_bound(x) - first_a for x in before] == [
            date_lower_bound(x) - first_b for x in after
        ]
        assert deid.patient.name is None and deid.patient.telecom == ()
        assert deid.patient.address is None
        if case.patient.birth_date:
            assert deid.patient.birth_date == str(int(case.patient.birth_date[:4]) + offset)
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
    assert code == 2  # a usage error, found before any work
    assert "must not be inside the output folder" in capsys.readouterr().err
