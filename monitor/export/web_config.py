"""Protection of the metrics endpoint: TLS, client certificates and basic auth, configured like Prometheus' own.

The file has the format of the Prometheus exporter-toolkit web configuration (``--web.config.file`` of Prometheus and
its exporters), so one file can serve both::

    tls_server_config:
      cert_file: server.pem          # relative paths are relative to this file
      key_file: server-key.pem
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: clients-ca.pem
      min_version: TLS12
    basic_auth_users:
      prometheus: $2b$12$...         # bcrypt hash (htpasswd -nBC 12 "" | tr -d ':'), never the password

Supported: ``tls_server_config`` with ``cert_file``, ``key_file``, ``client_auth_type`` (``NoClientCert``,
``VerifyClientCertIfGiven``, ``RequireAndVerifyClientCert``), ``client_ca_file``, ``min_version``, ``max_version``;
``basic_auth_users``. Anything else is refused by name rather than ignored: a protection that silently does not apply
is worse than none. The file is read once, at start.
"""

from __future__ import annotations

import hashlib
import secrets
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.errors import ConfigError

__all__ = ["BasicAuth", "WebConfig", "load_web_config"]

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Python's ssl module verifies every client certificate it asks for, so these two cannot be honoured.
_UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_TLS_KEYS = ("cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version")
_TOP_KEYS = ("tls_server_config", "basic_auth_users")


@dataclass(frozen=True)
class WebConfig:
    """A validated web configuration; ``tls`` is None without ``tls_server_config``, ``users`` maps to bcrypt hashes."""

    path: str
    tls: ssl.SSLContext | None = None
    client_auth_type: str = "NoClientCert"
    users: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"


def _fail(path: Path, message: str) -> ConfigError:
    return ConfigError(f"metrics.web_config_file {path}: {message}")


def _mapping(path: Path, value: Any, what: str, allowed: Iterable[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, f"{what} must be a mapping, got {type(value).__name__}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise _fail(
            path,
            f"{what}{'.' if what else ''}{unknown[0]} is not supported by seqmon (supported: {', '.join(allowed)})",
        )
    return value


def _file(path: Path, tls: dict, key: str) -> str:
    value = tls.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"tls_server_config.{key} must be a file name")
    resolved = (path.parent / value).resolve()
    if not resolved.is_file():
        raise _fail(path, f"tls_server_config.{key} {resolved} does not exist")
    return str(resolved)


def _tls_context(path: Path, tls: dict) -> tuple[ssl.SSLContext, str]:
    cert_file, key_file = _file(path, tls, "cert_file"), _file(path, tls, "key_file")
    auth = tls.get("client_auth_type") or "NoClientCert"
    if auth in _UNVERIFIED_CLIENT_AUTH:
        raise _fail(
            path,
            f"tls_server_config.client_auth_type {auth} (a client certificate that is not verified) is not supported "
            "by seqmon; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file",
        )
    if auth not in _CLIENT_AUTH:
        raise _fail(path, f"tls_server_config.client_auth_type must be one of {', '.join(_CLIENT_AUTH)}, got {auth!r}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    for key, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        name = tls.get(key) or default
        if name not in _TLS_VERSIONS:
            raise _fail(path, f"tls_server_config.{key} must be one of {', '.join(_TLS_VERSIONS)}, got {name!r}")
        setattr(context, key.replace("_version", "imum_version"), _TLS_VERSIONS[name])
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise _fail(path, f"cannot load cert_file {cert_file} with key_file {key_file}: {exc}") from None
    context.verify_mode = _CLIENT_AUTH[auth]
    if auth != "NoClientCert":
        if not tls.get("client_ca_file"):
            raise _fail(path, f"tls_server_config.client_ca_file is required by client_auth_type {auth}")
        ca_file = _file(path, tls, "client_ca_file")
        try:
            context.load_verify_locations(cafile=ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise _fail(path, f"cannot load client_ca_file {ca_file}: {exc}") from None
    elif tls.get("client_ca_file"):
        raise _fail(path, "tls_server_config.client_ca_file is set but client_auth_type is NoClientCert")
    return context, auth


def _users(path: Path, users: dict) -> dict[str, bytes]:
    out = {}
    for name, hashed in users.items():
        if not isinstance(name, str) or not name or ":" in name:
            raise _fail(path, f"basic_auth_users: {name!r} is not a user name (non-empty, no ':')")
        # The value is a hash, but a mistaken plain password must not be echoed either.
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")) or len(hashed) != 60:
            raise _fail(path, f"basic_auth_users.{name} must be a bcrypt hash ($2b$..., 60 characters)")
        out[name] = hashed.encode("ascii")
    return out


def load_web_config(path: str | Path) -> WebConfig:
    """The web configuration in the YAML file at ``path``; a ``ConfigError`` naming the file and the key if invalid."""
    import yaml  # noqa: PLC0415

    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise _fail(path, f"cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise _fail(path, f"is not valid YAML: {exc}") from None
    top = _mapping(path, document, "", _TOP_KEYS)
    tls_section = _mapping(path, top.get("tls_server_config"), "tls_server_config", _TLS_KEYS)
    context, auth = _tls_context(path, tls_section) if tls_section else (None, "NoClientCert")
    users = _users(path, _mapping(path, top.get("basic_auth_users"), "basic_auth_users", top.get("basic_auth_users") or ()))
    if users:
        _bcrypt()  # fail at start, not at the first scrape
    return WebConfig(path=str(path), tls=context, client_auth_type=auth, users=users)


def _bcrypt():
    try:
        import bcrypt  # noqa: PLC0415
    except ImportError:
        raise ConfigError("metrics.web_config_file: basic_auth_users needs the bcrypt package (pip install bcrypt)") from None
    return bcrypt


class BasicAuth:
    """WSGI middleware that answers 401 unless the request carries a user and password of ``users``.

    bcrypt is slow on purpose (~0.1-0.3 s per check at cost 12), so successful checks are remembered (by a SHA-256 of
    user and password, never the password itself) for the next scrapes; failures are not, and an unknown user costs
    one bcrypt check as well, so neither the time nor the answer tells whether a user exists.
    """

    def __init__(self, app: Callable, users: Mapping[str, bytes], realm: str = "seqmon"):
        self._app = app
        self._users = dict(users)
        self._bcrypt = _bcrypt()
        # Checked for unknown users: same cost as a real user's hash, and no password matches it.
        self._dummy = self._bcrypt.hashpw(secrets.token_bytes(16), next(iter(self._users.values()))[:29])
        self._realm = realm
        self._good: set[bytes] = set()
        self._lock = threading.Lock()

    def _allowed(self, header: str) -> bool:
        import base64  # noqa: PLC0415

        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic" or not token:
            return False
        try:
            user, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        if not sep:
            return False
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        with self._lock:
            if key in self._good:
                return True
        hashed = self._users.get(user)
        try:
            ok = self._bcrypt.checkpw(password.encode("utf-8"), hashed or self._dummy) and hashed is not None
        except ValueError:
            ok = False
        if ok:
            with self._lock:
                if len(self._good) >= 64:
                    self._good.clear()
                self._good.add(key)
        return ok

    def __call__(self, environ: dict, start_response: Callable):
        if self._allowed(environ.get("HTTP_AUTHORIZATION", "")):
            return self._app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [("WWW-Authenticate", f'Basic realm="{self._realm}"'), ("Content-Type", "text/plain; charset=utf-8")],
        )
        return [b"Unauthorized\n"]
