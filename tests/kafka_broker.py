"""Start and stop a real single-node Kafka broker for tests.

Thin wrapper around ``deploy/local/kafka.sh`` (KRaft, 127.0.0.1 only). The
broker's controller listens on ``port + 1``, so :func:`free_port` looks for two
consecutive free ports. ``start_broker(..., scram_users=...)`` starts it secured
(SASL_SSL, SCRAM-SHA-512, ACLs enforced; the CA is ``<data_dir>/tls/ca.pem``).
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_SH = REPO_ROOT / "deploy" / "local" / "kafka.sh"
HOST = "127.0.0.1"

# Starting may include a cold Maven download of the broker jars (~45 MB).
START_TIMEOUT_S = 600
STOP_TIMEOUT_S = 60


class BrokerError(RuntimeError):
    """The broker script failed; the message carries its output and log tail."""


def _run_script(
    command: str, port: int, data_dir: str, timeout: float, scram_users: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = dict(os.environ, KAFKA_PORT=str(port), KAFKA_DATA_DIR=str(data_dir))
    env.pop("KAFKA_CONTROLLER_PORT", None)  # always port + 1 here
    for name in ("KAFKA_SECURITY", "KAFKA_SCRAM_USERS"):  # the data dir remembers its mode for stop
        env.pop(name, None)
    if scram_users is not None:
        env["KAFKA_SECURITY"] = "sasl_ssl"
        env["KAFKA_SCRAM_USERS"] = ",".join(f"{name}={password}" for name, password in scram_users.items())
    return subprocess.run(
        ["bash", str(KAFKA_SH), command],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def broker_log_tail(data_dir: str, lines: int = 40) -> str:
    """The last lines of the broker's stdout and log4j log, for error messages."""
    parts = []
    for name in ("kafka.out", "server.log"):
        path = Path(data_dir) / "logs" / name
        if path.is_file():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"----- last {len(tail)} lines of {path} -----\n" + "\n".join(tail))
    return "\n".join(parts) or f"(no broker logs under {data_dir}/logs)"


def start_broker(port: int, data_dir: str, scram_users: dict[str, str] | None = None) -> str:
    """Start a broker on 127.0.0.1:port with its state in data_dir; return the bootstrap address.

    With ``scram_users`` (name -> password, must hold ``admin``, the super user) the broker is secured: SASL_SSL
    with SCRAM-SHA-512 on the port, certificates under ``data_dir/tls``, ACLs enforced.
    Returns once the broker answers requests. Raises BrokerError with the
    script's output (which includes the broker log tail) on failure.
    """
    try:
        proc = _run_script("start", port, data_dir, START_TIMEOUT_S, scram_users)
    except subprocess.TimeoutExpired as exc:
        stop_broker(port, data_dir, check=False)
        raise BrokerError(
            f"kafka.sh start timed out after {exc.timeout}s on {HOST}:{port}\n{broker_log_tail(data_dir)}"
        ) from None
    if proc.returncode != 0:
        raise BrokerError(
            f"kafka.sh start failed (exit {proc.returncode}) on {HOST}:{port}\n{proc.stdout}{proc.stderr}"
        )
    return f"{HOST}:{port}"


def stop_broker(port: int, data_dir: str, check: bool = True) -> None:
    """Stop the broker started with the same port and data_dir (no-op if it is not running)."""
    proc = _run_script("stop", port, data_dir, STOP_TIMEOUT_S)
    if check and proc.returncode != 0:
        raise BrokerError(f"kafka.sh stop failed (exit {proc.returncode})\n{proc.stdout}{proc.stderr}")


def _ports_free(*ports: int) -> bool:
    socks = []
    try:
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        for sock in socks:
            sock.close()


def free_port(attempts: int = 200) -> int:
    """Return a port p such that p and p + 1 are both free on 127.0.0.1.

    Candidates come from 20000-32000, below Linux's ephemeral range (32768+),
    so outgoing client connections cannot grab them before the broker binds.
    """
    rng = random.Random()
    for _ in range(attempts):
        port = rng.randrange(20000, 32000)
        if _ports_free(port, port + 1):
            return port
    raise RuntimeError("no two consecutive free ports found on 127.0.0.1")


def create_topic(bootstrap: str, name: str, partitions: int, timeout_s: float = 30.0, **security) -> None:
    """Create a topic (replication factor 1) and wait until metadata shows every partition with a leader.

    ``security``: kafka-python settings (security_protocol, sasl_*, ssl_cafile) of a secured broker's admin user.
    """
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="seqmon-tests-admin",
        request_timeout_ms=int(timeout_s * 1000),
        **security,
    )
    try:
        admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": 1}},
            timeout_ms=int(timeout_s * 1000),
        )
        admin.wait_for_topics([name], timeout_ms=int(timeout_s * 1000))
        (topic,) = admin.describe_topics([name])
        found = len(topic["partitions"])
        if found != partitions:
            raise RuntimeError(f"topic {name!r} has {found} partitions, expected {partitions}")
    finally:
        admin.close()
