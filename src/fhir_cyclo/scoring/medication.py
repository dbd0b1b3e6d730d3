"""The cyclosporine start: which medication resources name the drug, and the date each gives."""

from __future__ import annotations

from typing import Any

from fhir_cyclo.core.scoring_config import ScoringConfig
from fhir_cyclo.scoring.dates import Span, parse_span
from fhir_cyclo.scoring.model import StartDate, coding_list, type_id
from fhir_cyclo.scoring.reader import ReaderBase, raw_subject

# Evidence order for the start, strongest first (README "Scoring"): a statement says the drug was
# taken (and is where a start before admission is recorded), an administration that a dose was
# given, a request only that it was ordered.
KINDS = ("MedicationStatement", "MedicationAdministration", "MedicationRequest")


class MedicationReader(ReaderBase):
    """Collects cyclosporine Statements, Administrations and Requests; dates them at the end."""

    def __init__(self, cfg: ScoringConfig, strict: bool) -> None:
        super().__init__(cfg, strict)
        # ref -> the text that named the drug, for resources recognised by text only.
        self.by_text: dict[str, str] = {}

    def _medication(self, resource: dict[str, Any], full_url: str | None, origin: str) -> None:
        rid = resource.get("id")
        if rid:
            self.medications[f"Medication/{rid}"] = resource
        if full_url:
            self.medications[full_url] = resource

    def _medication_use(self, resource: dict[str, Any], full_url: str | None, origin: str) -> None:
        # Referenced Medications may come later in the input: decide at finish().
        ref = self._ref(resource, full_url, origin)
        if "medicationCodeableConcept" in resource and not self._names_cyclosporine(
            resource["medicationCodeableConcept"], ref
        ):
            self._drug_near_miss(resource, ref)
            return
        subject = self._subject(resource, ref)
        if subject is not None:
            self.med_resources.append((resource, ref, subject))

    def _drug_near_miss(self, resource: dict[str, Any], ref: str) -> None:
        """A drug named cyclosporine in text but coded (RxNorm) as a code not in the table."""
        concept = resource["medicationCodeableConcept"]
        if not isinstance(concept, dict):
            return
        codings = coding_list(concept)
        texts = [concept.get("text"), *(c.get("display") for c in codings)]
        matcher = self.cfg.medication_text.matches
        found = next((t for t in texts if isinstance(t, str) and matcher(t)), None)
        subject = raw_subject(resource)
        if found is not None and subject:
            codes = ",".join(str(c.get("code")) for c in codings)
            self.near_misses.setdefault(subject, []).append(
                f"{ref}: drug text {found!r} names cyclosporine but its code ({codes}) is not "
                "in the cyclosporine table; not used"
            )

    def _has_rxnorm(self, concept: Any) -> bool:
        system, codes = self.cfg.rxnorm_system, self.cfg.rxnorm
        return any(
            c.get("system") == system and c.get("code") in codes for c in coding_list(concept)
        )

    def _names_cyclosporine(self, concept: Any, ref: str) -> bool:
        """RxNorm code, else (remembered for a warning) a cyclosporine name in text/display.

        Text counts only when no coding carries an RxNorm code: a concept coded as another
        RxNorm drug is that drug whatever its text says.
        """
        if self._has_rxnorm(concept):
            return True
        if not isinstance(concept, dict):
            return False
        codings = coding_list(concept)
        if any(c.get("system") == self.cfg.rxnorm_system for c in codings):
            return False
        texts = [concept.get("text"), *(c.get("display") for c in codings)]
        matcher = self.cfg.medication_text.matches
        found = next((t for t in texts if isinstance(t, str) and matcher(t)), None)
        if found is None:
            return False
        self.by_text[ref] = found
        return True

    def _medication_is_cyclosporine(self, medication: dict[str, Any], ref: str) -> bool:
        if self._names_cyclosporine(medication.get("code"), ref):
            return True
        return any(
            isinstance(i, dict) and self._names_cyclosporine(i.get("itemCodeableConcept"), ref)
            for i in medication.get("ingredient") or ()
        )

    def is_cyclosporine(self, resource: dict[str, Any], ref: str) -> bool:
        """Whether a collected medication resource is about cyclosporine (noted when unknown)."""
        if "medicationCodeableConcept" in resource:
            return True  # already filtered in _medication_use
        target = (resource.get("medicationReference") or {}).get("reference")
        if not isinstance(target, str):
            return False
        if target.startswith("#"):
            medication = next(
                (
                    c
                    for c in resource.get("contained") or ()
                    if isinstance(c, dict)
                    and c.get("resourceType") == "Medication"
                    and c.get("id") == target[1:]
                ),
                None,
            )
        else:
            key = type_id(target, "Medication")
            medication = self.medications.get(target) or (key and self.medications.get(key)) or None
        if medication is None:
            self.note(ref, "medicationReference", f"{target} not found; cannot tell the drug")
            return False
        return self._medication_is_cyclosporine(medication, ref)

    def start(self, resource: dict[str, Any], ref: str) -> StartDate | None:
        """The start one medication resource gives, or None (noted) when it gives none."""
        cfg = self.cfg
        status = resource.get("status")
        kind = resource["resourceType"]
        if kind == "MedicationStatement":
            if status in cfg.statement_skip_status or resource.get("taken") == "n":
                self.note(ref, "status", f"status {status or 'taken=n'}; skipped")
                return None
            fields: tuple[str, ...] = ("effectivePeriod.start", "effectiveDateTime")
            when = self._date(resource, ref, fields)
        elif kind == "MedicationAdministration":
            if status in cfg.administration_skip_status:
                self.note(ref, "status", f"status {status}; skipped")
                return None
            fields = ("effectivePeriod.start", "effectiveDateTime")
            when = self._date(resource, ref, fields)
        else:
            if status in cfg.request_skip_status:
                self.note(ref, "status", f"status {status}; skipped")
                return None
            if resource.get("intent") in cfg.request_skip_intent:
                self.note(ref, "intent", f"intent {resource.get('intent')}; skipped")
                return None
            when = self._request_date(resource, ref)
        if when is None:
            return None
        return StartDate(ref, when[0], when[1], when[2], kind)

    def _request_date(self, resource: dict[str, Any], ref: str) -> tuple[Span, str, str] | None:
        candidates: list[tuple[str, str]] = []
        for i, dosage in enumerate(resource.get("dosageInstruction") or ()):
            bounds = (((dosage.get("timing") or {}).get("repeat") or {}).get("boundsPeriod")) or {}
            if bounds.get("start"):
                path = f"dosageInstruction[{i}].timing.repeat.boundsPeriod.start"
                candidates.append((bounds["start"], path))
        validity = (resource.get("dispenseRequest") or {}).get("validityPeriod") or {}
        if not candidates and validity.get("start"):
            candidates.append((validity["start"], "dispenseRequest.validityPeriod.start"))
        if not candidates and resource.get("authoredOn"):
            candidates.append((resource["authoredOn"], "authoredOn"))
        best: tuple[Span, str, str] | None = None
        for text, path in candidates:
            try:
                span = parse_span(text)
            except (ValueError, TypeError):
                self.note(ref, path, f"not a FHIR date: {text!r}; skipped")
                continue
            if best is None or span[0] < best[0][0]:
                best = (span, text, path)
        if best is None and not candidates:
            self.note(ref, "dosageInstruction/dispenseRequest/authoredOn", "no date; skipped")
        return best
