"""What the two Kafka consumer sources share: subscription and group checks, the rebalance callbacks, seek and commit
argument checks, lag, and an idempotent close. ``monitor.source.kafka_source`` (kafka-python) and
``monitor.source.confluent_source`` (confluent-kafka) each add the calls of their client library.

Neither client library is imported here, so the base costs nothing to import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from monitor.errors import ConfigError
from monitor.source import check_subscription

TopicPartitionKey = tuple[str, int]
PartitionCallback = Callable[[list[TopicPartitionKey]], None]


def forced(config: dict, settings: dict, what: str) -> dict:
    """``config`` with ``settings``; a config that sets one of them to something else is refused."""
    for key, value in settings.items():
        if key in config and config[key] != value:
            raise ConfigError(f"{what} setting {key}={config[key]!r} is not allowed: seqmon sets {key}={value!r}")
    return {**config, **settings}


def sorted_keys(partitions: Iterable) -> list[TopicPartitionKey]:
    """Sorted ``(topic, partition)`` pairs of either library's ``TopicPartition`` objects."""
    return sorted((tp.topic, tp.partition) for tp in partitions)


class KafkaSourceBase:
    """A consumer-group :class:`monitor.source.Source`; subclasses open ``self._consumer`` and implement ``poll``,
    ``assignment``, ``positions``, ``committed``, ``_seek``, ``_commit``, ``_end_offsets``, ``_partition_count`` and
    ``_close``.

    ``consumer_config`` must name a group (``group_id``, or ``group.id`` for librdkafka names): offsets are committed
    to it. ``on_assign`` / ``on_revoke`` get the sorted ``(topic, partition)`` pairs gained / given up at a rebalance
    (and ``on_revoke`` at ``close``); ``on_lost`` (default: ``on_revoke``) gets partitions lost to an eviction, whose
    offsets can no longer be committed. ``on_assign`` runs before the first fetch of its partitions, so a ``seek``
    there decides where reading starts; without one, reading resumes at the committed offset, else per
    ``auto_offset_reset``. Callbacks run inside ``poll`` (or ``close``) and may call every method but those two.
    """

    #: A stream never ends.
    finished = False
    final = False

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
        if not consumer_config.get("group_id") and not consumer_config.get("group.id"):
            raise ConfigError("the Kafka consumer needs a group_id: offsets are committed to the consumer group")
        self._closed = False
        self.listen(on_assign, on_revoke, on_lost)

    def listen(
        self, on_assign: PartitionCallback | None, on_revoke: PartitionCallback | None, on_lost: PartitionCallback | None = None
    ) -> None:
        """Set the rebalance callbacks (before the first ``poll``: the group hands out partitions there)."""
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost if on_lost is not None else on_revoke

    @property
    def consumer(self):
        """The client library's consumer (metrics, pause/resume); do not commit or poll through it."""
        return self._consumer

    def seek(self, offsets: dict[TopicPartitionKey, int]) -> None:
        """Read on from these offsets; every partition must be assigned (checked before any is moved)."""
        wanted = {(t, int(p)): int(o) for (t, p), o in offsets.items()}
        assigned = set(self.assignment())
        unassigned = sorted(k for k in wanted if k not in assigned)
        if unassigned:
            raise ValueError(f"cannot seek partitions not assigned to this consumer: {unassigned}")
        self._seek(wanted)

    def commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        """Commit these next-offsets synchronously (the offset of the first record not yet processed)."""
        if offsets:
            self._commit({(t, int(p)): int(o) for (t, p), o in offsets.items()})

    def lag(self) -> dict[TopicPartitionKey, int]:
        """Records not read yet per assigned partition whose position is known: end offset minus position."""
        positions = self.positions()
        if not positions:
            return {}
        ends = self._end_offsets(list(positions))
        return {k: max(0, ends[k] - offset) for k, offset in positions.items()}

    def partition_counts(self, topics: Iterable[str]) -> dict[str, int]:
        """Partitions of each topic in the cluster metadata; a topic the cluster does not know is left out."""
        return {t: n for t in topics if (n := self._partition_count(t))}

    def close(self) -> None:
        """Leave the group without committing (``on_revoke`` still runs first, inside this call). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._close()
