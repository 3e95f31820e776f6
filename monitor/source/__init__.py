"""Source stage: where records come from.

``read_sequences`` reads the offline inputs of ``seqmon train / score / evaluate``: a text file with one sequence per
line, or a CSV / Parquet table with the sequences in one column.

The daemon reads a :class:`Source`: ``FileSource`` (a timestamped CSV) and ``MemorySource`` (batches in memory) here,
the two Kafka consumer groups in ``monitor.source.kafka_source`` and ``monitor.source.confluent_source`` (on ``monitor.source.kafka_base``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from monitor.decode import DEFAULT_MAX_BYTES, MISSING_FIELD, Decoded, decode_plain
from monitor.errors import ConfigError, InputError

if TYPE_CHECKING:
    from monitor.pipeline import RecordBatch

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")

TopicPartitionKey = tuple[str, int]
PartitionCallback = Callable[[list[TopicPartitionKey]], None]


@runtime_checkable
class Source(Protocol):
    """Where the daemon's records come from, a batch at a time, with the partitions it owns and their offsets.

    ``listen`` names the callbacks for partitions gained and given up: a consumer group calls them inside ``poll``
    (or ``close``) at a rebalance; a source whose partitions are fixed calls ``on_assign`` at once. ``seek`` is
    allowed inside ``on_assign`` and decides where those partitions resume. Offsets are next-offsets: the offset of the
    first record not yet processed. ``finished``: no record will ever come again (a file read to its end; a stream
    never finishes); ``final``: when finished, the input has ended, and every open window closes.
    ``partition_counts``: how many partitions each topic has in all (a member of a group may read only some of them),
    for the topics it knows; it may ask the cluster, so the daemon calls it between batches, not in a callback.
    """

    finished: bool
    final: bool

    def listen(
        self,
        on_assign: PartitionCallback | None,
        on_revoke: PartitionCallback | None,
        on_lost: PartitionCallback | None = None,
    ) -> None: ...

    def poll(self, timeout_ms: int, max_records: int) -> RecordBatch | None: ...

    def assignment(self) -> list[TopicPartitionKey]: ...

    def seek(self, offsets: dict[TopicPartitionKey, int]) -> None: ...

    def committed(self, keys: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int | None]: ...

    def commit(self, offsets: dict[TopicPartitionKey, int]) -> None: ...

    def lag(self) -> dict[TopicPartitionKey, int]: ...

    def partition_counts(self, topics: Iterable[str]) -> dict[str, int]: ...

    def close(self) -> None: ...


def read_lines(path: Path) -> list[bytes]:
    """Lines of a text file as bytes, without their LF or CRLF ending; a final newline does not add a line."""
    data = path.read_bytes()
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def read_sequences(path: str | Path, column: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Decoded:
    """Every record of an input file, decoded, in file order; bad records carry a reason instead of failing."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if path.is_dir():
        raise InputError(f"input {path} is a directory, not a file")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        if column is not None:
            raise InputError(f"--column applies to CSV and Parquet input; {path} is read as text, one sequence per line")
        return decode_plain(read_lines(path), max_bytes)
    import pandas as pd  # noqa: PLC0415

    if column is None:
        raise InputError(f"{path} is a table: name the column that holds the sequences with --column")
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=lambda c: c == column)
            header = pd.read_csv(path, nrows=0).columns
        else:
            frame = pd.read_parquet(path, columns=None)
            header = frame.columns
    except (ValueError, OSError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    if column not in header:
        raise InputError(f"{path} has no column {column!r}; its columns are: {', '.join(map(str, header))}")
    values = frame[column].tolist()
    missing = np.array([not isinstance(v, str) for v in values])
    decoded = decode_plain([v.encode("utf-8") if isinstance(v, str) else b"" for v in values], max_bytes)
    decoded.reasons[missing] = MISSING_FIELD
    return decoded


def check_subscription(topics, pattern) -> None:
    """A Kafka source subscribes to a list of topics or to one pattern: exactly one of them, and not an empty list."""
    if (topics is None) == (pattern is None):
        raise ConfigError("a Kafka source needs either topics or a topic pattern, not both")
    if topics is not None and not topics:
        raise ConfigError("a Kafka source needs at least one topic")


class FileSource:
    """A finite :class:`Source` over a timestamped CSV (``timestamp_ms, sequence[, weight]``): one partition, offsets
    are row numbers, so a checkpoint resumes a replay.

    ``final``: the file's end is the end of the input, and the daemon closes every open window there; otherwise the
    input is only paused (the file may grow), and windows close by their watermark alone, so a later replay that
    resumes from the checkpoint can still fill the last window."""

    def __init__(self, path: str | Path, topic: str = "replay", batch_size: int = 50_000, final: bool = True):
        from monitor.pipeline import read_stream_csv  # noqa: PLC0415

        self.topic = topic
        self.path = Path(path)
        self.final = final
        self._batches = list(read_stream_csv(path, topic=topic, batch_size=batch_size))
        self._rows = sum(len(b) for b in self._batches)
        self._next = 0  # index of the next batch
        self._position = 0  # next row

    @property
    def finished(self) -> bool:
        return self._next >= len(self._batches)

    def listen(self, on_assign: PartitionCallback | None, on_revoke: PartitionCallback | None,
               on_lost: PartitionCallback | None = None) -> None:
        """The one partition is assigned at once (and never lost)."""
        if on_assign is not None:
            on_assign(self.assignment())

    def poll(self, timeout_ms: int, max_records: int):
        import dataclasses  # noqa: PLC0415

        if self.finished:
            return None
        batch = self._batches[self._next]
        self._next += 1
        offsets = np.arange(self._position, self._position + len(batch), dtype=np.int64)
        self._position += len(batch)
        return dataclasses.replace(batch, partitions=np.zeros(len(batch), dtype=np.int32), offsets=offsets)

    def assignment(self) -> list[tuple[str, int]]:
        return [(self.topic, 0)]

    def seek(self, offsets: dict[tuple[str, int], int]) -> None:
        """Read on from row ``offsets[(topic, 0)]`` (a checkpoint's position): earlier rows are skipped, not re-read."""
        import dataclasses  # noqa: PLC0415

        unknown = sorted(k for k in offsets if k != (self.topic, 0))
        if unknown:
            raise ValueError(f"a file source has one partition, {self.topic}/0; cannot seek {unknown}")
        target = int(offsets.get((self.topic, 0), self._position))
        if not 0 <= target <= self._rows:
            raise InputError(
                f"{self.path}: the saved state resumes at row {target:,} but the file has {self._rows:,} rows; it is "
                "not the file (or a grown copy of the file) that state belongs to: use another state directory"
            )
        kept, start = [], 0
        for batch in self._batches:
            end = start + len(batch)
            if end > target:
                cut = max(0, target - start)
                kept.append(batch if cut == 0 else dataclasses.replace(
                    batch,
                    values=batch.values[cut:],
                    timestamps_ms=batch.timestamps_ms[cut:],
                    topics=batch.topics[cut:],
                    weights=None if batch.weights is None else batch.weights[cut:],
                ))
            start = end
        self._batches, self._next, self._position = kept, 0, target

    def committed(self, keys: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int | None]:
        """No group: the checkpoint alone says where a replay resumes."""
        return {}

    def commit(self, offsets) -> None:
        """Nothing to commit: the checkpoint in the state directory holds the position."""

    def lag(self) -> dict[tuple[str, int], int]:
        return {(self.topic, 0): self._rows - self._position}

    def partition_counts(self, topics: Iterable[str]) -> dict[str, int]:
        return {self.topic: 1} if self.topic in set(topics) else {}

    def close(self) -> None:
        self._batches = []
        self._next = 0


@dataclass(frozen=True)
class Rebalance:
    """A :class:`MemorySource` event: these partitions are given up, then these gained, inside one ``poll``."""

    revoked: Sequence[TopicPartitionKey] = ()
    assigned: Sequence[TopicPartitionKey] = ()
    #: Partitions taken away by an eviction (the member was too slow): ``on_lost`` instead of ``on_revoke``.
    lost: Sequence[TopicPartitionKey] = ()


class MemorySource:
    """A :class:`Source` over events in memory, for tests and for embedding the daemon.

    Each ``poll`` takes the next event: a ``RecordBatch`` (records of partitions not assigned at that moment are
    dropped, as another group member would read them), ``None`` (nothing arrived within the poll's timeout), or a
    :class:`Rebalance`, whose callbacks run inside that poll. A batch without partitions is on partition 0; one without
    offsets gets consecutive offsets per partition, counted over all events, so a ``seek`` (to a checkpoint's
    offsets) skips exactly the records before it. Seeking back does not deliver records again.

    ``committed``: the group's committed offsets at start (``commit`` adds to them; the dict is ``commits``); a
    partition is read from its committed offset unless ``on_assign`` seeks elsewhere.
    ``ends``: after the last event the source is finished (a file); otherwise it stays quiet, as a stream does.
    ``partitions``: each topic's number of partitions in all; by default one more than the highest partition that any
    event or the assignment names.
    """

    def __init__(
        self,
        events: Iterable,
        assignment: Iterable[TopicPartitionKey] = (("memory", 0),),
        committed: dict[TopicPartitionKey, int] | None = None,
        ends: bool = True,
        final: bool = True,
        partitions: dict[str, int] | None = None,
    ):
        counters: dict[TopicPartitionKey, int] = {}
        self._events = [_with_offsets(e, counters) for e in events]
        self._assigned: list[TopicPartitionKey] = sorted(assignment)
        named = [*counters, *self._assigned, *(k for e in self._events if isinstance(e, Rebalance)
                                               for k in (*e.assigned, *e.revoked, *e.lost))]
        self._partitions = {t: max(p for t2, p in named if t2 == t) + 1 for t, _ in named}
        self._partitions.update(partitions or {})
        self.commits: dict[TopicPartitionKey, int] = dict(committed or {})
        self._position: dict[TopicPartitionKey, int] = {}
        self._next = 0
        self._ends = ends
        self.final = final
        self.polls = 0
        self.closed = False
        self._on_assign: PartitionCallback | None = None
        self._on_revoke: PartitionCallback | None = None
        self._on_lost: PartitionCallback | None = None

    @property
    def finished(self) -> bool:
        return self._ends and self._next >= len(self._events)

    def listen(self, on_assign: PartitionCallback | None, on_revoke: PartitionCallback | None,
               on_lost: PartitionCallback | None = None) -> None:
        """Set the callbacks, and hand over the starting assignment at once (``on_lost``: see :class:`Rebalance`)."""
        self._on_assign, self._on_revoke = on_assign, on_revoke
        self._on_lost = on_lost if on_lost is not None else on_revoke
        self._start_at_committed(self._assigned)
        if on_assign is not None and self._assigned:
            on_assign(list(self._assigned))

    def poll(self, timeout_ms: int, max_records: int) -> RecordBatch | None:
        self.polls += 1
        while self._next < len(self._events):
            event = self._events[self._next]
            self._next += 1
            if event is None:
                return None
            if isinstance(event, Rebalance):
                self._rebalance(event)
                return None
            batch = self._unread(event)
            if batch is not None:
                return batch
        return None

    def _rebalance(self, event: Rebalance) -> None:
        lost = sorted(set(event.lost) & set(self._assigned))
        if lost and self._on_lost is not None:
            self._on_lost(lost)
        self._assigned = sorted(set(self._assigned) - set(lost))
        revoked = sorted(set(event.revoked) & set(self._assigned))
        if revoked and self._on_revoke is not None:
            self._on_revoke(revoked)
        self._assigned = sorted(set(self._assigned) - set(revoked))
        assigned = sorted(set(event.assigned) - set(self._assigned))
        self._assigned = sorted(set(self._assigned) | set(assigned))
        self._start_at_committed(assigned)
        if assigned and self._on_assign is not None:
            self._on_assign(assigned)

    def _start_at_committed(self, partitions: Iterable[TopicPartitionKey]) -> None:
        """A consumer group's member reads a partition it is given from the committed offset, unless it seeks."""
        for k in partitions:
            self._position[k] = self.commits.get(k, 0)

    def _unread(self, batch: RecordBatch) -> RecordBatch | None:
        """The records of ``batch`` on assigned partitions at or after their position; None if there are none."""
        keep = np.zeros(len(batch), dtype=bool)
        for topic, partition in self._assigned:
            mine = (batch.topics == topic) & (batch.partitions == partition)
            keep |= mine & (batch.offsets >= self._position.get((topic, partition), 0))
        if not keep.any():
            return None
        for topic, partition in self._assigned:
            mine = keep & (batch.topics == topic) & (batch.partitions == partition)
            if mine.any():
                self._position[(topic, partition)] = int(batch.offsets[mine].max()) + 1
        return batch if keep.all() else _take(batch, np.flatnonzero(keep))

    def assignment(self) -> list[TopicPartitionKey]:
        return list(self._assigned)

    def seek(self, offsets: dict[TopicPartitionKey, int]) -> None:
        unassigned = sorted(k for k in offsets if k not in self._assigned)
        if unassigned:
            raise ValueError(f"cannot seek partitions not assigned to this source: {unassigned}")
        self._position.update({k: int(v) for k, v in offsets.items()})

    def committed(self, keys: Iterable[TopicPartitionKey]) -> dict[TopicPartitionKey, int | None]:
        return {k: self.commits.get(k) for k in keys}

    def commit(self, offsets: dict[TopicPartitionKey, int]) -> None:
        self.commits.update({k: int(v) for k, v in offsets.items()})

    def lag(self) -> dict[TopicPartitionKey, int]:
        """Records of the events not polled yet per assigned partition, at or after its position."""
        out = dict.fromkeys(self._assigned, 0)
        for event in self._events[self._next:]:
            if event is None or isinstance(event, Rebalance):
                continue
            for key in self._assigned:
                mine = (event.topics == key[0]) & (event.partitions == key[1])
                out[key] += int((mine & (event.offsets >= self._position.get(key, 0))).sum())
        return out

    def partition_counts(self, topics: Iterable[str]) -> dict[str, int]:
        return {t: self._partitions[t] for t in topics if t in self._partitions}

    def close(self) -> None:
        self.closed = True


def _with_offsets(event, counters: dict[TopicPartitionKey, int]):
    """A batch with partitions (default 0) and offsets (default: next per partition); other events as they are."""
    if event is None or isinstance(event, Rebalance):
        return event
    import dataclasses  # noqa: PLC0415

    n = len(event)
    partitions = np.zeros(n, dtype=np.int32) if event.partitions is None else np.asarray(event.partitions, np.int32)
    if event.offsets is not None:
        offsets = np.asarray(event.offsets, dtype=np.int64)
    else:
        offsets = np.empty(n, dtype=np.int64)
        for topic in np.unique(event.topics.astype(str)):
            for partition in np.unique(partitions[event.topics == topic]):
                mine = np.flatnonzero((event.topics == topic) & (partitions == partition))
                start = counters.get((str(topic), int(partition)), 0)
                offsets[mine] = np.arange(start, start + len(mine))
    for topic in np.unique(event.topics.astype(str)):
        for partition in np.unique(partitions[event.topics == topic]):
            mine = (event.topics == topic) & (partitions == partition)
            key = (str(topic), int(partition))
            counters[key] = max(counters.get(key, 0), int(offsets[mine].max()) + 1)
    return dataclasses.replace(event, partitions=partitions, offsets=offsets)


def _take(batch: RecordBatch, rows: np.ndarray) -> RecordBatch:
    import dataclasses  # noqa: PLC0415

    return dataclasses.replace(
        batch,
        values=[batch.values[i] for i in rows.tolist()],
        timestamps_ms=batch.timestamps_ms[rows],
        topics=batch.topics[rows],
        weights=None if batch.weights is None else batch.weights[rows],
        partitions=batch.partitions[rows],
        offsets=batch.offsets[rows],
    )
