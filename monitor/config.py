"""Settings of the daemon ``seqmon run``: a TOML file, then environment variables, then ``--set`` overrides.

Precedence, later wins: the defaults in this module < the TOML file < ``SEQMON_<SECTION>_<KEY>`` environment
variables < ``--set section.key=value`` overrides.  Everything is validated once, at start, and every error names the
offending key (and where its value came from), so a typo fails the start instead of silently running on a default.

TOML values are type-checked strictly (``session_timeout_ms = "10000"`` is an error); environment variables and
overrides are strings and are converted by the key's type: integers in decimal, lists comma-separated, booleans from
``true/false/1/0``.  ``config/seqmon.toml`` documents every key with its default.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from monitor.decode import DEFAULT_MAX_BYTES, JsonFields
from monitor.deviation import DeviationSettings
from monitor.errors import ConfigError
from monitor.window import WindowSettings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, packaged as tomli
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = [
    "BatchSettings",
    "DeviationSection",
    "ENV_PREFIX",
    "KafkaSettings",
    "LogSettings",
    "MetricsSettings",
    "ModelSettings",
    "RecordSettings",
    "SECTIONS",
    "Settings",
    "StateSettings",
    "WindowingSettings",
    "load_settings",
]

ENV_PREFIX = "SEQMON_"
# Variables the test suite reads; they share the prefix but are not settings.
_IGNORED_ENV = frozenset({"SEQMON_HDFS_DIR"})
_IGNORED_ENV_PREFIXES = ("SEQMON_TEST_",)

_REDACTED = "***"
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})

_OFFSET_RESETS = ("earliest", "latest")
_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_RECORD_FORMATS = ("plain", "json")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_KAFKA_CLIENTS = ("kafka-python", "confluent")
_BUNDLE_CHANGES = ("refuse", "discard")


def _error(message: str, *keys: str) -> ConfigError:
    """A ConfigError that remembers which ``section.key`` it is about, so the loader can add where the value came from."""
    exc = ConfigError(message)
    exc.keys = keys  # type: ignore[attr-defined]
    return exc


def _is_int(value: Any) -> bool:
    # bool is an int subclass, but `port = true` in a file is a mistake, not 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _suggest(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


class _Section:
    """Shared checks of the section dataclasses; ``SECTION`` is the TOML table name."""

    SECTION: ClassVar[str] = ""
    SECRETS: ClassVar[frozenset[str]] = frozenset()

    def _key(self, name: str) -> str:
        return f"{self.SECTION}.{name}"

    def _shown(self, name: str) -> str:
        # A secret is never echoed, not even in the error for a wrongly typed one.
        return "<redacted>" if name in self.SECRETS else repr(getattr(self, name))

    def _int(self, name: str, minimum: int, maximum: int | None = None) -> None:
        value = getattr(self, name)
        if maximum is not None:
            wanted = f"an integer from {minimum} to {maximum}"
        elif minimum == 1:
            wanted = "a positive integer"
        else:
            wanted = f"an integer >= {minimum}"
        if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
            raise _error(f"{self._key(name)} must be {wanted}, got {self._shown(name)}", self._key(name))

    def _str(self, name: str, nonempty: bool = False) -> None:
        value = getattr(self, name)
        if not isinstance(value, str):
            raise _error(f"{self._key(name)} must be a string, got {self._shown(name)}", self._key(name))
        if nonempty and not value.strip():
            raise _error(f"{self._key(name)} must not be empty", self._key(name))

    def _choice(self, name: str, choices: Sequence[str]) -> None:
        value = getattr(self, name)
        if not isinstance(value, str) or value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise _error(f"{self._key(name)} must be one of {allowed}, got {value!r}", self._key(name))

    def _str_tuple(self, name: str) -> None:
        value = getattr(self, name)
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
            raise _error(f"{self._key(name)} must be a list of non-empty strings, got {value!r}", self._key(name))
        # Stored as a tuple so the frozen settings are immutable and hashable all the way down.
        object.__setattr__(self, name, tuple(value))

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        """Plain TOML/JSON-safe values by key (tuples as lists); non-empty secrets as ``***`` when ``redact``."""
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            if redact and f.name in self.SECRETS and value:
                value = _REDACTED
            out[f.name] = value
        return out


@dataclass(frozen=True)
class KafkaSettings(_Section):
    """``[kafka]``: brokers, subscription, consumer group and security.

    Attributes
    ----------
    client : str
        Consumer library of the daemon's source: ``"kafka-python"`` (pure Python record parsing, ~75k records/s) or
        ``"confluent"`` (confluent-kafka on librdkafka, parses in C).  The same settings apply to both.
    bootstrap_servers : str
        Comma-separated ``host:port`` list of brokers to bootstrap from.
    topics : tuple of str
        Topics to consume; empty when subscribing by ``topic_pattern``.
    topic_pattern : str
        Regular expression (``re.match``, i.e. anchored at the start) of the topics to consume; ``""`` = use
        ``topics``.  Exactly one of ``topics`` / ``topic_pattern`` is non-empty.
    group_id, client_id : str
        Consumer group (offsets and partition assignment are per group) and client name shown by the broker.
    auto_offset_reset : str
        Where a group without a committed offset starts: ``"earliest"`` or ``"latest"``.
    session_timeout_ms : int
        Without a heartbeat for this long, ms, the broker drops the consumer from the group.
    heartbeat_interval_ms : int
        Heartbeat period, ms; must be below ``session_timeout_ms`` (Kafka advises a third of it at most).
    max_poll_interval_ms : int
        Longest gap between two polls, ms, before the consumer is considered stuck and its partitions reassigned.
    max_poll_records : int
        Most records returned by one poll.
    fetch_max_bytes : int
        Soft cap of the bytes one fetch returns.
    security_protocol : str
        ``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``.
    sasl_mechanism : str
        ``""`` (no SASL), ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512``; required by the ``SASL_*`` protocols.
    sasl_plain_username, sasl_plain_password : str
        SASL credentials (required with a mechanism).  The password never appears in ``repr`` or ``to_dict()``.
    ssl_cafile, ssl_certfile, ssl_keyfile : str
        PEM files: CA bundle to verify brokers, client certificate and its key; ``""`` = not used.
    dead_letter_topic : str
        Topic that receives the records that could not be scored; ``""`` = off.
    results_topic : str
        Topic that receives the closed-window results; ``""`` = off.
    """

    SECTION: ClassVar[str] = "kafka"
    SECRETS: ClassVar[frozenset[str]] = frozenset({"sasl_plain_password"})

    client: str = "kafka-python"
    bootstrap_servers: str = "127.0.0.1:9092"
    topics: tuple[str, ...] = ("sequences",)
    topic_pattern: str = ""
    group_id: str = "seqmon"
    client_id: str = "seqmon"
    auto_offset_reset: str = "earliest"
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    max_poll_records: int = 10_000
    fetch_max_bytes: int = 52_428_800
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_plain_username: str = ""
    sasl_plain_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    dead_letter_topic: str = ""
    results_topic: str = ""

    def __post_init__(self) -> None:
        self._choice("client", _KAFKA_CLIENTS)
        self._str("bootstrap_servers", nonempty=True)
        if not all(s.strip() for s in self.bootstrap_servers.split(",")):
            raise _error(
                f"kafka.bootstrap_servers must be a comma-separated list of host:port, got {self.bootstrap_servers!r}",
                "kafka.bootstrap_servers",
            )
        self._str_tuple("topics")
        self._str("topic_pattern")
        if self.topic_pattern:
            try:
                re.compile(self.topic_pattern)
            except re.error as exc:
                raise _error(
                    f"kafka.topic_pattern is not a valid regular expression ({exc}), got {self.topic_pattern!r}",
                    "kafka.topic_pattern",
                ) from None
        if bool(self.topics) == bool(self.topic_pattern):
            state = "both set" if self.topics else "both empty"
            raise _error(
                f"kafka.topics and kafka.topic_pattern are {state}: set exactly one of them "
                '(topics = [] to subscribe by pattern, topic_pattern = "" to subscribe by name)',
                "kafka.topics",
                "kafka.topic_pattern",
            )
        self._str("group_id", nonempty=True)
        self._str("client_id", nonempty=True)
        self._choice("auto_offset_reset", _OFFSET_RESETS)
        for name in ("session_timeout_ms", "heartbeat_interval_ms", "max_poll_interval_ms"):
            self._int(name, 1)
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise _error(
                f"kafka.heartbeat_interval_ms ({self.heartbeat_interval_ms}) must be below "
                f"kafka.session_timeout_ms ({self.session_timeout_ms})",
                "kafka.heartbeat_interval_ms",
                "kafka.session_timeout_ms",
            )
        self._int("max_poll_records", 1)
        self._int("fetch_max_bytes", 1)
        self._choice("security_protocol", _SECURITY_PROTOCOLS)
        self._choice("sasl_mechanism", ("", *_SASL_MECHANISMS))
        for name in ("sasl_plain_username", "sasl_plain_password", "ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            self._str(name)
        sasl = self.security_protocol.startswith("SASL_")
        if sasl and not self.sasl_mechanism:
            raise _error(
                f"kafka.sasl_mechanism must be set when kafka.security_protocol is {self.security_protocol}",
                "kafka.sasl_mechanism",
                "kafka.security_protocol",
            )
        if self.sasl_mechanism and not sasl:
            # A mechanism without a SASL protocol is ignored by the client: almost surely a half-done setup.
            raise _error(
                f"kafka.sasl_mechanism is {self.sasl_mechanism} but kafka.security_protocol is "
                f"{self.security_protocol}; use SASL_PLAINTEXT or SASL_SSL",
                "kafka.sasl_mechanism",
                "kafka.security_protocol",
            )
        if self.sasl_mechanism and not (self.sasl_plain_username and self.sasl_plain_password):
            raise _error(
                f"kafka.sasl_plain_username and kafka.sasl_plain_password are required by "
                f"kafka.sasl_mechanism {self.sasl_mechanism}",
                "kafka.sasl_plain_username",
                "kafka.sasl_plain_password",
            )
        for name in ("dead_letter_topic", "results_topic"):
            self._str(name)
            topic = getattr(self, name)
            # Producing into a consumed topic would feed the monitor its own output, forever.
            if topic and self.consumes(topic):
                raise _error(f"kafka.{name} {topic!r} is also a consumed topic", f"kafka.{name}")

    def consumes(self, topic: str) -> bool:
        """Whether ``topic`` is subscribed to (by name, or by pattern with kafka-python's ``re.match``)."""
        if self.topic_pattern:
            return re.match(self.topic_pattern, topic) is not None
        return topic in self.topics

    def bootstrap_server_list(self) -> list[str]:
        """``bootstrap_servers`` split at commas, blanks removed."""
        return [s.strip() for s in self.bootstrap_servers.split(",")]

    def subscription(self) -> dict[str, Any]:
        """Keyword arguments of ``KafkaConsumer.subscribe``: ``{"topics": [...]}`` or ``{"pattern": "..."}``."""
        if self.topic_pattern:
            return {"pattern": self.topic_pattern}
        return {"topics": list(self.topics)}

    def _security_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"security_protocol": self.security_protocol}
        # Empty values are left out so the client's own defaults (None) apply.
        for name in (
            "sasl_mechanism",
            "sasl_plain_username",
            "sasl_plain_password",
            "ssl_cafile",
            "ssl_certfile",
            "ssl_keyfile",
        ):
            value = getattr(self, name)
            if value:
                out[name] = value
        return out

    def consumer_config(self) -> dict[str, Any]:
        """Keyword arguments of ``kafka.KafkaConsumer`` derived from the settings.

        Holds the password when one is set: do not log it.  The caller adds what is not a setting
        (deserializers, ``enable_auto_commit``) and subscribes with :meth:`subscription`.
        """
        return {
            "bootstrap_servers": self.bootstrap_server_list(),
            "client_id": self.client_id,
            "group_id": self.group_id,
            "auto_offset_reset": self.auto_offset_reset,
            "session_timeout_ms": self.session_timeout_ms,
            "heartbeat_interval_ms": self.heartbeat_interval_ms,
            "max_poll_interval_ms": self.max_poll_interval_ms,
            "max_poll_records": self.max_poll_records,
            "fetch_max_bytes": self.fetch_max_bytes,
            **self._security_config(),
        }

    def producer_config(self) -> dict[str, Any]:
        """Keyword arguments of ``kafka.KafkaProducer`` (dead letters, results); holds the password when set."""
        return {
            "bootstrap_servers": self.bootstrap_server_list(),
            "client_id": self.client_id,
            **self._security_config(),
        }


@dataclass(frozen=True)
class RecordSettings(_Section):
    """``[records]``: how record values are decoded.

    Attributes
    ----------
    format : str
        ``"plain"`` (the whole UTF-8 value is the sequence) or ``"json"`` (an object holding the fields below).
    sequence_field : str
        JSON field holding the sequence string.
    weight_field : str
        JSON field holding the record weight (> 0); ``""`` = every record weighs 1.
    timestamp_field : str
        JSON field holding the event time (epoch ms, or ISO 8601 with a zone); ``""`` = the Kafka record timestamp.
    max_bytes : int
        Longest accepted record value, bytes; longer ones are counted invalid (``too_long``).
    """

    SECTION: ClassVar[str] = "records"

    format: str = "plain"
    sequence_field: str = "sequence"
    weight_field: str = "weight"
    timestamp_field: str = ""
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        self._choice("format", _RECORD_FORMATS)
        self._str("sequence_field", nonempty=True)
        self._str("weight_field")
        self._str("timestamp_field")
        self._int("max_bytes", 1)
        named = [n for n in ("sequence_field", "weight_field", "timestamp_field") if getattr(self, n)]
        for i, a in enumerate(named):
            for b in named[i + 1 :]:
                if getattr(self, a) == getattr(self, b):
                    raise _error(
                        f"records.{a} and records.{b} are both {getattr(self, a)!r}; a field has one meaning",
                        f"records.{a}",
                        f"records.{b}",
                    )

    def json_fields(self) -> JsonFields:
        """Field names for :func:`monitor.decode.decode_json` (empty names become None: not read)."""
        return JsonFields(
            sequence=self.sequence_field,
            weight=self.weight_field or None,
            timestamp=self.timestamp_field or None,
        )


@dataclass(frozen=True)
class BatchSettings(_Section):
    """``[batch]``: how many records are scored together.

    Attributes
    ----------
    max_records : int
        Most records in one scoring batch.
    max_latency_ms : int
        Poll timeout, ms: a batch is scored after at most this wait even if it is not full.
    """

    SECTION: ClassVar[str] = "batch"

    max_records: int = 10_000
    max_latency_ms: int = 500

    def __post_init__(self) -> None:
        self._int("max_records", 1)
        self._int("max_latency_ms", 1)


@dataclass(frozen=True)
class WindowingSettings(_Section):
    """``[window]``: event-time windows (named so as not to clash with :class:`monitor.window.WindowSettings`).

    Attributes
    ----------
    size_seconds : int
        Window length, s.
    allowed_lateness_seconds : int
        How far behind its partition's newest event time a record may be and still count, s.
    timezone : str
        IANA zone name whose whole units windows align to (daily windows start at local midnight).  The zone's
        UTC offset is taken once, at start (:meth:`window_settings`): DST shifts while running are not followed.
    idle_close_interval_seconds : int
        Period, s, of the scheduled job that closes due windows of a stream that went quiet; 0 = off.
    max_future_seconds : int
        Records whose event time is further ahead of the wall clock than this, s, are counted invalid
        (``invalid_timestamp``), so one bad clock cannot push the watermark ahead and close windows early.
    max_past_seconds : int
        Records whose event time is further behind the wall clock than this, s, are counted invalid
        (``invalid_timestamp``); 0 = no bound. A record from 1970 would otherwise open a window that every hour since
        must close after it (half a million count-0 windows), and open windows span at most
        ``max_past_seconds + max_future_seconds``. Raise it to read a topic's backlog older than 30 days.
    idle_partition_timeout_seconds : int
        A partition whose lag is unknown and that delivered nothing for this long, s, stops holding its topic's
        windows open (a partition with a reported lag of 0 is idle at once; one with lag > 0 never is); 0 = only a
        reported lag of 0 makes a partition idle.
    """

    SECTION: ClassVar[str] = "window"

    size_seconds: int = 3_600
    allowed_lateness_seconds: int = 300
    timezone: str = "UTC"
    idle_close_interval_seconds: int = 30
    max_future_seconds: int = 300
    max_past_seconds: int = 30 * 86_400
    idle_partition_timeout_seconds: int = 300

    def __post_init__(self) -> None:
        self._int("size_seconds", 1)
        self._int("allowed_lateness_seconds", 0)
        self._str("timezone", nonempty=True)
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise _error(
                f"window.timezone must be an IANA time zone name such as 'Europe/Paris', got {self.timezone!r}",
                "window.timezone",
            ) from None
        self._int("idle_close_interval_seconds", 0)
        self._int("max_future_seconds", 0)
        self._int("max_past_seconds", 0)
        self._int("idle_partition_timeout_seconds", 0)

    def offset_ms(self, now: datetime | None = None) -> int:
        """Window boundary offset for :func:`monitor.window.window_start_ms`, ms, in ``[0, size_ms)``.

        Local midnight of a zone at UTC+01:00 is 23:00 UTC, hence ``-utcoffset``; it is reduced modulo the window
        size so that equivalent alignments compare equal (hourly windows in any whole-hour zone give 0).

        Parameters
        ----------
        now : datetime, optional
            Time-zone-aware instant whose UTC offset is used; default the current time.
        """
        if now is None:
            now = datetime.now(UTC)
        elif now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"now must be time-zone aware, got {now!r}")
        utc_offset = now.astimezone(ZoneInfo(self.timezone)).utcoffset()
        assert utc_offset is not None  # a ZoneInfo always has an offset
        offset_ms = round(utc_offset.total_seconds() * 1000)
        return -offset_ms % (self.size_seconds * 1000)

    def window_settings(self, now: datetime | None = None) -> WindowSettings:
        """:class:`monitor.window.WindowSettings` in ms, aligned to ``timezone`` as of ``now`` (default: current time)."""
        return WindowSettings(
            size_ms=self.size_seconds * 1000,
            allowed_lateness_ms=self.allowed_lateness_seconds * 1000,
            offset_ms=self.offset_ms(now),
            idle_timeout_ms=self.idle_partition_timeout_seconds * 1000,
        )


@dataclass(frozen=True)
class ModelSettings(_Section):
    """``[model]``: the scoring bundle.

    Attributes
    ----------
    bundle : str
        Directory of the model bundle (``seqmon train`` output).
    watch_interval_seconds : int
        Period, s, of the check for a replaced bundle, which is then reloaded without a restart; 0 = off.
    """

    SECTION: ClassVar[str] = "model"

    bundle: str = "bundle"
    watch_interval_seconds: int = 60

    def __post_init__(self) -> None:
        self._str("bundle", nonempty=True)
        self._int("watch_interval_seconds", 0)


@dataclass(frozen=True)
class StateSettings(_Section):
    """``[state]``: checkpoints of open windows and offsets.

    Attributes
    ----------
    directory : str
        Directory of the checkpoints, created if missing.
    checkpoint_interval_seconds : int
        Period between checkpoints, s: at most this much work is redone after a crash.  With a changelog topic:
        period between writes of the partitions' window states to it, after which windows due are published.
    changelog_topic : str
        Compacted Kafka topic holding each partition's window state (fleet mode: the windows of several daemons in
        one consumer group are fleet-wide, and ``directory`` is not used); ``""`` = off, the windows are this
        daemon's own, checkpointed in ``directory``.  One topic per consumer group; created if missing.
    changelog_replication_factor : int
        Replication factor the changelog topic is created with (an existing topic keeps its own).
    on_bundle_change : str
        What a daemon started with another bundle than the one whose scores the checkpoint's open windows hold does:
        ``"refuse"`` (stop with one line naming both bundles) or ``"discard"`` (drop those windows, the previous
        windows and the baseline, log what was dropped, and resume at the checkpoint's offsets).
    """

    SECTION: ClassVar[str] = "state"

    directory: str = "state"
    checkpoint_interval_seconds: int = 60
    changelog_topic: str = ""
    changelog_replication_factor: int = 1
    on_bundle_change: str = "refuse"

    def __post_init__(self) -> None:
        self._str("directory", nonempty=True)
        self._int("checkpoint_interval_seconds", 1)
        self._str("changelog_topic")
        if self.changelog_topic and not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", self.changelog_topic):
            raise _error(
                f"state.changelog_topic must be a Kafka topic name (letters, digits, '.', '_', '-'), "
                f"got {self.changelog_topic!r}",
                "state.changelog_topic",
            )
        self._int("changelog_replication_factor", 1)
        self._choice("on_bundle_change", _BUNDLE_CHANGES)


@dataclass(frozen=True)
class MetricsSettings(_Section):
    """``[metrics]``: the Prometheus HTTP endpoint.

    Attributes
    ----------
    host : str
        Address to listen on; ``"0.0.0.0"`` for every interface.
    port : int
        TCP port, 1-65535.
    web_config_file : str
        YAML file in the format of Prometheus' web configuration (``tls_server_config``: ``cert_file``, ``key_file``,
        ``client_auth_type``, ``client_ca_file``; ``basic_auth_users`` with bcrypt hashes), read at start; ``""`` =
        plain HTTP without authentication.  See :mod:`monitor.export.web_config`.
    """

    SECTION: ClassVar[str] = "metrics"

    host: str = "127.0.0.1"
    port: int = 9108
    web_config_file: str = ""

    def __post_init__(self) -> None:
        self._str("host", nonempty=True)
        self._int("port", 1, 65_535)
        self._str("web_config_file")


@dataclass(frozen=True)
class LogSettings(_Section):
    """``[log]``: logging.

    Attributes
    ----------
    level : str
        ``DEBUG``, ``INFO``, ``WARNING``, ``ERROR`` or ``CRITICAL`` (any case; stored upper case).
    invalid_log_interval_seconds : int
        Invalid records are logged at most once per this period, s (counts still go to the metrics); 0 = no limit.
    format : str
        ``text`` (readable lines) or ``json`` (one JSON object per line, for log shippers).
    """

    SECTION: ClassVar[str] = "log"

    level: str = "INFO"
    invalid_log_interval_seconds: int = 10
    format: str = "text"

    def __post_init__(self) -> None:
        if isinstance(self.level, str):
            # `level = "info"` is what people type; logging wants the upper-case name.
            object.__setattr__(self, "level", self.level.upper())
        self._choice("level", _LOG_LEVELS)
        self._int("invalid_log_interval_seconds", 0)
        self._choice("format", ("text", "json"))


@dataclass(frozen=True)
class DeviationSection(_Section):
    """``[deviation]``: when a closed window pages or tickets, and the baseline it is compared with.

    See :class:`monitor.deviation.DeviationSettings` for the meaning of each key; the defaults are measured in
    ``tests/quality/test_alerting.py``.
    """

    SECTION: ClassVar[str] = "deviation"

    page_shift: float = DeviationSettings.page_shift
    page_surprise: float = DeviationSettings.page_surprise
    ticket_shift: float = DeviationSettings.ticket_shift
    ticket_surprise: float = DeviationSettings.ticket_surprise
    baseline_windows: int = DeviationSettings.baseline_windows
    baseline_min_windows: int = DeviationSettings.baseline_min_windows

    def __post_init__(self) -> None:
        for name in ("page_shift", "page_surprise", "ticket_shift", "ticket_surprise"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
                raise _error(f"{self._key(name)} must be a number >= 0, got {value!r}", self._key(name))
            object.__setattr__(self, name, float(value))
        self._int("baseline_windows", 0)
        self._int("baseline_min_windows", 1)
        try:
            self.deviation_settings()
        except ConfigError as exc:
            raise _error(f"deviation: {exc}", *(self._key(n) for n in ("page_shift", "ticket_shift"))) from None

    def deviation_settings(self) -> DeviationSettings:
        """:class:`monitor.deviation.DeviationSettings` of these keys."""
        return DeviationSettings(**{f.name: getattr(self, f.name) for f in fields(self)})


#: Section name -> settings class, in file order.
SECTIONS: dict[str, type[_Section]] = {
    cls.SECTION: cls
    for cls in (
        KafkaSettings,
        RecordSettings,
        BatchSettings,
        WindowingSettings,
        DeviationSection,
        ModelSettings,
        StateSettings,
        MetricsSettings,
        LogSettings,
    )
}


@dataclass(frozen=True)
class Settings:
    """Every setting of ``seqmon run``, one frozen dataclass per TOML section."""

    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    records: RecordSettings = field(default_factory=RecordSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    window: WindowingSettings = field(default_factory=WindowingSettings)
    deviation: DeviationSection = field(default_factory=DeviationSection)
    model: ModelSettings = field(default_factory=ModelSettings)
    state: StateSettings = field(default_factory=StateSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    log: LogSettings = field(default_factory=LogSettings)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"Settings.{name} must be a {cls.__name__}, got {getattr(self, name)!r}")
        changelog = self.state.changelog_topic
        if changelog:
            # The changelog's records are window state, not sequences or results: sharing a topic corrupts both.
            if self.kafka.consumes(changelog):
                raise _error(f"state.changelog_topic {changelog!r} is also a consumed topic", "state.changelog_topic")
            for name in ("results_topic", "dead_letter_topic"):
                if getattr(self.kafka, name) == changelog:
                    raise _error(f"state.changelog_topic and kafka.{name} are both {changelog!r}",
                                 "state.changelog_topic", f"kafka.{name}")

    def to_dict(self, redact: bool = True) -> dict[str, dict[str, Any]]:
        """``{section: {key: value}}`` with plain values (the shape of the TOML file); secrets ``***`` if ``redact``."""
        return {name: getattr(self, name).to_dict(redact=redact) for name in SECTIONS}


def _keys(section: str) -> list[str]:
    return [f.name for f in fields(SECTIONS[section])]  # type: ignore[arg-type]


def _all_keys() -> list[str]:
    return [f"{section}.{key}" for section in SECTIONS for key in _keys(section)]


def _from_string(section: str, key: str, text: str) -> Any:
    """A string from the environment or ``--set`` converted by the type of the key's default.

    A string that does not convert is returned unchanged: the section's check then rejects it with the key and
    the expected range in the message, exactly as for a wrong value of the right type.
    """
    kind = type(next(f.default for f in fields(SECTIONS[section]) if f.name == key))  # type: ignore[arg-type]
    if kind is tuple:
        return tuple(item.strip() for item in text.split(",") if item.strip())
    if kind is bool:
        lowered = text.strip().lower()
        return True if lowered in _TRUE else False if lowered in _FALSE else text
    if kind is int:
        try:
            return int(text.strip())
        except ValueError:
            return text
    if kind is float:
        try:
            return float(text.strip())
        except ValueError:
            return text
    return text


def _read_file(path: Path, values: dict[str, dict[str, Any]], sources: dict[str, str]) -> None:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory, not a file")
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    for section, table in document.items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown section [{section}] in {path}{_suggest(section, list(SECTIONS))}")
        if not isinstance(table, dict):
            raise ConfigError(f"{section} must be a table [{section}] in {path}, got {table!r}")
        known = _keys(section)
        for key, value in table.items():
            if key not in known:
                raise ConfigError(f"unknown key {section}.{key} in {path}{_suggest(f'{section}.{key}', _all_keys())}")
            values[section][key] = value
            sources[f"{section}.{key}"] = str(path)


def _env_names() -> dict[str, tuple[str, str]]:
    return {f"{ENV_PREFIX}{s.upper()}_{k.upper()}": (s, k) for s in SECTIONS for k in _keys(s)}


def _apply_env(env: Mapping[str, str], values: dict[str, dict[str, Any]], sources: dict[str, str]) -> None:
    names = _env_names()
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        if name in names:
            section, key = names[name]
            values[section][key] = _from_string(section, key, env[name])
            sources[f"{section}.{key}"] = name
            continue
        if name in _IGNORED_ENV or name.startswith(_IGNORED_ENV_PREFIXES):
            continue
        # Only SEQMON_<SECTION>_<KEY>-shaped names are checked, so a plain SEQMON_<WORD> stays free for other uses.
        if "_" in name[len(ENV_PREFIX) :]:
            raise ConfigError(f"unknown environment variable {name}{_suggest(name, list(names))}")


def _apply_overrides(overrides: Sequence[str], values: dict[str, dict[str, Any]], sources: dict[str, str]) -> None:
    for item in overrides:
        dotted, sep, text = item.partition("=")
        dotted = dotted.strip()
        if not sep or "." not in dotted:
            # The value is not echoed: it may be a password.
            raise ConfigError(f"--set expects section.key=value, got {dotted!r} without '=' or section")
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or key not in _keys(section):
            raise ConfigError(f"unknown key {dotted} in --set{_suggest(dotted, _all_keys())}")
        # Stripped: `--set "kafka.group_id = x"` means "x".
        values[section][key] = _from_string(section, key, text.strip())
        sources[dotted] = f"--set {dotted}"


def load_settings(
    path: str | Path | None,
    env: Mapping[str, str] = os.environ,
    overrides: Sequence[str] = (),
) -> Settings:
    """Settings from the defaults, the TOML file at ``path``, ``SEQMON_<SECTION>_<KEY>`` variables and overrides.

    Parameters
    ----------
    path : str, Path or None
        TOML file; None = defaults only.  A missing or unparsable file is a ConfigError naming it.
    env : mapping, default ``os.environ``
        Environment: ``SEQMON_KAFKA_BOOTSTRAP_SERVERS`` sets ``kafka.bootstrap_servers``; lists are comma-separated.
        Any other ``SEQMON_<A>_<B>`` variable is an error, except ``SEQMON_TEST_*`` and ``SEQMON_HDFS_DIR``.
    overrides : sequence of str
        ``"section.key=value"`` strings (the CLI's ``--set``), applied last, in order.

    Raises
    ------
    ConfigError
        On any unknown key or invalid value; the message names the key and, when not a default, where it was set.
    """
    values: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    sources: dict[str, str] = {}
    if path is not None:
        _read_file(Path(path), values, sources)
    _apply_env(env, values, sources)
    _apply_overrides(overrides, values, sources)
    try:
        return Settings(**{section: cls(**values[section]) for section, cls in SECTIONS.items()})
    except ConfigError as exc:
        where = [(key, sources[key]) for key in getattr(exc, "keys", ()) if key in sources]
        if not where:
            raise
        if len(where) == 1 and len(exc.keys) == 1:  # type: ignore[attr-defined]
            suffix = f"from {where[0][1]}"
        else:
            suffix = "; ".join(f"{key} from {source}" for key, source in where)
        raise _error(f"{exc} ({suffix})", *exc.keys) from None  # type: ignore[attr-defined]
