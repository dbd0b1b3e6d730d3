"""One exception root for fhir-cyclo: mapping, input, terminology and transport/server errors."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

_HAPI_CODE = re.compile(r"HAPI-(\d{4})")


class FhirCycloError(Exception):
    """Root of every error fhir-cyclo raises on purpose; the CLI turns these into exit codes."""


class UsageError(FhirCycloError):
    """The command line cannot work as given: a bad or conflicting option, missing configuration,
    an unusable output path, an input path that does not exist. Found before any work (exit 2)."""


class InputError(FhirCycloError):
    """Bad user input: a case file, cohort CSV or FHIR file that cannot be used.

    `source` names the file (or resource), `path` the field inside it, so the message points at
    the exact place to fix.
    """

    def __init__(self, message: str, *, source: str = "", path: str = "") -> None:
        self.message = message
        self.source = source
        self.path = path
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = self.source
        if self.path:
            where = f"{where}: {self.path}" if where else self.path
        return f"{where}: {self.message}" if where else self.message


class MappingError(InputError):
    """A case or resource cannot be mapped; `path` is the dotted path of the offending element."""

    def prefixed(self, prefix: str) -> MappingError:
        """Return a copy whose path is rebuilt as the error travels up the mapper tree."""
        path = f"{prefix}.{self.path}" if self.path else prefix
        return MappingError(self.message, source=self.source, path=path)


class TerminologyError(FhirCycloError):
    """A table in mappings/ is missing, malformed, or names a code without a source."""


# --- transport and server -----------------------------------------------------------------


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue, flattened."""

    severity: str
    code: str
    diagnostics: str = ""
    details: str = ""
    expression: tuple[str, ...] = ()
    location: tuple[str, ...] = ()
    # HL7 validator message id (operationoutcome-message-id extension): a stable kind of issue.
    message_id: str = ""

    @property
    def text(self) -> str:
        return self.details or self.diagnostics or self.code


_MESSAGE_ID = "http://hl7.org/fhir/StructureDefinition/operationoutcome-message-id"


def _message_id(raw: dict[str, Any]) -> str:
    for ext in raw.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == _MESSAGE_ID:
            return str(ext.get("valueString", ""))
    return ""


@dataclass(frozen=True)
class OperationOutcome:
    """The parsed OperationOutcome of a failed request (or a synthetic one for non-FHIR bodies)."""

    issues: tuple[Issue, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # True when the body was not an OperationOutcome and its text was wrapped by from_text.
    synthetic: bool = False

    @classmethod
    def from_json(cls, body: Any) -> OperationOutcome | None:
        """Parse a response body; None when it is not an OperationOutcome."""
        if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
            return None
        issues = []
        for raw in body.get("issue") or []:
            if not isinstance(raw, dict):
                continue
            details = raw.get("details") or {}
            issues.append(
                Issue(
                    severity=str(raw.get("severity", "")),
                    code=str(raw.get("code", "")),
                    diagnostics=str(raw.get("diagnostics", "")),
                    details=str(details.get("text", "")) if isinstance(details, dict) else "",
                    expression=tuple(str(e) for e in raw.get("expression") or []),
                    location=tuple(str(e) for e in raw.get("location") or []),
                    message_id=_message_id(raw),
                )
            )
        return cls(issues=tuple(issues), raw=body)

    @classmethod
    def from_text(cls, text: str, code: str = "exception") -> OperationOutcome:
        """Wrap a non-FHIR error body so callers always see the same shape."""
        return cls(
            issues=(Issue(severity="error", code=code, diagnostics=text[:2000]),), synthetic=True
        )

    @property
    def message(self) -> str:
        """Human text: details.text, else diagnostics, of every error issue."""
        errors = [i for i in self.issues if i.severity in ("fatal", "error")] or list(self.issues)
        return "; ".join(i.text for i in errors if i.text)

    @property
    def hapi_codes(self) -> tuple[str, ...]:
        """HAPI-NNNN codes in diagnostics order: first the wrapper, last the root cause."""
        codes: list[str] = []
        for issue in self.issues:
            codes.extend(f"HAPI-{c}" for c in _HAPI_CODE.findall(issue.diagnostics))
        return tuple(codes)


class TransportError(FhirCycloError):
    """The request did not produce a usable answer (network, timeout, non-FHIR server)."""

    def __init__(self, message: str, *, url: str = "", status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(message)


class TemporaryTransportError(TransportError):
    """Worth retrying later: connection refused/reset or timeouts that outlasted the retries.

    An HTTP 408/429/5xx that outlasts them surfaces as the ServerError of its status instead.
    """


class FatalTransportError(TransportError):
    """Retrying cannot help: bad URL, TLS failure, not a FHIR R4 server, a refused redirect."""


class ServerError(FhirCycloError):
    """The server answered with an error status and (usually) an OperationOutcome."""

    def __init__(
        self, status: int, outcome: OperationOutcome, *, url: str = "", method: str = ""
    ) -> None:
        self.status = status
        self.outcome = outcome
        self.url = url
        self.method = method
        text = outcome.message or "no diagnostics"
        super().__init__(f"{method} {url} -> HTTP {status}: {text}".strip())

    @property
    def hapi_codes(self) -> tuple[str, ...]:
        return self.outcome.hapi_codes


class NotFound(ServerError):
    """404 or 410."""


class Conflict(ServerError):
    """409: version conflict or a concurrent conditional create (HAPI-0550); retryable with care."""


class PreconditionFailed(ServerError):
    """412: a conditional matched several resources, or HAPI-2840 blocked a duplicate create."""


class Unprocessable(ServerError):
    """400/422: the server rejected the content (validation, references, malformed bundle)."""


def server_error_for(
    status: int, outcome: OperationOutcome, *, url: str = "", method: str = ""
) -> ServerError:
    """Pick the ServerError subclass for an HTTP status so callers can tell 404/409/412 apart."""
    cls: type[ServerError]
    if status in (404, 410):
        cls = NotFound
    elif status == 409:
        cls = Conflict
    elif status == 412:
        cls = PreconditionFailed
    elif status in (400, 422):
        cls = Unprocessable
    else:
        cls = ServerError
    return cls(status, outcome, url=url, method=method)


def pydantic_path(loc: Iterable[Any]) -> str:
    """('labs', 2, 'value') -> 'labs[2].value'."""
    out = ""
    for part in loc:
        if isinstance(part, str) and part.startswith(("When:", "function-")):
            continue  # union branch tags, not fields the user wrote
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
