"""Kafka source on confluent-kafka (librdkafka): the ``monitor.source.Source`` protocol, with record parsing done in C.

kafka-python parses fetched record batches in pure Python, which caps the daemon at ~75k records/s; librdkafka
fetches and parses on its own threads and hands over ready ``Message`` objects, so building a ``RecordBatch`` costs a
few C-level accessor calls per record.

Threading: librdkafka serves rebalance callbacks on the thread that calls ``consume`` (here: inside ``poll`` or
``close``), so ``on_assign`` / ``on_revoke`` may use every method here (``seek``, ``commit``, ``committed``,
``positions``, ``assignment``) but must not call ``poll`` or ``close``. Starting offsets are set the librdkafka way: the
wrapper runs the user's ``on_assign``, collects the offsets asked for through ``seek`` meanwhile, and then assigns the
partitions with those offsets (a partition not sought starts at its committed offset, else per
``auto_offset_reset``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import numpy as np
from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from monitor.errors import ConfigError, KafkaAccessError, MonitorError
from monitor.pipeline import RecordBatch
from monitor.source import kafka_access
from monitor.source.kafka_base import KafkaSourceBase, PartitionCallback, TopicPartitionKey, sorted_keys

log = logging.getLogger(__name__)

# kafka-python keyword → librdkafka property. Values are passed unchanged except bootstrap_servers (list → "a,b").
_TRANSLATE = {
    "bootstrap_servers": "bootstrap.servers",
    "group_id": "group.id",
    "client_id": "client.id",
    "auto_offset_reset": "auto.offset.reset",
    "session_timeout_ms": "session.timeout.ms",
    "heartbeat_interval_ms": "heartbeat.interval.ms",
    "max_poll_interval_ms": "max.poll.interval.ms",
    "fetch_max_bytes": "fetch.max.bytes",
    "fetch_max_wait_ms": "fetch.wait.max.ms",
    "fetch_min_bytes": "fetch.min.bytes",
    "max_partition_fetch_bytes": "max.partition.fetch.bytes",
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "sasl_plain_username": "sasl.username",
    "sasl_plain_password": "sasl.password",
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
}
# kafka-python settings without a librdkafka counterpart here: poll's max_records caps a batch instead.
_IGNORED = frozenset({"max_poll_records"})
# Settings seqmon owns: offsets are committed by the daemon only, after its checkpoint.
_FORCED = {"enable.auto.commit": False, "enable.auto.offset.store": False}
# librdkafka refuses a fetch.max.bytes above receive.message.max.bytes - 512 (default 100 MB).
_RECEIVE_MAX_DEFAULT = 100_000_000
# librdkafka prefetches into its local queue until it holds queued.min.messages per partition (default 100,000) or
# queued.max.messages.kbytes (default 64 MiB). seqmon takes max_poll_records per poll, so a queue of that many per
# partition, within 16 MiB, keeps it fed and bounds the queue whatever the partition count.
_QUEUED_KBYTES_DEFAULT = 16 * 1024
# Bytes fetched per partition and request unless max_partition_fetch_bytes is given (librdkafka's default too). These
# bounds are checked before a fetch only, and every record of the answer is queued: one answer adds up to this many
# bytes per partition, and librdkafka spends ~400 bytes of memory per queued record whatever its size (the kbytes
# bound counts values only). With 10 MiB and records of ~20 bytes on the wire, 4 partitions queued 1.2-1.3 million
# records and the daemon's RSS was 720 MiB; with 1 MiB, 110,000-140,000 and 250 MiB (README "End to end").
_PARTITION_FETCH_DEFAULT = 1024 * 1024
# Once the queue is full, librdkafka waits this long before it looks again (its default, 1000 ms, held a consumer
# with 1 MiB fetches to ~145,000 records/s: the queue ran dry within the second); 50 ms gives 400,000-600,000.
_FETCH_QUEUE_BACKOFF_MS_DEFAULT = 50

_VALUE = Message.value
_TIMESTAMP = Message.timestamp
_OFFSET = Message.offset
_PARTITION = Message.partition
_TOPIC = Message.topic
_ERROR = Message.error


class KafkaSourceError(MonitorError):
    """The Kafka consumer hit a fatal error and cannot go on."""


def _access_error(err: KafkaError, config: dict, topic: str | None = None) -> KafkaAccessError | None:
    """The ``KafkaAccessError`` of a refusal that retrying cannot heal; None for any other error.

    librdkafka reports these as ordinary, retriable errors and retries them forever.
    """
    code = err.code()
    if code == KafkaError._AUTHENTICATION:
        return kafka_access.authentication_failed(config, err.str())
    if code == KafkaError._SSL:
        return kafka_access.tls_failed(config, err.str())
    if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
        return kafka_access.group_not_authorized(config)
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        return kafka_access.read_not_authorized(config, [topic] if topic else [])
    return None


def translate_config(consumer_config: dict) -> dict:
    """librdkafka properties of a kafka-python style consumer config (dotted keys pass through as they are).

    Auto commit and auto offset store are forced off; an unknown kafka-python key is a ``ConfigError``, so that a
    setting is never dropped silently.
    """
    out: dict = {}
    for key, value in consumer_config.items():
        if key in _IGNORED or value is None:
            continue
        if key == "enable_auto_commit":
            if value:
                raise ConfigError("Kafka consumer setting enable_auto_commit=True is not allowed: seqmon commits itself")
            continue
        if key in ("key_deserializer", "value_deserializer"):
            raise ConfigError(f"Kafka consumer setting {key} is not allowed: seqmon reads bytes")
        if key in _TRANSLATE:
            name = _TRANSLATE[key]
            if key == "bootstrap_servers" and not isinstance(value, str):
                value = ",".join(value)
            out[name] = value
        elif "." in key:
            out[key] = value
        else:
            raise ConfigError(f"Kafka consumer setting {key} has no confluent-kafka counterpart in seqmon")
    if "queued.min.messages" not in out:
        out["queued.min.messages"] = int(consumer_config.get("max_poll_records") or 10_000)
    out.setdefault("queued.max.messages.kbytes", _QUEUED_KBYTES_DEFAULT)
    out.setdefault("fetch.queue.backoff.ms", _FETCH_QUEUE_BACKOFF_MS_DEFAULT)
    for key, value in _FORCED.items():
        if key in out and out[key] != value:
            raise ConfigError(f"Kafka consumer setting {key}={out[key]!r} is not allowed: seqmon sets {value!r}")
        out[key] = value
    fetch_max = out.get("fetch.max.bytes")
    if "max.partition.fetch.bytes" not in out:
        limit = fetch_max if isinstance(fetch_max, int) else _PARTITION_FETCH_DEFAULT
        out["max.partition.fetch.bytes"] = min(_PARTITION_FETCH_DEFAULT, limit)
    if isinstance(fetch_max, int) and fetch_max + 512 > _RECEIVE_MAX_DEFAULT and "receive.message.max.bytes" not in out:
        out["receive.message.max.bytes"] = fetch_max + 512
    return out


def messages_to_batch(messages: list) -> RecordBatch | None:
    """One ``RecordBatch`` of error-free ``Message`` s (tombstones as ``b""``); None when there are none."""
    n = len(messages)
    if not n:
        return None
    values = [v if v is not None else b"" for v in map(_VALUE, messages)]
    timestamps = np.fromiter([ts for _, ts in map(_TIMESTAMP, messages)], dtype=np.int64, count=n)
    offsets = np.fromiter(map(_OFFSET, messages), dtype=np.int64, count=n)
    partitions = np.fromiter(map(_PARTITION, messages), dtype=np.int32, count=n)
    topics = np.empty(n, dtype=object)
    topics[:] = list(map(_TOPIC, messages))
    return RecordBatch(values=values, timestamps_ms=timestamps, topics=topics, partitions=partitions, offsets=offsets)


class ConfluentSource(KafkaSourceBase):
    """Consumer-group source yielding RecordBatch through confluent-kafka; manual offset commits only.

    Same protocol and arguments as ``monitor.source.kafka_source.KafkaSource`` (see ``KafkaSourceBase``):
    ``consumer_config`` holds kafka-python style keyword settings (translated to librdkafka properties; dotted
    librdkafka names pass through). Subscribe to ``topics`` or to a regex ``pattern`` (anchored at the start, like
    ``re.match``).
    """

    def __init__(
        self,
        consumer_config: dict,
        topics: list[str] | None = None,
        pattern: str | None = None,
        on_assign: PartitionCallback | None = None,
        on_revoke: PartitionCallback | None = None,
        on_lost: PartitionCallback | None = None,
    ):
        super().__init__(consumer_config, topics, pattern, on_assign, on_revoke, on_lost)
        config = translate_config(consumer_config)
        config["error_cb"] = self._client_error
        config["logger"] = logging.getLogger(f"{__name__}.librdkafka")
        self._fatal: KafkaError | None = None
        self._user_config = consumer_config
        self._refused: KafkaAccessError | None = None
        self._lock = threading.Lock()
        self.errors = 0  # non-fatal consumer errors seen (logged, not raised)
        # Offsets asked for through seek() while on_assign runs, and the keys being assigned; None outside on_assign.
        self._pending_seeks: dict[TopicPartitionKey, int] | None = None
        self._pending_keys: list[TopicPartitionKey] = []
        try:
            self._consumer = Consumer(config)
        except KafkaException as exc:
            raise ConfigError(f"invalid Kafka consumer settings: {exc.args[0].str() if exc.args else exc}") from None
        try:
            if topics is not None:
                subscription = list(topics)
            else:
                subscription = [pattern if pattern.startswith("^") else f"^{pattern}"]
            self._consumer.subscribe(
                subscription, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
            )
        except BaseException:
            self._consumer.close()
            raise

    # --- callbacks (run on the thread inside poll / close) -----------------------------------------------------------

    def _client_error(self, err: KafkaError) -> None:
        refused = _access_error(err, self._user_config)
        if refused is not None:
            if self._refused is None:
                self._refused = refused
            return
        if err.fatal():
            self._fatal = err
            log.error("fatal Kafka consumer error: %s", err.str())
        else:
            with self._lock:
                self.errors += 1
            log.warning("Kafka consumer error: %s", err.str())

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = sorted_keys(partitions)
        self._pending_seeks, self._pending_keys = {}, keys
        try:
            if self._on_assign is not None and keys:
                self._on_assign(keys)
        finally:
            seeks, self._pending_seeks, self._pending_keys = self._pending_seeks, None, []
            # Assigned even when on_assign raised, so that librdkafka's rebalance state stays consistent.
            consumer.assign([TopicPartition(t, p, seeks.get((t, p), OFFSET_INVALID)) for t, p in keys])

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._given_up(consumer, partitions, self._on_revoke)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._given_up(consumer, partitions, self._on_lost)

    @staticmethod
    def _given_up(consumer: Consumer, partitions: list[TopicPartition], callback: PartitionCallback | None) -> None:
        """Partitions revoked or lost: the daemon's callback, then unassigned even if it raised (librdkafka's
        rebalance state must stay consistent)."""
        keys = sorted_keys(partitions)
        try:
            if callback is not None and keys:
                callback(keys)
        finally:
            consumer.unassign()

    # --- protocol ----------------------------------------------------------------------------------------------------

    def poll(self, timeout_ms: int, max_records: int) -> RecordBatch | None:
        """Records that arrived within ``timeout_ms`` (at most ``max_records``), as one batch; None if none did.

        Also drives group membership: rebalance callbacks run inside this call. A fatal client error raises
        ``KafkaSourceError``; other errors are logged and counted in ``errors``.
        """
        try:
            messages = self._consumer.consume(num_messages=max_records, timeout=timeout_ms / 1000)
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            refused = _access_error(err, self._user_config) if err is not None else None
            if refused is not None:
                raise refused from None
            if err is None or err.fatal():
                raise KafkaSourceError(f"the Kafka consumer failed: {err.str() if err else exc}") from exc
            self._count_error(err)
            return None
        if self._refused is not None:
            raise self._refused
        if self._fatal is not None:
            raise KafkaSourceError(f"the Kafka consumer failed: {self._fatal.str()}")
        if any(map(_ERROR, messages)):
            good = []
            for m in messages:
                err = m.error()
                if err is None:
                    good.append(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    continue
                elif (refused := _access_error(err, self._user_config, m.topic())) is not None:
                    raise refused
                elif err.fatal():
                    raise KafkaSourceError(f"the Kafka consumer failed: {err.str()}")
                else:
                    self._count_error(err, m)
            messages = good
        return messages_to_batch(messages)

    def _count_error(self, err: KafkaError, message: Message | None = None) -> None:
        with self._lock:
            self.errors += 1
        where = f" ({message.topic()}/{message.partition()})" if message is not None and message.topic() else ""
        log.warning("Kafka consumer error%s: %s", where, err.str())

    def assignment(self) -> list[TopicPartitionKey]:
        """Assigned partitions; inside ``on_assign``, the partitions being assigned."""
        if self._pending_seeks is not None:
            return list(self._pending_keys)
        return sorted_keys(self._consumer.assignment())

    def positions(self, timeout_ms: int = 1000) -> dict[TopicPartitionKey, int]:
        """Next offset to read per assigned partition; one whose position is not known yet (nothing read since the
        assignment) is left out. ``timeout_ms`` is unused: librdkafka knows positions locally."""
        assigned = self._consumer.assignment()
        if not assigned:
            return {}
        return {(tp.topic, tp.partition): tp.offset for tp in self._consumer.position(assigned) if tp.offset >= 0}

    def _seek(self, offsets: dict[TopicPartitionKey, int]) -> None:
        # Inside on_assign the offsets become the starting offsets of the assignment.
        if self._pending_seeks is not None:
            self._pending_seeks.update(offsets)
            return
        for (t, p), o in offsets.items():
            self._consumer.seek(TopicPartition(t, p, o))

    def committed(self, keys: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int | None]:
        """The group's committed offset per partition (None: never committed); one request for all."""
        keys = list(keys)
        if not keys:
            return {}
        got = self._consumer.committed([TopicPartition(t, p) for t, p in keys], timeout=10)
        for tp in got:
            if tp.error is not None and (refused := _access_error(tp.error, self._user_config, tp.topic)):
                raise refused
            if tp.error is not None:
                raise KafkaSourceError(f"committed offset of {tp.topic}/{tp.partition} unavailable: {tp.error.str()}")
        return {(tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None) for tp in got}

    def _commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            result = self._consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            refused = _access_error(err, self._user_config) if err is not None else None
            if refused is not None:
                raise refused from None
            raise
        failed = [tp for tp in result or () if tp.error is not None]
        if failed:
            tp = failed[0]
            raise KafkaSourceError(
                f"{len(failed)} offset commit(s) failed; first {tp.topic}/{tp.partition}: {tp.error.str()}"
            )

    def _end_offsets(self, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        return {
            (t, p): self._consumer.get_watermark_offsets(TopicPartition(t, p), timeout=5, cached=False)[1] for t, p in keys
        }

    def _partition_count(self, topic: str) -> int:
        found = self._consumer.list_topics(topic, timeout=5).topics.get(topic)
        return 0 if found is None or found.error is not None else len(found.partitions)

    def _close(self) -> None:
        self._consumer.close()
