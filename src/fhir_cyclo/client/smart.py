"""SMART Backend Services (SMART App Launch 2.x): signed client assertion -> cached access token.

The JWT is built and signed by PyJWT (with `cryptography` for RS384/ES384): no hand-written
crypto. The private key and every access token stay out of logs, errors and reprs: tokens are
added to the client's Redactor as they arrive.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
from requests.auth import AuthBase

from fhir_cyclo.client.auth import REDACTED, Redactor
from fhir_cyclo.client.http import ServerOptions, is_loopback
from fhir_cyclo.core.errors import FatalTransportError

log = logging.getLogger("fhir_cyclo.client")

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS384", "ES384")  # the two the SMART Backend Services spec requires servers take
DEFAULT_SCOPE = "system/*.rs"  # SMART v2; v1 servers want system/*.read (--smart-scope)
# The spec caps the assertion's exp at five minutes ahead; staying below leaves room for skew.
ASSERTION_LIFETIME = 240
DEFAULT_TOKEN_LIFETIME = 300  # when the token response has no expires_in (the spec's advice)
RENEW_MARGIN = 60  # renew this many seconds before the token expires (at most 1/5 of its life)

# Environment variable names (not secrets).
ENV_CLIENT_ID = "FHIR_CYCLO_SMART_CLIENT_ID"
ENV_KEY_FILE = "FHIR_CYCLO_SMART_KEY_FILE"
ENV_KEY = "FHIR_CYCLO_SMART_KEY"  # the key itself (PEM or JWK JSON), e.g. from a CI secret
ENV_KID = "FHIR_CYCLO_SMART_KID"
ENV_SCOPE = "FHIR_CYCLO_SMART_SCOPE"
ENV_TOKEN_URL = "FHIR_CYCLO_SMART_TOKEN_URL"  # noqa: S105 - a variable name


def short_id(client_id: str, limit: int = 40) -> str:
    """A client id for messages: servers that issue signed client ids make them ~1,000 chars."""
    if len(client_id) <= limit:
        return client_id
    return f"{client_id[:16]}...{client_id[-6:]} ({len(client_id)} chars)"


@dataclass(frozen=True)
class SmartConfig:
    """Who the client is and how it signs; the key text is never shown."""

    client_id: str
    key_text: str = field(repr=False)
    key_source: str  # "file X" or "$FHIR_CYCLO_SMART_KEY": for messages
    scope: str = DEFAULT_SCOPE
    kid: str | None = None
    token_url: str | None = None  # None: discovered from .well-known/smart-configuration

    def __repr__(self) -> str:
        return (
            f"SmartConfig(client_id={short_id(self.client_id)!r}, "
            f"key={REDACTED} ({self.key_source}), "
            f"scope={self.scope!r}, kid={self.kid!r}, token_url={self.token_url!r})"
        )


def resolve_smart(
    *,
    client_id: str | None = None,
    key_file: str | Path | None = None,
    kid: str | None = None,
    scope: str | None = None,
    token_url: str | None = None,
    environ: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
) -> SmartConfig | None:
    """SMART settings from arguments, else environment, else the config file's [smart] table.

    None when no client id is configured anywhere (plain bearer token or no auth then).
    """
    env = os.environ if environ is None else environ
    table = dict(config or {})

    def pick(value: Any, env_name: str, key: str) -> str | None:
        for candidate in (value, env.get(env_name), table.get(key)):
            if candidate not in (None, ""):
                return str(candidate)
        return None

    cid = pick(client_id, ENV_CLIENT_ID, "client_id")
    if cid is None:
        return None
    path = pick(key_file, ENV_KEY_FILE, "key_file")
    if path is not None:
        key_text, source = _read_key_file(Path(path)), f"file {path}"
    elif env.get(ENV_KEY, "").strip():
        key_text, source = env[ENV_KEY], f"${ENV_KEY}"
    else:
        raise FatalTransportError(
            f"SMART client {short_id(cid)!r} has no private key: give --smart-key-file, "
            f"${ENV_KEY_FILE} or ${ENV_KEY}"
        )
    return SmartConfig(
        client_id=cid,
        key_text=key_text,
        key_source=source,
        scope=pick(scope, ENV_SCOPE, "scope") or DEFAULT_SCOPE,
        kid=pick(kid, ENV_KID, "kid"),
        token_url=pick(token_url, ENV_TOKEN_URL, "token_url"),
    )


def _read_key_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise FatalTransportError(f"cannot read SMART key file {path}: {why}") from None
    if mode & 0o077:
        log.warning("SMART key file %s is readable by other users; chmod 600 it", path)
    return text


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _thumbprint(public_jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (a hash of the required public members), used as default kid."""
    members = ("crv", "kty", "x", "y") if public_jwk["kty"] == "EC" else ("e", "kty", "n")
    canonical = orjson.dumps({k: public_jwk[k] for k in members}, option=orjson.OPT_SORT_KEYS)
    return _b64(hashlib.sha256(canonical).digest())


@dataclass(frozen=True)
class SigningKey:
    """The loaded private key, its algorithm and kid (repr shows neither key half)."""

    key: Any = field(repr=False)
    algorithm: str
    kid: str


def load_signing_key(config: SmartConfig) -> SigningKey:
    """Load a PEM private key or a private JWK (or a JWKS holding one); RS384 or ES384."""
    # PyJWT and cryptography are imported here, not with the module: together they add ~40 ms
    # to every command's start-up (push, score, bulk), and only a SMART client needs them.
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    text = config.key_text.strip()
    where = config.key_source
    kid = config.kid
    try:
        if text.startswith("{"):
            data = orjson.loads(text)
            if isinstance(data, dict) and isinstance(data.get("keys"), list):
                private = [k for k in data["keys"] if isinstance(k, dict) and "d" in k]
                if kid is not None:
                    private = [k for k in private if k.get("kid") == kid]
                if len(private) != 1:
                    raise FatalTransportError(
                        f"SMART key {where}: the JWKS must hold exactly one private key"
                        + (f" with kid {kid!r}" if kid else "")
                    )
                data = private[0]
            if not isinstance(data, dict) or "d" not in data:
                raise FatalTransportError(f"SMART key {where}: not a private JWK")
            kid = kid or data.get("kid")
            key = jwt.PyJWK(data).key
        else:
            key = load_pem_private_key(text.encode(), password=None)
    except FatalTransportError:
        raise
    except (ValueError, TypeError, jwt.PyJWTError, orjson.JSONDecodeError) as exc:
        # The exception text is the library's, about the format; it never quotes key material.
        raise FatalTransportError(
            f"SMART key {where}: not a usable private key ({type(exc).__name__})"
        ) from None
    if isinstance(key, rsa.RSAPrivateKey):
        algorithm = "RS384"
        public = orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
        algorithm = "ES384"
        public = orjson.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    else:
        raise FatalTransportError(
            f"SMART key {where}: needs an RSA key (RS384) or an EC P-384 key (ES384)"
        )
    return SigningKey(key=key, algorithm=algorithm, kid=kid or _thumbprint(public))


class SmartBackendAuth(AuthBase):
    """requests auth that adds a SMART Backend Services access token, renewed before it expires.

    Thread-safe (push workers share it). `invalidate()` drops the cached token; the Transport
    calls it on a 401 and retries once with a fresh token.
    """

    def __init__(
        self,
        config: SmartConfig,
        *,
        server: ServerOptions,
        session: requests.Session,
        redact: Redactor,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.base_url = server.base_url.rstrip("/")
        self._session = session
        self._redact = redact
        self._verify = server.tls.verify
        self._timeout = server.timeout
        self._allow_http = server.tls.allow_http
        self._clock = clock
        self._key = load_signing_key(config)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._token_url = config.token_url
        self.renewals = 0  # token requests made, for tests and the -v log

    def __repr__(self) -> str:
        return (
            f"SmartBackendAuth(client_id={short_id(self.config.client_id)!r}, "
            f"alg={self._key.algorithm}, "
            f"token={REDACTED if self._token else None})"
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self._token,) if self._token else ()

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self.token()}"
        return r

    def invalidate(self) -> None:
        """Forget the cached token (after a 401): the next request fetches a new one."""
        with self._lock:
            self._token = None
            self._expires_at = 0.0

    def token(self) -> str:
        """The cached access token, renewed first when it expires within the margin."""
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at:
                self._renew()
            assert self._token is not None
            return self._token

    # --- token endpoint ------------------------------------------------------------------

    def token_url(self) -> str:
        """The token endpoint: configured, else from [base]/.well-known/smart-configuration."""
        if self._token_url is None:
            self._token_url = self._discover()
        return self._token_url

    def _get_json(self, url: str, what: str) -> Any:
        try:
            response = self._session.get(
                url,
                headers={"Accept": "application/json"},
                timeout=self._timeout,
                verify=self._verify,
                allow_redirects=False,
            )
        except requests.exceptions.RequestException as exc:
            raise FatalTransportError(
                f"cannot reach {what} at {url}: {type(exc).__name__}", url=url
            ) from None
        if response.status_code != 200:
            raise FatalTransportError(
                f"{what} at {url} answered HTTP {response.status_code}", url=url
            )
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise FatalTransportError(f"{what} at {url} is not JSON", url=url) from None

    def _discover(self) -> str:
        url = f"{self.base_url}/.well-known/smart-configuration"
        doc = self._get_json(url, "SMART configuration")
        token_url = doc.get("token_endpoint") if isinstance(doc, dict) else None
        if not isinstance(token_url, str) or not token_url:
            raise FatalTransportError(f"SMART configuration at {url} names no token_endpoint")
        methods = doc.get("token_endpoint_auth_methods_supported")
        if isinstance(methods, list) and "private_key_jwt" not in methods:
            raise FatalTransportError(
                f"the server at {self.base_url} does not offer private_key_jwt client "
                f"authentication (SMART Backend Services); it offers {methods}"
            )
        algorithms = doc.get("token_endpoint_auth_signing_alg_values_supported")
        if isinstance(algorithms, list) and self._key.algorithm not in algorithms:
            raise FatalTransportError(
                f"the server at {self.base_url} does not accept {self._key.algorithm} "
                f"assertions; it accepts {algorithms}"
            )
        _check_token_url(token_url, allow_http=self._allow_http)
        return token_url

    def assertion(self, token_url: str) -> str:
        """A fresh signed client assertion for `token_url` (unique jti, exp <= 5 minutes)."""
        now = int(self._clock())
        claims = {
            "iss": self.config.client_id,
            "sub": self.config.client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            "jti": uuid.uuid4().hex,
        }
        import jwt  # loaded already by load_signing_key (see there)

        headers = {"kid": self._key.kid, "typ": "JWT"}
        return jwt.encode(claims, self._key.key, algorithm=self._key.algorithm, headers=headers)

    def _renew(self) -> None:
        token_url = self.token_url()
        assertion = self.assertion(token_url)
        self._redact.add(assertion)
        form = {
            "grant_type": "client_credentials",
            "scope": self.config.scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        try:
            response = self._session.post(
                token_url,
                data=form,
                headers={"Accept": "application/json"},
                timeout=self._timeout,
                verify=self._verify,
                allow_redirects=False,
            )
        except requests.exceptions.RequestException as exc:
            raise FatalTransportError(
                f"cannot reach the SMART token endpoint {token_url}: {type(exc).__name__}",
                url=token_url,
            ) from None
        try:
            body = orjson.loads(response.content) if response.content else {}
        except orjson.JSONDecodeError:
            body = {}
        if response.status_code != 200:
            error = body.get("error", "no error code") if isinstance(body, dict) else "?"
            description = body.get("error_description", "") if isinstance(body, dict) else ""
            raise FatalTransportError(
                self._redact(
                    f"SMART token request for client {short_id(self.config.client_id)!r} "
                    f"refused by {token_url} (HTTP {response.status_code} {error})"
                    + (f": {description}" if description else "")
                ),
                url=token_url,
                status=response.status_code,
            )
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise FatalTransportError(f"SMART token endpoint {token_url} returned no access_token")
        lifetime = body.get("expires_in")
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        self._redact.add(token)
        self._token = token
        margin = min(RENEW_MARGIN, lifetime / 5)
        self._expires_at = self._clock() + lifetime - margin
        self.renewals += 1
        log.debug(
            "SMART token %d for client %s from %s: scope %s, valid %ds",
            self.renewals,
            short_id(self.config.client_id),
            token_url,
            body.get("scope", self.config.scope),
            lifetime,
        )


def _check_token_url(url: str, *, allow_http: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FatalTransportError(f"SMART token endpoint {url!r} is not an http(s) URL")
    if parts.scheme == "http" and not allow_http and not is_loopback(parts.hostname):
        raise FatalTransportError(
            f"refusing plain http SMART token endpoint {url}: the assertion would travel "
            "unencrypted (use https, or --allow-http on a trusted network)"
        )
