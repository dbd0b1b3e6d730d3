"""State and helpers shared by the per-resource readers of extraction (labs, medication, ...)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fhir_cyclo.core.scoring_config import ScoringConfig
from fhir_cyclo.scoring.dates import Span, parse_span
from fhir_cyclo.scoring.model import Measurement, Note, Skipped, item_context

IDENTIFIER = "identifier:"


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic GC while pages or NDJSON lines are parsed and read (sources parse lazily).

    Parsed JSON trees hold no reference cycles, so reference counting frees every page; the
    collector would only walk the ever-larger heap of young dicts again and again (a third of
    the import time on 20,000 Observations). The previous state comes back afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def raw_subject(resource: dict[str, Any]) -> str:
    """The patient key a resource names: its literal subject/patient reference, else an
    identifier token (`identifier:system|value`); "" when it names none."""
    subject = resource.get("subject") or resource.get("patient")
    if isinstance(subject, dict):
        literal = subject.get("reference")
        if isinstance(literal, str) and literal:
            return literal
        ident = subject.get("identifier")
        if isinstance(ident, dict) and ident.get("value"):
            return f"{IDENTIFIER}{ident.get('system') or ''}|{ident['value']}"
    return ""


class ReaderBase:
    """What every resource reader needs: the config, the warnings, subject and date lookups.

    Everything collected is keyed by the raw subject key (a literal reference or an identifier
    token); `extract._Extractor.finish` links the keys to patients once the whole input is read.
    """

    def __init__(self, cfg: ScoringConfig, strict: bool) -> None:
        self.cfg = cfg
        self.strict = strict
        self.notes: list[Note] = []
        self._current: tuple[dict[str, Any], str] | None = None  # resource being read, origin
        self.labs: dict[str, list[Measurement]] = {}
        self.medications: dict[str, dict[str, Any]] = {}  # "Medication/id" and fullUrl -> res
        self.med_resources: list[tuple[dict[str, Any], str, str]] = []  # (res, ref, subject key)
        # subject key -> what a data manager should see although it is not scored: near-miss
        # codes/names and results of a scored analyte that were skipped (score --explain).
        self.near_misses: dict[str, list[str]] = {}
        self.skipped: dict[str, list[Skipped]] = {}

    def note(self, source: str, path: str, message: str) -> None:
        # Only when noting: the resource being read names its file, case and item.
        current = self._current
        context = item_context(current[0], current[1]) if current is not None else ""
        self.notes.append(Note(source, path, message, context))

    def context(self) -> str:
        """File, case (hashed) and item of the resource being read ("" for plain dicts)."""
        current = self._current
        return item_context(current[0], current[1]) if current is not None else ""

    def where(self, ref: str) -> str:
        """`ref` with the file, case (hashed) and item of the resource being read."""
        current = self._current
        return f"{item_context(current[0], current[1])} {ref}" if current else ref

    @staticmethod
    def _ref(resource: dict[str, Any], full_url: str | None, origin: str) -> str:
        rid = resource.get("id")
        if rid:
            return f"{resource['resourceType']}/{rid}"
        return full_url or f"{resource['resourceType']} (no id) in {origin}"

    def _subject(self, resource: dict[str, Any], ref: str) -> str | None:
        """Raw subject key (see raw_subject); None, and a note, when there is none."""
        key = raw_subject(resource)
        if key:
            return key
        self.note(ref, "subject", "no patient reference; skipped")
        return None

    def _date(
        self, resource: dict[str, Any], ref: str, fields: tuple[str, ...]
    ) -> tuple[Span, str, str] | None:
        """First present date among dotted `fields`, parsed; None (noted) when absent or bad."""
        for dotted in fields:
            name, _, sub = dotted.partition(".")
            value = resource.get(name)
            if sub:
                value = value.get(sub) if isinstance(value, dict) else None
            if value is None:
                continue
            try:
                return parse_span(value), value, dotted
            except (ValueError, TypeError):
                self.note(ref, dotted, f"not a FHIR date: {value!r}; skipped")
                return None
        self.note(ref, "/".join(fields), "no date; skipped")
        return None
