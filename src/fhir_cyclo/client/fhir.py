"""FhirClient: capabilities, transactions, CRUD and paged search against one FHIR R4 server."""

from __future__ import annotations

import importlib.metadata
import re
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase

from fhir_cyclo.client.auth import Redactor, resolve_auth
from fhir_cyclo.client.http import (
    DEFAULT_MAX_BODY_BYTES,
    HttpResponse,
    RetryPolicy,
    Timeout,
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
_DEFAULT_POOL = 10


def _user_agent() -> str:
    try:
        return f"fhir-cyclo/{importlib.metadata.version('fhir-cyclo')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
        return "fhir-cyclo"


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


class FhirClient:
    """A FHIR R4 REST client on one pooled requests.Session (thread-safe for push workers)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        token_file: Path | None = None,
        basic_auth: tuple[str, str] | None = None,
        timeout: Timeout = (5.0, 60.0),
        retries: int = 3,
        backoff: float = 0.5,
        max_retry_after: float = 30.0,
        verify: bool | str = True,
        allow_http: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        gzip_requests: bool = False,
        pool_size: int = _DEFAULT_POOL,
        smart: SmartConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if retries < 0 or backoff < 0 or max_retry_after < 0:
            raise InputError(
                "retries, backoff and max_retry_after must be >= 0", source="FhirClient"
            )
        self.base_url = check_base_url(base_url, allow_http=allow_http)
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        auth: AuthBase | None
        if smart is not None:
            if token is not None or token_file is not None or basic_auth is not None:
                raise FatalTransportError(
                    "give either SMART Backend Services settings or a token/basic auth, not both"
                )
            self._redact = Redactor()
            auth = SmartBackendAuth(
                smart,
                base_url=self.base_url,
                session=self._session,
                redact=self._redact,
                verify=verify,
                timeout=timeout,
                allow_http=allow_http,
                clock=clock,
            )
        else:
            static = resolve_auth(token=token, token_file=token_file, basic_auth=basic_auth)
            self._redact = Redactor(static.secrets if static else ())
            auth = static
        self._auth = auth
        self._pool_size = 0
        if self._owns_session:
            self.ensure_pool_size(pool_size)
        self._transport = Transport(
            self._session,
            auth=auth,
            redact=self._redact,
            timeout=timeout,
            policy=RetryPolicy(retries=retries, backoff=backoff, max_retry_after=max_retry_after),
            verify=verify,
            sleep=sleep,
            max_body_bytes=max_body_bytes,
            gzip_requests=gzip_requests,
            user_agent=_user_agent(),
        )

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
