"""Terminology tables from mappings/terminology.yaml, validated once at load with their sources."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fhir_cyclo.core.errors import TerminologyError
from fhir_cyclo.core.tables import load_table
from fhir_cyclo.core.units import factor

LOCAL_BASE = "http://fhir-cyclo.example.org/fhir"
LOCAL_SYSTEM = f"{LOCAL_BASE}/CodeSystem/cyclo-local"
# Patient.meta.tag of synthetic cases: written by the exporter, read by the report.
SYNTHETIC_TAG = {"system": LOCAL_SYSTEM, "code": "synthetic-data", "display": "Synthetic data"}
UCUM = "http://unitsofmeasure.org"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodingEntry(_Strict):
    """One coding with the provenance terminology.md gives for it."""

    system: str  # key of `systems` until resolved, then the URI
    code: Annotated[str, Field(min_length=1)]
    display: str | None = None
    source: Annotated[str, Field(min_length=3)]

    def fhir(self) -> dict[str, str]:
        out = {"system": self.system, "code": self.code}
        if self.display:
            out["display"] = self.display
        return out


class Concept(_Strict):
    """A concept: its label, its verified codings, or the reason it ships as text only."""

    text: Annotated[str, Field(min_length=1)]
    codings: tuple[CodingEntry, ...]
    # Other codes for the same concept that other systems send: read on import, never written.
    alternative_codings: tuple[CodingEntry, ...] = ()
    unverified: str | None = None
    # analytes only
    unit: str | None = None
    substance: str | None = None  # key of mappings/units.yaml molar_masses (mmol/L <-> g/dL)
    plausible: tuple[float, float] | None = None
    qualitative: bool = False
    # procedures only
    body_site: str | None = None

    @model_validator(mode="after")
    def _coded_or_explained(self) -> Concept:
        if not self.codings and not self.unverified:
            raise ValueError("no codings and no `unverified` note saying why it is text only")
        return self

    def factor_to_unit(self, unit: str) -> float | None:
        """Factor converting `unit` into the concept's unit, None if the unit is not accepted.

        Any UCUM unit of the same dimension (or a spelling from mappings/units.yaml) converts.
        """
        if self.unit is None:
            return None
        return factor(unit, self.unit, self.substance)


class FhirCodes(_Strict):
    source: str
    codes: tuple[str, ...]


class _Table(_Strict):
    version: Literal[1]
    source_document: str
    systems: dict[str, str]
    analytes: dict[str, Concept]
    dat_patterns: dict[str, tuple[str, ...]]
    qualitative_values: dict[str, CodingEntry]
    diagnoses: dict[str, Concept]
    histology: dict[str, CodingEntry]
    histology_extension: str
    staging_methods: dict[str, CodingEntry]
    drugs: dict[str, Concept]
    routes: dict[str, CodingEntry]
    procedures: dict[str, Concept]
    body_sites: dict[str, CodingEntry]
    imaging: dict[str, Any]
    marrow_findings: dict[str, CodingEntry]
    adverse_events: dict[str, Concept]
    ae_grade_extension: str
    ae_grades: dict[int, CodingEntry]
    fhir_codes: dict[str, FhirCodes]


class Terminology:
    """Resolved tables plus reverse indexes (system, code) -> concept key for `from_fhir`."""

    def __init__(self, raw: dict[str, Any]) -> None:
        try:
            table = _Table.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise TerminologyError(
                f"mappings/terminology.yaml: {where}: {first['msg']} "
                f"({exc.error_count()} problem(s))"
            ) from exc
        self.systems = table.systems
        if self.systems.get("local") != LOCAL_SYSTEM:
            raise TerminologyError(
                "mappings/terminology.yaml: systems.local must be " + LOCAL_SYSTEM
            )
        self.source_document = table.source_document
        resolve = self._resolve
        self.analytes = {k: self._concept(c, "analyte", k) for k, c in table.analytes.items()}
        self.diagnoses = {k: self._concept(c, "diagnosis", k) for k, c in table.diagnoses.items()}
        self.drugs = {k: self._concept(c, "drug", k) for k, c in table.drugs.items()}
        self.procedures = {k: self._concept(c, "procedure", k) for k, c in table.procedures.items()}
        self.adverse_events = {
            k: self._concept(c, "adverse-event", k) for k, c in table.adverse_events.items()
        }
        self.qualitative_values = {k: resolve(v) for k, v in table.qualitative_values.items()}
        self.histology = {k: resolve(v) for k, v in table.histology.items()}
        self.histology_extension = table.histology_extension
        self.staging_methods = {k: resolve(v) for k, v in table.staging_methods.items()}
        self.routes = {k: resolve(v) for k, v in table.routes.items()}
        self.body_sites = {k: resolve(v) for k, v in table.body_sites.items()}
        self.marrow_findings = {k: resolve(v) for k, v in table.marrow_findings.items()}
        self.ae_grade_extension = table.ae_grade_extension
        self.ae_grades = {k: resolve(v) for k, v in table.ae_grades.items()}
        imaging = dict(table.imaging)
        responses = imaging.pop("responses")
        try:
            self.imaging = {k: resolve(CodingEntry.model_validate(v)) for k, v in imaging.items()}
            self.imaging_responses = {
                k: resolve(CodingEntry.model_validate(v)) for k, v in responses.items()
            }
        except ValidationError as exc:
            raise TerminologyError(f"mappings/terminology.yaml: imaging: {exc}") from exc
        self.dat_patterns = table.dat_patterns
        for pattern, analytes in self.dat_patterns.items():
            for analyte in analytes:
                if analyte not in self.analytes:
                    raise TerminologyError(
                        f"mappings/terminology.yaml: dat_patterns.{pattern}: "
                        f"unknown analyte {analyte}"
                    )
        for key, proc in self.procedures.items():
            if proc.body_site and proc.body_site not in self.body_sites:
                raise TerminologyError(
                    f"mappings/terminology.yaml: procedures.{key}.body_site: "
                    f"unknown {proc.body_site}"
                )
        self.fhir_codes = {
            self._system_uri(k, f"fhir_codes.{k}"): set(v.codes)
            for k, v in table.fhir_codes.items()
        }

    # --- construction helpers ---------------------------------------------------------------

    def _system_uri(self, key: str, where: str) -> str:
        try:
            return self.systems[key]
        except KeyError:
            raise TerminologyError(
                f"mappings/terminology.yaml: {where}: unknown system key {key!r}"
            ) from None

    def _resolve(self, entry: CodingEntry) -> CodingEntry:
        return entry.model_copy(update={"system": self._system_uri(entry.system, entry.code)})

    def _concept(self, concept: Concept, kind: str, key: str) -> Concept:
        codings = tuple(self._resolve(c) for c in concept.codings)
        alternatives = tuple(self._resolve(c) for c in concept.alternative_codings)
        if not codings:
            # Text-only concept: a project-local code carries the concept key so the round trip
            # can find it again; the unverified external candidate code is never sent.
            codings = (
                CodingEntry(
                    system=LOCAL_SYSTEM,
                    code=f"{kind}-{key}".replace("_", "-"),
                    display=concept.text,
                    source=f"project code; {concept.unverified}",
                ),
            )
        return concept.model_copy(update={"codings": codings, "alternative_codings": alternatives})

    # --- queries ------------------------------------------------------------------------------

    @functools.cached_property
    def coding_entries(self) -> tuple[CodingEntry, ...]:
        """Every coding an exported resource may carry from the concept tables (with display)."""
        out: list[CodingEntry] = []
        for group in (self.analytes, self.diagnoses, self.drugs, self.procedures):
            for concept in group.values():
                out.extend(concept.codings)
        for ae in self.adverse_events.values():
            out.extend(ae.codings)
        for entries in (
            self.qualitative_values,
            self.histology,
            self.staging_methods,
            self.routes,
            self.body_sites,
            self.marrow_findings,
            self.imaging,
            self.imaging_responses,
            self.ae_grades,
        ):
            out.extend(entries.values())
        return tuple(out)

    @functools.cached_property
    def known_codings(self) -> set[tuple[str, str]]:
        """Every (system, code) an exported resource may carry: the bundle rule check uses it."""
        out = {(c.system, c.code) for c in self.coding_entries}
        for system, codes in self.fhir_codes.items():
            out.update((system, code) for code in codes)
        return out

    def reverse(self, group: dict[str, Concept]) -> dict[tuple[str, str], str]:
        """(system, code) -> concept key for one group; the first coding of a concept wins ties."""
        out: dict[tuple[str, str], str] = {}
        for key, concept in group.items():
            for coding in (*concept.codings, *concept.alternative_codings):
                out.setdefault((coding.system, coding.code), key)
        return out

    @functools.cached_property
    def analyte_by_code(self) -> dict[tuple[str, str], str]:
        return self.reverse(self.analytes)

    @functools.cached_property
    def diagnosis_by_code(self) -> dict[tuple[str, str], str]:
        return self.reverse(self.diagnoses)

    @functools.cached_property
    def drug_by_code(self) -> dict[tuple[str, str], str]:
        return self.reverse(self.drugs)

    @functools.cached_property
    def procedure_by_code(self) -> dict[tuple[str, str], str]:
        return self.reverse(self.procedures)

    @functools.cached_property
    def adverse_event_by_code(self) -> dict[tuple[str, str], str]:
        return self.reverse(self.adverse_events)


@functools.cache
def terminology() -> Terminology:
    """The process-wide tables, loaded and checked on first use."""
    return Terminology(load_table("terminology"))
