"""The metrics endpoint's web configuration: what is accepted, and the one-line error for what is not."""

from __future__ import annotations

import base64
import ssl
import subprocess

import bcrypt
import pytest

from monitor.errors import ConfigError
from monitor.export.web_config import BasicAuth, load_web_config


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("certs")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", "key.pem", "-out", "cert.pem"],
        cwd=tmp, check=True, capture_output=True,
    )
    return tmp


def write(tmp, text: str):
    path = tmp / "web.yml"
    path.write_text(text)
    return path


TLS = "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n"


def test_tls_with_verified_client_certificates(certs):
    web = load_web_config(write(certs, TLS + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: cert.pem\n"))
    assert web.scheme == "https"
    assert web.tls.verify_mode == ssl.CERT_REQUIRED
    assert web.tls.minimum_version == ssl.TLSVersion.TLSv1_2
    assert web.users == {}


def test_an_empty_file_is_plain_http(tmp_path):
    web = load_web_config(write(tmp_path, ""))
    assert web.scheme == "http" and web.tls is None and web.users == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n  cipher_suites: [x]\n",
         "tls_server_config.cipher_suites is not supported by seqmon"),
        ("http_server_config:\n  http2: false\n", "http_server_config is not supported by seqmon"),
        (TLS + "  client_auth_type: RequireAnyClientCert\n", "RequireAnyClientCert (a client certificate that is not verified)"),
        (TLS + "  client_auth_type: RequireAndVerifyClientCert\n", "client_ca_file is required by client_auth_type"),
        (TLS + "  client_auth_type: Sometimes\n", "client_auth_type must be one of NoClientCert"),
        (TLS + "  min_version: TLS14\n", "min_version must be one of TLS10"),
        ("tls_server_config:\n  cert_file: missing.pem\n  key_file: key.pem\n", "cert_file"),
        ("tls_server_config:\n  cert_file: key.pem\n  key_file: key.pem\n", "cannot load cert_file"),
        ("basic_auth_users:\n  prometheus: hunter2\n", "basic_auth_users.prometheus must be a bcrypt hash"),
        ("tls_server_config: [\n", "is not valid YAML"),
    ],
)
def test_refused_with_the_key_named(certs, text, message):
    with pytest.raises(ConfigError) as info:
        load_web_config(write(certs, text))
    assert message in str(info.value)
    assert str(info.value).startswith(f"metrics.web_config_file {certs / 'web.yml'}: ")
    assert "hunter2" not in str(info.value)  # a plain password by mistake is not echoed


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="metrics.web_config_file .*nope.yml: cannot be read"):
        load_web_config(tmp_path / "nope.yml")


def _call(app, header: str | None):
    seen = {}

    def start_response(status, headers):
        seen["status"], seen["headers"] = status, dict(headers)

    environ = {} if header is None else {"HTTP_AUTHORIZATION": header}
    body = b"".join(app(environ, start_response))
    return seen["status"], seen["headers"], body


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_lets_only_a_known_user_with_its_password_through():
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))
    app = BasicAuth(lambda environ, start_response: start_response("200 OK", []) or [b"metrics"], {"prom": hashed})
    assert _call(app, _basic("prom", "s3cret"))[0] == "200 OK"
    assert _call(app, _basic("prom", "s3cret"))[2] == b"metrics"  # again, from the cache
    for header in (None, _basic("prom", "wrong"), _basic("other", "s3cret"), "Basic !!!", "Bearer x"):
        status, headers, body = _call(app, header)
        assert status == "401 Unauthorized", header
        assert headers["WWW-Authenticate"] == 'Basic realm="seqmon"'
        assert body == b"Unauthorized\n"
