"""Units: every spelling labs use converts through the one UCUM module, with the same factor on
case input (case file -> check -> exported Observation) and on FHIR import (scoring)."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_cyclo.core import units
from fhir_cyclo.core.case import Case
from fhir_cyclo.core.scoring_config import load_config
from fhir_cyclo.core.tables import load_table
from fhir_cyclo.core.terminology import terminology
from fhir_cyclo.mappers import case_to_resources
from fhir_cyclo.readers.case_files import check_case
from fhir_cyclo.scoring.extract import extract
from tools import unit_factors

UCUM = "http://unitsofmeasure.org"

# (case analyte, scoring analyte, value, unit as the lab prints it, value in the canonical unit)
SPELLINGS: list[tuple[str, str, float, str, float]] = [
    # platelets, canonical 10*9/L
    ("platelets", "platelets", 45, "10*9/L", 45),
    ("platelets", "platelets", 45, "10*3/uL", 45),
    ("platelets", "platelets", 45, "10^9/L", 45),
    ("platelets", "platelets", 45, "x10^9/L", 45),
    ("platelets", "platelets", 45, "10E9/L", 45),
    ("platelets", "platelets", 45, "K/uL", 45),
    ("platelets", "platelets", 45, "K/\u00b5L", 45),
    ("platelets", "platelets", 45, "x10E3/uL", 45),
    ("platelets", "platelets", 45, "10*3/mm3", 45),
    ("platelets", "platelets", 45, "/nL", 45),
    ("platelets", "platelets", 45000, "/uL", 45),
    ("platelets", "platelets", 45000, "/mm3", 45),
    ("platelets", "platelets", 45000, "cells/uL", 45),
    ("platelets", "platelets", 4.5, "10*4/uL", 45),
    # hemoglobin, canonical g/dL
    ("hemoglobin", "hemoglobin", 9.1, "g/dL", 9.1),
    ("hemoglobin", "hemoglobin", 91, "g/L", 9.1),
    ("hemoglobin", "hemoglobin", 9.1, "g/dl", 9.1),
    ("hemoglobin", "hemoglobin", 91000, "mg/L", 9.1),
    # 5.647 mmol/L x 16,114.5 g/mol (Hb monomer, terminology.md s2) = 9.0999 g/dL
    ("hemoglobin", "hemoglobin", 5.647, "mmol/L", 9.0999),
    # LDH, canonical U/L
    ("ldh", "ldh", 300, "U/L", 300),
    ("ldh", "ldh", 300, "IU/L", 300),
    ("ldh", "ldh", 5, "ukat/L", 300),
    # indirect bilirubin, canonical mg/dL; 20.52 umol/L x 584.66 g/mol = 1.1997 mg/dL
    ("bilirubin_indirect", "indirect_bilirubin", 1.2, "mg/dL", 1.2),
    ("bilirubin_indirect", "indirect_bilirubin", 12, "mg/L", 1.2),
    ("bilirubin_indirect", "indirect_bilirubin", 20.52, "umol/L", 1.1997),
    ("bilirubin_indirect", "indirect_bilirubin", 20.52, "\u00b5mol/L", 1.1997),
]


def _case(analyte: str, value: float, unit: str) -> Case:
    return Case.model_validate(
        {
            "identifier": {"system": "http://example.org/sid", "value": "u1"},
            "patient": {"sex": "female"},
            "labs": [
                {"id": "l1", "analyte": analyte, "date": "2020-01-02", "value": value, "unit": unit}
            ],
        }
    )


def _scored(resources: list[dict[str, Any]], analyte: str) -> float | None:
    (patient,) = extract(resources).patients
    (measurement,) = patient.labs[analyte]
    return measurement.value


@pytest.mark.parametrize(("case_analyte", "analyte", "value", "unit", "expected"), SPELLINGS)
def test_same_conversion_on_case_input_and_fhir_import(
    case_analyte: str, analyte: str, value: float, unit: str, expected: float
) -> None:
    terms = terminology()
    # Case input: the case file's unit is accepted, and converts to the expected value.
    case = _case(case_analyte, value, unit)
    assert check_case(case, terms) == []
    case_factor = terms.analytes[case_analyte].factor_to_unit(unit)
    assert case_factor is not None
    assert round(value * case_factor, 4) == pytest.approx(expected, abs=1e-4)
    # ... and the exported Observation carries a valid UCUM code that scores to the same value.
    resources = list(case_to_resources(case, terms))
    (observation,) = [r for r in resources if r["resourceType"] == "Observation"]
    quantity = observation["valueQuantity"]
    assert quantity["system"] == UCUM and units.to_ucum(quantity["code"]) == quantity["code"]
    patient = next(r for r in resources if r["resourceType"] == "Patient")
    observation["subject"] = {"reference": "Patient/p1"}
    assert _scored([{**patient, "id": "p1"}, observation], analyte) == pytest.approx(
        expected, abs=1e-4
    )
    # FHIR import of the spelling as another system would send it (display unit, no UCUM code).
    loinc = load_config().analytes[analyte].loinc[0]
    sent = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": "Patient/p1"},
        "effectiveDateTime": "2020-01-02",
        "valueQuantity": {"value": value, "unit": unit},
    }
    imported = _scored([{"resourceType": "Patient", "id": "p1"}, sent], analyte)
    assert imported == pytest.approx(expected, abs=1e-4)
    assert imported == pytest.approx(round(value * case_factor, 4), abs=1e-4)


@pytest.mark.parametrize(
    ("analyte", "unit"),
    [
        ("platelets", "g/dL"),
        ("hemoglobin", "U/L"),
        ("ldh", "mg/dL"),
        ("platelets", "bananas"),
        ("creatinine", "10*9/L"),
    ],
)
def test_wrong_dimension_is_refused_on_both_sides_with_a_helpful_message(
    analyte: str, unit: str
) -> None:
    terms = terminology()
    problems = check_case(_case(analyte, 5, unit), terms)
    assert len(problems) == 1
    path, message = problems[0]
    assert path == "labs[l1].unit"
    assert f"unit {unit!r} cannot be converted for {analyte}" in message
    assert "docs/reference.md#units" in message
    scored = load_config().analytes
    if analyte in scored:  # creatinine is not scored
        assert scored[analyte].factor(unit) is None


def test_k_per_microliter_is_an_alias_not_kelvin() -> None:
    # In UCUM "K" is kelvin: the alias table is consulted before UCUM parsing.
    assert units.to_ucum("K/uL") == "10*3/uL"
    assert units.factor("K/uL", "10*9/L") == 1.0


def test_every_alias_and_common_code_is_valid_ucum_and_sourced() -> None:
    table = units.table()
    for alias in table.aliases.values():
        assert units._parse(alias.ucum) is not None, alias
        assert len(alias.source) > 10, alias
    for code in table.common:
        assert units._parse(code) is not None, code
    for mass in table.molar_masses.values():
        assert mass.source.startswith("TM s2"), mass


def test_every_table_unit_is_valid_ucum_and_in_the_common_list() -> None:
    table = units.table()
    for concept in terminology().analytes.values():
        if concept.unit:
            assert concept.unit in table.common, concept.unit
        if concept.substance:
            assert concept.substance in table.molar_masses
    for analyte in load_config().analytes.values():
        assert analyte.unit in table.common, analyte.unit


def test_broken_units_table_is_a_terminology_error() -> None:
    from fhir_cyclo.core.errors import TerminologyError

    data = load_table("units")
    with pytest.raises(TerminologyError, match=r"aliases\.K/uL: needs a `source`"):
        units.build_table({**data, "aliases": {"K/uL": {"ucum": "10*3/uL"}}})
    with pytest.raises(TerminologyError, match="g_per_mol"):
        units.build_table({**data, "molar_masses": {"x": {"g_per_mol": 0, "source": "s"}}})


def test_case_unit_spelling_is_stored_as_its_ucum_code() -> None:
    case = _case("platelets", 45, "x10^9/L")
    assert case.labs[0].unit == "10*9/L"
    assert _case("platelets", 45, "bananas").labs[0].unit == "bananas"  # reported by check_case


def test_factor_table_is_what_ucumvert_computes_now() -> None:
    # Regenerated from ucumvert and the tables: a new alias, analyte unit, molar mass or ucumvert
    # release that changes an answer fails here until `python -m fhir_cyclo.core.units` is rerun.
    from fhir_cyclo.core.tables import mappings_dir

    generated = unit_factors.factor_table(unit_factors.analyte_units())
    assert generated == (mappings_dir() / "unit_factors.yaml").read_text(encoding="utf-8")


def test_listed_units_convert_without_loading_the_ucum_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_parser(*args: object) -> None:
        raise AssertionError("the UCUM parser was loaded")

    units.factor.cache_clear()
    monkeypatch.setattr(units, "_registry", no_parser)
    monkeypatch.setattr(units, "_parse", no_parser)
    try:
        assert units.factor("10*9/L", "/uL") == 1000.0
        assert units.factor("x10^3/uL", "10*9/L") == 1.0  # alias, then the table
        assert units.factor("mmol/L", "g/dL", "hemoglobin") == 1.61145
        assert units.factor("mg/dL", "10*9/L") is None  # listed as not converting
        with pytest.raises(AssertionError, match="parser was loaded"):
            units.factor("mmol/L", "g/dL")  # no substance: not listed, the parser decides
    finally:
        units.factor.cache_clear()


def test_listed_factors_equal_the_parsers_answers() -> None:
    for (code, target, substance), listed in units._listed_factors().items():
        assert units.convert(code, target, substance or None) == listed, (code, target)


def test_a_malformed_factor_row_is_a_terminology_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from fhir_cyclo.core.errors import TerminologyError

    units._listed_factors.cache_clear()
    monkeypatch.setattr(units, "load_table", lambda name: {"factors": [["g/L", "g/dL", 0.1]]})
    try:
        with pytest.raises(TerminologyError, match=r"unit_factors\.yaml: factors\[0\]"):
            units._listed_factors()
    finally:
        units._listed_factors.cache_clear()
