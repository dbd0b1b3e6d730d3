"""HTTP transport on one requests.Session: timeouts, bounded retries, size limits, error mapping."""

from __future__ import annotations

import email.utils
import gzip
import html
import importlib.metadata
import ipaddress
import logging
import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson
import requests
from requests.auth import AuthBase
from requests.structures import CaseInsensitiveDict

from fhir_cyclo.client.auth import Redactor
from fhir_cyclo.core.errors import (
    FatalTransportError,
    InputError,
    Issue,
    OperationOutcome,
    ServerError,
    TemporaryTransportError,
    server_error_for,
)

log = logging.getLogger("fhir_cyclo.client")

FHIR_JSON = "application/fhir+json"
# 408 and 429 mean "not processed"; 500/502/503/504 are the HAPI public server's outage and
# HAPI-2223 modes. A failed transaction is atomic, so re-sending it after these is safe.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
GZIP_THRESHOLD = 64 * 1024
DEFAULT_MAX_BODY_BYTES = 100 * 1024 * 1024

Params = Mapping[str, str | Sequence[str]]
Timeout = float | tuple[float, float]


DEFAULT_POOL_SIZE = 10


@dataclass(frozen=True)
class TlsOptions:
    """Transport security: certificate checks and whether plain http may leave the machine."""

    verify: bool | str = True  # False: no certificate check (--insecure); a str: a CA bundle
    allow_http: bool = False  # plain http to a host other than loopback


@dataclass(frozen=True)
class ServerOptions:
    """The server and how requests reach it: TLS, timeouts, body limit, gzip, connection pool.

    `session`: a caller's requests.Session to send on (its adapters are kept as they are).
    """

    base_url: str
    tls: TlsOptions = TlsOptions()
    timeout: Timeout = (5.0, 60.0)  # (connect, read) seconds, or one number for both
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    gzip_requests: bool = False  # gzip large request bodies (HAPI inflates them)
    pool_size: int = DEFAULT_POOL_SIZE
    session: requests.Session | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait; `retries` counts re-sends (retries + 1 attempts).

    `sleep` makes the waits (tests pass a recorder, so retries cost no time).
    """

    retries: int = 3
    backoff: float = 0.5
    max_retry_after: float = 30.0
    statuses: frozenset[int] = RETRY_STATUSES
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_retry_after < 0:
            raise InputError("retries, backoff and max_retry_after must be >= 0", source="retries")

    def backoff_delay(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, capped.

        The jitter keeps parallel push workers from retrying in lock-step against a server
        that just came back.
        """
        base = min(self.backoff * (2.0**attempt), self.max_retry_after)
        return base / 2 + rng.uniform(0, base / 2)


def user_agent() -> str:
    """`fhir-cyclo/<version>` of the installed package (plain `fhir-cyclo` in a source tree)."""
    try:
        return f"fhir-cyclo/{importlib.metadata.version('fhir-cyclo')}"
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
        return "fhir-cyclo"


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from Retry-After (delta-seconds or HTTP date); None if absent or bad."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are GMT; "-0000" parses as naive and would be read as local time.
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass(frozen=True)
class HttpResponse:
    """A fully read response: status, headers, body bytes and the final URL."""

    status: int
    url: str
    content: bytes = field(repr=False)
    headers: CaseInsensitiveDict[str] = field(default_factory=CaseInsensitiveDict, repr=False)

    def json(self) -> Any:
        """The body parsed with orjson, or None when it is empty or not JSON."""
        if not self.content:
            return None
        try:
            return orjson.loads(self.content)
        except orjson.JSONDecodeError:
            return None


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1: plain http there never leaves the machine."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) with the default port filled in, for same-server checks."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme, 0)
    return scheme, (parts.hostname or "").lower(), port


def origin_str(url: str) -> str:
    scheme, host, port = origin(url)
    return f"{scheme}://{host}:{port}"


_CAUSES = (
    ("Name or service not known", "host name not found (DNS)"),
    ("nodename nor servname", "host name not found (DNS)"),
    ("Temporary failure in name resolution", "host name not found (DNS)"),
    ("getaddrinfo failed", "host name not found (DNS)"),
    ("Connection refused", "connection refused"),
    ("Connection reset", "connection reset by the server"),
    ("RemoteDisconnected", "the server closed the connection without an answer"),
    ("No route to host", "no route to host"),
    ("Network is unreachable", "network unreachable"),
)


def _tls_reason(text: str) -> str:
    match = re.search(
        r"(certificate verify failed: [^(')\]]*|hostname '[^']*' doesn't match[^(')]*)", text
    )
    return match[1].strip() if match else text[:200]


def connection_cause(exc: BaseException) -> str:
    """One short cause for a requests/urllib3 failure, instead of urllib3's nested repr."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "no answer within the read timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS failure"
    text = str(exc)
    lowered = text.lower()
    for needle, cause in _CAUSES:
        if needle.lower() in lowered:
            return cause
    if isinstance(
        exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError
    ):
        return "the answer was cut off or garbled"
    return f"{type(exc).__name__}: {text[:200]}"


def check_base_url(base_url: str, *, allow_http: bool) -> str:
    """Validate and normalise the base URL (no trailing slash); refuse plain http off loopback."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FatalTransportError(
            f"FHIR base URL must be an absolute http(s) URL, got {safe_url(base_url)!r}",
            url=safe_url(base_url),
        )
    if parts.username is not None or parts.password is not None:
        # requests would silently turn these into basic auth and they would end up in logs.
        raise FatalTransportError(
            f"put credentials in token=/basic_auth=, not in the base URL {safe_url(base_url)!r}",
            url=safe_url(base_url),
        )
    if parts.query or parts.fragment:
        raise FatalTransportError(
            f"FHIR base URL must not have a query or fragment: {base_url!r}", url=base_url
        )
    if parts.scheme == "http" and not allow_http and not is_loopback(parts.hostname):
        raise FatalTransportError(
            f"refusing plain http to {parts.hostname}: credentials and health data would travel "
            f"unencrypted; use https, or --allow-http if this network is trusted",
            url=base_url,
        )
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def safe_url(url: str) -> str:
    """The URL with any user:password@ part replaced, for messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


# Search parameters whose values name a person (identifier, demographics): masked in log lines.
_PHI_PARAMS = re.compile(
    r"(identifier|name|family|given|birthdate|phone|telecom|email|address|patient\.|subject\.)",
    re.IGNORECASE,
)


def loggable_url(url: str) -> str:
    """The URL with the values of person-identifying search parameters replaced by ***."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = []
    for pair in parts.query.split("&"):
        name, sep, _value = pair.partition("=")
        pairs.append(f"{name}{sep}***" if sep and _PHI_PARAMS.search(unquote(name)) else pair)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "&".join(pairs), parts.fragment))


_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def outcome_from_body(response: HttpResponse) -> OperationOutcome:
    """The OperationOutcome of an error response, or a synthetic one wrapping the text body."""
    parsed = OperationOutcome.from_json(response.json())
    if parsed is not None:
        return parsed
    text = response.content.decode("utf-8", errors="replace")
    if "html" in response.headers.get("Content-Type", "").lower() or text.lstrip().startswith("<"):
        # Proxies answer 502/504 with HTML pages; keep the words, not the markup.
        text = html.unescape(_TAG.sub(" ", text))
    text = _SPACE.sub(" ", text).strip()
    return OperationOutcome.from_text(text or f"HTTP {response.status} with an empty body")


def _redact_outcome(outcome: OperationOutcome, redact: Redactor) -> OperationOutcome:
    """Some servers echo the Authorization header in diagnostics; strip secrets before raising."""
    if not redact:
        return outcome
    issues = tuple(
        Issue(
            severity=i.severity,
            code=i.code,
            diagnostics=redact(i.diagnostics),
            details=redact(i.details),
            expression=i.expression,
            location=i.location,
            message_id=i.message_id,
        )
        for i in outcome.issues
    )
    if issues == outcome.issues:
        return outcome
    return OperationOutcome(issues=issues, synthetic=outcome.synthetic)


class _Retryable(Exception):
    """A network-level failure worth another attempt."""


class Transport:
    """Sends one request with retries; returns 2xx responses and raises for everything else.

    The retry loop is written by hand instead of using urllib3's `Retry`: urllib3 sleeps with
    `time.sleep` and reads Retry-After itself, so tests could neither make the sleeps instant nor
    check their values, and the `responses` mock replaces `HTTPAdapter.send`, below which urllib3
    retries happen, so they would never run under test. A loop also makes the rule "never retry
    a 4xx other than 408/429" explicit.
    """

    def __init__(
        self,
        session: requests.Session,
        *,
        auth: AuthBase | None,
        redact: Redactor,
        server: ServerOptions,
        policy: RetryPolicy,
    ) -> None:
        self.session = session
        self.auth = auth
        self.redact = redact
        self.server = server  # kept whole: the Bulk client's poll transport reuses it
        self.timeout = server.timeout
        self.policy = policy
        self.verify = server.tls.verify
        self.sleep = policy.sleep
        self.max_body_bytes = server.max_body_bytes
        self.gzip_requests = server.gzip_requests
        self.user_agent = user_agent()
        self._rng = random.Random()  # noqa: S311 - jitter only, not security

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Params | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        retry_conflicts: bool = False,
    ) -> HttpResponse:
        """Send with retries; return a 2xx response or raise a FhirCycloError subclass.

        `retry_conflicts`: a 409 is retried too. Only for transactions: a refused transaction
        committed nothing, and HAPI answers 409 (HAPI-0550/HAPI-2745) when concurrent
        transactions race on one conditional create, which the next attempt resolves.
        """
        statuses = self.policy.statuses | {409} if retry_conflicts else self.policy.statuses
        all_headers = {
            "Accept": FHIR_JSON,
            "Accept-Encoding": "gzip",
            "User-Agent": self.user_agent,
        }
        if body is not None:
            all_headers["Content-Type"] = FHIR_JSON
            if self.gzip_requests and len(body) > GZIP_THRESHOLD:
                # HAPI inflates gzip request bodies; other servers may not, hence opt-in.
                body = gzip.compress(body, compresslevel=5)
                all_headers["Content-Encoding"] = "gzip"
        all_headers.update(headers or {})

        attempts = self.policy.retries + 1
        renewed = False  # a 401 renews a renewable token once, and the request is sent again
        attempt = 0
        while attempt < attempts:
            last = attempt == attempts - 1
            attempt += 1
            try:
                response = self._send_once(method, url, params, body, all_headers)
            except _Retryable as exc:
                cause = self.redact(str(exc))
                if last:
                    raise TemporaryTransportError(
                        f"{method} {url} failed after {attempts} attempts: {cause}", url=url
                    ) from None
                delay = self.policy.backoff_delay(attempt - 1, self._rng)
                # INFO, not WARNING: the error that ends the retries says it once, with the cause.
                log.info(
                    "%s %s: %s; retry %d/%d in %.1fs",
                    method,
                    url,
                    cause,
                    attempt,
                    self.policy.retries,
                    delay,
                )
                self.sleep(delay)
                continue

            status = response.status
            if 200 <= status < 300:
                return response
            invalidate = getattr(self.auth, "invalidate", None)
            if status == 401 and invalidate is not None and not renewed:
                # The token may have been revoked or expired early: one fresh token, one retry
                # (not counted against the retries, which are for the server's bad moments).
                renewed = True
                log.info(
                    "%s %s -> HTTP 401; renewing the access token and retrying once", method, url
                )
                invalidate()
                attempt -= 1
                continue
            if 300 <= status < 400:
                # Redirects are not followed: requests would turn a 301/302 on a POSTed
                # transaction into a GET and report success on a page that wrote nothing, and a
                # silent move to another base URL is a configuration change the user should make.
                location = response.headers.get("Location", "?")
                raise FatalTransportError(
                    f"{method} {url} was redirected (HTTP {status}) to {location}; "
                    f"configure that URL as the FHIR base instead",
                    url=url,
                    status=status,
                )
            if status in statuses and not last:
                delay = self._status_delay(response, attempt - 1)
                log.info(
                    "%s %s -> HTTP %d; retry %d/%d in %.1fs",
                    method,
                    url,
                    status,
                    attempt,
                    self.policy.retries,
                    delay,
                )
                self.sleep(delay)
                continue
            raise self.server_error(response, method, url)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def server_error(self, response: HttpResponse, method: str, url: str) -> ServerError:
        """The ServerError subclass for a non-2xx response, its outcome parsed and redacted."""
        outcome = _redact_outcome(outcome_from_body(response), self.redact)
        return server_error_for(response.status, outcome, url=url, method=method)

    def _status_delay(self, response: HttpResponse, attempt: int) -> float:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if retry_after is None:
            return self.policy.backoff_delay(attempt, self._rng)
        # Capped: a proxy asking for an hour would otherwise stall a whole push silently.
        return min(retry_after, self.policy.max_retry_after)

    def _send_once(
        self,
        method: str,
        url: str,
        params: Params | None,
        body: bytes | None,
        headers: Mapping[str, str],
    ) -> HttpResponse:
        try:
            with self.session.request(
                method,
                url,
                params=_encode_params(params),
                data=body,
                headers=dict(headers),
                auth=self.auth,
                timeout=self.timeout,
                verify=self.verify,
                allow_redirects=False,
                stream=True,  # read in chunks so the size limit holds before memory runs out
            ) as raw:
                content = self._read_limited(raw, url)
                log.debug(
                    "%s %s -> HTTP %d (%d bytes)",
                    method,
                    loggable_url(raw.url),
                    raw.status_code,
                    len(content),
                )
                return HttpResponse(
                    status=raw.status_code, url=raw.url, content=content, headers=raw.headers
                )
        except requests.exceptions.SSLError as exc:
            # TLS failures do not heal by retrying; verify=False is the caller's explicit choice.
            raise FatalTransportError(
                f"TLS verification failed for {url}: {_tls_reason(self.redact(str(exc)))}", url=url
            ) from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema) as exc:
            raise FatalTransportError(
                f"invalid URL {url}: {self.redact(str(exc))}", url=url
            ) from None
        except (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as exc:
            # Also after a read timeout on a POST: the server may have committed the transaction
            # before the answer was lost. Re-sending is safe because fhir-cyclo bundles are
            # idempotent (PUT with deterministic ids, conditional creates), not because HTTP is.
            raise _Retryable(connection_cause(exc)) from None

    def _read_limited(self, raw: requests.Response, url: str) -> bytes:
        limit = self.max_body_bytes
        declared = raw.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large(url, int(declared))
        chunks: list[bytes] = []
        size = 0
        for chunk in raw.iter_content(chunk_size=1 << 16):
            size += len(chunk)
            if size > limit:
                raise self._too_large(url, size)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, url: str, size: int) -> FatalTransportError:
        return FatalTransportError(
            f"response from {url} is larger than the {self.max_body_bytes:,} byte limit "
            f"(at least {size:,} bytes); ask for smaller pages (_count) or raise max_body_bytes",
            url=url,
        )


def _encode_params(params: Params | None) -> list[tuple[str, str]] | None:
    """Flatten {name: value | [values]} to repeated pairs; a str is one value, not a sequence."""
    if params is None:
        return None
    pairs: list[tuple[str, str]] = []
    for name, value in params.items():
        if isinstance(value, str):
            pairs.append((name, value))
        else:
            pairs.extend((name, v) for v in value)
    return pairs
