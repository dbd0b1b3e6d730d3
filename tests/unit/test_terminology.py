"""The terminology tables: loaded and checked at start, sources named, UNVERIFIED never coded."""

from __future__ import annotations

import copy

import pytest
import yaml

from fhir_cyclo.core.errors import TerminologyError
from fhir_cyclo.core.tables import mappings_dir
from fhir_cyclo.core.terminology import LOCAL_SYSTEM, Terminology, terminology

RAW = yaml.safe_load((mappings_dir() / "terminology.yaml").read_text())


def test_every_external_coding_names_its_source() -> None:
    t = terminology()
    groups = [t.analytes, t.diagnoses, t.drugs, t.procedures, t.adverse_events]
    for group in groups:
        for key, concept in group.items():
            for coding in concept.codings:
                assert coding.source.strip(), key
                if coding.system != LOCAL_SYSTEM:
                    assert coding.source.startswith("TM s"), (key, coding.source)


def test_unverified_concepts_carry_no_external_code() -> None:
    t = terminology()
    for group in (t.analytes, t.diagnoses, t.drugs, t.procedures, t.adverse_events):
        for key, concept in group.items():
            if concept.unverified:
                assert all(c.system == LOCAL_SYSTEM for c in concept.codings), key


@pytest.mark.parametrize(
    ("system", "code"),
    [
        ("http://snomed.info/sct", "95563006"),  # rejected Evans candidate
        ("http://loinc.org", "11034-5"),  # wrong AChR code seen in public repos
        ("http://loinc.org", "3974-3"),  # wrong cyclosporine code seen in public repos
        ("http://www.nlm.nih.gov/research/umls/rxnorm", "6387"),  # lidocaine, not azathioprine
    ],
)
def test_known_wrong_codes_are_absent(system: str, code: str) -> None:
    assert (system, code) not in terminology().known_codings


def test_table_without_source_is_rejected() -> None:
    raw = copy.deepcopy(RAW)
    del raw["drugs"]["cyclosporine"]["codings"][0]["source"]
    with pytest.raises(TerminologyError, match=r"drugs\.cyclosporine\.codings\.0\.source"):
        Terminology(raw)


def test_text_only_concept_needs_a_reason() -> None:
    raw = copy.deepcopy(RAW)
    del raw["procedures"]["thymectomy"]["unverified"]
    with pytest.raises(TerminologyError, match="unverified"):
        Terminology(raw)


def test_unknown_system_key_is_rejected() -> None:
    raw = copy.deepcopy(RAW)
    raw["drugs"]["cyclosporine"]["codings"][0]["system"] = "rxnrom"
    with pytest.raises(TerminologyError, match="unknown system key 'rxnrom'"):
        Terminology(raw)


def test_alternative_codes_are_read_but_never_written() -> None:
    from fhir_cyclo.mappers.datatypes import FromContext
    from fhir_cyclo.mappers.observation import lab_from_fhir

    t = terminology()
    foreign = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "59260-0"}], "text": "Hb (SI)"},
        "effectiveDateTime": "2020-01-05",
        "valueQuantity": {
            "value": 5.6,
            "unit": "mmol/L",
            "system": "http://unitsofmeasure.org",
            "code": "mmol/L",
        },
    }
    lab = lab_from_fhir(foreign, FromContext(terms=t), "x")
    assert (lab.analyte, lab.value, lab.unit) == ("hemoglobin", 5.6, "mmol/L")
    assert ("http://loinc.org", "59260-0") not in {
        (c.system, c.code) for c in t.analytes["hemoglobin"].codings
    }


def test_tables_load_as_pyyaml_safe_load_reads_them() -> None:
    # load_table uses libyaml's loader when there is one: it must give the very same data.
    import yaml

    from fhir_cyclo.core.tables import load_table, mappings_dir

    names = sorted(p.stem for p in mappings_dir().glob("*.yaml"))
    assert {"terminology", "units", "scoring", "unit_factors"} <= set(names)
    for name in names:
        text = (mappings_dir() / f"{name}.yaml").read_text(encoding="utf-8")
        assert load_table(name) == yaml.safe_load(text), name
