"""A tiny FHIR + SMART Backend Services authorization server on 127.0.0.1 for the auth tests.

The token endpoint checks client assertions by the rules of the SMART App Launch 2.x Backend
Services spec: grant and assertion types, the signature against the client's registered public
JWKS (by kid), iss = sub = the registered client id, aud = the token endpoint URL, exp present,
not passed and at most five minutes ahead, and a jti never seen before.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_real_time = time.time  # the server's clock, immune to tests that patch the client's


@dataclass
class SmartServer:
    """Registered clients, issued tokens and counters the tests look at."""

    clients: dict[str, dict[str, Any]] = field(default_factory=dict)  # client_id -> public JWKS
    token_lifetime: int = 300
    skew: float = 0.0  # seconds the server's clock runs ahead of the real one
    offer_private_key_jwt: bool = True
    patients: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry
    seen_jti: set[str] = field(default_factory=set)
    token_requests: int = 0
    rejected_assertions: list[str] = field(default_factory=list)
    unauthorized: int = 0  # FHIR requests answered 401
    fhir_requests: int = 0
    reject_all: bool = False
    assertions: list[dict[str, Any]] = field(default_factory=list)  # verified claims
    scopes: list[str] = field(default_factory=list)  # scope of each token issued
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/fhir"

    @property
    def token_url(self) -> str:
        return f"{self.origin}/auth/token"

    def now(self) -> float:
        return _real_time() + self.skew

    def revoke_all(self) -> None:
        with self.lock:
            self.tokens.clear()

    # --- token endpoint ------------------------------------------------------------------

    def issue(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.token_requests += 1
        try:
            claims, scope = self._verify(form)
        except ValueError as exc:
            with self.lock:
                self.rejected_assertions.append(str(exc))
            return 400, {"error": "invalid_client", "error_description": str(exc)}
        token = uuid.uuid4().hex
        with self.lock:
            self.tokens[token] = self.now() + self.token_lifetime
            self.assertions.append(claims)
            self.scopes.append(scope)
        return 200, {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.token_lifetime,
            "scope": scope,
        }

    def _verify(self, form: dict[str, str]) -> tuple[dict[str, Any], str]:
        if form.get("grant_type") != "client_credentials":
            raise ValueError("grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise ValueError("client_assertion_type must be jwt-bearer")
        assertion = form.get("client_assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise ValueError(f"malformed assertion: {exc}") from None
        if header.get("alg") not in ("RS384", "ES384"):
            raise ValueError(f"alg {header.get('alg')} not accepted")
        client_id = unverified.get("iss")
        jwks = self.clients.get(str(client_id))
        if jwks is None:
            raise ValueError("unknown client (iss)")
        candidates = [k for k in jwks["keys"] if k.get("kid") == header.get("kid")]
        if not candidates:
            raise ValueError(f"no registered key with kid {header.get('kid')!r}")
        key = jwt.PyJWK(candidates[0], algorithm=header["alg"]).key
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=[header["alg"]],
                audience=self.token_url,
                options={
                    "require": ["iss", "sub", "aud", "exp", "jti"],
                    "verify_exp": False,  # checked below against the server's own clock
                    "verify_iat": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise ValueError("signature does not verify against the registered JWKS") from None
        except jwt.InvalidAudienceError:
            raise ValueError(f"aud is not this token endpoint ({self.token_url})") from None
        except jwt.PyJWTError as exc:
            raise ValueError(f"invalid assertion: {exc}") from None
        if claims["sub"] != claims["iss"]:
            raise ValueError("sub must equal iss (the client id)")
        now = self.now()
        if claims["exp"] <= now:
            raise ValueError("assertion expired")
        if claims["exp"] > now + 300 + 5:
            raise ValueError("exp more than five minutes ahead")
        with self.lock:
            if claims["jti"] in self.seen_jti:
                raise ValueError("jti already used (replayed assertion)")
            self.seen_jti.add(claims["jti"])
        return claims, form.get("scope", "")

    # --- FHIR side -----------------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        if self.reject_all or not header or not header.startswith("Bearer "):
            return False
        expiry = self.tokens.get(header.removeprefix("Bearer "))
        return expiry is not None and expiry > self.now()


def _handler(server: SmartServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            pass  # keep test output clean

        def _send(self, status: int, body: Any, ctype: str = "application/json") -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/fhir/.well-known/smart-configuration":
                methods = (
                    ["private_key_jwt"] if server.offer_private_key_jwt else ["client_secret_basic"]
                )
                self._send(
                    200,
                    {
                        "token_endpoint": server.token_url,
                        "token_endpoint_auth_methods_supported": methods,
                        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
                        "grant_types_supported": ["client_credentials"],
                        "scopes_supported": ["system/*.rs", "system/*.read"],
                        "capabilities": ["client-confidential-asymmetric"],
                    },
                )
                return
            if path == "/fhir/metadata":
                self._send(
                    200,
                    {
                        "resourceType": "CapabilityStatement",
                        "fhirVersion": "4.0.1",
                        "status": "active",
                    },
                    "application/fhir+json",
                )
                return
            if path.startswith("/fhir/"):
                with server.lock:
                    server.fhir_requests += 1
                if not server.authorized(self.headers.get("Authorization")):
                    with server.lock:
                        server.unauthorized += 1
                    self._send(
                        401,
                        {
                            "resourceType": "OperationOutcome",
                            "issue": [
                                {
                                    "severity": "error",
                                    "code": "login",
                                    "diagnostics": "token invalid",
                                }
                            ],
                        },
                        "application/fhir+json",
                    )
                    return
                kind = path.removeprefix("/fhir/")
                entries = [{"resource": p} for p in server.patients] if kind == "Patient" else []
                self._send(
                    200,
                    {
                        "resourceType": "Bundle",
                        "type": "searchset",
                        "total": len(entries),
                        "entry": entries,
                    },
                    "application/fhir+json",
                )
                return
            self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode()
            if path in ("/auth/token", "/auth/alias-token"):
                form = {k: v[0] for k, v in parse_qs(raw).items()}
                status, body = server.issue(form)
                self._send(status, body)
                return
            self._send(404, {"error": "not found"})

    return Handler


class Running:
    """Context manager: the server in a thread; `.state` is the SmartServer."""

    def __init__(self, state: SmartServer) -> None:
        self.state = state
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
        state.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> SmartServer:
        self._thread.start()
        return self.state

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
