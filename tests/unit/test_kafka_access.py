"""Kafka's refusals as one sentence: which setting to fix or which ACL right to grant (no broker needed)."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError
from kafka import errors as kafka_errors

from monitor.errors import KafkaAccessError, MonitorError
from monitor.source import kafka_access
from monitor.source.confluent_source import _access_error

CONFIG = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_plain_username": "seqmon",
    "sasl_plain_password": "hunter2-secret",
    "ssl_cafile": "/etc/kafka/ca.pem",
    "group_id": "monitors",
}


def test_the_messages_name_the_user_and_the_right_and_never_the_password():
    errors = [
        kafka_access.authentication_failed(CONFIG, "invalid credentials"),
        kafka_access.tls_failed(CONFIG, "certificate verify failed: self-signed certificate"),
        kafka_access.tls_failed(CONFIG, "wrong version number"),
        kafka_access.read_not_authorized(CONFIG, ["orders"]),
        kafka_access.group_not_authorized(CONFIG),
        kafka_access.write_not_authorized(CONFIG, "seqmon-dead", "kafka.dead_letter_topic"),
        kafka_access.read_not_authorized(CONFIG, ["seqmon-state"], "state.changelog_topic"),
        kafka_access.describe_configs_not_authorized(CONFIG, "seqmon-state", "state.changelog_topic"),
        kafka_access.create_not_authorized(CONFIG, "seqmon-state", "state.changelog_topic"),
    ]
    assert all(isinstance(e, KafkaAccessError) and isinstance(e, MonitorError) for e in errors)
    texts = [str(e) for e in errors]
    assert all("hunter2" not in t and "\n" not in t for t in texts)
    assert texts[0].startswith("Kafka authentication of user 'seqmon' (SCRAM-SHA-512) failed")
    assert "not trusted by kafka.ssl_cafile (/etc/kafka/ca.pem)" in texts[1]
    assert "speaks kafka.security_protocol SASL_SSL" in texts[2]
    assert "may not read topic 'orders'" in texts[3] and "READ right on the topic" in texts[3]
    assert "consumer group 'monitors' (kafka.group_id)" in texts[4] and "READ right on the group" in texts[4]
    assert "write to topic 'seqmon-dead' (kafka.dead_letter_topic)" in texts[5] and "WRITE right" in texts[5]
    assert "may not read topic 'seqmon-state' (state.changelog_topic): grant it the READ right" in texts[6]
    assert "settings of topic 'seqmon-state' (state.changelog_topic)" in texts[7]
    assert "DESCRIBE_CONFIGS right on the topic" in texts[7]
    assert "'seqmon-state' (state.changelog_topic) does not exist" in texts[8] and "CREATE right" in texts[8]


def test_the_denied_topics_are_read_from_either_kafka_python_error():
    assert kafka_access.denied_topics(kafka_errors.TopicAuthorizationFailedError("orders")) == ["orders"]  # producer
    consumer = kafka_errors.TopicAuthorizationFailedError({"orders", "devices"})
    assert kafka_access.denied_topics(consumer) == ["devices", "orders"]
    assert kafka_access.denied_topics(kafka_errors.TopicAuthorizationFailedError()) == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (KafkaError._AUTHENTICATION, "Kafka authentication of user 'seqmon'"),
        (KafkaError._SSL, "TLS connection to Kafka failed"),
        (KafkaError.GROUP_AUTHORIZATION_FAILED, "may not use consumer group 'monitors'"),
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, "may not read topic 'orders'"),
    ],
)
def test_librdkafka_refusals_are_translated(code, expected):
    error = _access_error(KafkaError(code, "refused"), CONFIG, "orders")
    assert error is not None and expected in str(error)


def test_other_librdkafka_errors_are_left_to_the_retries():
    assert _access_error(KafkaError(KafkaError._TRANSPORT, "broker down"), CONFIG) is None


def test_the_watch_catches_a_failed_login_from_the_client_log():
    watch = kafka_access.FailureWatch(CONFIG, (kafka_errors.SaslAuthenticationFailedError,))
    logger = logging.getLogger("kafka.test-watch")
    logger.addHandler(watch)
    try:
        logger.warning("connection failed: %s", kafka_errors.KafkaConnectionError("socket disconnected"))
        assert watch.failure is None and not watch.seen.is_set()
        logger.warning("connection failed: %s", kafka_errors.SaslAuthenticationFailedError("invalid credentials"))
    finally:
        logger.removeHandler(watch)
    assert watch.seen.is_set()
    assert str(watch.failure).startswith("Kafka authentication of user 'seqmon' (SCRAM-SHA-512) failed")
    assert "invalid credentials" in str(watch.failure)


def test_a_bootstrap_timeout_is_one_line_naming_the_servers_and_never_the_password():
    from kafka import errors

    from monitor.source.kafka_access import built

    class NoBrokerAnswers:  # what kafka-python's consumer does when no broker answers within bootstrap_timeout_ms
        DEFAULT_CONFIG: dict = {}

        def __init__(self, **config):
            raise errors.KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:1']")

    config = {"bootstrap_servers": ["127.0.0.1:1"], "security_protocol": "SASL_SSL", "sasl_plain_password": "s3cret"}
    with pytest.raises(KafkaAccessError, match=r"cannot connect to Kafka at 127\.0\.0\.1:1 \(SASL_SSL\)") as refused:
        built(NoBrokerAnswers, config)
    assert "\n" not in str(refused.value) and "s3cret" not in str(refused.value)


def test_connections_closed_during_a_sasl_login_are_a_failed_login():
    """kafka-python 3 may read the broker's close before its error response, every time until the bootstrap timeout."""
    from kafka import errors

    from monitor.source.kafka_access import built

    class ClosedAtLogin:
        DEFAULT_CONFIG: dict = {}

        def __init__(self, **config):
            for _ in range(3):
                logging.getLogger("kafka.net.transport").error("%s: socket disconnected", "<KafkaSSLTransport>")
            raise errors.KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:1']")

    config = {**CONFIG, "bootstrap_servers": ["127.0.0.1:1"]}
    with pytest.raises(KafkaAccessError, match=r"authentication of user 'seqmon' \(SCRAM-SHA-512\) failed.*closed all 3"):
        built(ClosedAtLogin, config)
    # Without SASL the same closes say nothing about a login.
    with pytest.raises(KafkaAccessError, match="cannot connect to Kafka"):
        built(ClosedAtLogin, {**config, "security_protocol": "SSL"})
