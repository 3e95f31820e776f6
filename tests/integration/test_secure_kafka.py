"""`seqmon run` against a secured broker, all real: SASL_SSL with SCRAM-SHA-512, a CA made at test time, ACLs enforced.

One broker for the module (deploy/local/kafka.sh in sasl_ssl mode): ``admin`` is the super user that creates topics and
ACLs and produces the input; ``seqmon`` is the daemon's user and gets, per test, only the rights README lists as the
daemon's minimal ones (READ on the input topics and on the consumer group, WRITE on the dead-letter and results
topics; in fleet mode also READ, WRITE and DESCRIBE_CONFIGS on the changelog topic), or all of them but one. Both
Kafka clients of the daemon are run.

What must hold: with the minimal rights everything works (windows close, results and dead letters are written) and the
SASL password appears neither in /metrics nor in the daemon's log; a wrong password, an untrusted certificate or a
missing right stops `seqmon run` with a non-zero exit and one error line that says what to fix, without a retry storm.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    NewTopic,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
)

from monitor.daemon.changelog import TOPIC_CONFIGS
from monitor.generate import SeedLikeGenerator
from tests.integration.test_metrics_tls import make_certificates
from tests.kafka_broker import BrokerError, create_topic, free_port, start_broker, stop_broker

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CLIENTS = ("kafka-python", "confluent")
DAEMON_USER = "seqmon"
WINDOW_S = 5
# Refusals must stop the daemon: a generous guard against a hang, not a performance figure.
EXIT_GUARD_S = 120
# No output topics: the dead-letter and results producer is kafka-python's whatever kafka.client says, and it is opened
# first; without it the consumer of the client under test is what meets the refusal.
CONSUMER_ONLY = {"kafka.dead_letter_topic": "", "kafka.results_topic": ""}


class SecureKafka:
    def __init__(self, bootstrap: str, data_dir: Path, admin_password: str, daemon_password: str):
        self.bootstrap = bootstrap
        self.ca_file = data_dir / "tls" / "ca.pem"
        self.admin_password = admin_password
        self.daemon_password = daemon_password

    def admin_config(self) -> dict:
        return {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "admin",
            "sasl_plain_password": self.admin_password,
            "ssl_cafile": str(self.ca_file),
        }

    def create_topics(self, *names: str) -> None:
        security = {k: v for k, v in self.admin_config().items() if k != "bootstrap_servers"}
        for name in names:
            create_topic(self.bootstrap, name, 1, **security)

    def create_changelog(self, name: str) -> None:
        """A compacted topic as the daemon would create it, created by the admin (so the daemon needs no CREATE)."""
        admin = KafkaAdminClient(**self.admin_config())
        try:
            admin.create_topics([NewTopic(name, 1, 1, topic_configs=dict(TOPIC_CONFIGS))], timeout_ms=30_000)
        finally:
            admin.close()

    def grant(self, rights: list[tuple[int, str, int]]) -> None:
        """ALLOW ACLs for the daemon's user: (ResourceType, name, ACLOperation) each."""
        admin = KafkaAdminClient(**self.admin_config())
        try:
            acls = [
                ACL(f"User:{DAEMON_USER}", "*", op, ACLPermissionType.ALLOW, ResourcePattern(kind, name))
                for kind, name, op in rights
            ]
            result = admin.create_acls(acls)
            assert not result["failed"], result["failed"]
        finally:
            admin.close()

    def revoke(self, kind: int, name: str, op: int) -> None:
        admin = KafkaAdminClient(**self.admin_config())
        try:
            pattern = ResourcePatternFilter(kind, name, ResourcePattern(kind, name).pattern_type)
            admin.delete_acls([ACLFilter(f"User:{DAEMON_USER}", "*", op, ACLPermissionType.ALLOW, pattern)])
        finally:
            admin.close()

    def committed(self, group: str, topic: str) -> int | None:
        consumer = KafkaConsumer(group_id=group, enable_auto_commit=False, **self.admin_config())
        try:
            return consumer.committed(TopicPartition(topic, 0))
        finally:
            consumer.close(autocommit=False)

    def produce(self, topic: str, records: list[tuple[int, bytes]]) -> None:
        producer = KafkaProducer(linger_ms=20, **self.admin_config())
        for ts, value in records:
            producer.send(topic, value=value, timestamp_ms=int(ts))
        producer.flush()
        producer.close()

    def read_all(self, topic: str, wanted: int, timeout_s: float = 60) -> list:
        """At least ``wanted`` records of ``topic`` (read as admin), polling until they are there."""
        consumer = KafkaConsumer(
            topic, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False, **self.admin_config()
        )
        got: list = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(got) < wanted and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500).values():
                    got.extend(records)
        finally:
            consumer.close()
        return got


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory):
    port = free_port()
    data_dir = tmp_path_factory.mktemp("kafka-secure")
    admin_password, daemon_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    try:
        bootstrap = start_broker(port, str(data_dir), {"admin": admin_password, DAEMON_USER: daemon_password})
    except BrokerError as exc:
        failure = f"could not start the secured test Kafka broker:\n{exc}"
    else:
        failure = None
    if failure:
        pytest.fail(failure, pytrace=False)
    try:
        yield SecureKafka(bootstrap, data_dir, admin_password, daemon_password)
    finally:
        stop_broker(port, str(data_dir))


def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {
        "input": f"in-{tag}", "group": f"g-{tag}", "dead_letters": f"dlq-{tag}", "results": f"res-{tag}",
        "changelog": f"log-{tag}",
    }


def minimal_rights(n: dict[str, str]) -> dict[str, tuple[int, str, int]]:
    """The daemon's minimal rights, as README lists them, by what they are for."""
    return {
        "read input": (ResourceType.TOPIC, n["input"], ACLOperation.READ),
        "read group": (ResourceType.GROUP, n["group"], ACLOperation.READ),
        "write dead letters": (ResourceType.TOPIC, n["dead_letters"], ACLOperation.WRITE),
        "write results": (ResourceType.TOPIC, n["results"], ACLOperation.WRITE),
    }


def changelog_rights(n: dict[str, str]) -> dict[str, tuple[int, str, int]]:
    """What fleet mode adds to the minimal rights, as README lists it, for a changelog topic that exists."""
    return {
        "read changelog": (ResourceType.TOPIC, n["changelog"], ACLOperation.READ),
        "write changelog": (ResourceType.TOPIC, n["changelog"], ACLOperation.WRITE),
        "describe changelog configs": (ResourceType.TOPIC, n["changelog"], ACLOperation.DESCRIBE_CONFIGS),
    }


def fleet_settings(n: dict[str, str]) -> dict:
    # Windows close when the changelog's states allow, at the checkpoints; not by the wall clock, which would also
    # publish the empty windows of the hour between the records and now.
    return {
        "state.changelog_topic": n["changelog"],
        "state.checkpoint_interval_seconds": 1,
        "window.idle_close_interval_seconds": 0,
    }


def produce_two_windows(kafka: SecureKafka, topic: str) -> tuple[int, int]:
    """Two windows of 300 normal records an hour ago, one empty record (a dead letter), and one record of a later
    window that closes them; returns the first window's start (ms) and how many records were produced."""
    gen = SeedLikeGenerator(5)
    now_ms = int(time.time() * 1000) - 3_600_000
    base = now_ms - now_ms % (WINDOW_S * 1000)
    records = [(base + i * 10, s.encode()) for i, s in enumerate(gen.normal(300))]
    records += [(base + WINDOW_S * 1000 + i * 10, s.encode()) for i, s in enumerate(gen.normal(300))]
    records += [(base + 20, b"")]
    records += [(base + 4 * WINDOW_S * 1000, gen.normal(1)[0].encode())]
    kafka.produce(topic, records)
    return base, len(records)


def daemon_args(kafka: SecureKafka, n: dict, client: str, bundle: Path, tmp: Path, **changes) -> list[str]:
    settings = {
        "kafka.client": client,
        "kafka.bootstrap_servers": kafka.bootstrap,
        "kafka.topics": n["input"],
        "kafka.group_id": n["group"],
        "kafka.dead_letter_topic": n["dead_letters"],
        "kafka.results_topic": n["results"],
        "kafka.security_protocol": "SASL_SSL",
        "kafka.sasl_mechanism": "SCRAM-SHA-512",
        "kafka.sasl_plain_username": DAEMON_USER,
        "kafka.ssl_cafile": kafka.ca_file,
        "kafka.session_timeout_ms": 6000,
        "kafka.heartbeat_interval_ms": 1000,
        "model.bundle": bundle,
        "model.watch_interval_seconds": 0,
        "state.directory": tmp / "state",
        "window.size_seconds": WINDOW_S,
        "window.allowed_lateness_seconds": 1,
        "metrics.host": "127.0.0.1",
        "metrics.port": free_port(),
        "batch.max_latency_ms": 200,
        **changes,
    }
    args = [sys.executable, "-m", "monitor.cli", "run"]
    for key, value in settings.items():
        args += ["--set", f"{key}={value}"]
    return args


def daemon_env(password: str) -> dict[str, str]:
    # The password comes the way a deployment passes a secret: an environment variable, not a flag.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQMON_")}
    env["SEQMON_KAFKA_SASL_PLAIN_PASSWORD"] = password
    return env


def run_until_exit(args: list[str], env: dict, log_path: Path) -> tuple[int, list[str]]:
    with open(log_path, "wb") as log:
        proc = subprocess.run(args, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, timeout=EXIT_GUARD_S)
    return proc.returncode, log_path.read_text(errors="replace").splitlines()


def assert_refused(code: int, lines: list[str], *expected: str) -> str:
    """A non-zero exit with one error line, naming every ``expected`` part, and no traceback; returns that line.

    (The clients' own INFO lines about closing connections may come after it, from their threads.)
    """
    tail = "\n".join(lines[-30:])
    assert code == 2, tail
    errors = [line for line in lines if line.startswith("seqmon: error: ")]
    assert len(errors) == 1, tail
    assert not any(line.startswith("Traceback") for line in lines), tail
    for part in expected:
        assert part in errors[0], f"{part!r} not in {errors[0]!r}"
    return errors[0]


# --------------------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize("client", CLIENTS)
def test_minimal_rights_are_enough_and_the_password_never_shows(secure_kafka, bundle_path, tmp_path, client):
    kafka, n = secure_kafka, names()
    kafka.create_topics(n["input"], n["dead_letters"], n["results"])
    kafka.grant(list(minimal_rights(n).values()))
    base, _ = produce_two_windows(kafka, n["input"])

    # The metrics endpoint as a production daemon serves it: TLS, verified client certificates.
    make_certificates(tmp_path)
    (tmp_path / "web.yml").write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
    )
    scraper = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    scraper.load_cert_chain(str(tmp_path / "client.pem"), str(tmp_path / "client.key"))
    args = daemon_args(
        kafka, n, client, bundle_path, tmp_path, **{"log.level": "DEBUG", "metrics.web_config_file": tmp_path / "web.yml"}
    )
    metrics_port = int(next(a for a in args if a.startswith("metrics.port=")).split("=")[1])
    log_path = tmp_path / "seqmon.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        args, env=daemon_env(kafka.daemon_password), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        results = kafka.read_all(n["results"], 2)
        dead = kafka.read_all(n["dead_letters"], 1)
        assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
        url = f"https://127.0.0.1:{metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10, context=scraper) as response:
            metrics = response.read().decode()
    finally:
        proc.terminate()
        code = proc.wait(timeout=60)
        log.close()
    text = log_path.read_text(errors="replace")
    assert code == 0, text[-3000:]
    assert len(results) >= 2, text[-3000:]
    assert sorted(r.key.decode() for r in results)[:2] == [f"{n['input']}/{base}", f"{n['input']}/{base + 5000}"]
    assert [r.value for r in dead] == [b""]
    assert dict(dead[0].headers)["seqmon-reason"] == b"empty"
    consumed = [line for line in metrics.splitlines() if line.startswith("seqmon_records_consumed_total{")]
    assert consumed == [f'seqmon_records_consumed_total{{topic="{n["input"]}"}} 602.0'], consumed
    assert kafka.daemon_password not in metrics
    assert kafka.daemon_password not in text
    assert "window closed" in text  # the log is the daemon's, at DEBUG, with the clients' own logs in it


@pytest.mark.parametrize("client", CLIENTS)
def test_a_wrong_password_stops_the_daemon_with_one_line(secure_kafka, bundle_path, tmp_path, client):
    kafka, n = secure_kafka, names()
    kafka.create_topics(n["input"])
    kafka.grant(list(minimal_rights(n).values()))
    args = daemon_args(kafka, n, client, bundle_path, tmp_path, **CONSUMER_ONLY)
    code, lines = run_until_exit(args, daemon_env("not-" + kafka.daemon_password), tmp_path / "seqmon.log")
    assert_refused(code, lines, f"Kafka authentication of user '{DAEMON_USER}' (SCRAM-SHA-512) failed", "sasl_plain")
    # Not a retry storm: the client may log its failed attempt, then seqmon stops.
    attempts = [line for line in lines if "uthentication failed" in line]
    assert len(attempts) <= 6, "\n".join(attempts)
    assert not any(kafka.daemon_password in line for line in lines)


@pytest.mark.parametrize("client", CLIENTS)
def test_an_untrusted_certificate_stops_the_daemon_with_one_line(secure_kafka, bundle_path, tmp_path, client):
    kafka, n = secure_kafka, names()
    other_ca = tmp_path / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=not the broker's CA",
         "-keyout", str(tmp_path / "other-ca.key"), "-out", str(other_ca)],
        check=True, capture_output=True,
    )
    args = daemon_args(kafka, n, client, bundle_path, tmp_path, **{**CONSUMER_ONLY, "kafka.ssl_cafile": other_ca})
    code, lines = run_until_exit(args, daemon_env(kafka.daemon_password), tmp_path / "seqmon.log")
    assert_refused(code, lines, "certificate is not trusted", str(other_ca), "kafka.ssl_cafile")
    attempts = [line for line in lines if "certificate verify failed" in line.lower()]
    assert len(attempts) <= 6, "\n".join(attempts)


@pytest.mark.parametrize(
    ("client", "missing", "expected"),
    [
        ("kafka-python", "read input", ["may not read topic", "READ right on the topic"]),
        ("confluent", "read input", ["may not read topic", "READ right on the topic"]),
        ("kafka-python", "read group", ["may not use consumer group", "READ right on the group"]),
        ("confluent", "read group", ["may not use consumer group", "READ right on the group"]),
        ("kafka-python", "write dead letters", ["may not write to topic", "kafka.dead_letter_topic", "WRITE right"]),
        ("confluent", "write results", ["may not write to topic", "kafka.results_topic", "WRITE right"]),
    ],
)
def test_a_missing_right_is_named(secure_kafka, bundle_path, tmp_path, client, missing, expected):
    kafka, n = secure_kafka, names()
    kafka.create_topics(n["input"], n["dead_letters"], n["results"])
    rights = minimal_rights(n)
    del rights[missing]
    kafka.grant(list(rights.values()))
    kafka.produce(n["input"], [(int(time.time() * 1000), b"a b c")])
    code, lines = run_until_exit(
        daemon_args(kafka, n, client, bundle_path, tmp_path), daemon_env(kafka.daemon_password), tmp_path / "log"
    )
    name = n[{"read input": "input", "read group": "group", "write dead letters": "dead_letters"}.get(missing, "results")]
    assert_refused(code, lines, f"user '{DAEMON_USER}'", repr(name), *expected)


def test_a_right_taken_away_while_running_stops_the_daemon_before_it_commits_past_the_loss(
    secure_kafka, bundle_path, tmp_path
):
    kafka, n = secure_kafka, names()
    kafka.create_topics(n["input"], n["dead_letters"], n["results"])
    kafka.grant(list(minimal_rights(n).values()))
    now_ms = int(time.time() * 1000)
    kafka.produce(n["input"], [(now_ms + i, s.encode()) for i, s in enumerate(SeedLikeGenerator(9).normal(50))])
    args = daemon_args(
        kafka, n, "kafka-python", bundle_path, tmp_path, **{"state.checkpoint_interval_seconds": 1}
    )
    log_path = tmp_path / "seqmon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            args, env=daemon_env(kafka.daemon_password), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 60
            while kafka.committed(n["group"], n["input"]) != 50 and time.monotonic() < deadline:
                assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
                time.sleep(0.5)
            assert kafka.committed(n["group"], n["input"]) == 50
            kafka.revoke(ResourceType.TOPIC, n["dead_letters"], ACLOperation.WRITE)
            kafka.produce(n["input"], [(now_ms + 100, b""), (now_ms + 101, b"a b c")])  # a dead letter at offset 50
            code = proc.wait(timeout=EXIT_GUARD_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = log_path.read_text(errors="replace").splitlines()
    assert_refused(code, lines, "may not write to topic", repr(n["dead_letters"]), "kafka.dead_letter_topic")
    # The dead letter was not delivered, so its record was not committed: a restart with the right reads it again.
    assert kafka.committed(n["group"], n["input"]) == 50


# --------------------------------------------------------------------------------------------- fleet mode


def test_fleet_mode_works_with_read_write_and_describe_configs_on_the_changelog(secure_kafka, bundle_path, tmp_path):
    # The changelog is kafka-python's whatever kafka.client says (its consumer and idempotent producer), so the
    # default client is enough here; the consumer group's rights are those of the tests above.
    kafka, n = secure_kafka, names()
    kafka.create_topics(n["input"], n["dead_letters"], n["results"])
    kafka.create_changelog(n["changelog"])
    kafka.grant([*minimal_rights(n).values(), *changelog_rights(n).values()])
    base, produced = produce_two_windows(kafka, n["input"])

    args = daemon_args(kafka, n, "kafka-python", bundle_path, tmp_path, **fleet_settings(n))
    log_path = tmp_path / "seqmon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            args, env=daemon_env(kafka.daemon_password), cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            # The watermark (the last record, less 1 s of lateness) closes the first three windows, the third empty.
            results = kafka.read_all(n["results"], 3)
            dead = kafka.read_all(n["dead_letters"], 1)
            states = kafka.read_all(n["changelog"], 2)
            deadline = time.monotonic() + 30
            while kafka.committed(n["group"], n["input"]) != produced and time.monotonic() < deadline:
                time.sleep(0.5)
            committed = kafka.committed(n["group"], n["input"])
            assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
        finally:
            proc.terminate()
            code = proc.wait(timeout=60)
    text = log_path.read_text(errors="replace")
    assert code == 0, text[-3000:]
    counts = {r.key.decode(): json.loads(r.value)["count"] for r in results}
    assert counts == {f"{n['input']}/{base + i * WINDOW_S * 1000}": c for i, c in enumerate((300, 300, 0))}, counts
    assert [r.value for r in dead] == [b""]
    # The daemon's partition state (with the offset it covers) and the marker of what it published.
    assert {r.key.decode() for r in states} >= {f"{n['input']}/0", f"{n['input']}/published"}
    assert committed == produced  # committed after the state that covers them was acknowledged


CHANGELOG_REFUSALS = {
    "read changelog": ["may not read topic", "(state.changelog_topic)", "READ right on the topic"],
    "write changelog": ["may not write to topic", "(state.changelog_topic)", "WRITE right on the topic"],
    "describe changelog configs": [
        "may not read the settings of topic", "(state.changelog_topic)", "DESCRIBE_CONFIGS right on the topic"
    ],
    "create changelog": ["does not exist", "(state.changelog_topic)", "CREATE right on the topic"],
}


@pytest.mark.parametrize("missing", list(CHANGELOG_REFUSALS))
def test_a_missing_right_on_the_changelog_is_named(secure_kafka, bundle_path, tmp_path, missing):
    kafka, n = secure_kafka, names()
    kafka.create_topics(n["input"], n["dead_letters"], n["results"])
    rights = {**minimal_rights(n), **changelog_rights(n)}
    if missing != "create changelog":  # else the topic is not there, and the user has every right but CREATE on it
        kafka.create_changelog(n["changelog"])
        del rights[missing]
    kafka.grant(list(rights.values()))
    # A record to read, so that a state is written (and read back) at the first checkpoint.
    kafka.produce(n["input"], [(int(time.time() * 1000), b"a b c")])
    code, lines = run_until_exit(
        daemon_args(kafka, n, "kafka-python", bundle_path, tmp_path, **fleet_settings(n)),
        daemon_env(kafka.daemon_password), tmp_path / "log",
    )
    assert_refused(code, lines, f"user '{DAEMON_USER}'", repr(n["changelog"]), *CHANGELOG_REFUSALS[missing])
    # Not a retry storm: the client logs the refusal once or twice, then seqmon stops (and asks no more at shutdown).
    refusals = [line for line in lines if "TopicAuthorizationFailed" in line]
    assert len(refusals) <= 6, "\n".join(refusals)
