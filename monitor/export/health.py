"""``seqmon health``: whether the daemon's metrics endpoint answers, over HTTP or HTTPS as its settings say.

A health check for containers (Docker ``HEALTHCHECK``, Kubernetes exec probes) that works whatever
``metrics.web_config_file`` turns on. It reads the same settings as ``seqmon run`` (file, ``SEQMON_*`` variables,
``--set``), so it finds the port and knows whether the endpoint speaks TLS; ``--cert`` / ``--key`` give it the client
certificate an endpoint with ``client_auth_type: RequireAndVerifyClientCert`` asks for.

The endpoint's own certificate is not verified: the check connects to this machine and sends no secret (no password),
and a certificate is usually made out to the name others reach the host by, not to ``127.0.0.1``. With
``basic_auth_users``, ``401`` counts as healthy: the web configuration holds only password hashes, and the answer
shows that the endpoint is up and serving.

Exit status 0 when healthy, 1 otherwise (also for a broken configuration: Docker reserves 2).
"""

from __future__ import annotations

import http.client
import ssl
import sys

from monitor.errors import ConfigError, MonitorError

__all__ = ["HealthError", "check_metrics_endpoint", "register"]

# Addresses that mean "every interface" are reached through the loopback of the same family.
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class HealthError(MonitorError):
    """The metrics endpoint did not answer as a healthy daemon's does."""


def _client_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if cert_file:
        try:
            context.load_cert_chain(cert_file, key_file or None)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"cannot load the client certificate {cert_file} (key {key_file or cert_file}): {exc}"
            ) from None
    return context


def check_metrics_endpoint(metrics, cert_file: str = "", key_file: str = "", timeout_s: float = 4.0) -> str:
    """GET ``/metrics`` of the endpoint ``metrics`` (a ``MetricsSettings``) describes; a line saying what answered.

    Raises ``HealthError`` when it does not answer ``200`` (or ``401`` behind basic auth), ``ConfigError`` when the
    web configuration or the client certificate cannot be loaded, or when the endpoint requires a client certificate
    and none is given.
    """
    from monitor.export.web_config import load_web_config  # noqa: PLC0415

    web = load_web_config(metrics.web_config_file) if metrics.web_config_file else None
    tls = web is not None and web.tls is not None
    host = _LOOPBACK.get(metrics.host, metrics.host)
    url = f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{metrics.port}/metrics"
    if tls:
        if web.client_auth_type == "RequireAndVerifyClientCert" and not cert_file:
            raise ConfigError(
                f"the metrics endpoint requires a client certificate ({web.path}: client_auth_type "
                "RequireAndVerifyClientCert): give seqmon health --cert and --key, signed by its client_ca_file"
            )
        connection = http.client.HTTPSConnection(
            host, metrics.port, timeout=timeout_s, context=_client_context(cert_file, key_file)
        )
    else:
        connection = http.client.HTTPConnection(host, metrics.port, timeout=timeout_s)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise HealthError(f"{url} does not answer: {exc}") from None
    finally:
        connection.close()
    if response.status == 200 or (response.status == 401 and web is not None and web.users):
        return f"{url} answers {response.status}"
    raise HealthError(f"{url} answers {response.status} {response.reason}")


def cmd_health(args) -> int:
    from monitor.config import load_settings  # noqa: PLC0415

    try:
        settings = load_settings(args.config, overrides=list(args.set or []))
        print(check_metrics_endpoint(settings.metrics, args.cert or "", args.key or "", args.timeout), flush=True)
    except MonitorError as exc:
        print(f"seqmon health: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def register(sub) -> None:
    h = sub.add_parser("health", help="exit 0 if the daemon's metrics endpoint answers (HTTP or HTTPS, as configured)")
    h.add_argument("--config", help="the TOML settings file of `seqmon run`")
    h.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one setting (repeatable)")
    h.add_argument("--cert", help="client certificate (PEM) for an endpoint that requires one")
    h.add_argument("--key", help="its key (PEM); default: in the --cert file")
    h.add_argument("--timeout", type=float, default=4.0, help="seconds to wait for the answer (default %(default)s)")
    h.set_defaults(func=cmd_health)
