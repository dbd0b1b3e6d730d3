"""Credentials for the FHIR client (bearer token or HTTP basic) and the redaction of secrets."""

from __future__ import annotations

import base64
import logging
import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path

import requests
from requests.auth import AuthBase

from fhir_cyclo.core.errors import FatalTransportError

log = logging.getLogger("fhir_cyclo.client")

# Names of environment variables, not secrets.
TOKEN_ENV = "FHIR_CYCLO_TOKEN"  # noqa: S105
TOKEN_FILE_ENV = "FHIR_CYCLO_TOKEN_FILE"  # noqa: S105
REDACTED = "***"


class Redactor:
    """Replaces every known secret by `***`; applied to repr, log lines and exception messages."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is removed whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def add(self, secret: str) -> None:
        """Also redact `secret` from now on (tokens that arrive during a run, e.g. SMART)."""
        if secret and secret not in self._secrets:
            # A new list, swapped in whole: other threads keep iterating the old one safely.
            self._secrets = sorted([*self._secrets, secret], key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def __repr__(self) -> str:
        return f"Redactor({len(self._secrets)} secrets)"


class BearerAuth(AuthBase):
    """`Authorization: Bearer <token>`; the token never appears in repr or str."""

    def __init__(self, token: str, *, source: str) -> None:
        self._token = token
        self.source = source

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = f"Bearer {self._token}"
        return r

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self._token,)

    def __repr__(self) -> str:
        return f"BearerAuth(token={REDACTED}, source={self.source})"


class BasicAuth(AuthBase):
    """HTTP basic auth; the password (and the encoded header) never appear in repr or str."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._password = password
        self._header = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers["Authorization"] = self._header
        return r

    @property
    def secrets(self) -> tuple[str, ...]:
        # The base64 form is a secret too: it decodes to the password.
        return (self._password, self._header.removeprefix("Basic "))

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password={REDACTED})"


Auth = BearerAuth | BasicAuth


def _read_token_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except OSError as exc:
        # exc.strerror only: str(exc) is safe too, but the file's content is never in it.
        raise FatalTransportError(f"cannot read token file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("token file %s is readable by other users; chmod 600 it", path)
    token = text.strip()
    if not token:
        raise FatalTransportError(f"token file {path} is empty")
    return token


def resolve_auth(
    *,
    token: str | None,
    token_file: Path | None,
    basic_auth: tuple[str, str] | None,
    environ: Mapping[str, str] | None = None,
) -> Auth | None:
    """Pick credentials: explicit arguments, then $FHIR_CYCLO_TOKEN, then $FHIR_CYCLO_TOKEN_FILE."""
    explicit = [name for name, v in (("token", token), ("token_file", token_file)) if v]
    if basic_auth is not None and explicit:
        raise FatalTransportError(f"give either basic_auth or {explicit[0]}, not both")
    if token is not None and token_file is not None:
        raise FatalTransportError("give either token or token_file, not both")
    if basic_auth is not None:
        user, password = basic_auth
        return BasicAuth(user, password)
    if token is not None:
        if not token.strip():
            raise FatalTransportError("the bearer token is empty")
        return BearerAuth(token.strip(), source="argument")
    if token_file is not None:
        return BearerAuth(_read_token_file(Path(token_file)), source=f"file {token_file}")
    env = os.environ if environ is None else environ
    if env.get(TOKEN_ENV, "").strip():
        return BearerAuth(env[TOKEN_ENV].strip(), source=f"${TOKEN_ENV}")
    if env.get(TOKEN_FILE_ENV, "").strip():
        path = Path(env[TOKEN_FILE_ENV].strip())
        return BearerAuth(_read_token_file(path), source=f"${TOKEN_FILE_ENV} ({path})")
    return None
