"""The changelog topic: window state kept in Kafka itself, so that it moves with its partition.

A compacted topic holds, under key ``<topic>/<partition>``, the latest :class:`~monitor.partials.PartitionState` of
every partition (partial windows, watermark and the next offset they cover), and under ``<topic>/published`` the
topic's :class:`~monitor.partials.TopicMarker`.  Compaction keeps the latest record per key, so the topic stays about
as large as the open state of the whole fleet, whatever its age.

The guarantee, without Kafka transactions: **each record is counted in exactly one published window, or counted
late.**  State and offset travel in one record, so any record read back is consistent on its own: a daemon that
restores it seeks to its offset and reads again exactly the records it does not cover.  Writes are acknowledged by
every in-sync replica (``acks=all``, idempotent producer) before the group's offsets are committed; the committed
offsets only serve lag monitoring and partitions that have no state yet.  A daemon killed before a write loses
nothing but the work since its last write, which its successor repeats.  Results are published *before* the marker
that says they are, under the key ``<topic>/<window start ms>``; a closing daemon killed between the two publishes
the same windows again with the same keys and the same figures, so a compacted results topic (and any reader keyed
by window) holds one record per window.

:class:`Changelog` is the Kafka shell around the pure :mod:`monitor.partials`: it creates or checks the topic, writes
records and waits for their acknowledgement, and keeps a reading of the latest record per key that it brings up to
date on demand (:meth:`Changelog.refresh`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
)

from monitor.errors import ConfigError, KafkaAccessError, StateError
from monitor.partials import (
    PartitionState,
    TopicMarker,
    decode_record,
    encode_marker,
    encode_state,
    marker_key,
    parse_key,
    state_key,
)
from monitor.source import kafka_access
from monitor.window import WindowSettings

__all__ = ["Changelog", "ChangelogError", "MAX_RECORD_BYTES"]

log = logging.getLogger(__name__)

#: Largest state record accepted, bytes; the topic is created with this ``max.message.bytes``.  A partition state is
#: some kilobytes per thousand sketch buckets of its open windows (README, "Window state in Kafka").
MAX_RECORD_BYTES = 8 * 1024 * 1024

#: Topic settings the changelog is created with: compaction keeps the latest record per key; short segments and a
#: low dirty ratio let the cleaner run often, so a restore reads little more than the latest records.
TOPIC_CONFIGS = {
    "cleanup.policy": "compact",
    "segment.ms": str(10 * 60 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
    "max.message.bytes": str(MAX_RECORD_BYTES),
}

#: The setting that names the changelog topic, for error messages.
SETTING = "state.changelog_topic"

# How often, and how far apart, a topic's settings are read before a non-compacted topic (or one whose settings the
# broker does not show) is refused.
_CONFIG_LOOKS = 5
_CONFIG_LOOK_PAUSE_S = 0.5

# Settings of the connection that the changelog's clients share; everything else is the client's own.
_CONNECTION_KEYS = (
    "bootstrap_servers", "client_id", "security_protocol", "sasl_mechanism", "sasl_plain_username",
    "sasl_plain_password", "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname", "request_timeout_ms",
)


class ChangelogError(StateError):
    """The changelog topic is unusable (not compacted, missing) or a write was not acknowledged."""


def _connection(config: dict) -> dict:
    unknown = set(config) - set(_CONNECTION_KEYS)
    if unknown:
        raise ConfigError(f"changelog connection setting(s) {', '.join(sorted(unknown))} not understood")
    if not config.get("bootstrap_servers"):
        raise ConfigError("the changelog needs bootstrap_servers")
    return dict(config)


def _topic_config(admin: KafkaAdminClient, topic: str) -> dict[str, str] | None:
    """A topic's effective settings, from either shape kafka-python's describe_configs returns; None if the broker
    gave none (a user without DESCRIBE_CONFIGS on the topic, or a broker that does not know the topic yet)."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, topic)]
    try:
        result = admin.describe_configs(resources, config_filter="all")  # kafka-python 3: defaults included
    except TypeError:
        result = admin.describe_configs(resources)  # kafka-python 2 returns every setting
    if isinstance(result, dict):  # kafka-python 3
        # It drops the per-topic error code; with defaults included a topic always has settings, so none is an error.
        entries = result.get("topic", {}).get(topic, {})
        return {key: (value or {}).get("value") for key, value in entries.items()} or None
    out = {}
    for response in result:  # kafka-python 2: DescribeConfigsResponse objects
        for resource in response.resources:
            if resource[0]:  # error code
                return None
            for entry in resource[4]:
                out[entry[0]] = entry[1]
    return out


class Changelog:
    """Reader and writer of one changelog topic for one bundle and window geometry.

    Parameters
    ----------
    connection : dict
        kafka-python connection settings: ``bootstrap_servers`` and optionally ``client_id``, ``security_protocol``,
        the ``sasl_*`` and ``ssl_*`` keys, ``request_timeout_ms``.
    topic : str
        The changelog topic, one per consumer group (two groups reading the same topics keep separate windows).
    bundle : str
        Content hash of the bundle scoring now: written into every record, and a record of another bundle is
        refused when read (:class:`~monitor.errors.StateError`).
    settings : WindowSettings
        Window geometry, likewise written and checked.
    """

    def __init__(self, connection: dict, topic: str, bundle: str, settings: WindowSettings) -> None:
        if not topic:
            raise ConfigError("the changelog topic name is empty")
        self._connection = _connection(connection)
        self.topic = topic
        self.bundle = bundle
        self.settings = settings
        self._producer: KafkaProducer | None = None
        self._consumer: KafkaConsumer | None = None
        self._latest: dict[str, bytes] = {}
        self._decoded: dict[str, PartitionState | TopicMarker] = {}
        # A refused right, raised again by every later read or write: nothing is written after a refusal.
        self._refused: KafkaAccessError | None = None
        #: Records and bytes (compressed values) written and acknowledged, since this object was made.
        self.records_written = 0
        self.bytes_written = 0

    # ------------------------------------------------------------------ topic
    def ensure_topic(self, partitions: int = 1, replication_factor: int = 1, timeout_s: float = 30.0) -> bool:
        """Create the topic (compacted, :data:`TOPIC_CONFIGS`) if it does not exist, or check that it is compacted.

        Returns whether it was created.  Raises :class:`ChangelogError` if an existing topic is not compacted: a
        deleting topic would lose the state of quiet partitions once their records age out;
        :class:`~monitor.errors.KafkaAccessError` if the user may not create a missing topic or read its settings."""
        admin = KafkaAdminClient(**{"request_timeout_ms": int(timeout_s * 1000), **self._connection})
        try:
            if self.topic not in set(admin.list_topics()):
                try:
                    admin.create_topics(
                        [NewTopic(self.topic, partitions, replication_factor, topic_configs=dict(TOPIC_CONFIGS))],
                        timeout_ms=int(timeout_s * 1000),
                    )
                    log.info("created changelog topic %s (%d partitions, compacted)", self.topic, partitions)
                    return True  # the broker accepted the settings with the topic
                except TopicAlreadyExistsError:
                    pass  # another daemon created it first
                except (TopicAuthorizationFailedError, ClusterAuthorizationFailedError):
                    raise kafka_access.create_not_authorized(self._connection, self.topic, SETTING) from None
            # A topic created moments ago can still show the broker's default settings, or none on a broker that does
            # not know it yet: look again before refusing.
            for attempt in range(_CONFIG_LOOKS):
                config = _topic_config(admin, self.topic)
                policy = (config or {}).get("cleanup.policy") or ""
                if "compact" in policy.split(","):
                    return False
                if attempt + 1 < _CONFIG_LOOKS:
                    time.sleep(_CONFIG_LOOK_PAUSE_S)
            if config is None:
                raise kafka_access.describe_configs_not_authorized(self._connection, self.topic, SETTING)
            raise ChangelogError(
                f"changelog topic {self.topic} has cleanup.policy={policy or 'delete'}: window state needs a "
                "compacted topic (cleanup.policy=compact); set it, or name a new topic"
            )
        except KafkaError as exc:
            raise ChangelogError(f"changelog topic {self.topic} cannot be created or checked: {exc}") from exc
        finally:
            admin.close()

    # ------------------------------------------------------------------ writing
    def _producer_client(self) -> KafkaProducer:
        if self._producer is None:
            # Idempotent with acks=all: a retried send is neither duplicated nor reordered, so the latest record of a
            # key is the state written last.
            self._producer = KafkaProducer(
                **self._connection, acks="all", enable_idempotence=True, max_request_size=MAX_RECORD_BYTES,
                linger_ms=5,
            )
        return self._producer

    def _send_all(self, records: list[tuple[str, bytes]], timeout_s: float) -> None:
        if self._refused is not None:
            raise self._refused
        for key, value in records:
            if len(value) > MAX_RECORD_BYTES:
                raise ChangelogError(
                    f"window state {key} is {len(value):,} bytes, over the changelog's limit of {MAX_RECORD_BYTES:,}: "
                    "shorter windows or a coarser sketch_alpha keep it smaller"
                )
        producer = self._producer_client()
        futures = [(key, producer.send(self.topic, key=key.encode("utf-8"), value=value)) for key, value in records]
        producer.flush(timeout=timeout_s)
        for key, future in futures:
            try:
                future.get(timeout=timeout_s)
            except TopicAuthorizationFailedError:
                self._refused = kafka_access.write_not_authorized(self._connection, self.topic, SETTING)
                raise self._refused from None
            except KafkaError as exc:
                raise ChangelogError(f"window state {key} was not acknowledged by changelog {self.topic}: {exc}") \
                    from exc
        self._written(records)

    def _written(self, records: list[tuple[str, bytes]]) -> None:
        for key, value in records:  # what this daemon wrote is the latest, unless someone writes after it
            self._latest[key] = value
            self._decoded.pop(key, None)
        self.records_written += len(records)
        self.bytes_written += sum(len(value) for _, value in records)

    def write_states(self, states: Iterable[PartitionState], timeout_s: float = 30.0) -> None:
        """Write partition states and return once every one is acknowledged (then commit the group's offsets);
        :class:`ChangelogError` if any is not."""
        records = [(state_key(s.topic, s.partition), encode_state(s, self.bundle, self.settings)) for s in states]
        if records:
            self._send_all(records, timeout_s)

    def write_marker(self, marker: TopicMarker, timeout_s: float = 30.0) -> None:
        """Write a topic's published-through marker (after its windows are published) and wait for it."""
        self._send_all([(marker_key(marker.topic), encode_marker(marker, self.bundle, self.settings))], timeout_s)

    # ------------------------------------------------------------------ reading
    def _consumer_client(self) -> KafkaConsumer:
        if self._consumer is None:
            consumer = KafkaConsumer(
                **self._connection, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                max_partition_fetch_bytes=MAX_RECORD_BYTES, fetch_max_bytes=4 * MAX_RECORD_BYTES,
            )
            partitions = consumer.partitions_for_topic(self.topic)
            if not partitions:
                consumer.close()
                raise ChangelogError(f"changelog topic {self.topic} does not exist (ensure_topic creates it)")
            assignment = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(assignment)
            consumer.seek_to_beginning(*assignment)
            self._consumer = consumer
        return self._consumer

    def refresh(self, timeout_s: float = 60.0) -> int:
        """Read the changelog up to its end as of now, keeping the latest record per key; returns records read.

        The first call reads the whole (compacted) topic; later calls read what was written since.  A user without
        READ on the topic is refused at the first record there is to read (:class:`~monitor.errors.KafkaAccessError`):
        at start if the topic holds any, else after the first write."""
        with self._refusals():
            return self._refresh(timeout_s)

    def _refresh(self, timeout_s: float) -> int:
        if self._refused is not None:
            raise self._refused
        consumer = self._consumer_client()
        assignment = list(consumer.assignment())
        end = consumer.end_offsets(assignment)
        deadline = time.monotonic() + timeout_s
        read = 0
        while any(consumer.position(tp) < end[tp] for tp in assignment):
            if time.monotonic() > deadline:
                raise ChangelogError(f"changelog {self.topic} could not be read to its end within {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=200, max_records=10_000).values():
                for record in records:
                    read += 1
                    if record.key is None:
                        continue
                    key = record.key.decode("utf-8", errors="replace")
                    try:
                        parse_key(key)
                    except ValueError:
                        log.warning("changelog %s: ignoring a record with key %r, not window state", self.topic, key)
                        continue
                    self._decoded.pop(key, None)
                    if record.value is None:  # a tombstone: the key was deleted
                        self._latest.pop(key, None)
                    else:
                        self._latest[key] = record.value
        return read

    @contextlib.contextmanager
    def _refusals(self):
        """kafka-python's refusal to read a topic, as one sentence naming it (and the setting, if it is the changelog);
        retrying cannot heal it."""
        try:
            yield
        except TopicAuthorizationFailedError as exc:
            denied = kafka_access.denied_topics(exc) or [self.topic]
            setting = SETTING if denied == [self.topic] else ""
            self._refused = kafka_access.read_not_authorized(self._connection, denied, setting)
            raise self._refused from None

    def _get(self, key: str) -> PartitionState | TopicMarker | None:
        if key not in self._latest:
            return None
        if key not in self._decoded:
            self._decoded[key] = decode_record(
                self._latest[key], self.bundle, self.settings, where=f"changelog {self.topic}, key {key}"
            )
        return self._decoded[key]

    def partition_state(self, topic: str, partition: int) -> PartitionState | None:
        """The latest state of a partition as of the last :meth:`refresh` (or own write); None if it has none.

        :class:`~monitor.errors.StateError` if the record is of another bundle, version or window geometry."""
        key = state_key(topic, partition)
        state = self._get(key)
        if state is not None and not isinstance(state, PartitionState):
            raise StateError(f"changelog {self.topic}, key {key} holds a {type(state).__name__}, not a partition state")
        return None if state is None else state.copy()

    def topic_states(self, topic: str) -> dict[int, PartitionState]:
        """The latest state of every partition of ``topic`` that has one, by partition."""
        out = {}
        for key in list(self._latest):
            name, partition = parse_key(key)
            if name == topic and partition is not None:
                out[partition] = self.partition_state(topic, partition)
        return out

    def marker(self, topic: str) -> TopicMarker | None:
        """The topic's latest published-through marker, or None before its first publication."""
        key = marker_key(topic)
        marker = self._get(key)
        if marker is not None and not isinstance(marker, TopicMarker):
            raise StateError(f"changelog {self.topic}, key {key} holds a {type(marker).__name__}, not a marker")
        return marker

    def partitions_of(self, topic: str) -> list[int]:
        """Every partition of ``topic`` from the cluster's metadata (refreshed by the client every few minutes, so a
        topic given more partitions holds back its windows until the new ones have a state); [] if unknown."""
        return sorted(self._consumer_client().partitions_for_topic(topic) or ())

    def end_offsets(self, topic: str, partitions: Iterable[int]) -> dict[int, int]:
        """The end offset (next offset to be written) of these partitions of ``topic``, asked of the cluster now."""
        wanted = [TopicPartition(topic, int(p)) for p in partitions]
        if not wanted:
            return {}
        try:
            with self._refusals():
                ends = self._consumer_client().end_offsets(wanted)
        except KafkaError as exc:
            raise ChangelogError(f"end offsets of {topic} could not be read: {exc}") from exc
        return {tp.partition: int(end) for tp, end in ends.items()}

    def topics(self) -> list[str]:
        """Topics with any record in the changelog, sorted."""
        return sorted({parse_key(key)[0] for key in self._latest})

    # ------------------------------------------------------------------ life cycle
    def close(self) -> None:
        """Flush what is pending and close both clients. Idempotent."""
        producer, self._producer = self._producer, None
        consumer, self._consumer = self._consumer, None
        try:
            if producer is not None:
                producer.flush()
                producer.close()
        finally:
            if consumer is not None:
                consumer.close()
