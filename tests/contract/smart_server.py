"""A tiny FHIR + SMART Backend Services authorization server on 127.0.0.1 for the auth tests.

With a `BulkBehaviour` attached it is also a Bulk Data (IG v2) export server: kick-off, status
polling, files and DELETE, with the misbehaviours of real servers as switches (see BulkBehaviour).

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
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_real_time = time.time  # the server's clock, immune to tests that patch the client's


def outcome(code: str, text: str, severity: str = "error") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}],
    }


_ALL_SCORED = (
    "Patient",
    "Group",
    "Condition",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationAdministration",
    "Observation",
    "Procedure",
)
# One scripted status answer: (HTTP status, JSON body or None, headers).
Answer = tuple[int, Any, dict[str, str]]


@dataclass
class BulkBehaviour:
    """The export server's data and switches; the recorded fields are what the tests look at."""

    resources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by type
    supported: list[str] | None = None  # types the CapabilityStatement lists (None: all)
    type_filter: str = "apply"  # apply | refuse (400 at kick-off) | ignore
    # Types left out of any export sent with _typeFilter (what the SMART reference server did
    # with fhir-cyclo's default request: no Patient, Observation, Procedure; issue 25).
    filter_drops: tuple[str, ...] = ()
    # The export OperationDefinition: "canonical" (the IG's URL, not served here), or served
    # on this server with `export_parameters` ("served"), or named here but absent ("missing").
    export_definition: str = "canonical"
    export_parameters: tuple[str, ...] = ("_outputFormat", "_since", "_type", "_typeFilter")
    file_failures: dict[str, int] = field(default_factory=dict)  # file name -> 503s first
    groups: dict[str, list[str]] = field(default_factory=dict)  # Group id -> Patient ids
    status_script: list[Answer] = field(default_factory=list)  # answers before the manifest
    error_files: list[tuple[list[dict[str, Any]], int | None]] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)  # (type, id) reported deleted
    manifest_hook: Callable[[dict[str, Any], str], dict[str, Any]] | None = None
    status_origin: str | None = None  # announce the status URL on this origin instead
    require_auth: bool = False
    extra_files: dict[str, bytes] = field(default_factory=dict)  # more files, by name
    # recorded
    kickoffs: list[dict[str, list[str]]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    status_requests: int = 0
    definition_requests: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    jobs: set[str] = field(default_factory=set)


def _matches(resource: dict[str, Any], filters: list[str]) -> bool:
    """The `code=system|code,...` _typeFilter form (the one fhir-cyclo sends)."""
    mine = [f for f in filters if f.startswith(resource["resourceType"] + "?")]
    if not mine:
        return True
    codings = {
        (c.get("system"), c.get("code")) for c in (resource.get("code") or {}).get("coding", [])
    }
    for f in mine:
        query = parse_qs(f.split("?", 1)[1])
        wanted = {tuple(t.split("|", 1)) for t in query.get("code", [""])[0].split(",")}
        if codings & wanted:
            return True
    return False


def _subject(resource: dict[str, Any]) -> str | None:
    if resource["resourceType"] == "Patient":
        return str(resource["id"])
    ref = (resource.get("subject") or resource.get("patient") or {}).get("reference", "")
    return str(ref).removeprefix("Patient/") or None


def ndjson(resources: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in resources)


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
    _manifests: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    bulk: BulkBehaviour | None = None

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

    def capability(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "resourceType": "CapabilityStatement",
            "fhirVersion": "4.0.1",
            "status": "active",
        }
        if self.bulk is not None:
            types = self.bulk.supported
            if types is None:
                types = sorted({*self.bulk.resources, *_ALL_SCORED})
            definition = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
            if self.bulk.export_definition != "canonical":
                definition = f"{self.base_url}/OperationDefinition/export"
            body["rest"] = [
                {
                    "mode": "server",
                    "resource": [{"type": t} for t in types],
                    "operation": [{"name": "export", "definition": definition}],
                }
            ]
        return body

    def kick_off(self, group: str | None, query: dict[str, list[str]]) -> Answer:
        bulk = self.bulk
        assert bulk is not None
        with self.lock:
            bulk.kickoffs.append(query)
        types = ",".join(query.get("_type", [])).split(",") if query.get("_type") else []
        supported = bulk.supported
        for t in types:
            if supported is not None and t not in supported:
                return 400, outcome("not-supported", f"Resource type {t} not available"), {}
        filters = query.get("_typeFilter", [])
        if filters and bulk.type_filter == "refuse":
            return 400, outcome("not-supported", "The _typeFilter parameter is not supported"), {}
        job = uuid.uuid4().hex[:12]
        members: set[str] | None = None
        if group is not None:
            members = set(bulk.groups.get(group, []))
        manifest = self._manifest(job, types, filters, members)
        with self.lock:
            bulk.jobs.add(job)
            self._manifests[job] = manifest
        origin = bulk.status_origin or self.origin
        return 202, None, {"Content-Location": f"{origin}/fhir/bulkstatus/{job}"}

    def _manifest(
        self, job: str, types: list[str], filters: list[str], members: set[str] | None
    ) -> dict[str, Any]:
        bulk = self.bulk
        assert bulk is not None
        files = f"{self.origin}/fhir/bulkfiles/{job}"
        output = []
        for rtype in types or sorted(bulk.resources):
            if filters and rtype in bulk.filter_drops:
                continue
            chosen = [
                r
                for r in bulk.resources.get(rtype, [])
                if (members is None or _subject(r) in members)
                and (bulk.type_filter == "ignore" or _matches(r, filters))
            ]
            if not chosen:
                continue  # the spec: no file for a type without resources
            name = f"{rtype}-1.ndjson"
            bulk.files[f"{job}/{name}"] = ndjson(chosen)
            output.append({"type": rtype, "url": f"{files}/{name}", "count": len(chosen)})
        errors = []
        for i, (lines, count) in enumerate(bulk.error_files):
            name = f"error-{i}.ndjson"
            bulk.files[f"{job}/{name}"] = ndjson(lines)
            entry: dict[str, Any] = {"type": "OperationOutcome", "url": f"{files}/{name}"}
            if count is not None:
                entry["count"] = count
            errors.append(entry)
        manifest: dict[str, Any] = {
            "transactionTime": "2026-11-29T08:00:00Z",
            "request": f"{self.base_url}/Patient/$export",
            "requiresAccessToken": bulk.require_auth,
            "output": output,
            "error": errors,
        }
        if bulk.deleted:
            bundles = [
                {
                    "resourceType": "Bundle",
                    "type": "transaction",
                    "entry": [{"request": {"method": "DELETE", "url": f"{t}/{i}"}}],
                }
                for t, i in bulk.deleted
            ]
            bulk.files[f"{job}/deleted.ndjson"] = ndjson(bundles)
            manifest["deleted"] = [
                {"type": "Bundle", "url": f"{files}/deleted.ndjson", "count": len(bundles)}
            ]
        for name, data in bulk.extra_files.items():
            bulk.files[f"{job}/{name}"] = data
        if bulk.manifest_hook is not None:
            manifest = bulk.manifest_hook(manifest, files)
        return manifest

    def status(self, job: str) -> Answer:
        bulk = self.bulk
        assert bulk is not None
        with self.lock:
            bulk.status_requests += 1
            if job not in bulk.jobs:
                return 404, outcome("not-found", "no such job"), {}
            if bulk.status_script:
                return bulk.status_script.pop(0)
        return 200, self._manifests[job], {}

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
                self._send(200, server.capability(), "application/fhir+json")
                return
            if server.bulk is not None and self._bulk_get(path):
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

        def _refused(self) -> bool:
            bulk = server.bulk
            assert bulk is not None
            if bulk.require_auth and not server.authorized(self.headers.get("Authorization")):
                with server.lock:
                    server.unauthorized += 1
                self._send(401, outcome("login", "token invalid"), "application/fhir+json")
                return True
            return False

        def _answer(self, answer: Answer) -> None:
            status, body, headers = answer
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _bulk_get(self, path: str) -> bool:
            """The Bulk Data endpoints; False when `path` is none of them."""
            bulk = server.bulk
            assert bulk is not None
            query = parse_qs(urlsplit(self.path).query)
            parts = path.split("/")
            if path == "/fhir/Patient/$export" or (
                len(parts) == 5 and parts[2] == "Group" and parts[4] == "$export"
            ):
                if not self._refused():
                    group = parts[3] if parts[2] == "Group" else None
                    self._answer(server.kick_off(group, query))
                return True
            if path.startswith("/fhir/bulkstatus/"):
                if not self._refused():
                    self._answer(server.status(path.rsplit("/", 1)[1]))
                return True
            if path == "/fhir/OperationDefinition/export" and bulk.export_definition != "canonical":
                with server.lock:
                    bulk.definition_requests += 1
                if bulk.export_definition == "missing":
                    self._answer((404, outcome("not-found", "no such OperationDefinition"), {}))
                else:
                    params = [{"name": n, "use": "in"} for n in bulk.export_parameters]
                    body = {"resourceType": "OperationDefinition", "parameter": params}
                    self._answer((200, body, {}))
                return True
            if path.startswith("/fhir/bulkfiles/"):
                if bulk.require_auth and self._refused():
                    return True
                name = path.removeprefix("/fhir/bulkfiles/")
                with server.lock:
                    failures = bulk.file_failures.get(name.rsplit("/", 1)[-1], 0)
                    if failures:
                        bulk.file_failures[name.rsplit("/", 1)[-1]] = failures - 1
                if failures:
                    self._answer((503, outcome("transient", "busy"), {}))
                    return True
                data = bulk.files.get(name)
                if data is None:
                    self._answer((404, outcome("not-found", "no such file"), {}))
                    return True
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+ndjson")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return True
            return False

        def do_DELETE(self) -> None:
            path = urlsplit(self.path).path
            if server.bulk is not None and path.startswith("/fhir/bulkstatus/"):
                job = path.rsplit("/", 1)[1]
                with server.lock:
                    server.bulk.deletes.append(job)
                    found = job in server.bulk.jobs
                    server.bulk.jobs.discard(job)
                self._answer((202, None, {}) if found else (404, outcome("not-found", "?"), {}))
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
