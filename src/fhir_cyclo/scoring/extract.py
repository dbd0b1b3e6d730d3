"""Turn FHIR resources (plain dicts) into per-patient scoring inputs, collecting warnings.

The readers live by idea: lab results in `labs`, the cyclosporine start in `medication`, the
data model in `model`; this module dispatches resources to them and links everything to patients.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date
from typing import Any

from fhir_cyclo.core.errors import InputError, pydantic_path
from fhir_cyclo.core.scoring_config import ScoringConfig, icd_key, load_config
from fhir_cyclo.readers.fhir import SourceItem
from fhir_cyclo.scoring.dates import Span, parse_span
from fhir_cyclo.scoring.labs import LabReader
from fhir_cyclo.scoring.medication import KINDS, MedicationReader
from fhir_cyclo.scoring.model import (
    Measurement,
    Note,
    PatientInputs,
    ScoringInputs,
    StartDate,
    TransfusionEvent,
    codes_text,
    coding_list,
    key_hash,
    type_id,
)
from fhir_cyclo.scoring.reader import IDENTIFIER, gc_paused, raw_subject

__all__ = [
    "SCORED_TYPES",
    "Measurement",
    "Note",
    "PatientInputs",
    "ScoringInputs",
    "StartDate",
    "TransfusionEvent",
    "extract",
    "slim",
]


class InvalidResources(InputError):
    """--strict: every resource that is not valid FHIR (R4B), listed; nothing is scored."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        if len(lines) == 1:  # one line naming file, case, item and element (as before)
            super().__init__(f"{lines[0]} (--strict: nothing scored)")
            return
        shown = "\n  ".join(lines)
        super().__init__(
            f"{len(lines)} invalid resource(s); nothing scored (--strict):\n  {shown}",
            source="score",
        )


# The resource types extraction reads (the keys of `_Extractor._handlers`); every other type is
# passed over, so a reader may drop it before holding it (see `slim`).
SCORED_TYPES = frozenset(
    {
        "Observation",
        "DiagnosticReport",
        "Condition",
        "MedicationStatement",
        "MedicationAdministration",
        "MedicationRequest",
        "Procedure",
        "Patient",
        "Medication",
    }
)


def slim(items: Iterable[SourceItem]) -> Iterator[SourceItem]:
    """The items extraction reads, and of those only what it reads: memory flat in the input.

    Drops the types no handler reads (a Synthea record is ~40% Claims, EOBs, Encounters ...),
    each resource's narrative (`text`, never read) and a DiagnosticReport's `presentedForm`
    (attached documents; only its contained Observations are read). Not for strict mode, which
    validates resources whole.
    """
    for item in items:
        resource = item.resource
        rtype = resource.get("resourceType")
        if rtype not in SCORED_TYPES:
            continue
        if rtype == "DiagnosticReport" and not resource.get("contained"):
            continue  # its results are separate Observations, read where they stand
        resource.pop("text", None)
        resource.pop("presentedForm", None)
        yield item


# Everything that needs the whole input (reference resolution, Medication lookups) waits for
# `finish()`: references may point forward in a file and across files.


class _Extractor(LabReader, MedicationReader):
    """One pass over the resources, then `finish()` links everything to patients."""

    def __init__(self, cfg: ScoringConfig, strict: bool) -> None:
        super().__init__(cfg, strict)
        self.patients: dict[str, dict[str, Any]] = {}  # anchor -> Patient
        self.patient_urls: dict[str, str] = {}  # Bundle fullUrl -> anchor
        # subject key -> (diseases, Condition ref, the scored codes as "SNOMED CT 2897005, ...")
        self.conditions: dict[str, list[tuple[tuple[str, ...], str, str]]] = {}
        self.transfusions: dict[str, list[TransfusionEvent]] = {}
        self._validators: dict[str, Any] = {}
        self._by_identifier: dict[str, str] = {}  # "system|value" -> anchor, filled by finish()
        self.invalid: list[str] = []  # --strict: every invalid resource, one line each
        self._handlers = {
            "Observation": self._observation,
            "DiagnosticReport": self._diagnostic_report,
            "Condition": self._condition,
            "MedicationStatement": self._medication_use,
            "MedicationAdministration": self._medication_use,
            "MedicationRequest": self._medication_use,
            "Procedure": self._procedure,
            "Patient": self._patient,
            "Medication": self._medication,
        }

    def _validate(self, resource: dict[str, Any], ref: str) -> None:
        resource_type = resource["resourceType"]
        model: Any = self._validators.get(resource_type)
        if model is None:
            # Imported here: loading the R4B models takes seconds and only strict mode needs them.
            from fhir.resources.R4B import get_fhir_model_class

            try:
                model = get_fhir_model_class(resource_type)
            except KeyError:
                model = False  # not an R4B type: nothing to validate against
            self._validators[resource_type] = model
        if model is False:
            return
        from fhir_cyclo.fhir.r4b import shape_validator

        try:
            # model_validate's verdict and exception, answered from memory for repeated shapes.
            shape_validator().check(resource)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise InputError(_one_line(exc), source=self.where(ref)) from None

    # --- resource handlers -------------------------------------------------------------------

    def add(self, resource: dict[str, Any], full_url: str | None, origin: str) -> None:
        handler = self._handlers.get(resource.get("resourceType"))  # type: ignore[arg-type]
        if handler is None:
            return
        self._current = (resource, origin)
        if self.strict:
            try:
                self._validate(resource, self._ref(resource, full_url, origin))
            except InputError as exc:
                # Every invalid resource is listed (issue 24), not only the first one.
                self.invalid.append(str(exc))
                return
        try:
            handler(resource, full_url, origin)
        except (AttributeError, TypeError, KeyError) as exc:
            # A structurally broken resource (e.g. a string where an object belongs): one
            # resource, not the whole run.
            self.note(self._ref(resource, full_url, origin), "", f"malformed, skipped ({exc})")

    def _patient(self, resource: dict[str, Any], full_url: str | None, origin: str) -> None:
        rid = resource.get("id")
        anchor = f"Patient/{rid}" if rid else full_url or f"Patient (no id) in {origin}"
        self.patients[anchor] = resource
        if full_url:
            self.patient_urls[full_url] = anchor

    def _condition(self, resource: dict[str, Any], full_url: str | None, origin: str) -> None:
        cfg = self.cfg
        found: list[str] = []
        near: list[str] = []
        matched: list[str] = []
        for coding in coding_list(resource.get("code")):
            code = coding.get("code")
            if not isinstance(code, str):
                continue
            system = coding.get("system")
            if system == cfg.snomed:
                disease = cfg.snomed_disease.get(code)
                miss = cfg.near_miss.get(("snomed", code))
                label = "SNOMED CT"
            elif system in cfg.icd10cm:
                disease = cfg.icd_disease.get(icd_key(code))
                miss = cfg.near_miss.get(("icd10cm", icd_key(code)))
                label = "ICD-10-CM"
            elif system in cfg.icd10:
                disease = cfg.icd10_disease.get(icd_key(code))
                miss = cfg.near_miss.get(("icd10", icd_key(code)))
                label = "ICD-10"
            else:
                continue
            if disease:
                matched.append(f"{label} {code}")
            if disease and disease not in found:
                found.append(disease)
            elif not disease and miss is not None:
                near.append(
                    f"{label} {code} {miss.display!r} is close to {miss.near} but not in its table"
                )
        if not found:
            self._condition_near_miss(resource, full_url, origin, near)
            return
        ref = self._ref(resource, full_url, origin)
        verification = {str(c.get("code")) for c in coding_list(resource.get("verificationStatus"))}
        skipped = verification & cfg.skip_verification
        if skipped:
            self.note(ref, "verificationStatus", f"{', '.join(sorted(skipped))}; skipped")
            return
        subject = self._subject(resource, ref)
        if subject is not None:
            self.conditions.setdefault(subject, []).append((tuple(found), ref, ", ".join(matched)))

    def _condition_near_miss(
        self, resource: dict[str, Any], full_url: str | None, origin: str, near: list[str]
    ) -> None:
        """Remember a Condition that is almost a scored one (a near-miss code, else a text)."""
        if not near:
            code = resource.get("code")
            texts = [code.get("text") if isinstance(code, dict) else None]
            texts += [c.get("display") for c in coding_list(code)]
            patterns = self.cfg.near_miss_text
            text = next(
                (t for t in texts if isinstance(t, str) and any(p.search(t) for p in patterns)),
                None,
            )
            if text is None:
                return
            near = [f"text {text!r} ({codes_text(code)}) names no code of the ITP/AIHA/PRCA tables"]
        ref = self._ref(resource, full_url, origin)
        subject = raw_subject(resource)
        if subject:
            self.near_misses.setdefault(subject, []).extend(f"{ref}: {n}" for n in near)

    def _procedure(self, resource: dict[str, Any], full_url: str | None, origin: str) -> None:
        code = resource.get("code")
        if not isinstance(code, dict):
            return
        texts = [code.get("text")] + [c.get("display") for c in coding_list(code)]
        matcher = self.cfg.transfusion.matches
        text = next((t for t in texts if isinstance(t, str) and matcher(t)), None)
        if text is None:
            return
        ref = self._ref(resource, full_url, origin)
        status = str(resource.get("status"))
        counted = status in self.cfg.transfusion.count_status
        subject = self._subject(resource, ref)
        if subject is None:
            return
        span = self._performed(resource, ref, counted, status)
        if span is None:
            return
        self.transfusions.setdefault(subject, []).append(
            TransfusionEvent(ref, span, status, counted, text)
        )

    def _performed(
        self, resource: dict[str, Any], ref: str, counted: bool, status: str
    ) -> Span | None:
        when = resource.get("performedDateTime")
        period = resource.get("performedPeriod")
        try:
            if when is not None:
                return parse_span(when)
            if isinstance(period, dict) and (period.get("start") or period.get("end")):
                start = parse_span(period["start"]) if period.get("start") else None
                end = parse_span(period["end"]) if period.get("end") else None
                if end is not None:
                    return (start or end)[0], end[1]
                assert start is not None
                # A period still in progress without an end runs on: treat it as open-ended.
                return start[0], date.max if status == "in-progress" else start[1]
        except (ValueError, TypeError):
            self.note(ref, "performed[x]", "not a FHIR date; skipped")
            return None
        if counted:
            self.note(ref, "performed[x]", "transfusion without a usable date; skipped")
        return None

    # --- linking ---------------------------------------------------------------------------

    def _anchor(self, raw: str) -> str | None:
        """Patient anchor for a raw subject key (reference, fullUrl or identifier token)."""
        found = self.patient_urls.get(raw)
        if found is not None:
            return found
        if raw.startswith(IDENTIFIER):
            return self._by_identifier.get(raw[len(IDENTIFIER) :])
        return type_id(raw, "Patient")

    def finish(self) -> ScoringInputs:
        cfg = self.cfg
        for owner, patient in self.patients.items():
            for ident in patient.get("identifier") or ():
                if isinstance(ident, dict) and ident.get("value"):
                    token = f"{ident.get('system') or ''}|{ident['value']}"
                    self._by_identifier.setdefault(token, owner)

        resolved: dict[str, str | None] = {}

        def anchor_of(raw: str, ref: str) -> str | None:
            if raw not in resolved:
                resolved[raw] = self._anchor(raw)
            anchor = resolved[raw]
            if anchor is None:
                # An identifier reference names a person: shown as a hash, like patient keys.
                shown = (
                    f"identifier reference {key_hash(raw[len(IDENTIFIER) :])}"
                    if raw.startswith(IDENTIFIER)
                    else repr(raw)
                )
                self.note(ref, "subject", f"{shown} is not a known Patient reference; skipped")
            return anchor

        # Several anchors (e.g. the same person from two exports) can share a key: merge them.
        by_key: dict[str, PatientInputs] = {}
        key_of: dict[str, str] = {}

        def inputs_for(anchor: str) -> PatientInputs:
            key = key_of.get(anchor)
            if key is None:
                patient = self.patients.get(anchor) or {}
                identifier = _first_identifier(patient)
                if identifier is not None:
                    key = f"{identifier[0]}|{identifier[1]}" if identifier[0] else identifier[1]
                else:
                    key = anchor
                key_of[anchor] = key
                if key not in by_key:
                    gender = patient.get("gender")
                    by_key[key] = PatientInputs(
                        key=key,
                        reference=anchor if anchor.startswith("Patient/") else None,
                        identifier=identifier,
                        gender=gender if isinstance(gender, str) else None,
                        tags=_tag_codes(patient),
                    )
                elif by_key[key].reference is None and anchor.startswith("Patient/"):
                    by_key[key].reference = anchor
            return by_key[key]

        for patient_anchor in self.patients:
            inputs_for(patient_anchor)

        for raw, measurements in self.labs.items():
            anchor = anchor_of(raw, measurements[0].ref)
            if anchor is None:
                continue
            labs = inputs_for(anchor).labs
            for m in measurements:
                labs.setdefault(m.analyte, []).append(m)

        found_diseases: dict[str, set[str]] = {}
        for raw, conditions in self.conditions.items():
            anchor = anchor_of(raw, conditions[0][1])
            if anchor is None:
                continue
            inputs = inputs_for(anchor)
            for diseases, ref, codes in conditions:
                for disease in diseases:
                    found_diseases.setdefault(inputs.key, set()).add(disease)
                    inputs.condition_refs.setdefault(disease, ref)
                    inputs.condition_codes.setdefault(disease, codes)
        for key, coded in found_diseases.items():
            by_key[key].diseases = tuple(d for d in cfg.precedence if d in coded)

        starts: dict[str, dict[str, list[StartDate]]] = {}  # key -> kind -> starts
        for resource, ref, raw in self.med_resources:
            if not self.is_cyclosporine(resource, ref):
                continue
            anchor = anchor_of(raw, ref)
            if anchor is None:
                continue
            start = self.start(resource, ref)
            if start is None:
                continue
            if ref in self.by_text:
                self.note(
                    ref,
                    "medication",
                    f"no RxNorm code; cyclosporine recognised by its text {self.by_text[ref]!r}",
                )
            kinds = starts.setdefault(inputs_for(anchor).key, {})
            kinds.setdefault(start.kind, []).append(start)
        for key, kinds in starts.items():
            inputs = by_key[key]
            # The strongest kind of evidence present wins (medication.KINDS), earliest of it.
            kind = next(k for k in KINDS if k in kinds)
            if kind != KINDS[0]:
                # Named by Patient/id or a hash: the key may be an identifier value (PHI).
                self.note(
                    key_hash(key),
                    "cyclosporine start",
                    f"no usable {KINDS[0]}; {kind} used",
                )
            inputs.start = min(kinds[kind], key=lambda s: (s.span[0], s.ref))

        for raw, events in self.transfusions.items():
            anchor = anchor_of(raw, events[0].ref)
            if anchor is not None:
                inputs_for(anchor).transfusions.extend(events)
        # Already noted where they were read: an unresolvable subject adds no second note.
        for raw, skips in self.skipped.items():
            anchor = resolved.get(raw) if raw in resolved else self._anchor(raw)
            if anchor is not None:
                inputs_for(anchor).skipped.extend(skips)
        for raw, misses in self.near_misses.items():
            anchor = resolved.get(raw) if raw in resolved else self._anchor(raw)
            if anchor is not None:
                inputs_for(anchor).near_misses.extend(misses)

        for inputs in by_key.values():
            hemoglobin = inputs.labs.get("hemoglobin")
            if hemoglobin and inputs.disease != "PRCA":
                kept = []
                for m in hemoglobin:
                    if m.value is None:
                        self.note(
                            m.ref,
                            "valueQuantity.value",
                            "no value (interpretation N counts only for PRCA); skipped",
                        )
                    else:
                        kept.append(m)
                inputs.labs["hemoglobin"] = kept
        patients = sorted(by_key.values(), key=lambda p: p.key)
        return ScoringInputs(patients=patients, notes=self.notes)


def _tag_codes(patient: dict[str, Any]) -> tuple[str, ...]:
    meta = patient.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    if not isinstance(tags, list):
        return ()
    return tuple(
        f"{t.get('system') or ''}|{t['code']}"
        for t in tags
        if isinstance(t, dict) and t.get("code")
    )


def _first_identifier(patient: dict[str, Any]) -> tuple[str, str] | None:
    for ident in patient.get("identifier") or ():
        if isinstance(ident, dict) and ident.get("value"):
            return str(ident.get("system") or ""), str(ident["value"])
    return None


def _one_line(exc: ValueError) -> str:
    """A pydantic error as one line: each field path with its message (the first three)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        parts = [f"{pydantic_path(e['loc'])}: {e['msg']}" for e in errors()]
    else:
        parts = [" ".join(str(exc).split())]
    more = f" (and {len(parts) - 3} more)" if len(parts) > 3 else ""
    return "not valid FHIR (R4B): " + "; ".join(parts[:3]) + more


def extract(
    items: Iterable[SourceItem | dict[str, Any]],
    *,
    config: ScoringConfig | None = None,
    strict: bool = False,
) -> ScoringInputs:
    """Per-patient scoring inputs from resources (SourceItems from `sources`, or plain dicts).

    Resources are linked to patients by subject/patient reference ("Patient/id", absolute URLs
    ending in Patient/id, urn:uuid fullUrls of Patient entries, or a logical identifier
    reference). With `strict`, every resource used is validated against the fhir.resources R4B
    model first (InputError when invalid); off by default because it is slow.
    """
    extractor = _Extractor(config or load_config(), strict)
    add = extractor.add
    with gc_paused():
        for item in items:
            if isinstance(item, SourceItem):
                resource, full_url, origin = item  # unpacking beats three attribute reads
                add(resource, full_url, origin)
            else:
                add(item, None, "input")
    extractor._current = None  # notes from here on are about the whole input
    if extractor.invalid:
        raise InvalidResources(extractor.invalid)
    return extractor.finish()
