"""R4 (4.0.1) required-binding code lists for the elements scoring reads, checked offline.

fhir.resources R4B checks a `code` only against the code pattern, never against its value set;
this table adds the value sets. Each list is the expansion published in the R4 specification
(https://hl7.org/fhir/R4/valueset-<name>.html, version 4.0.1). Where R4B differs from R4 the
R4 list is the one kept (R4B adds `subscription-notification` to bundle-type: not R4).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

_R4 = "https://hl7.org/fhir/R4/valueset-{}.html"


class Binding(NamedTuple):
    """One required binding: element path in its resource, value set name, codes, and for a
    CodeableConcept the code system its codings must use (None for a plain `code`)."""

    path: tuple[str, ...]
    value_set: str
    codes: frozenset[str]
    system: str | None = None

    @property
    def source(self) -> str:
        return _R4.format(self.value_set)


def _codes(text: str) -> frozenset[str]:
    return frozenset(text.split())


_OBSERVATION_STATUS = _codes(
    "registered preliminary final amended corrected cancelled entered-in-error unknown"
)
_EVENT_STATUS = _codes(
    "preparation in-progress not-done on-hold stopped completed entered-in-error unknown"
)
_THO = "http://terminology.hl7.org/CodeSystem/"

BINDINGS: dict[str, tuple[Binding, ...]] = {
    "Patient": (
        Binding(("gender",), "administrative-gender", _codes("male female other unknown")),
    ),
    "Observation": (Binding(("status",), "observation-status", _OBSERVATION_STATUS),),
    "Condition": (
        Binding(
            ("clinicalStatus",),
            "condition-clinical",
            _codes("active recurrence relapse inactive remission resolved"),
            f"{_THO}condition-clinical",
        ),
        Binding(
            ("verificationStatus",),
            "condition-ver-status",
            _codes("unconfirmed provisional differential confirmed refuted entered-in-error"),
            f"{_THO}condition-ver-status",
        ),
    ),
    "MedicationStatement": (
        Binding(
            ("status",),
            "medication-statement-status",
            _codes("active completed entered-in-error intended stopped on-hold unknown not-taken"),
        ),
    ),
    "MedicationRequest": (
        Binding(
            ("status",),
            "medicationrequest-status",
            _codes("active on-hold cancelled completed entered-in-error stopped draft unknown"),
        ),
        Binding(
            ("intent",),
            "medicationrequest-intent",
            _codes(
                "proposal plan order original-order reflex-order filler-order instance-order option"
            ),
        ),
    ),
    "MedicationAdministration": (
        Binding(
            ("status",),
            "medication-admin-status",
            _codes("in-progress not-done on-hold completed entered-in-error stopped unknown"),
        ),
    ),
    "Medication": (
        Binding(("status",), "medication-status", _codes("active inactive entered-in-error")),
    ),
    "Procedure": (Binding(("status",), "event-status", _EVENT_STATUS),),
    "DiagnosticReport": (
        Binding(
            ("status",),
            "diagnostic-report-status",
            _codes(
                "registered partial preliminary final amended corrected appended cancelled "
                "entered-in-error unknown"
            ),
        ),
    ),
    "Bundle": (
        Binding(
            ("type",),
            "bundle-type",
            _codes(
                "document message transaction transaction-response batch batch-response "
                "history searchset collection"
            ),
        ),
        Binding(
            ("entry", "request", "method"), "http-verb", _codes("GET HEAD POST PUT DELETE PATCH")
        ),
        Binding(("entry", "search", "mode"), "search-entry-mode", _codes("match include outcome")),
    ),
}


def _values(node: Any, path: tuple[str, ...], where: str) -> Iterator[tuple[str, Any]]:
    """(location, value) of every element at `path` below `node` (lists are walked)."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _values(item, path, f"{where}[{i}]")
        return
    if not path:
        yield where, node
        return
    if isinstance(node, dict) and path[0] in node:
        yield from _values(node[path[0]], path[1:], f"{where}.{path[0]}")


def _well_formed(code: str) -> bool:
    # A code with stray whitespace fails the R4 code pattern: R4B reports it, not this table.
    return bool(code) and code == code.strip() and "  " not in code


def binding_problems(resource: dict[str, Any], where: str) -> list[str]:
    """'<where>.<element>: ...' for each value outside its R4 required value set."""
    problems: list[str] = []
    for binding in BINDINGS.get(str(resource.get("resourceType")), ()):
        for at, value in _values(resource, binding.path, where):
            if binding.system is None:
                if isinstance(value, str) and _well_formed(value) and value not in binding.codes:
                    problems.append(
                        f"{at}: {value!r} is not in the required value set "
                        f"{binding.value_set} ({binding.source})"
                    )
                continue
            problems.extend(_concept_problems(value, at, binding))
    return problems


def _concept_problems(value: Any, at: str, binding: Binding) -> list[str]:
    if not isinstance(value, dict):
        return []  # not a CodeableConcept: the R4B model check names it
    codings = [c for c in value.get("coding") or [] if isinstance(c, dict)]
    ours = [c for c in codings if c.get("system") == binding.system]
    if any(c.get("code") in binding.codes for c in ours):
        return []
    bad = [str(c.get("code")) for c in ours if isinstance(c.get("code"), str)]
    if any(not _well_formed(code) for code in bad):
        return []  # the code pattern error already names it
    found = f"code(s) {', '.join(repr(c) for c in bad)}" if bad else "no coding"
    return [
        f"{at}: {found} from {binding.system}; the required value set {binding.value_set} "
        f"({binding.source}) needs one of its codes"
    ]
