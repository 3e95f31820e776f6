"""Sink of the daemon: where refused records (dead letters) and closed-window results go.

``KafkaSink`` produces them to Kafka topics; ``MemorySink`` keeps them in lists (tests, embedding). The daemon flushes
the sink before every checkpoint, so the offsets it commits never cover a dead letter or result not yet delivered.
"""

from __future__ import annotations

import json
import threading
from typing import Protocol

from monitor.errors import ConfigError, MonitorError
from monitor.export.metrics import json_safe
from monitor.source import kafka_access
from monitor.source.kafka_base import forced

#: Headers of a dead letter: why the record was refused, and where it came from ("topic/partition/offset").
REASON_HEADER = "seqmon-reason"
SOURCE_HEADER = "seqmon-source"


class KafkaSinkError(MonitorError):
    """Records could not be delivered to Kafka."""


class Sink(Protocol):
    """What the daemon sends besides metrics. ``flush`` raises if anything sent since the last flush was lost."""

    def dead_letters(
        self, topic: str, values: list[bytes], reasons: list[str], sources: list[tuple[str, int, int]]
    ) -> None: ...

    def result(self, topic: str, key: str, value: dict) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class MemorySink:
    """A sink that keeps what it is given: ``dead`` holds ``(topic, value, reason, (topic, partition, offset))``,
    ``results`` holds ``(topic, key, value)``; ``flushes`` counts flushes."""

    def __init__(self):
        self.dead: list[tuple[str, bytes, str, tuple[str, int, int]]] = []
        self.results: list[tuple[str, str, dict]] = []
        self.flushes = 0
        self.closed = False

    def dead_letters(self, topic, values, reasons, sources) -> None:
        if not len(values) == len(reasons) == len(sources):
            raise ValueError(f"{len(values)} values, {len(reasons)} reasons and {len(sources)} sources")
        self.dead.extend((topic, bytes(v), r, s) for v, r, s in zip(values, reasons, sources))

    def result(self, topic: str, key: str, value: dict) -> None:
        self.results.append((topic, key, json_safe(value)))

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


class KafkaSink:
    """Producer for the dead-letter and results topics.

    ``producer_config`` holds KafkaProducer keyword settings; ``acks`` is forced to ``"all"``, ``linger_ms`` defaults
    to 20, values and keys are sent as bytes (no serializers). Sends are asynchronous; ``flush`` waits for them and
    raises ``KafkaSinkError`` if any failed since the last flush.
    """

    def __init__(self, producer_config: dict):
        from kafka import KafkaProducer  # noqa: PLC0415  (the client library only where Kafka is used)

        config = forced({"linger_ms": 20, **producer_config}, {"acks": "all"}, "Kafka producer")
        for key in ("key_serializer", "value_serializer"):
            if config.get(key) is not None:
                raise ConfigError(f"Kafka producer setting {key} is not allowed: seqmon sends bytes")
        self._config = config
        self._producer = kafka_access.built(KafkaProducer, config)
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._closed = False
        self._settings_of: dict[str, str] = {}
        self._failure: MonitorError | None = None

    def check_writable(self, topics: dict[str, str]) -> None:
        """Fail at start, not at the first record, if a topic cannot be written: ``topics`` maps each to its setting.

        WRITE implies DESCRIBE, so a user that may write the topic may read its metadata; one that may not is refused.
        """
        from kafka import errors as kafka_errors  # noqa: PLC0415

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
        from kafka import errors as kafka_errors  # noqa: PLC0415

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
