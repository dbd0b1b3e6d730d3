"""The project's own FHIR definitions (extension StructureDefinitions, local CodeSystems) as data.

`profiles/*.json` is generated from this module and the code tables (`python -m
tools.definitions profiles`); the HAPI test server stores those files at start so its
validator checks fhir-cyclo's extensions and local codes. A unit test fails when the files are stale
or when a mapper writes an extension URL or a local code that has no definition here.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from fhir_cyclo.core.tables import load_table
from fhir_cyclo.core.terminology import LOCAL_BASE, LOCAL_SYSTEM, SYNTHETIC_TAG, terminology
from fhir_cyclo.mappers.datatypes import EXT_LINE_OF_THERAPY, EXT_TARGET_TROUGH, EXT_TIME

VERSION = "1.0.0"
PUBLISHER = "fhir-cyclo"


class ExtensionSpec(NamedTuple):
    """One simple extension the mappers write: its value types and the resources it sits on."""

    url: str
    name: str
    title: str
    types: tuple[str, ...]
    contexts: tuple[str, ...]
    text: str


EXTENSIONS: tuple[ExtensionSpec, ...] = (
    ExtensionSpec(
        EXT_TIME["effective"],
        "TimeEffective",
        "Effective time as the source gives it (age or words)",
        ("Age", "string"),
        ("Observation", "AdverseEvent"),
        "When the observation or event happened, where the source gives an age or a relative"
        " time in words and the element itself takes only a dateTime.",
    ),
    ExtensionSpec(
        EXT_TIME["start"],
        "TimeStart",
        "Start of a treatment as the source gives it (age or words)",
        ("Age", "string"),
        ("MedicationStatement",),
        "When the treatment started, where the source gives an age or a relative time in words.",
    ),
    ExtensionSpec(
        EXT_TIME["end"],
        "TimeEnd",
        "End of a treatment as the source gives it (age or words)",
        ("Age", "string"),
        ("MedicationStatement",),
        "When the treatment ended, where the source gives an age or a relative time in words.",
    ),
    ExtensionSpec(
        EXT_LINE_OF_THERAPY,
        "LineOfTherapy",
        "Line of therapy",
        ("positiveInt",),
        ("MedicationStatement",),
        "The treatment's line (1 = first line) as the source reports it.",
    ),
    ExtensionSpec(
        EXT_TARGET_TROUGH,
        "TargetTrough",
        "Target trough concentration range",
        ("Range",),
        ("MedicationStatement",),
        "The whole-blood trough concentration range the dosing aimed at (e.g. 100-150 ng/mL).",
    ),
)

RESPONSE_SYSTEM_KEY = "writeback"


def extension_definition(spec: ExtensionSpec) -> dict[str, Any]:
    """A simple (non-nested) extension: one value of the given types, on the given resources."""
    url, name, title, types, contexts, text = spec
    sd_id = url.rsplit("/", 1)[1]
    return {
        "resourceType": "StructureDefinition",
        "id": sd_id,
        "url": url,
        "version": VERSION,
        "name": name,
        "title": title,
        "status": "active",
        "publisher": PUBLISHER,
        "description": text,
        "fhirVersion": "4.0.1",
        "kind": "complex-type",
        "abstract": False,
        "context": [{"type": "element", "expression": c} for c in contexts],
        "type": "Extension",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Extension",
        "derivation": "constraint",
        "differential": {
            "element": [
                {
                    "id": "Extension",
                    "path": "Extension",
                    "short": title,
                    "definition": text,
                    "min": 0,
                    "max": "1",
                },
                {"id": "Extension.extension", "path": "Extension.extension", "max": "0"},
                {"id": "Extension.url", "path": "Extension.url", "fixedUri": url},
                {
                    "id": "Extension.value[x]",
                    "path": "Extension.value[x]",
                    "min": 1,
                    "type": [{"code": t} for t in types],
                },
            ]
        },
    }


def _concepts(pairs: Iterable[tuple[str, str | None]]) -> list[dict[str, str]]:
    seen: dict[str, str | None] = {}
    for code, display in pairs:
        seen.setdefault(code, display)
    return [
        {"code": code, **({"display": display} if display else {})}
        for code, display in sorted(seen.items())
    ]


def code_system(
    url: str, name: str, title: str, concepts: list[dict[str, str]], text: str
) -> dict[str, Any]:
    return {
        "resourceType": "CodeSystem",
        "id": url.rsplit("/", 1)[1],
        "url": url,
        "version": VERSION,
        "name": name,
        "title": title,
        "status": "active",
        "publisher": PUBLISHER,
        "description": text,
        "caseSensitive": True,
        "content": "complete",
        "count": len(concepts),
        "concept": concepts,
    }


def local_code_system() -> dict[str, Any]:
    terms = terminology()
    pairs: list[tuple[str, str | None]] = [(SYNTHETIC_TAG["code"], SYNTHETIC_TAG["display"])]
    pairs += [(c.code, c.display) for c in terms.coding_entries if c.system == LOCAL_SYSTEM]
    pairs += [(code, None) for code in sorted(terms.fhir_codes.get(LOCAL_SYSTEM, ()))]
    return code_system(
        LOCAL_SYSTEM,
        "CycloLocal",
        "fhir-cyclo project-local concepts",
        _concepts(pairs),
        "Concepts with no verified code in a standard terminology (see mappings/terminology.yaml:"
        " each names why); they only name the concept and always travel with its text.",
    )


def response_code_system() -> dict[str, Any]:
    wb = load_table("scoring")[RESPONSE_SYSTEM_KEY]
    pairs = [
        (wb["code"]["code"], wb["code"]["display"]),
        (wb["month_component"]["code"], wb["month_component"]["display"]),
    ] + [(code, entry["display"]) for code, entry in wb["responses"].items()]
    return code_system(
        wb["code_system"],
        "CsaResponse",
        "fhir-cyclo cyclosporine response assessment",
        [{"code": c, "display": d} for c, d in pairs],
        "The response categories of the seed papers (CR/PR/NR, NE when not evaluable) and the"
        " codes of the write-back Observation that carries them.",
    )


def all_definitions() -> list[dict[str, Any]]:
    out = [extension_definition(spec) for spec in EXTENSIONS]
    out += [local_code_system(), response_code_system()]
    return out


def file_name(resource: dict[str, Any]) -> str:
    return f"{resource['resourceType']}-{resource['id']}.json"


def render(resource: dict[str, Any]) -> bytes:
    return orjson.dumps(resource, option=orjson.OPT_INDENT_2) + b"\n"


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for resource in all_definitions():
        path = folder / file_name(resource)
        path.write_bytes(render(resource))
        written.append(path)
    return written


def defined_extension_urls() -> set[str]:
    return {spec.url for spec in EXTENSIONS}


def project_base() -> str:
    return LOCAL_BASE


if __name__ == "__main__":
    for p in write(Path(sys.argv[1] if len(sys.argv) > 1 else "profiles")):
        print(p)
