"""Kafka source and sink of the daemon: a consumer-group source that hands over ``RecordBatch`` es with manual offset
commits only, and a producer for the dead-letter and results topics.

Threading (kafka-python 3): the client runs its network IO loop on a background thread and calls rebalance listeners
on that thread, where any blocking client call (commit, committed, position, end_offsets) raises ``RuntimeError``.
``KafkaSource`` therefore runs ``on_assign`` / ``on_revoke`` on a short-lived worker thread while the IO loop awaits
it, so the callbacks may use every method here (``seek``, ``commit``, ``committed``, ``positions``), not only the
non-blocking ones. They must not call ``poll`` or ``close``. They still run during ``poll`` (or ``close``), so the
caller's thread is blocked in that call meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterable
from itertools import chain
from operator import itemgetter

import numpy as np
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kafka_errors
from kafka.structs import OffsetAndMetadata

from monitor import kafka_access
from monitor.errors import ConfigError, MonitorError
from monitor.export import json_safe
from monitor.pipeline import RecordBatch
from monitor.source import check_subscription

try:  # kafka-python >= 3: listeners run on the IO thread and may be coroutines
    from kafka import AsyncConsumerRebalanceListener as _ListenerBase
    from kafka.future import Future as _KafkaFuture

    _ASYNC_LISTENER = True
except ImportError:  # kafka-python 2: listeners run inside poll() on the caller's thread
    from kafka import ConsumerRebalanceListener as _ListenerBase

    _ASYNC_LISTENER = False

log = logging.getLogger(__name__)

TopicPartitionKey = tuple[str, int]
PartitionCallback = Callable[[list[TopicPartitionKey]], None]

#: Headers of a dead letter: why the record was refused, and where it came from ("topic/partition/offset").
REASON_HEADER = "seqmon-reason"
SOURCE_HEADER = "seqmon-source"

# ConsumerRecord is a namedtuple; C-level itemgetters are the cheapest per-record access.
_OFFSET = itemgetter(3)
_TIMESTAMP = itemgetter(4)
_VALUE = itemgetter(7)


class KafkaSinkError(MonitorError):
    """Records could not be delivered to Kafka."""


def _forced(config: dict, forced: dict, what: str) -> dict:
    """``config`` with ``forced`` settings; a config that sets one of them to something else is refused."""
    for key, value in forced.items():
        if key in config and config[key] != value:
            raise ConfigError(f"{what} setting {key}={config[key]!r} is not allowed: seqmon sets {key}={value!r}")
    return {**config, **forced}


def _built(factory, config: dict):
    """``factory(**config)`` (a kafka-python client), stopped at the first authentication or TLS failure.

    kafka-python retries those while it bootstraps, logging each attempt, and then raises a bare timeout; the client
    is built on a worker thread while its log is watched, and at the first such failure its network client is closed
    (which ends the retries) and ``KafkaAccessError`` raised.
    """
    watch = kafka_access.FailureWatch(config, (kafka_errors.SaslAuthenticationFailedError,))
    done = threading.Event()
    outcome: dict = {}
    networks: list = []
    network_class = factory.DEFAULT_CONFIG.get("kafka_client")

    def network(**kwargs):
        networks.append(network_class(**kwargs))
        return networks[-1]

    def build():
        try:
            outcome["client"] = factory(**config, **({"kafka_client": network} if network_class else {}))
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc
        finally:
            done.set()
            watch.seen.set()

    kafka_logger = logging.getLogger("kafka")
    kafka_logger.addHandler(watch)
    try:
        threading.Thread(target=build, name="seqmon-kafka-bootstrap", daemon=True).start()
        watch.seen.wait()
        if not done.is_set() and watch.failure is not None:
            for net in networks:
                with contextlib.suppress(Exception):
                    net.close()
            done.wait(10)  # its last log lines come before the error, not after
            if "client" in outcome:
                with contextlib.suppress(Exception):
                    outcome["client"].close()
            raise watch.failure
    finally:
        kafka_logger.removeHandler(watch)
    if "error" in outcome:
        if watch.failure is not None:
            raise watch.failure from None
        raise outcome["error"]
    return outcome["client"]


@contextlib.contextmanager
def _access_errors(config: dict, topics: Iterable[str] = ()):
    """Kafka's refusals (failed login, missing ACL right) as ``KafkaAccessError``: retrying cannot heal them."""
    try:
        yield
    except kafka_errors.GroupAuthorizationFailedError:
        raise kafka_access.group_not_authorized(config) from None
    except kafka_errors.TopicAuthorizationFailedError as exc:
        denied = [str(a) for a in exc.args if isinstance(a, str)] or list(topics)
        raise kafka_access.read_not_authorized(config, denied) from None
    except kafka_errors.SaslAuthenticationFailedError as exc:
        raise kafka_access.authentication_failed(config, str(exc)) from None


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


def _keys(partitions: Iterable[TopicPartition]) -> list[TopicPartitionKey]:
    return sorted((tp.topic, tp.partition) for tp in partitions)


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
            keys = _keys(partitions)
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
            keys = _keys(partitions)
            if callback is not None and keys:
                callback(keys)


class KafkaSource:
    """Consumer-group source yielding RecordBatch; manual offset commits only.

    ``consumer_config`` holds KafkaConsumer keyword settings and must name a ``group_id``; auto commit and
    deserializers are forced off. Subscribe to ``topics`` or to a regex ``pattern``. ``on_assign`` / ``on_revoke``
    get the sorted ``(topic, partition)`` pairs gained / given up at a rebalance (and ``on_revoke`` at ``close``);
    ``on_lost`` (default: ``on_revoke``) gets partitions lost to an eviction, whose offsets can no longer be
    committed. ``on_assign`` runs before the first fetch of its partitions, so a ``seek`` there decides where
    reading starts; without one, reading resumes at the committed offset, else per ``auto_offset_reset``.
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
        check_subscription(topics, pattern)
        if not consumer_config.get("group_id"):
            raise ConfigError("the Kafka consumer needs a group_id: offsets are committed to the consumer group")
        config = _forced(
            consumer_config,
            {"enable_auto_commit": False, "key_deserializer": None, "value_deserializer": None},
            "Kafka consumer",
        )
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost if on_lost is not None else on_revoke
        self._closed = False
        self._config = config
        self._topics = list(topics or ())
        self._callback_error: MonitorError | None = None
        self._consumer = _built(KafkaConsumer, config)
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

    @property
    def consumer(self) -> KafkaConsumer:
        """The underlying KafkaConsumer (metrics, pause/resume); do not commit or poll through it."""
        return self._consumer

    #: A stream never ends (``FileSource`` sets this once a file is read).
    finished = False

    def poll(self, timeout_ms: int, max_records: int) -> RecordBatch | None:
        """Records that arrived within ``timeout_ms`` (at most ``max_records``), as one batch; None if none did.

        Also drives group membership: rebalance callbacks run inside this call.
        """
        with _access_errors(self._config, self._topics):
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
        return _keys(self._consumer.assignment())

    def positions(self, timeout_ms: int = 1000) -> dict[TopicPartitionKey, int]:
        """Next offset to read per assigned partition. A partition whose position is not known yet (just assigned,
        its committed offset not fetched within ``timeout_ms``) is left out."""
        out = {}
        for tp in sorted(self._consumer.assignment()):
            offset = self._consumer.position(tp, timeout_ms=timeout_ms)
            if offset is not None:
                out[(tp.topic, tp.partition)] = offset
        return out

    def seek(self, offsets: dict[TopicPartitionKey, int]) -> None:
        """Read on from these offsets; every partition must be assigned (checked before any is moved)."""
        assigned = self._consumer.assignment()
        tps = {TopicPartition(t, p): int(o) for (t, p), o in offsets.items()}
        unassigned = sorted(tp for tp in tps if tp not in assigned)
        if unassigned:
            raise ValueError(f"cannot seek partitions not assigned to this consumer: {_keys(unassigned)}")
        for tp, offset in tps.items():
            self._consumer.seek(tp, offset)

    def committed(self, keys: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int | None]:
        """The group's committed offset per partition (None: never committed); one request per partition."""
        with _access_errors(self._config, self._topics):
            return {(t, p): self._consumer.committed(TopicPartition(t, p)) for t, p in keys}

    def commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        """Commit these next-offsets synchronously (the offset of the first record not yet processed)."""
        if not offsets:
            return
        with _access_errors(self._config, self._topics):
            self._consumer.commit(
                {TopicPartition(t, p): OffsetAndMetadata(int(o), "", -1) for (t, p), o in offsets.items()}
            )

    def lag(self) -> dict[TopicPartitionKey, int]:
        """Records not read yet per assigned partition whose position is known: end offset minus position."""
        positions = self.positions()
        if not positions:
            return {}
        ends = self._consumer.end_offsets([TopicPartition(t, p) for t, p in positions])
        return {key: max(0, ends[TopicPartition(*key)] - offset) for key, offset in positions.items()}

    def close(self) -> None:
        """Leave the group without committing (``on_revoke`` still runs first, and what it raises is raised here as
        a ``KafkaError``, after the consumer is closed). Idempotent."""
        if self._closed:
            return
        self._closed = True
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


class KafkaSink:
    """Producer for the dead-letter and results topics.

    ``producer_config`` holds KafkaProducer keyword settings; ``acks`` is forced to ``"all"``, ``linger_ms`` defaults
    to 20, values and keys are sent as bytes (no serializers). Sends are asynchronous; ``flush`` waits for them and raises ``KafkaSinkError`` if any failed since the last flush.
    """

    def __init__(self, producer_config: dict):
        config = _forced({"linger_ms": 20, **producer_config}, {"acks": "all"}, "Kafka producer")
        for key in ("key_serializer", "value_serializer"):
            if config.get(key) is not None:
                raise ConfigError(f"Kafka producer setting {key} is not allowed: seqmon sends bytes")
        self._config = config
        self._producer = _built(KafkaProducer, config)
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._closed = False
        self._settings_of: dict[str, str] = {}
        self._failure: MonitorError | None = None

    def check_writable(self, topics: dict[str, str]) -> None:
        """Fail at start, not at the first record, if a topic cannot be written: ``topics`` maps each to its setting.

        WRITE implies DESCRIBE, so a user that may write the topic may read its metadata; one that may not is refused.
        """
        self._settings_of.update(topics)
        for topic, setting in topics.items():
            try:
                self._producer.partitions_for(topic)
            except kafka_errors.TopicAuthorizationFailedError:
                self._closed = True
                self._producer.close(timeout=0)  # nothing was sent; its threads stop before the error is shown
                raise kafka_access.write_not_authorized(self._config, topic, setting) from None

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)

    def _send(self, topic: str, value: bytes | None, key: bytes | None = None, headers=None) -> None:
        self._producer.send(topic, value=value, key=key, headers=headers).add_errback(self._failed)

    def dead_letters(
        self, topic: str, values: list[bytes], reasons: list[str], sources: list[tuple[str, int, int]]
    ) -> None:
        """One record per refused input: its original bytes, with the reason and the source position as headers."""
        if not len(values) == len(reasons) == len(sources):
            raise ValueError(f"{len(values)} values, {len(reasons)} reasons and {len(sources)} sources")
        for value, reason, (source_topic, partition, offset) in zip(values, reasons, sources):
            headers = [
                (REASON_HEADER, reason.encode("utf-8")),
                (SOURCE_HEADER, f"{source_topic}/{partition}/{offset}".encode()),
            ]
            self._send(topic, bytes(value), headers=headers)

    def result(self, topic: str, key: str, value: dict) -> None:
        """One JSON record (NaN and ±inf as null) under a UTF-8 key."""
        payload = json.dumps(json_safe(value), allow_nan=False, separators=(",", ":")).encode("utf-8")
        self._send(topic, payload, key=key.encode("utf-8"))

    def flush(self, timeout_s: float = 30) -> None:
        """Wait until every record sent so far is acknowledged; raise if any could not be delivered."""
        if self._failure is not None:
            # Sticky: a later flush that found nothing new must not let the caller commit past the lost records.
            raise self._failure
        self._producer.flush(timeout=timeout_s)
        with self._lock:
            errors, self._errors = self._errors, []
        if not errors:
            return
        denied = [e for e in errors if isinstance(e, kafka_errors.TopicAuthorizationFailedError)]
        if denied:
            topic = next((str(a) for a in denied[0].args if isinstance(a, str)), "?")
            failure: MonitorError = kafka_access.write_not_authorized(
                self._config, topic, self._settings_of.get(topic, "an output topic")
            )
        else:
            failure = KafkaSinkError(
                f"{len(errors)} record(s) could not be delivered to Kafka; first error: {errors[0]!r}"
            )
        self._failure = failure
        raise failure

    def close(self) -> None:
        """Flush what is pending (errors are raised) and close the producer. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            self._producer.close(timeout=0 if self._failure is not None else None)
