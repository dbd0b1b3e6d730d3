"""docs/reference.md, generated: every accepted name, enumerated value, unit and CSV column.

Regenerate with `python -m tools.reference > docs/reference.md`; a unit test fails when the
committed file differs from what this module renders from mappings/ and the case model.
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Iterable
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel

HEADER = """# Reference: accepted names, values, units and CSV columns

Generated from `mappings/terminology.yaml`, `mappings/units.yaml`, the case model
(`src/fhir_cyclo/core/case.py`) and the cohort reader (`src/fhir_cyclo/readers/cohort.py`) by
`python -m tools.reference > docs/reference.md`. Do not edit by hand: a test compares it.
"""


def _table(head: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    head = list(head)
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [" ".join(str(c).split()).replace("|", "\\|") for c in row]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _literals(annotation: Any) -> tuple[str, ...]:
    """String values of a Literal annotation, looking through Optional/Annotated/unions."""
    if get_origin(annotation) is Literal:
        return tuple(a for a in get_args(annotation) if isinstance(a, str))
    out: list[str] = []
    for arg in get_args(annotation):
        out.extend(_literals(arg))
    return tuple(out)


def _enumerated() -> list[tuple[str, str]]:
    from fhir_cyclo.core import case as model

    rows: list[tuple[str, str]] = []
    classes = [
        (name, obj)
        for name, obj in vars(model).items()
        if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.__module__ == model.__name__
    ]
    hints_cache: dict[str, Any] = {}
    for name, cls in sorted(classes):
        hints_cache = typing.get_type_hints(cls, include_extras=True)
        for field in cls.model_fields:
            values = _literals(hints_cache.get(field))
            if values:
                rows.append((f"{name}.{field}", ", ".join(values)))
    return rows


def render() -> str:
    from fhir_cyclo.core.terminology import terminology
    from fhir_cyclo.core.units import table
    from fhir_cyclo.readers.cohort import LAB_COLUMN_DOCS, META_KEY_DOCS, PATIENT_COLUMN_DOCS

    terms = terminology()
    lines = [HEADER]

    def concepts(title: str, group: dict[str, Any], note: str) -> None:
        lines.extend(["", f"## {title}", "", note, ""])
        rows = []
        for key, concept in sorted(group.items()):
            text = getattr(concept, "text", None) or getattr(concept, "display", None) or ""
            coded = "text only (UNVERIFIED code)" if getattr(concept, "unverified", None) else ""
            rows.append((f"`{key}`", text, coded))
        lines.extend(_table(("name", "meaning", "note"), rows))

    concepts(
        "Diagnoses",
        terms.diagnoses,
        "`diagnoses[].concept` in a case file; `disease` in a cohort CSV.",
    )
    concepts("Drugs", terms.drugs, "`treatments[].drug` in a case file.")
    lines.extend(
        [
            "",
            "## Analytes",
            "",
            "`labs[].analyte` in a case file; `analyte` in labs.csv. "
            "The value may be in any UCUM unit of the same dimension (see Units); the "
            "plausible range is checked after conversion to the listed unit.",
            "",
        ]
    )
    rows = []
    for key, concept in sorted(terms.analytes.items()):
        plausible = (
            f"{concept.plausible[0]:g}-{concept.plausible[1]:g}" if concept.plausible else ""
        )
        unit = "qualitative (POS/NEG)" if concept.qualitative else (concept.unit or "")
        rows.append((f"`{key}`", concept.text, unit, plausible, concept.substance or ""))
    lines.extend(_table(("name", "meaning", "unit", "plausible", "molar mass of"), rows))
    concepts("Procedures", terms.procedures, "`procedures[].procedure` in a case file.")
    concepts(
        "Adverse events",
        terms.adverse_events,
        "`adverse_events[].event` in a case file; `ae_event` in patients.csv.",
    )
    concepts("Body sites", terms.body_sites, "`diagnoses[].body_site` in a case file.")
    concepts("Marrow findings", terms.marrow_findings, "`marrow[].finding` in a case file.")

    lines.extend(
        [
            "",
            "## Enumerated values",
            "",
            "Fields of the case model that take one of a "
            "fixed set of values (case-sensitive in case files, any case in cohort CSVs).",
            "",
        ]
    )
    lines.extend(_table(("field", "values"), _enumerated()))

    units = table()
    lines.extend(
        [
            "",
            "## Units",
            "",
            "Any valid UCUM code converts when it has the analyte's "
            "dimension (UCUM library: ucumvert). These lab spellings are read as the UCUM "
            "code beside them (`mappings/units.yaml`; spaces ignored, micro sign = u):",
            "",
        ]
    )
    lines.extend(
        _table(
            ("spelling", "UCUM", "source"),
            (
                (f"`{a.spelling}`", f"`{a.ucum}`", a.source)
                for a in sorted(units.aliases.values(), key=lambda a: a.spelling)
            ),
        )
    )
    lines.extend(["", "Molar masses, for mmol/L or umol/L to a mass unit:", ""])
    lines.extend(
        _table(
            ("substance", "g/mol", "source"),
            ((k, f"{m.g_per_mol:g}", m.source) for k, m in sorted(units.molar_masses.items())),
        )
    )

    lines.extend(
        [
            "",
            "## Cohort CSV folder",
            "",
            "A folder with `cohort.yaml`, `patients.csv` (one "
            "row per patient) and `labs.csv` (one row per measurement). Columns not listed "
            "here are ignored.",
            "",
            "### cohort.yaml",
            "",
        ]
    )
    lines.extend(_table(("key", "meaning"), ((f"`{k}`", v) for k, v in META_KEY_DOCS.items())))
    lines.extend(["", "### patients.csv", ""])
    lines.extend(
        _table(("column", "meaning"), ((f"`{k}`", v) for k, v in PATIENT_COLUMN_DOCS.items()))
    )
    lines.extend(["", "### labs.csv", ""])
    lines.extend(_table(("column", "meaning"), ((f"`{k}`", v) for k, v in LAB_COLUMN_DOCS.items())))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
