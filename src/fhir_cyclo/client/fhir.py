"""FhirClient: capabilities, transactions, CRUD and paged search against one FHIR R4 server."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase

from fhir_cyclo.client.auth import Redactor, resolve_auth
from fhir_cyclo.client.http import (
    HttpResponse,
    RetryPolicy,
    ServerOptions,
    Transport,
    check_base_url,
)
from fhir_cyclo.client.paging import iter_pages, iter_resources
from fhir_cyclo.client.results import (
    EntryResult,
    TransactionResult,
    entry_from_headers,
    parse_transaction_response,
)
from fhir_cyclo.client.smart import SmartBackendAuth, SmartConfig
from fhir_cyclo.core.errors import (
    FatalTransportError,
    InputError,
    OperationOutcome,
    ServerError,
    TemporaryTransportError,
)

# $validate answers "invalid" with these statuses and an OperationOutcome (HAPI: 422; 412 in
# the spec's examples; 400 when the body cannot even be parsed).
_VALIDATE_STATUSES = frozenset({400, 412, 422})

# FHIR R4 id and resource-type syntax; checked before either goes into a URL path.
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_TYPE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")


def _dumps(resource: Mapping[str, Any] | bytes, what: str) -> bytes:
    if isinstance(resource, bytes):
        return resource
    try:
        return orjson.dumps(resource)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise InputError(f"cannot serialise to JSON: {exc}", source=what) from None


def _check_type_id(resource_type: str, resource_id: str | None = None) -> None:
    if not _TYPE.match(resource_type):
        raise InputError(f"not a FHIR resource type: {resource_type!r}", source="FhirClient")
    if resource_id is not None and not _ID.match(resource_id):
        raise InputError(
            f"not a valid FHIR id (1-64 of A-Z a-z 0-9 - .): {resource_id!r}",
            source=f"FhirClient {resource_type}",
        )


@dataclass(frozen=True)
class AuthOptions:
    """Credentials: a bearer token (or a file holding one), HTTP basic, or SMART Backend Services.

    With none given, $FHIR_CYCLO_TOKEN / $FHIR_CYCLO_TOKEN_FILE are read (client.auth).
    `clock` decides when a SMART access token is due for renewal (tests move it).
    """

    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    smart: SmartConfig | None = None
    clock: Callable[[], float] = field(default=time.time, compare=False, repr=False)


class FhirClient:
    """A FHIR R4 REST client on one pooled requests.Session (thread-safe for push workers)."""

    def __init__(
        self,
        server: str | ServerOptions,
        *,
        auth: AuthOptions | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        options = ServerOptions(server) if isinstance(server, str) else server
        credentials = auth or AuthOptions()
        self.base_url = check_base_url(options.base_url, allow_http=options.tls.allow_http)
        options = replace(options, base_url=self.base_url)
        self._owns_session = options.session is None
        self._session = options.session if options.session is not None else requests.Session()
        self._redact, self._auth = self._credentials(credentials, options)
        self._pool_size = 0
        if self._owns_session:
            self.ensure_pool_size(options.pool_size)
        self._transport = Transport(
            self._session,
            auth=self._auth,
            redact=self._redact,
            server=options,
            policy=retry or RetryPolicy(),
        )

    def _credentials(
        self, auth: AuthOptions, server: ServerOptions
    ) -> tuple[Redactor, AuthBase | None]:
        """The redactor of the client's secrets and the requests auth carrying them."""
        if auth.smart is None:
            static = resolve_auth(
                token=auth.token, token_file=auth.token_file, basic_auth=auth.basic_auth
            )
            return Redactor(static.secrets if static else ()), static
        if auth.token is not None or auth.token_file is not None or auth.basic_auth is not None:
            raise FatalTransportError(
                "give either SMART Backend Services settings or a token/basic auth, not both"
            )
        redact = Redactor()
        smart = SmartBackendAuth(
            auth.smart, server=server, session=self._session, redact=redact, clock=auth.clock
        )
        return redact, smart

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def sleep(self) -> Callable[[float], None]:
        """The injected sleep; push_bundles uses it for its conflict backoff too."""
        return self._transport.sleep

    def ensure_pool_size(self, size: int) -> None:
        """Make the connection pool hold at least `size` connections (one per push worker).

        A caller-supplied session keeps its own adapters: we do not know what they carry.
        """
        if not self._owns_session or size <= self._pool_size:
            return
        # max_retries=0: all retrying happens in Transport, where it is visible and testable.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=size, max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._pool_size = size

    @property
    def pool_size(self) -> int:
        return self._pool_size

    @property
    def transport(self) -> Transport:
        """The retrying transport (Bulk Data kick-off, polling and job deletion use it)."""
        return self._transport

    @property
    def session(self) -> requests.Session:
        """The pooled session (Bulk Data file downloads stream through it)."""
        return self._session

    @property
    def auth(self) -> AuthBase | None:
        """The credentials attached to requests (None without auth)."""
        return self._auth

    @property
    def redact(self) -> Redactor:
        """Removes the client's secrets from text meant for messages."""
        return self._redact

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> FhirClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return self._redact(f"FhirClient({self.base_url!r}, auth={self._auth!r})")

    def _url(self, *segments: str) -> str:
        return "/".join((self.base_url, *segments))

    def _request(self, method: str, url: str, **kwargs: Any) -> HttpResponse:
        return self._transport.request(method, url, **kwargs)

    def _json(self, response: HttpResponse, what: str) -> Any:
        body = response.json()
        if body is None:
            ctype = response.headers.get("Content-Type", "no Content-Type")
            raise FatalTransportError(
                f"{what} {response.url}: the response is not JSON ({ctype}, "
                f"{len(response.content)} bytes); is this a FHIR server?",
                url=response.url,
                status=response.status,
            )
        return body

    # --- server ----------------------------------------------------------------------------

    def capabilities(self) -> dict[str, Any]:
        """GET [base]/metadata and check that the server is FHIR R4 (4.0.x)."""
        url = self._url("metadata")
        try:
            response = self._request("GET", url)
        except TemporaryTransportError as exc:
            raise FatalTransportError(
                f"cannot reach FHIR server at {self.base_url}: {exc}", url=url
            ) from None
        except ServerError as exc:
            if exc.status in (401, 403):
                raise  # the server is there; the credentials are the problem
            if exc.status >= 500 or exc.status in (408, 429):
                raise FatalTransportError(
                    f"cannot reach FHIR server at {self.base_url}: {exc}",
                    url=url,
                    status=exc.status,
                ) from None
            raise FatalTransportError(
                f"not a FHIR server at {self.base_url}: GET /metadata answered HTTP {exc.status}",
                url=url,
                status=exc.status,
            ) from None
        body = response.json()
        kind = body.get("resourceType") if isinstance(body, dict) else None
        if kind != "CapabilityStatement":
            what = kind or f"a non-FHIR body ({response.headers.get('Content-Type', '?')})"
            raise FatalTransportError(
                f"not a FHIR server at {self.base_url}: /metadata returned {what} instead of "
                f"a CapabilityStatement",
                url=url,
            )
        assert isinstance(body, dict)
        version = str(body.get("fhirVersion") or "(none declared)")
        if not version.startswith("4.0."):
            raise FatalTransportError(
                f"server at {self.base_url} speaks FHIR {version}, fhir-cyclo needs R4 4.0.1",
                url=url,
            )
        return body

    # --- writes ----------------------------------------------------------------------------

    def transaction(self, bundle: Mapping[str, Any] | bytes) -> TransactionResult:
        """POST a transaction Bundle to the base URL (never /Bundle) and parse the response.

        A failed transaction is atomic on HAPI: the ServerError subclass carries the outcome.
        """
        expected: int | None = None
        if not isinstance(bundle, bytes):
            if bundle.get("resourceType") != "Bundle" or bundle.get("type") not in (
                "transaction",
                "batch",
            ):
                raise InputError(
                    "transaction() needs a Bundle of type transaction or batch, got "
                    f"{bundle.get('resourceType')!r} type {bundle.get('type')!r}",
                    source="FhirClient.transaction",
                )
            expected = len(bundle.get("entry") or [])
        body = _dumps(bundle, "transaction Bundle")
        response = self._request("POST", self.base_url, body=body, retry_conflicts=True)
        return parse_transaction_response(
            self._json(response, "POST"), url=self.base_url, expected_entries=expected
        )

    def create(self, resource: Mapping[str, Any]) -> EntryResult:
        """POST [base]/Type; the server assigns the id."""
        rtype = str(resource.get("resourceType", ""))
        _check_type_id(rtype)
        response = self._request("POST", self._url(rtype), body=_dumps(resource, rtype))
        return entry_from_headers(response.status, response.headers, response.json())

    def update(self, resource: Mapping[str, Any], *, if_match: str | None = None) -> EntryResult:
        """PUT [base]/Type/id (create-or-update); `if_match` is a version for optimistic locking."""
        rtype, rid = str(resource.get("resourceType", "")), resource.get("id")
        if not isinstance(rid, str):
            raise InputError("update() needs a resource with an id", source=rtype or "resource")
        _check_type_id(rtype, rid)
        headers = {"If-Match": f'W/"{if_match}"'} if if_match else None
        response = self._request(
            "PUT", self._url(rtype, rid), body=_dumps(resource, f"{rtype}/{rid}"), headers=headers
        )
        return entry_from_headers(response.status, response.headers, response.json())

    def delete(self, resource_type: str, resource_id: str) -> EntryResult:
        """DELETE [base]/Type/id."""
        _check_type_id(resource_type, resource_id)
        response = self._request("DELETE", self._url(resource_type, resource_id))
        result = entry_from_headers(response.status, response.headers, response.json())
        if result.resource_type is None:
            # DELETE answers carry no Location; name what was deleted anyway.
            return EntryResult(
                status=result.status,
                resource_type=resource_type,
                id=resource_id,
                etag=result.etag,
                outcome=result.outcome,
            )
        return result

    def validate_resource(self, resource: Mapping[str, Any] | bytes) -> OperationOutcome:
        """POST [base]/Type/$validate with the resource as body; the server's OperationOutcome.

        An invalid resource is an answer, not a failure: 200, and 400/412/422 carrying an
        OperationOutcome, all return it (every issue, any severity). Anything else raises.
        Bytes are sent as they are (the file's own bytes), after reading their resourceType.
        """
        parsed: Any = resource
        if isinstance(resource, bytes):
            try:
                parsed = orjson.loads(resource)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"not JSON: {exc}", source="validate_resource") from None
        rtype = str(parsed.get("resourceType", "")) if isinstance(parsed, dict) else ""
        _check_type_id(rtype)
        url = self._url(rtype, "$validate")
        try:
            response = self._request("POST", url, body=_dumps(resource, rtype))
        except ServerError as exc:
            if exc.status in _VALIDATE_STATUSES and not exc.outcome.synthetic:
                return exc.outcome
            raise
        outcome = OperationOutcome.from_json(self._json(response, "POST"))
        if outcome is None:
            raise FatalTransportError(
                f"POST {url} answered HTTP {response.status} without an OperationOutcome",
                url=url,
                status=response.status,
            )
        return outcome

    # --- reads -----------------------------------------------------------------------------

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """GET [base]/Type/id; NotFound for 404 and 410 (deleted)."""
        _check_type_id(resource_type, resource_id)
        response = self._request("GET", self._url(resource_type, resource_id))
        body = self._json(response, "GET")
        if not isinstance(body, dict) or body.get("resourceType") != resource_type:
            kind = body.get("resourceType") if isinstance(body, dict) else type(body).__name__
            raise FatalTransportError(
                f"GET {response.url} answered {kind}, expected {resource_type}", url=response.url
            )
        return body

    def search_bundles(
        self,
        resource_type: str,
        params: Mapping[str, str | Sequence[str]] | None = None,
        *,
        page_size: int | None = None,
        max_pages: int = 10_000,
    ) -> Iterator[dict[str, Any]]:
        """Yield the searchset Bundles of GET [base]/Type?params, following next links."""
        _check_type_id(resource_type)
        if max_pages < 1:
            raise InputError("max_pages must be >= 1", source="FhirClient.search")
        query: dict[str, str | Sequence[str]] = dict(params or {})
        if page_size is not None:
            query["_count"] = str(page_size)
        return iter_pages(
            self._transport,
            self.base_url,
            self._url(resource_type),
            query,
            max_pages=max_pages,
        )

    def search(
        self,
        resource_type: str,
        params: Mapping[str, str | Sequence[str]] | None = None,
        *,
        page_size: int | None = None,
        max_pages: int = 10_000,
        modes: Collection[str] = ("match",),
    ) -> Iterator[dict[str, Any]]:
        """Yield matching resources across pages; add "include" to `modes` for _include results."""
        return iter_resources(
            self.search_bundles(resource_type, params, page_size=page_size, max_pages=max_pages),
            modes=modes,
        )
