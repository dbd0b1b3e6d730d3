"""Options shared by several commands, declared once, parsed into typed frozen objects here.

Below cli/ nothing sees an argparse Namespace: each command's `parse` turns the Namespace into its
own frozen dataclass (holding a `ServerOptions` where it talks to a server), and every usage
error (exit 2) is raised there, before any work.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fhir_cyclo.cli import preflight
from fhir_cyclo.core.errors import UsageError

if TYPE_CHECKING:
    from fhir_cyclo.client.fhir import FhirClient

PUBLIC_HAPI = "https://hapi.fhir.org/baseR4"
SERVER_ENV = "FHIR_CYCLO_SERVER"
CONFIG_ENV = "FHIR_CYCLO_CONFIG"
DEFAULT_TIMEOUT = 60.0
CONNECT_TIMEOUT = 5.0


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default where it has a meaningful one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and "%(default)" not in text
            and default not in (None, False, argparse.SUPPRESS)
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


# --- verbosity: accepted before and after the subcommand ----------------------------------------


def add_verbosity(p: argparse.ArgumentParser, *, top: bool) -> None:
    """-v/-q on the top-level parser (defaults) and on every subparser (SUPPRESS, so a flag
    given before the subcommand is not reset by the subparser's default)."""
    default: Any = False if top else argparse.SUPPRESS
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="debug logging (may show PHI)"
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="only errors on stderr (no warnings, summaries or 'wrote ...' lines)",
    )


@dataclass(frozen=True)
class Verbosity:
    verbose: bool = False
    quiet: bool = False


def verbosity(ns: argparse.Namespace) -> Verbosity:
    verbose, quiet = bool(ns.verbose), bool(ns.quiet)
    if verbose and quiet:  # one before the subcommand, the other after it
        raise UsageError("-v and -q contradict each other")
    return Verbosity(verbose=verbose, quiet=quiet)


# --- the config file ----------------------------------------------------------------------------


def config_data(path: Path | None = None) -> dict[str, Any]:
    """The config file: --config, else $FHIR_CYCLO_CONFIG, ./fhir-cyclo.toml, ~/.config/..."""
    import tomllib

    if path is not None:
        candidates = [path]
    else:
        candidates = [Path(os.environ[CONFIG_ENV])] if os.environ.get(CONFIG_ENV) else []
        candidates += [
            Path("fhir-cyclo.toml"),
            Path.home() / ".config" / "fhir-cyclo" / "config.toml",
        ]
    for candidate in candidates:
        if candidate.is_file():
            try:
                return tomllib.loads(candidate.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                # A broken config file is configuration, not input data: a usage error.
                raise UsageError(f"{candidate}: not valid TOML: {exc}") from None
            except OSError as exc:
                raise UsageError(f"{candidate}: cannot read: {exc.strerror}") from None
    return {}


def default_server(config: dict[str, Any] | None = None) -> str | None:
    """$FHIR_CYCLO_SERVER, else `server =` in the config file (read now if not given)."""
    if os.environ.get(SERVER_ENV):
        return os.environ[SERVER_ENV]
    server = (config_data() if config is None else config).get("server")
    return server if isinstance(server, str) and server else None


# --- server, auth, TLS, timeout -----------------------------------------------------------------


@dataclass(frozen=True)
class SmartOptions:
    """SMART Backend Services settings as given (environment and [smart] fill in the rest)."""

    client_id: str | None = None
    key_file: str | None = None
    kid: str | None = None
    scope: str | None = None
    token_url: str | None = None


@dataclass(frozen=True)
class ServerOptions:
    """Where the server is and how to talk to it; `url` is resolved (option, env, config)."""

    url: str | None = None
    token_file: Path | None = None
    insecure: bool = False
    allow_http: bool = False
    timeout: float = DEFAULT_TIMEOUT
    smart: SmartOptions = field(default_factory=SmartOptions)
    # The config file's data, read once at parse time (for [smart]).
    config: dict[str, Any] | None = field(default=None, compare=False, hash=False)


def add_server_options(
    p: argparse.ArgumentParser,
    *,
    url_help: str = f"FHIR R4 base URL (default: ${SERVER_ENV} or the config file)",
) -> None:
    """The server, auth (token or SMART), TLS, timeout and config-file options."""
    p.add_argument("--server", metavar="URL", help=url_help)
    p.add_argument(
        "--token-file", metavar="FILE", help="file holding a bearer token (or $FHIR_CYCLO_TOKEN)"
    )
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    p.add_argument("--allow-http", action="store_true", help="allow http:// to non-loopback hosts")
    p.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS", help="read timeout"
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help=f"config file (TOML: server, [smart]; default ${CONFIG_ENV}, ./fhir-cyclo.toml, "
        "~/.config/fhir-cyclo/config.toml)",
    )
    g = p.add_argument_group("SMART Backend Services (instead of a static token; README)")
    g.add_argument("--smart-client-id", help="client id ($FHIR_CYCLO_SMART_CLIENT_ID, [smart])")
    g.add_argument(
        "--smart-key-file", help="private key, PEM or JWK(S) ($FHIR_CYCLO_SMART_KEY_FILE)"
    )
    g.add_argument("--smart-kid", help="key id of the registered public key (default: JWK kid)")
    g.add_argument("--smart-scope", help="scopes (default system/*.rs; v1 servers system/*.read)")
    g.add_argument("--smart-token-url", help="token endpoint (default: discovered)")


def server_options(
    ns: argparse.Namespace,
    *,
    required: bool,
    why: str = "no server",
    from_environment: bool = True,
) -> ServerOptions:
    """ServerOptions from the command line; the URL from --server, else (with
    `from_environment`) $FHIR_CYCLO_SERVER, else `server =` in the config file."""
    preflight.positive(ns.timeout, "--timeout")
    if ns.token_file:
        preflight.readable_file(ns.token_file, "--token-file")
    if ns.config:
        preflight.readable_file(ns.config, "--config")
    config = config_data(Path(ns.config) if ns.config else None)
    url = ns.server or (default_server(config) if from_environment else None)
    if not url and required:
        raise UsageError(
            f'{why}: give --server URL, set ${SERVER_ENV}, or `server = "..."` in '
            f"fhir-cyclo.toml (public test server: {PUBLIC_HAPI})"
        )
    if url:
        preflight.server_url(url)
    return ServerOptions(
        url=url,
        token_file=Path(ns.token_file) if ns.token_file else None,
        insecure=bool(ns.insecure),
        allow_http=bool(ns.allow_http),
        timeout=float(ns.timeout),
        smart=SmartOptions(
            client_id=ns.smart_client_id,
            key_file=ns.smart_key_file,
            kid=ns.smart_kid,
            scope=ns.smart_scope,
            token_url=ns.smart_token_url,
        ),
        config=config,
    )


def make_client(server: ServerOptions) -> FhirClient:
    """The FhirClient every command uses: SMART or token auth, TLS, timeout, config file."""
    from fhir_cyclo.client import AuthOptions, FhirClient, TlsOptions
    from fhir_cyclo.client import ServerOptions as ClientServerOptions
    from fhir_cyclo.client.smart import resolve_smart

    if not server.url:
        raise UsageError("no server: give --server URL")
    table = (server.config or {}).get("smart")
    smart = resolve_smart(  # a key it cannot use: FatalTransportError, exit 3
        client_id=server.smart.client_id,
        key_file=server.smart.key_file,
        kid=server.smart.kid,
        scope=server.smart.scope,
        token_url=server.smart.token_url,
        config=table if isinstance(table, dict) else None,
    )
    tls = TlsOptions(verify=not server.insecure, allow_http=server.allow_http)
    return FhirClient(
        ClientServerOptions(server.url, tls=tls, timeout=(CONNECT_TIMEOUT, server.timeout)),
        auth=AuthOptions(token_file=server.token_file, smart=smart),
    )
