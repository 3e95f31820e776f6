"""Settings of `seqmon run`: defaults, the example file, precedence file < env < --set, and named errors."""

import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from monitor.config import (
    SECTIONS,
    KafkaSettings,
    RecordSettings,
    Settings,
    WindowingSettings,
    load_settings,
)
from monitor.decode import JsonFields
from monitor.errors import ConfigError
from monitor.window import WindowSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "seqmon.toml"
H = 3_600_000
SASL = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_plain_username": "monitor",
    "sasl_plain_password": "s3cret-pw",
    "ssl_cafile": "/etc/ca.pem",
}


def write(tmp_path, text, name="seqmon.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(*args, **kwargs):
    with pytest.raises(ConfigError) as info:
        load_settings(*args, **kwargs)
    return str(info.value)


# --- defaults and the example file -------------------------------------------------------------------------------


def test_defaults():
    settings = load_settings(None, env={})
    assert settings == Settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.kafka.topics == ("sequences",)
    assert settings.kafka.topic_pattern == ""
    assert settings.kafka.auto_offset_reset == "earliest"
    assert settings.kafka.session_timeout_ms == 10_000
    assert settings.kafka.heartbeat_interval_ms == 3_000
    assert settings.kafka.max_poll_records == 10_000
    assert settings.kafka.fetch_max_bytes == 52_428_800
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.records.format == "plain"
    assert settings.records.max_bytes == 4096
    assert settings.batch.max_records == 10_000
    assert settings.batch.max_latency_ms == 500
    assert settings.window.size_seconds == 3600
    assert settings.window.timezone == "UTC"
    assert settings.window.idle_close_interval_seconds == 30
    assert settings.window.max_future_seconds == 300
    assert settings.model.bundle == "bundle"
    assert settings.model.watch_interval_seconds == 60
    assert settings.state.directory == "state"
    assert settings.state.checkpoint_interval_seconds == 60
    assert settings.metrics.host == "127.0.0.1"
    assert settings.metrics.port == 9108
    assert settings.log.level == "INFO"
    assert settings.log.invalid_log_interval_seconds == 10
    assert settings.window.window_settings() == WindowSettings(size_ms=H, allowed_lateness_ms=300_000, offset_ms=0)


def test_example_file_equals_defaults():
    assert load_settings(EXAMPLE, env={}) == load_settings(None, env={})
    assert load_settings(str(EXAMPLE), env={}) == Settings()


def test_example_file_documents_every_key_with_a_comment():
    with EXAMPLE.open("rb") as handle:
        document = tomllib.load(handle)
    expected = {name: set(section.to_dict()) for name, section in vars(Settings()).items()}
    assert {name: set(table) for name, table in document.items()} == expected
    assert list(document) == list(SECTIONS)
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_]+ = ", line):
            assert lines[i - 1].startswith("# "), f"no comment above {line!r}"


def test_to_dict_has_the_file_shape():
    data = Settings().to_dict()
    assert list(data) == ["kafka", "records", "batch", "window", "deviation", "model", "state", "metrics", "log"]
    assert data["kafka"]["topics"] == ["sequences"]
    assert data["window"] == {
        "size_seconds": 3600,
        "allowed_lateness_seconds": 300,
        "timezone": "UTC",
        "idle_close_interval_seconds": 30,
        "max_future_seconds": 300,
        "max_past_seconds": 2_592_000,
        "idle_partition_timeout_seconds": 300,
    }


# --- precedence -------------------------------------------------------------------------------------------------


def test_toml_overrides_defaults(tmp_path):
    path = write(
        tmp_path,
        '[kafka]\nbootstrap_servers = "k1:9092,k2:9092"\ntopics = ["a", "b"]\n'
        '[window]\nsize_seconds = 86400\ntimezone = "Europe/Paris"\n[log]\nlevel = "debug"\n',
    )
    settings = load_settings(path, env={})
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.kafka.topics == ("a", "b")
    assert settings.window.size_seconds == 86400
    assert settings.window.timezone == "Europe/Paris"
    assert settings.log.level == "DEBUG"
    # Keys the file does not mention keep their defaults.
    assert settings.kafka.group_id == "seqmon"
    assert settings.batch == Settings().batch


def test_env_beats_file(tmp_path):
    path = write(tmp_path, '[kafka]\nbootstrap_servers = "file:9092"\n[window]\nsize_seconds = 60\n')
    env = {"SEQMON_KAFKA_BOOTSTRAP_SERVERS": "env:9092", "SEQMON_WINDOW_SIZE_SECONDS": "120", "PATH": "/bin"}
    settings = load_settings(path, env=env)
    assert settings.kafka.bootstrap_servers == "env:9092"
    assert settings.window.size_seconds == 120


def test_set_beats_env(tmp_path):
    path = write(tmp_path, "[metrics]\nport = 9000\n")
    env = {"SEQMON_METRICS_PORT": "9001", "SEQMON_KAFKA_GROUP_ID": "from-env"}
    settings = load_settings(path, env=env, overrides=["metrics.port=9002", "kafka.group_id = from-set"])
    assert settings.metrics.port == 9002
    assert settings.kafka.group_id == "from-set"
    # Later overrides win over earlier ones.
    assert load_settings(None, env={}, overrides=["metrics.port=1", "metrics.port=2"]).metrics.port == 2


def test_list_from_env_and_set():
    settings = load_settings(None, env={"SEQMON_KAFKA_TOPICS": " a, b,,c "})
    assert settings.kafka.topics == ("a", "b", "c")
    by_pattern = load_settings(None, env={}, overrides=["kafka.topics=", "kafka.topic_pattern=logs-.*"])
    assert by_pattern.kafka.topics == ()
    assert by_pattern.kafka.topic_pattern == "logs-.*"
    assert by_pattern.kafka.subscription() == {"pattern": "logs-.*"}
    assert settings.kafka.subscription() == {"topics": ["a", "b", "c"]}


def test_test_and_unrelated_variables_are_ignored():
    env = {"SEQMON_TEST_KAFKA": "x:1", "SEQMON_TEST_ANYTHING_ELSE": "1", "SEQMON_HDFS_DIR": "/d", "SEQMON_CONFIG": "f"}
    assert load_settings(None, env=env) == Settings()


# --- unknown keys -----------------------------------------------------------------------------------------------


def test_unknown_key_in_file_is_named(tmp_path):
    path = write(tmp_path, '[kafka]\nbootstrp_servers = "x:1"\n')
    assert error_of(path, env={}) == (
        f"unknown key kafka.bootstrp_servers in {path} (did you mean kafka.bootstrap_servers?)"
    )


def test_unknown_section_in_file_is_named(tmp_path):
    path = write(tmp_path, "[windows]\nsize_seconds = 60\n")
    assert error_of(path, env={}) == f"unknown section [windows] in {path} (did you mean window?)"


def test_unknown_env_variable_is_named():
    message = error_of(None, env={"SEQMON_KAFKA_BOOTSTRP_SERVERS": "x:1"})
    assert message == (
        "unknown environment variable SEQMON_KAFKA_BOOTSTRP_SERVERS (did you mean SEQMON_KAFKA_BOOTSTRAP_SERVERS?)"
    )
    assert error_of(None, env={"SEQMON_FOO_BAR": "1"}).startswith("unknown environment variable SEQMON_FOO_BAR")


def test_unknown_override_is_named():
    assert error_of(None, env={}, overrides=["window.size_secs=60"]) == (
        "unknown key window.size_secs in --set (did you mean window.size_seconds?)"
    )
    assert error_of(None, env={}, overrides=["metrics.port"]) == (
        "--set expects section.key=value, got 'metrics.port' without '=' or section"
    )


# --- file errors ------------------------------------------------------------------------------------------------


def test_missing_file_is_named(tmp_path):
    path = tmp_path / "nope.toml"
    assert error_of(path, env={}) == f"config file {path} does not exist"


def test_invalid_toml_gives_the_parser_message(tmp_path):
    path = write(tmp_path, "[kafka\n")
    message = error_of(path, env={})
    assert message.startswith(f"config file {path} is not valid TOML: ")
    assert "line 1" in message


# --- type and range errors --------------------------------------------------------------------------------------


def test_type_error_in_file_is_named(tmp_path):
    path = write(tmp_path, '[kafka]\nsession_timeout_ms = "10000"\n')
    assert error_of(path, env={}) == f"kafka.session_timeout_ms must be a positive integer, got '10000' (from {path})"
    path = write(tmp_path, "[metrics]\nport = true\n", name="bool.toml")
    assert error_of(path, env={}) == f"metrics.port must be an integer from 1 to 65535, got True (from {path})"
    path = write(tmp_path, '[kafka]\ntopics = "sequences"\n', name="list.toml")
    assert error_of(path, env={}).startswith("kafka.topics must be a list of non-empty strings, got 'sequences'")


def test_type_error_in_env_and_set_is_named():
    assert error_of(None, env={"SEQMON_KAFKA_SESSION_TIMEOUT_MS": "abc"}) == (
        "kafka.session_timeout_ms must be a positive integer, got 'abc' (from SEQMON_KAFKA_SESSION_TIMEOUT_MS)"
    )
    assert error_of(None, env={}, overrides=["window.allowed_lateness_seconds=-1"]) == (
        "window.allowed_lateness_seconds must be an integer >= 0, got -1 (from --set window.allowed_lateness_seconds)"
    )
    assert error_of(None, env={}, overrides=["metrics.port=70000"]) == (
        "metrics.port must be an integer from 1 to 65535, got 70000 (from --set metrics.port)"
    )


def test_enum_and_direct_construction_errors_are_named():
    with pytest.raises(
        ConfigError, match=r"^kafka.auto_offset_reset must be one of 'earliest', 'latest', got 'first'$"
    ):
        KafkaSettings(auto_offset_reset="first")
    with pytest.raises(ConfigError, match=r"^records.format must be one of 'plain', 'json', got 'csv'$"):
        RecordSettings(format="csv")
    with pytest.raises(ConfigError, match=r"^kafka.topic_pattern is not a valid regular expression"):
        KafkaSettings(topics=(), topic_pattern="logs-(")
    with pytest.raises(ConfigError, match=r"^window.timezone must be an IANA time zone name"):
        WindowingSettings(timezone="Mars/Olympus")
    with pytest.raises(ConfigError, match=r"^log.level must be one of"):
        load_settings(None, env={"SEQMON_LOG_LEVEL": "loud"})


def test_kafka_client_choice():
    assert Settings().kafka.client == "kafka-python"
    assert load_settings(None, env={}, overrides=["kafka.client=confluent"]).kafka.client == "confluent"
    assert load_settings(None, env={"SEQMON_KAFKA_CLIENT": "confluent"}).kafka.client == "confluent"
    assert error_of(None, env={}, overrides=["kafka.client=librdkafka"]) == (
        "kafka.client must be one of 'kafka-python', 'confluent', got 'librdkafka' (from --set kafka.client)"
    )
    with pytest.raises(ConfigError, match=r"^kafka.client must be one of 'kafka-python', 'confluent', got 3$"):
        KafkaSettings(client=3)


def test_heartbeat_not_below_session_is_rejected():
    message = error_of(None, env={"SEQMON_KAFKA_HEARTBEAT_INTERVAL_MS": "10000"})
    assert message == (
        "kafka.heartbeat_interval_ms (10000) must be below kafka.session_timeout_ms (10000) "
        "(kafka.heartbeat_interval_ms from SEQMON_KAFKA_HEARTBEAT_INTERVAL_MS)"
    )
    with pytest.raises(ConfigError, match=r"^kafka.heartbeat_interval_ms \(5000\) must be below"):
        KafkaSettings(session_timeout_ms=4000, heartbeat_interval_ms=5000)
    assert KafkaSettings(session_timeout_ms=3001).heartbeat_interval_ms == 3000


def test_topics_and_pattern_exactly_one():
    with pytest.raises(ConfigError, match=r"^kafka.topics and kafka.topic_pattern are both empty: set exactly one"):
        KafkaSettings(topics=())
    with pytest.raises(ConfigError, match=r"^kafka.topics and kafka.topic_pattern are both set: set exactly one"):
        load_settings(None, env={}, overrides=["kafka.topic_pattern=logs-.*"])


def test_output_topic_must_not_be_consumed():
    with pytest.raises(ConfigError, match=r"^kafka.dead_letter_topic 'sequences' is also a consumed topic$"):
        KafkaSettings(dead_letter_topic="sequences")
    with pytest.raises(ConfigError, match=r"^kafka.results_topic 'logs-results' is also a consumed topic$"):
        KafkaSettings(topics=(), topic_pattern="logs-.*", results_topic="logs-results")
    assert KafkaSettings(topics=(), topic_pattern="logs-.*", results_topic="seqmon-results").results_topic


def test_sasl_needs_mechanism_and_credentials():
    with pytest.raises(
        ConfigError, match=r"^kafka.sasl_mechanism must be set when kafka.security_protocol is SASL_SSL$"
    ):
        KafkaSettings(security_protocol="SASL_SSL")
    with pytest.raises(ConfigError, match=r"^kafka.sasl_plain_username and kafka.sasl_plain_password are required"):
        KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="PLAIN")
    with pytest.raises(ConfigError, match=r"^kafka.sasl_mechanism is PLAIN but kafka.security_protocol is PLAINTEXT"):
        KafkaSettings(sasl_mechanism="PLAIN", sasl_plain_username="u", sasl_plain_password="p")


# --- derived objects --------------------------------------------------------------------------------------------


def test_timezone_offset_from_zoneinfo_at_the_given_instant():
    daily = WindowingSettings(size_seconds=86_400, timezone="Europe/Paris")
    winter = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)  # CET, UTC+01:00
    summer = datetime(2024, 7, 15, 12, 0, tzinfo=UTC)  # CEST, UTC+02:00
    # Local midnight is 23:00 UTC in winter and 22:00 UTC in summer.
    assert daily.window_settings(now=winter) == WindowSettings(
        size_ms=24 * H, allowed_lateness_ms=300_000, offset_ms=23 * H
    )
    assert daily.window_settings(now=summer).offset_ms == 22 * H
    # Hourly windows in a whole-hour zone are aligned like UTC; a half-hour zone shifts them by 30 minutes.
    assert WindowingSettings(timezone="Europe/Paris").window_settings(now=summer).offset_ms == 0
    assert WindowingSettings(timezone="Asia/Kolkata").window_settings(now=winter).offset_ms == 30 * 60_000
    assert WindowingSettings().window_settings(now=summer).offset_ms == 0
    with pytest.raises(ValueError, match="time-zone aware"):
        daily.window_settings(now=datetime(2024, 1, 15))


def test_json_fields():
    assert RecordSettings().json_fields() == JsonFields(sequence="sequence", weight="weight", timestamp=None)
    custom = RecordSettings(format="json", sequence_field="seq", weight_field="", timestamp_field="ts")
    assert custom.json_fields() == JsonFields(sequence="seq", weight=None, timestamp="ts")
    with pytest.raises(ConfigError, match=r"^records.sequence_field and records.weight_field are both 'x'"):
        RecordSettings(sequence_field="x", weight_field="x")


def test_consumer_config_has_security_keys_only_when_set():
    plain = KafkaSettings(bootstrap_servers="k1:9092, k2:9092")
    assert plain.consumer_config() == {
        "bootstrap_servers": ["k1:9092", "k2:9092"],
        "client_id": "seqmon",
        "group_id": "seqmon",
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 3_000,
        "max_poll_interval_ms": 300_000,
        "max_poll_records": 10_000,
        "fetch_max_bytes": 52_428_800,
        "security_protocol": "PLAINTEXT",
    }
    assert plain.producer_config() == {
        "bootstrap_servers": ["k1:9092", "k2:9092"],
        "client_id": "seqmon",
        "security_protocol": "PLAINTEXT",
    }
    secure = KafkaSettings(**SASL)
    consumer = secure.consumer_config()
    assert {k: v for k, v in consumer.items() if k.startswith(("sasl_", "ssl_", "security_"))} == SASL
    assert "ssl_certfile" not in consumer and "ssl_keyfile" not in consumer
    assert {k: v for k, v in secure.producer_config().items() if k not in ("bootstrap_servers", "client_id")} == SASL
    # Every key is one kafka-python accepts (it rejects unknown ones at construction).
    assert set(consumer) <= set(KafkaConsumer.DEFAULT_CONFIG)
    assert set(secure.producer_config()) <= set(KafkaProducer.DEFAULT_CONFIG)


def test_password_is_redacted():
    settings = load_settings(None, env={f"SEQMON_KAFKA_{k.upper()}": v for k, v in SASL.items()})
    assert settings.kafka.sasl_plain_password == "s3cret-pw"
    assert settings.to_dict()["kafka"]["sasl_plain_password"] == "***"
    assert settings.to_dict(redact=True)["kafka"]["sasl_plain_username"] == "monitor"
    assert settings.to_dict(redact=False)["kafka"]["sasl_plain_password"] == "s3cret-pw"
    assert "s3cret-pw" not in repr(settings)
    assert "s3cret-pw" not in str(settings.to_dict())
    # An empty password is shown as empty, not as a fake secret.
    assert Settings().to_dict()["kafka"]["sasl_plain_password"] == ""


def test_wrongly_typed_password_is_not_echoed(tmp_path):
    path = write(tmp_path, "[kafka]\nsasl_plain_password = 123456\n")
    assert error_of(path, env={}) == f"kafka.sasl_plain_password must be a string, got <redacted> (from {path})"


def test_settings_are_frozen():
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.kafka.group_id = "other"  # type: ignore[misc]
    assert hash(settings.kafka.topics) == hash(("sequences",))


def test_deviation_section_from_env_and_set():
    settings = load_settings(
        None, env={"SEQMON_DEVIATION_PAGE_SHIFT": "3.5"}, overrides=["deviation.baseline_windows=48"]
    )
    got = settings.deviation.deviation_settings()
    assert (got.page_shift, got.baseline_windows, got.page_surprise) == (3.5, 48, 6.0)


@pytest.mark.parametrize(
    "override, key",
    [("deviation.page_shift=lots", "deviation.page_shift"), ("deviation.ticket_shift=9", "deviation.ticket_shift")],
)
def test_deviation_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(None, env={}, overrides=[override])
