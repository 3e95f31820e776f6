"""Offset bookkeeping of the daemon: the next offset to read of every partition it has processed records of.

Keys are ``"topic/partition"`` strings, as the checkpoint stores them. An offset only moves forward: a batch that
re-reads records (after a seek back) never makes the daemon commit less than it has processed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from monitor.pipeline import RecordBatch

TopicPartitionKey = tuple[str, int]


def key(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def unkey(text: str) -> TopicPartitionKey:
    topic, _, partition = text.rpartition("/")
    return topic, int(partition)


class Offsets:
    """Next offset to read per partition: what is committed to the consumer group and written to the checkpoint."""

    def __init__(self, next_offsets: Mapping[str, int] | None = None):
        self._next: dict[str, int] = {str(k): int(v) for k, v in (next_offsets or {}).items()}

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, int] | None) -> Offsets:
        return cls(snapshot)

    def snapshot(self) -> dict[str, int]:
        """``{"topic/partition": next offset}``: the checkpoint's ``offsets``."""
        return dict(self._next)

    def __len__(self) -> int:
        return len(self._next)

    def get(self, topic: str, partition: int) -> int | None:
        return self._next.get(key(topic, partition))

    def advance(self, batch: RecordBatch) -> None:
        """Past every record of ``batch`` (a batch without partitions or offsets moves nothing)."""
        for k, offset in next_offsets(batch).items():
            self._next[k] = max(self._next.get(k, 0), offset)

    def resume(
        self, partitions: Iterable[TopicPartitionKey], committed: Mapping[TopicPartitionKey, int | None]
    ) -> dict[TopicPartitionKey, int]:
        """Where newly assigned partitions resume: the later of our offset and the group's ``committed`` one.

        Ours is later when the daemon died between writing its checkpoint and committing; the group's when another
        member owned the partition since (ours is then moved up to it). Returns the partitions to seek to our offset;
        the others start at the group's offset, or per ``auto_offset_reset`` when neither is known.
        """
        seek = {}
        for topic, partition in partitions:
            ours = self.get(topic, partition)
            theirs = committed.get((topic, partition))
            if ours is not None and (theirs is None or ours > theirs):
                seek[(topic, partition)] = ours
            elif theirs is not None:
                self._next[key(topic, partition)] = int(theirs)
        return seek

    def forget_topics(self, topics: Iterable[str]) -> None:
        """Drop every partition of ``topics`` (topics no longer read, whose state leaves the checkpoint)."""
        gone = set(topics)
        self._next = {k: v for k, v in self._next.items() if unkey(k)[0] not in gone}

    def to_commit(self, partitions: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int]:
        """Our offsets of ``partitions`` (those we have one for), to commit to the group."""
        wanted = {key(t, p) for t, p in partitions}
        return {unkey(k): v for k, v in self._next.items() if k in wanted}


def next_offsets(batch: RecordBatch) -> dict[str, int]:
    """Next offset to read of every partition in the batch (its largest offset + 1), without a loop over records."""
    if batch.partitions is None or batch.offsets is None or not len(batch):
        return {}
    names, codes = np.unique(batch.topics.astype(str), return_inverse=True)
    combined = (codes.astype(np.int64) << 32) | batch.partitions.astype(np.int64)
    keys, inverse = np.unique(combined, return_inverse=True)
    largest = np.full(len(keys), -1, dtype=np.int64)
    np.maximum.at(largest, inverse, batch.offsets.astype(np.int64))
    return {key(str(names[k >> 32]), int(k & 0xFFFFFFFF)): int(o) + 1 for k, o in zip(keys.tolist(), largest.tolist())}
