"""The protected metrics endpoint, scraped by a real Prometheus (Debian's) over TLS with a client certificate and basic
auth, configured by a web configuration file in Prometheus' own format.

Certificates are made with openssl at test time: one CA signs the endpoint's certificate (for 127.0.0.1) and
Prometheus' client certificate. Three scrape jobs hit the same endpoint: with the client certificate and the right
password (up), without a client certificate (refused in the handshake: down), with a wrong password (401: down).
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import CollectorRegistry

from monitor.export.metrics import Metrics, serve
from tests.integration.test_prometheus import Proc, PrometheusServer, _ready, wait_for
from tests.kafka_broker import free_port

pytestmark = pytest.mark.slow

PASSWORD = "scrape-secret-7f3a"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(tmp: Path) -> None:
    """ca.pem; server.pem/server.key for 127.0.0.1; client.pem/client.key (CN prometheus); all signed by ca.pem."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test CA",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=tmp)
    (tmp / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    (tmp / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, subject in (("server", "/CN=127.0.0.1"), ("client", "/CN=prometheus")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", f"{name}.key",
                "-out", f"{name}.csr", cwd=tmp)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=tmp)


@pytest.fixture(scope="module")
def protected_endpoint(tmp_path_factory):
    """A metrics endpoint (the daemon's Metrics on a fresh registry) behind TLS, client certificates and basic auth."""
    tmp = tmp_path_factory.mktemp("metrics-tls")
    make_certificates(tmp)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    (tmp / "web.yml").write_text(
        "tls_server_config:\n"
        "  cert_file: server.pem\n"  # relative to the web config file
        "  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        "  client_ca_file: ca.pem\n"
        "basic_auth_users:\n"
        f"  prometheus: '{hashed}'\n"
    )
    registry = CollectorRegistry()
    metrics = Metrics(registry, process_metrics=False)
    metrics.record_checkpoint(1_700_000_000.0)
    server, thread = serve(registry, "127.0.0.1", 0, str(tmp / "web.yml"))
    try:
        yield tmp, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def fetch(url: str, context: ssl.SSLContext | None, password: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if password is not None:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(f"prometheus:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_endpoint_answers_only_a_verified_client_with_the_password(protected_endpoint):
    tmp, port = protected_endpoint
    url = f"https://127.0.0.1:{port}/metrics"
    with_cert = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    with_cert.load_cert_chain(str(tmp / "client.pem"), str(tmp / "client.key"))
    status, body = fetch(url, with_cert, PASSWORD)
    assert status == 200 and "seqmon_checkpoints_total 1.0" in body
    assert fetch(url, with_cert, "wrong")[0] == 401
    assert fetch(url, with_cert, None)[0] == 401
    without_cert = ssl.create_default_context(cafile=str(tmp / "ca.pem"))
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        fetch(url, without_cert, PASSWORD)
    with pytest.raises((ConnectionError, urllib.error.URLError)):  # plain HTTP gets no answer
        fetch(f"http://127.0.0.1:{port}/metrics", None, PASSWORD)


def test_prometheus_scrapes_over_tls_with_a_client_certificate(protected_endpoint, tmp_path):
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail("the prometheus server is not installed: .ci/run installs Debian's prometheus package", pytrace=False)
    certs, metrics_port = protected_endpoint
    (tmp_path / "password").write_text(PASSWORD)
    (tmp_path / "wrong-password").write_text("not-" + PASSWORD)
    target = {"static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}], "scheme": "https"}
    tls = {"ca_file": str(certs / "ca.pem"), "cert_file": str(certs / "client.pem"), "key_file": str(certs / "client.key")}
    config = {  # JSON is YAML
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {"job_name": "seqmon", **target, "tls_config": tls,
             "basic_auth": {"username": "prometheus", "password_file": str(tmp_path / "password")}},
            {"job_name": "no-client-cert", **target, "tls_config": {"ca_file": tls["ca_file"]},
             "basic_auth": {"username": "prometheus", "password_file": str(tmp_path / "password")}},
            {"job_name": "wrong-password", **target, "tls_config": tls,
             "basic_auth": {"username": "prometheus", "password_file": str(tmp_path / "wrong-password")}},
        ],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config, indent=2))
    port = free_port()
    proc = Proc(
        "prometheus",
        [exe, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        tmp_path / "prometheus.log",
    )
    prom = PrometheusServer(proc, f"http://127.0.0.1:{port}", metrics_port)
    try:
        wait_for(lambda: _ready(prom.url), "Prometheus to be ready", [proc], timeout=60)

        def scraped():
            targets = prom.api("/api/v1/targets")["data"]["activeTargets"]
            health = {t["labels"]["job"]: (t["health"], t["lastError"]) for t in targets}
            assert len(health) == 3 and all(h != "unknown" for h, _ in health.values()), health
            return health

        health = wait_for(scraped, "every job to be scraped once", [proc], timeout=60)
        assert health["seqmon"] == ("up", ""), health
        assert health["no-client-cert"][0] == "down", health
        assert health["wrong-password"][0] == "down" and "401" in health["wrong-password"][1], health
        assert prom.query('seqmon_checkpoints_total{job="seqmon"}')[0]["value"][1] == "1"
        assert prom.query('up{job="seqmon"}')[0]["value"][1] == "1"
    finally:
        proc.stop()
