"""SMART Backend Services auth against a token endpoint that checks assertions by the spec."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_cyclo.cli.app import main
from fhir_cyclo.client import AuthOptions, FhirClient, RetryPolicy, ServerOptions
from fhir_cyclo.client.smart import SmartConfig, load_signing_key, resolve_smart
from fhir_cyclo.core.errors import FatalTransportError, ServerError

from .smart_server import Running, SmartServer

CLIENT_ID = "fhir-cyclo-test-client"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP384R1())


def pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_jwk(key: Any, kid: str) -> dict[str, Any]:
    algorithm = (
        jwt.algorithms.RSAAlgorithm
        if isinstance(key, rsa.RSAPrivateKey)
        else jwt.algorithms.ECAlgorithm
    )
    jwk = json.loads(algorithm.to_jwk(key.public_key()))
    jwk.update(kid=kid, alg="RS384" if isinstance(key, rsa.RSAPrivateKey) else "ES384")
    return jwk


@pytest.fixture
def server() -> Iterator[SmartServer]:
    state = SmartServer(
        clients={CLIENT_ID: {"keys": [public_jwk(RSA_KEY, "rsa-1"), public_jwk(EC_KEY, "ec-1")]}},
        patients=[{"resourceType": "Patient", "id": "p1"}],
    )
    with Running(state) as running:
        yield running


def config(key: Any = RSA_KEY, kid: str = "rsa-1", **extra: Any) -> SmartConfig:
    return SmartConfig(client_id=CLIENT_ID, key_text=pem(key), key_source="test", kid=kid, **extra)


class Clock:
    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def client(
    server: SmartServer, cfg: SmartConfig | None = None, clock: Callable[[], float] = time.time
) -> FhirClient:
    auth = AuthOptions(smart=cfg or config(), clock=clock)
    return FhirClient(server.base_url, auth=auth, retry=RetryPolicy(retries=0))


def patients(c: FhirClient) -> list[dict[str, Any]]:
    return list(c.search("Patient"))


def test_token_from_discovered_endpoint_with_a_valid_assertion(server: SmartServer) -> None:
    with client(server) as c:
        assert patients(c) == [{"resourceType": "Patient", "id": "p1"}]
        assert patients(c)  # the cached token is used again
    assert server.token_requests == 1
    assert server.rejected_assertions == []
    (claims,) = server.assertions
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == server.token_url
    assert 0 < claims["exp"] - claims["iat"] <= 300


def test_es384_key(server: SmartServer) -> None:
    with client(server, config(EC_KEY, "ec-1")) as c:
        assert patients(c)
    assert server.rejected_assertions == []
    assert load_signing_key(config(EC_KEY, "ec-1")).algorithm == "ES384"
    assert load_signing_key(config()).algorithm == "RS384"


def test_scope_is_sent_as_configured(server: SmartServer) -> None:
    with client(server, config(scope="system/*.read")) as c:
        assert patients(c)
    with client(server) as c:
        assert patients(c)
    # v1 as configured, then the v2 default.
    assert server.scopes == ["system/*.read", "system/*.rs"]


def test_renewed_before_expiry(server: SmartServer) -> None:
    server.token_lifetime = 120  # renewal margin min(60, 120 / 5) = 24 s
    clock = Clock()
    with client(server, clock=clock) as c:
        assert patients(c)
        # Time passes for both sides (the server's clock moves with the client's).
        clock.now += 90
        server.skew += 90  # 30 s left: still used
        assert patients(c)
        assert server.token_requests == 1
        clock.now += 10
        server.skew += 10  # 20 s left, inside the margin: renewed before the server expires it
        assert patients(c)
    assert server.token_requests == 2
    assert server.unauthorized == 0
    jtis = [a["jti"] for a in server.assertions]
    assert len(set(jtis)) == 2  # a fresh jti every time (the server refuses a replay)


def test_401_renews_once_and_retries_once(server: SmartServer) -> None:
    with client(server) as c:
        assert patients(c)
        server.revoke_all()  # the server forgets the token before its expiry
        assert patients(c)
    assert server.unauthorized == 1
    assert server.token_requests == 2


def test_persistent_401_is_not_a_loop(server: SmartServer) -> None:
    server.reject_all = True
    with client(server) as c, pytest.raises(ServerError) as err:
        patients(c)
    assert err.value.status == 401
    assert server.fhir_requests == 2  # the request and its one retry
    assert server.token_requests == 2


def test_server_refuses_a_replayed_assertion(server: SmartServer) -> None:
    """The test endpoint's jti check is real (so the uniqueness the client passes is meaningful)."""
    import requests

    from fhir_cyclo.client.auth import Redactor
    from fhir_cyclo.client.smart import SmartBackendAuth

    auth = SmartBackendAuth(
        config(),
        server=ServerOptions(server.base_url),
        session=requests.Session(),
        redact=Redactor(),
    )
    assertion = auth.assertion(server.token_url)
    form = {
        "grant_type": "client_credentials",
        "scope": "system/*.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }
    assert requests.post(server.token_url, data=form, timeout=5).status_code == 200
    second = requests.post(server.token_url, data=form, timeout=5)
    assert second.status_code == 400
    assert "jti already used" in second.json()["error_description"]


def write_key(tmp_path: Path, key: Any) -> Path:
    path = tmp_path / "key.pem"
    path.write_text(pem(key))
    path.chmod(0o600)
    return path


def run_cli(server: SmartServer, tmp_path: Path, *extra: str, key: Any = RSA_KEY) -> int:
    return main(
        [
            "-v",
            "score",
            "--server",
            server.base_url,
            "--smart-client-id",
            CLIENT_ID,
            "--smart-key-file",
            str(write_key(tmp_path, key)),
            "--smart-kid",
            "rsa-1",
            *extra,
        ]
    )


def test_cli_with_smart_flags(
    server: SmartServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(server, tmp_path, "--json", str(tmp_path / "out.json")) == 0
    assert "read 1 patient(s): scored 0, not scored 1" in capsys.readouterr().err
    assert server.token_requests == 1


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("expired", "assertion expired"),
        ("wrong_audience", "aud is not this token endpoint"),
        ("wrong_key", "signature does not verify against the registered JWKS"),
    ],
)
def test_refused_assertions_are_clear_errors_exit_3(  # noqa: PLR0917 - pytest fixtures
    server: SmartServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    setup: str,
    expected: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    extra: list[str] = []
    key: Any = RSA_KEY
    if setup == "expired":
        server.skew = 600  # the server's clock is 10 minutes ahead: the assertion has expired
    elif setup == "wrong_audience":
        # A token URL configured by hand that the server also answers, but is not its own name.
        extra = ["--smart-token-url", f"{server.origin}/auth/alias-token"]
    else:
        key = OTHER_RSA_KEY  # signed with a key the server never registered, same kid
    assert run_cli(server, tmp_path, *extra, key=key) == 3
    err = capsys.readouterr().err
    assert "SMART token request for client 'fhir-cyclo-test-client' refused" in err
    assert "invalid_client" in err
    assert expected in err
    assert "Traceback" not in err
    assert server.fhir_requests == 0  # nothing was sent without a token
    # Neither the key nor the signed assertion shows up anywhere.
    logged = caplog.text + err
    assert "PRIVATE KEY" not in logged
    assert "eyJ" not in logged  # the base64url start of every JWT


def test_secrets_never_in_repr_or_logs(
    server: SmartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = config()
    with client(server, cfg) as c:
        assert patients(c)
        token = next(iter(server.tokens))
        text = repr(c) + repr(cfg) + repr(c._auth) + caplog.text
        assert token not in text
        assert "PRIVATE KEY" not in text
        assert cfg.key_text not in text
        # A server that echoes the token in an error message gets it redacted.
        assert c._redact(f"bad token {token}") == "bad token ***"


def test_settings_from_env_and_config_file(tmp_path: Path) -> None:
    key = write_key(tmp_path, RSA_KEY)
    from_env = resolve_smart(
        environ={"FHIR_CYCLO_SMART_CLIENT_ID": "env-client", "FHIR_CYCLO_SMART_KEY_FILE": str(key)}
    )
    assert from_env is not None and from_env.client_id == "env-client"
    assert from_env.scope == "system/*.rs"
    from_table = resolve_smart(
        environ={},
        config={"client_id": "cfg", "key_file": str(key), "scope": "system/*.read", "kid": "k"},
    )
    assert from_table is not None
    assert (from_table.client_id, from_table.scope, from_table.kid) == ("cfg", "system/*.read", "k")
    # A flag beats the environment, which beats the file.
    chosen = resolve_smart(
        client_id="flag",
        environ={"FHIR_CYCLO_SMART_CLIENT_ID": "env", "FHIR_CYCLO_SMART_KEY": pem(RSA_KEY)},
        config={"client_id": "cfg"},
    )
    assert (
        chosen is not None
        and chosen.client_id == "flag"
        and chosen.key_source == "$FHIR_CYCLO_SMART_KEY"
    )
    assert resolve_smart(environ={}) is None
    with pytest.raises(FatalTransportError, match="has no private key"):
        resolve_smart(client_id="x", environ={})


def test_config_file_drives_the_cli(
    server: SmartServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = write_key(tmp_path, EC_KEY)
    conf = tmp_path / "conf.toml"
    conf.write_text(
        f'server = "{server.base_url}"\n[smart]\nclient_id = "{CLIENT_ID}"\n'
        f'key_file = "{key}"\nkid = "ec-1"\nscope = "system/*.read"\n'
    )
    monkeypatch.setenv("FHIR_CYCLO_CONFIG", str(conf))
    for name in ("FHIR_CYCLO_SERVER", "FHIR_CYCLO_SMART_CLIENT_ID", "FHIR_CYCLO_SMART_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert main(["score", "--json", str(tmp_path / "o.json")]) == 0
    assert server.token_requests == 1


def test_server_without_private_key_jwt(server: SmartServer) -> None:
    server.offer_private_key_jwt = False
    with client(server) as c, pytest.raises(FatalTransportError, match="private_key_jwt"):
        patients(c)


def test_jwk_key_file_and_kid_from_it(tmp_path: Path) -> None:
    private = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY))
    private["kid"] = "from-jwk"
    cfg = SmartConfig(
        client_id="c", key_text=json.dumps({"keys": [private]}), key_source="file k.jwks"
    )
    loaded = load_signing_key(cfg)
    assert (loaded.kid, loaded.algorithm) == ("from-jwk", "RS384")
    bad = SmartConfig(client_id="c", key_text="-----BEGIN nonsense", key_source="file bad.pem")
    with pytest.raises(FatalTransportError, match=r"bad\.pem: not a usable private key"):
        load_signing_key(bad)
