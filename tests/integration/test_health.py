"""``seqmon health`` as a container health check runs it: a separate process with the daemon's settings file, against a
real metrics endpoint over plain HTTP, TLS, TLS with required client certificates, and basic auth.

Certificates are made with openssl as in test_metrics_tls.py; the endpoint is the daemon's own ``serve``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import CollectorRegistry

from monitor.export.metrics import Metrics, serve
from tests.integration.test_metrics_tls import make_certificates
from tests.kafka_broker import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("health-certs")
    make_certificates(tmp)
    return tmp


def endpoint(web_config: Path | None):
    registry = CollectorRegistry()
    Metrics(registry, process_metrics=False)
    return serve(registry, "127.0.0.1", 0, str(web_config) if web_config else "")


def health(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "monitor.cli", "health", "--config", str(config), *args],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )


def settings_file(tmp: Path, port: int, web_config: Path | None) -> Path:
    path = tmp / "seqmon.toml"
    # metrics.host as in the image: every interface, so the check must find the loopback itself.
    path.write_text(
        f'[metrics]\nhost = "0.0.0.0"\nport = {port}\nweb_config_file = "{web_config or ""}"\n', encoding="utf-8"
    )
    return path


@pytest.mark.parametrize("protection", ["none", "tls", "client-cert", "client-cert+basic-auth"])
def test_health_passes_against_a_running_endpoint_and_fails_once_it_is_gone(protection, certs, tmp_path):
    web = None
    if protection != "none":
        web = tmp_path / "web.yml"
        lines = ["tls_server_config:", f"  cert_file: {certs / 'server.pem'}", f"  key_file: {certs / 'server.key'}"]
        if protection.startswith("client-cert"):
            lines += ["  client_auth_type: RequireAndVerifyClientCert", f"  client_ca_file: {certs / 'ca.pem'}"]
        if protection.endswith("basic-auth"):
            hashed = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
            lines += ["basic_auth_users:", f"  prometheus: '{hashed}'"]
        web.write_text("\n".join(lines) + "\n", encoding="utf-8")
    client = ["--cert", str(certs / "client.pem"), "--key", str(certs / "client.key")]
    server, thread = endpoint(web)
    port = server.server_address[1]
    config = settings_file(tmp_path, port, web)
    scheme = "http" if web is None else "https"
    try:
        ok = health(config, *(client if protection.startswith("client-cert") else []))
        assert ok.returncode == 0, ok.stderr
        status = 401 if protection.endswith("basic-auth") else 200
        assert ok.stdout.strip() == f"{scheme}://127.0.0.1:{port}/metrics answers {status}"
        if protection.startswith("client-cert"):
            refused = health(config)
            assert refused.returncode == 1
            assert "requires a client certificate" in refused.stderr and "--cert" in refused.stderr
            # The endpoint's own certificate (signed by the same CA, but for serverAuth only) is refused in the handshake.
            wrong = health(config, "--cert", str(certs / "server.pem"), "--key", str(certs / "server.key"))
            assert wrong.returncode == 1 and "does not answer" in wrong.stderr
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    gone = health(config, *client)
    assert gone.returncode == 1
    assert gone.stderr.startswith(f"seqmon health: {scheme}://127.0.0.1:{port}/metrics does not answer")


def test_health_of_a_plain_endpoint_that_the_settings_call_tls_fails(certs, tmp_path):
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {certs / 'server.pem'}\n  key_file: {certs / 'server.key'}\n")
    server, thread = endpoint(None)
    try:
        result = health(settings_file(tmp_path, server.server_address[1], web))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert result.returncode == 1 and "does not answer" in result.stderr


def test_health_with_a_broken_configuration_exits_1_not_2(tmp_path):
    result = health(settings_file(tmp_path, free_port(), tmp_path / "missing.yml"))
    assert result.returncode == 1  # Docker reserves exit status 2
    assert result.stderr.startswith("seqmon health: metrics.web_config_file") and "cannot be read" in result.stderr


def test_the_images_healthcheck_command_passes_over_tls(certs, tmp_path):
    """deploy/Dockerfile's HEALTHCHECK, run as written with the image's environment, against a TLS endpoint."""
    from tests.unit.test_deploy import CONFIG_PATH, _dockerfile_instructions, _env_pairs

    instructions = _dockerfile_instructions()
    (command,) = [json.loads(rest.split("CMD", 1)[1]) for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    env = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            env.update(_env_pairs(rest))
    web = tmp_path / "web.yml"
    web.write_text(f"tls_server_config:\n  cert_file: {certs / 'server.pem'}\n  key_file: {certs / 'server.key'}\n")
    server, thread = endpoint(web)
    config = settings_file(tmp_path, server.server_address[1], web)
    argv = [str(config) if arg == CONFIG_PATH else arg for arg in command]
    assert argv[0] == "seqmon"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "monitor.cli", *argv[1:]],
            capture_output=True, text=True, timeout=60, cwd=REPO,
            env={**os.environ, **{k: v for k, v in env.items() if k.startswith("SEQMON_")}},
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("https://127.0.0.1:")
