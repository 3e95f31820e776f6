"""Kafka source on kafka-python: a consumer group handing over ``RecordBatch`` es, with manual offset commits only.

What both Kafka sources share is in ``monitor.source.kafka_base``; the producer of dead letters and results is
``monitor.export.sink.KafkaSink`` (still importable from here).

Threading (kafka-python 3): the client runs its network IO loop on a background thread and calls rebalance listeners
on that thread, where any blocking client call (commit, committed, position, end_offsets) raises ``RuntimeError``.
``KafkaSource`` therefore runs ``on_assign`` / ``on_revoke`` on a short-lived worker thread while the IO loop awaits
it, so the callbacks may use every method here (``seek``, ``commit``, ``committed``, ``positions``), not only the
non-blocking ones. They must not call ``poll`` or ``close``. They still run during ``poll`` (or ``close``), so the
caller's thread is blocked in that call meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from itertools import chain
from operator import itemgetter

import numpy as np
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from monitor.errors import MonitorError
from monitor.export.sink import REASON_HEADER, SOURCE_HEADER, KafkaSink, KafkaSinkError
from monitor.pipeline import RecordBatch
from monitor.source import kafka_access
from monitor.source.kafka_base import KafkaSourceBase, PartitionCallback, TopicPartitionKey, forced, sorted_keys

__all__ = [
    "REASON_HEADER", "SOURCE_HEADER", "KafkaSink", "KafkaSinkError", "KafkaSource", "PartitionCallback",
    "TopicPartitionKey", "records_to_batch",
]

try:  # kafka-python >= 3: listeners run on the IO thread and may be coroutines
    from kafka import AsyncConsumerRebalanceListener as _ListenerBase
    from kafka.future import Future as _KafkaFuture

    _ASYNC_LISTENER = True
except ImportError:  # kafka-python 2: listeners run inside poll() on the caller's thread
    from kafka import ConsumerRebalanceListener as _ListenerBase

    _ASYNC_LISTENER = False

log = logging.getLogger(__name__)

# ConsumerRecord is a namedtuple; C-level itemgetters are the cheapest per-record access.
_OFFSET = itemgetter(3)
_TIMESTAMP = itemgetter(4)
_VALUE = itemgetter(7)


def records_to_batch(records: dict) -> RecordBatch | None:
    """One ``RecordBatch`` over every partition of a ``KafkaConsumer.poll`` result; None when it holds no record.

    Tombstones (None values) become ``b""``. Topic and partition are constant per list, so only value, timestamp and
    offset are read per record, each through a C-level getter.
    """
    parts = [(tp, recs) for tp, recs in records.items() if recs]
    if not parts:
        return None
    counts = [len(recs) for _, recs in parts]
    n = sum(counts)
    values = [v if v is not None else b"" for v in map(_VALUE, chain.from_iterable(recs for _, recs in parts))]
    timestamps = np.fromiter(map(_TIMESTAMP, chain.from_iterable(recs for _, recs in parts)), dtype=np.int64, count=n)
    offsets = np.fromiter(map(_OFFSET, chain.from_iterable(recs for _, recs in parts)), dtype=np.int64, count=n)
    if len(parts) == 1:
        tp = parts[0][0]
        topics = np.full(n, tp.topic, dtype=object)
        partitions = np.full(n, tp.partition, dtype=np.int32)
    else:
        names = np.empty(len(parts), dtype=object)
        names[:] = [tp.topic for tp, _ in parts]
        topics = np.repeat(names, counts)
        partitions = np.repeat(np.array([tp.partition for tp, _ in parts], dtype=np.int32), counts)
    return RecordBatch(values=values, timestamps_ms=timestamps, topics=topics, partitions=partitions, offsets=offsets)


class _Listener(_ListenerBase):
    """Forwards rebalances to the user's callbacks as sorted ``(topic, partition)`` lists; empty ones are skipped."""

    def __init__(self, source: KafkaSource):
        self._source = source

    if _ASYNC_LISTENER:

        async def on_partitions_revoked(self, revoked):
            await self._call(self._source._on_revoke, revoked)

        async def on_partitions_assigned(self, assigned):
            await self._call(self._source._on_assign, assigned)

        async def on_partitions_lost(self, lost):
            await self._call(self._source._on_lost, lost)

        async def _call(self, callback, partitions):
            keys = sorted_keys(partitions)
            if callback is None or not keys:
                return
            # Run the callback off the IO thread, so that it may block on the client, and resolve the future on the
            # IO thread (call_soon_threadsafe also wakes the loop): Future callbacks are not thread-safe.
            net = self._source._consumer._net
            done = _KafkaFuture()

            source = self._source

            def work():
                try:
                    callback(keys)
                except MonitorError as e:
                    # A user error (a refused write, say): raised as itself by poll() or close(), not wrapped in a
                    # KafkaError after the client logs a traceback.
                    if source._callback_error is None:
                        source._callback_error = e
                    net.call_soon_threadsafe(lambda: done.success(None))
                except BaseException as e:  # handed to the IO loop, which raises it from poll() as a KafkaError
                    net.call_soon_threadsafe(lambda exc=e: done.failure(exc))
                else:
                    net.call_soon_threadsafe(lambda: done.success(None))

            threading.Thread(target=work, name="seqmon-rebalance", daemon=True).start()
            await done

    else:

        def on_partitions_revoked(self, revoked):
            self._call(self._source._on_revoke, revoked)

        def on_partitions_assigned(self, assigned):
            self._call(self._source._on_assign, assigned)

        def _call(self, callback, partitions):
            keys = sorted_keys(partitions)
            if callback is not None and keys:
                callback(keys)


class KafkaSource(KafkaSourceBase):
    """Consumer-group source yielding RecordBatch; manual offset commits only (see ``KafkaSourceBase``).

    ``consumer_config`` holds KafkaConsumer keyword settings; auto commit and deserializers are forced off.
    Subscribe to ``topics`` or to a regex ``pattern``.
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
        config = forced(
            consumer_config,
            {"enable_auto_commit": False, "key_deserializer": None, "value_deserializer": None},
            "Kafka consumer",
        )
        self._config = config
        self._topics = list(topics or ())
        self._callback_error: MonitorError | None = None
        self._consumer = kafka_access.built(KafkaConsumer, config)
        try:
            if topics is not None:
                self._consumer.subscribe(topics=list(topics), listener=_Listener(self))
                # Have the topics' partitions before the first join. kafka-python 3.0 may drop the metadata update
                # that subscribe() requests (when another metadata request is in flight); a leader that joins
                # without the partitions assigns nothing and may not notice until the next periodic refresh
                # (metadata_max_age_ms, 5 minutes by default).
                for topic in topics:
                    if not self._consumer.partitions_for_topic(topic):
                        log.warning("Kafka topic %s does not exist (yet): no partitions to read", topic)
            else:
                self._consumer.subscribe(pattern=pattern, listener=_Listener(self))
        except BaseException:
            self._consumer.close(autocommit=False)
            raise

    def poll(self, timeout_ms: int, max_records: int) -> RecordBatch | None:
        """Records that arrived within ``timeout_ms`` (at most ``max_records``), as one batch; None if none did.

        Also drives group membership: rebalance callbacks run inside this call.
        """
        with kafka_access.kafka_python_refusals(self._config, self._topics):
            records = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        if self._callback_error is not None:
            raise self._callback_error  # before any record of this poll is handed over
        # kafka-python only logs a subscribed topic the user may not read, and then reads nothing, forever.
        cluster = getattr(getattr(self._consumer, "_client", None), "cluster", None)
        denied = set(getattr(cluster, "unauthorized_topics", ())) & set(self._topics)
        if denied:
            raise kafka_access.read_not_authorized(self._config, sorted(denied))
        return records_to_batch(records)

    def assignment(self) -> list[TopicPartitionKey]:
        return sorted_keys(self._consumer.assignment())

    def positions(self, timeout_ms: int = 1000) -> dict[TopicPartitionKey, int]:
        """Next offset to read per assigned partition. A partition whose position is not known yet (just assigned,
        its committed offset not fetched within ``timeout_ms``) is left out."""
        out = {}
        for tp in sorted(self._consumer.assignment()):
            offset = self._consumer.position(tp, timeout_ms=timeout_ms)
            if offset is not None:
                out[(tp.topic, tp.partition)] = offset
        return out

    def committed(self, keys: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int | None]:
        """The group's committed offset per partition (None: never committed); one request per partition."""
        with kafka_access.kafka_python_refusals(self._config, self._topics):
            return {(t, p): self._consumer.committed(TopicPartition(t, p)) for t, p in keys}

    def _seek(self, offsets: dict[TopicPartitionKey, int]) -> None:
        for (t, p), offset in offsets.items():
            self._consumer.seek(TopicPartition(t, p), offset)

    def _commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        with kafka_access.kafka_python_refusals(self._config, self._topics):
            self._consumer.commit(
                {TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
            )

    def _end_offsets(self, keys: list[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        ends = self._consumer.end_offsets([TopicPartition(t, p) for t, p in keys])
        return {(tp.topic, tp.partition): end for tp, end in ends.items()}

    def _partition_count(self, topic: str) -> int:
        return len(self._consumer.partitions_for_topic(topic))

    def _close(self) -> None:
        # What on_revoke raises during close is raised here as a KafkaError, after the consumer is closed.
        try:
            self._consumer.close(autocommit=False)
        except BaseException:
            # When on_revoke raises during close, kafka-python raises before closing its network client, whose IO
            # thread would live on.
            client = getattr(self._consumer, "_client", None)
            if client is not None:
                client.close()
            raise
        if self._callback_error is not None:
            raise self._callback_error
