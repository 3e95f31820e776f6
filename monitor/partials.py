"""Window state that travels with its partition: per-partition partial windows, their exact merge, and the records
that carry them through Kafka.

Several daemons in one consumer group each read some partitions of a topic.  Each keeps, **per partition it owns**, a
:class:`PartitionState`: the partial windows of that partition (a :class:`~monitor.window.WindowAggregate` per open
window: sums and an error sketch, so merging is exact), its newest event time and **the next offset the state
covers**.  State and offset are one value, written as one record to a compacted changelog topic keyed
``<topic>/<partition>`` (:mod:`monitor.daemon.changelog`); whichever daemon is assigned the partition restores the latest
record and seeks to its offset, so every record of the partition is either in the state or read again after it,
never both.

A topic's window is the merge of its partitions' partials (:func:`merge_due`).  One daemon per topic, the owner of
its partition 0, closes it: when every partition has delivered past the window's end (the lowest watermark of the
partitions that are not idle), it merges the partials of the partition states *written to the changelog*, publishes
the window once, and records a :class:`TopicMarker` (published through, last closed window, the comparison
baseline).  Partition owners learn the marker and drop the published partials (:meth:`PartitionWindows.apply_marker`).

**Lateness is per partition here.**  A record is late when its window ended at or before its own partition's
watermark (newest event time delivered by that partition before the batch, minus ``allowed_lateness_ms``), or when
its window is already published.  Unlike the single-daemon :class:`~monitor.window.Windower`, which judges lateness
against the topic's watermark, this depends only on the partition's own order, not on how a consumer interleaves
partitions, so one daemon and a fleet count the same records.  It is also what makes the merge exact: once a
partition's written state has a watermark past a window's end, no later record of that partition can enter the
window, so the written partial is final.

Nothing here does I/O or reads a clock; times are UTC epoch milliseconds.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from monitor.errors import StateError
from monitor.window import (
    ClosedWindow,
    PartitionProgress,
    WindowAggregate,
    WindowSettings,
    _factorize,
    _PartitionState,
    _signed32,
    _validate_columns,
    absorb_grouped,
)

__all__ = [
    "CLOSING_PARTITION",
    "PartitionState",
    "PartitionWindows",
    "MergeDecision",
    "TopicMarker",
    "decode_record",
    "is_closing_daemon",
    "encode_marker",
    "encode_state",
    "marker_key",
    "merge_due",
    "parse_key",
    "state_key",
]

#: The partition whose owner closes and publishes a topic's windows.
CLOSING_PARTITION = 0

#: Published windows whose per-partition record counts a marker keeps (see ``TopicMarker.taken``).
TAKEN_WINDOWS_KEPT = 48

RECORD_FORMAT = "seqmon-window-state"
RECORD_VERSION = 1
_MARKER_SUFFIX = "published"
_INT64_MIN = np.iinfo(np.int64).min


def state_key(topic: str, partition: int) -> str:
    """Changelog key of a partition's state.  Kafka topic names cannot contain ``/``, so keys cannot collide."""
    return f"{topic}/{int(partition)}"


def marker_key(topic: str) -> str:
    """Changelog key of a topic's published-through marker."""
    return f"{topic}/{_MARKER_SUFFIX}"


def parse_key(key: str) -> tuple[str, int | None]:
    """``(topic, partition)`` of a state key, ``(topic, None)`` of a marker key; ``ValueError`` for anything else."""
    topic, sep, rest = key.rpartition("/")
    if not sep or not topic:
        raise ValueError(f"not a window state key: {key!r}")
    if rest == _MARKER_SUFFIX:
        return topic, None
    if not rest.isdigit():
        raise ValueError(f"not a window state key: {key!r}")
    return topic, int(rest)


# ---------------------------------------------------------------------------------------------------------- values


@dataclass
class PartitionState:
    """What one partition contributes to its topic's windows, as of one offset.

    Attributes
    ----------
    topic, partition : str, int
    next_offset : int or None
        First offset of the partition *not* covered: a consumer restoring this state reads on from here.  None: no
        record read yet (read from the group's committed offset or ``auto_offset_reset``).
    newest_ms : int or None
        Newest event time delivered, UTC epoch ms; the partition's watermark is this minus the allowed lateness.
    open : dict of int to WindowAggregate
        Partial windows by start (UTC epoch ms): this partition's records of windows not yet published.
    published_through_ms : int or None
        The topic's windows starting before this are published (as far as this partition's owner knows).
    idle : bool
        Whether the partition had nothing more to deliver when written (its owner's judgement: lag 0, or lag unknown
        and silent for the idle timeout).  An idle partition does not hold its topic's windows open.
    late_records : int
        Records of this partition not counted in any window because they were late, since it was first read.
    """

    topic: str
    partition: int
    next_offset: int | None = None
    newest_ms: int | None = None
    open: dict[int, WindowAggregate] = field(default_factory=dict)
    published_through_ms: int | None = None
    idle: bool = False
    late_records: int = 0

    def watermark_ms(self, settings: WindowSettings) -> int | None:
        """Newest event time minus the allowed lateness; None before the first record."""
        return None if self.newest_ms is None else self.newest_ms - settings.allowed_lateness_ms

    def copy(self) -> PartitionState:
        """Independent copy (the running state keeps adding to its aggregates in place)."""
        return PartitionState(
            self.topic,
            self.partition,
            self.next_offset,
            self.newest_ms,
            {start: _copy_aggregate(agg) for start, agg in self.open.items()},
            self.published_through_ms,
            self.idle,
            self.late_records,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": int(self.partition),
            "next_offset": self.next_offset,
            "newest_ms": self.newest_ms,
            "open": [[start, _aggregate_to_compact(self.open[start])] for start in sorted(self.open)],
            "published_through_ms": self.published_through_ms,
            "idle": bool(self.idle),
            "late_records": int(self.late_records),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PartitionState:
        return cls(
            topic=str(data["topic"]),
            partition=int(data["partition"]),
            next_offset=_opt_int(data["next_offset"]),
            newest_ms=_opt_int(data["newest_ms"]),
            open={int(start): _aggregate_from_compact(agg) for start, agg in data["open"]},
            published_through_ms=_opt_int(data["published_through_ms"]),
            idle=bool(data["idle"]),
            late_records=int(data["late_records"]),
        )


@dataclass
class TopicMarker:
    """How far a topic's windows are published, written by the daemon that closes them after publishing.

    Attributes
    ----------
    topic : str
    published_through_ms : int or None
        End of the last published window (the start of the next to publish), UTC epoch ms.
    watermark_ms : int or None
        The topic's watermark when last advanced; never moves back.
    last_closed : WindowAggregate or None
        The last published window, which the next one is compared with.
    taken : dict of int to dict of int to int
        For the last published windows (at most ``TAKEN_WINDOWS_KEPT``): window start -> partition -> records
        merged from that partition.
        A partition owner that still held more records of such a window (an idle partition that delivered again
        before it learned of the publication) counts the difference as late instead of losing it silently.
    baseline : dict or None
        The closing daemon's comparison state for the topic (opaque here, e.g. a ``Baseline`` snapshot), so that a
        new closing daemon judges the next window as the old one would have.
    """

    topic: str
    published_through_ms: int | None = None
    watermark_ms: int | None = None
    last_closed: WindowAggregate | None = None
    taken: dict[int, dict[int, int]] = field(default_factory=dict)
    baseline: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "published_through_ms": self.published_through_ms,
            "watermark_ms": self.watermark_ms,
            "last_closed": None if self.last_closed is None else _aggregate_to_compact(self.last_closed),
            "taken": [[start, [[p, n] for p, n in sorted(parts.items())]] for start, parts in sorted(self.taken.items())],
            "baseline": self.baseline,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TopicMarker:
        last = data["last_closed"]
        return cls(
            topic=str(data["topic"]),
            published_through_ms=_opt_int(data["published_through_ms"]),
            watermark_ms=_opt_int(data["watermark_ms"]),
            last_closed=None if last is None else _aggregate_from_compact(last),
            taken={int(start): {int(p): int(n) for p, n in parts} for start, parts in data["taken"]},
            baseline=data["baseline"],
        )


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _copy_aggregate(agg: WindowAggregate) -> WindowAggregate:
    return WindowAggregate(
        agg.count, agg.weight, agg.weighted_error, agg.anomaly_weight, agg.weighted_percentile, agg.sketch.copy(),
        agg.weight_squared,
    )


def _aggregate_to_compact(agg: WindowAggregate) -> dict[str, Any]:
    """``WindowAggregate.to_dict`` with the sketch's bucket indices as a first index and differences: consecutive
    buckets differ by small numbers, which compress several-fold better than the indices themselves."""
    data = agg.to_dict()
    sketch = data["sketch"]
    index = sketch.pop("index")
    sketch["first"] = index[0] if index else 0
    sketch["steps"] = np.diff(np.asarray(index, dtype=np.int64)).tolist() if index else []
    return data


def _aggregate_from_compact(data: dict[str, Any]) -> WindowAggregate:
    sketch = dict(data["sketch"])
    first, steps = int(sketch.pop("first")), sketch.pop("steps")
    weights = sketch["weight"]
    sketch["index"] = (np.concatenate(([first], first + np.cumsum(np.asarray(steps, dtype=np.int64)))).tolist()
                       if weights else [])
    return WindowAggregate.from_dict({**data, "sketch": sketch})


# ---------------------------------------------------------------------------------------------------------- records


def _window_identity(settings: WindowSettings) -> dict[str, Any]:
    return {"size_ms": settings.size_ms, "offset_ms": settings.offset_ms, "sketch_alpha": settings.sketch_alpha}


def _encode(kind: str, body: dict[str, Any], bundle: str, settings: WindowSettings) -> bytes:
    envelope = {
        "format": RECORD_FORMAT,
        "version": RECORD_VERSION,
        "kind": kind,
        "bundle": bundle,
        "window": _window_identity(settings),
        kind: body,
    }
    text = json.dumps(envelope, separators=(",", ":"), allow_nan=False)
    return zlib.compress(text.encode("utf-8"), 6)


def encode_state(state: PartitionState, bundle: str, settings: WindowSettings) -> bytes:
    """A partition state as a changelog record value: compressed JSON naming its format version, the bundle (content
    hash) that scored its records and the window geometry, so that a reader refuses what it cannot use."""
    return _encode("partition", state.to_dict(), bundle, settings)


def encode_marker(marker: TopicMarker, bundle: str, settings: WindowSettings) -> bytes:
    """A topic's published-through marker as a changelog record value (see :func:`encode_state`)."""
    return _encode("published", marker.to_dict(), bundle, settings)


def decode_record(value: bytes, bundle: str | None, settings: WindowSettings, where: str = "changelog record"
                  ) -> PartitionState | TopicMarker:
    """Inverse of :func:`encode_state` / :func:`encode_marker`.

    Parameters
    ----------
    value : bytes
        The record value.
    bundle : str or None
        Content hash of the bundle scoring now; a record written under another bundle is refused (errors of two
        bundles are not on one scale, so their windows must not be merged).  None skips the check (inspection).
    settings : WindowSettings
        Window geometry now; a record of another ``size_ms``, ``offset_ms`` or ``sketch_alpha`` is refused.
    where : str
        Names the record in error messages (e.g. ``"changelog seqmon-state, key orders/3"``).

    Raises
    ------
    StateError
        One sentence naming ``where`` and what to do: not a seqmon record, another version, another bundle, other
        window settings, or damaged.
    """
    try:
        envelope = json.loads(zlib.decompress(value).decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise StateError(f"{where} is not a seqmon window state record ({exc})") from exc
    if not isinstance(envelope, dict) or envelope.get("format") != RECORD_FORMAT:
        raise StateError(f"{where} is not a seqmon window state record")
    version = envelope.get("version")
    if version != RECORD_VERSION:
        raise StateError(
            f"{where} has window state version {version!r}; this seqmon reads version {RECORD_VERSION}: "
            "run the seqmon that wrote it, or start afresh on a new changelog topic"
        )
    written_by = envelope.get("bundle")
    if bundle is not None and written_by != bundle:
        raise StateError(
            f"{where} was written by bundle {written_by!r}, this daemon scores with bundle {bundle!r}: windows of two "
            "bundles are not on one scale; run the same bundle, or start afresh on a new changelog topic"
        )
    stored, now = envelope.get("window"), _window_identity(settings)
    if stored != now:
        diff = ", ".join(f"{k}={stored.get(k)!r} (now {v!r})" for k, v in now.items()
                         if not isinstance(stored, dict) or stored.get(k) != v)
        raise StateError(
            f"{where} was written with other window settings: {diff}; restore the settings, or start afresh on a "
            "new changelog topic"
        )
    kind = envelope.get("kind")
    try:
        if kind == "partition":
            return PartitionState.from_dict(envelope["partition"])
        if kind == "published":
            return TopicMarker.from_dict(envelope["published"])
    except (KeyError, TypeError, ValueError, AttributeError, StateError) as exc:
        raise StateError(f"{where} is damaged: {exc}") from exc
    raise StateError(f"{where} has an unknown kind {kind!r}")


# ---------------------------------------------------------------------------------------------------------- owner


class PartitionWindows:
    """The partial windows of the partitions one daemon owns (the running side of :class:`PartitionState`).

    Call :meth:`assign` with each partition's restored state (or None for a partition never read), :meth:`add` per
    batch, :meth:`report_lags` as lags are known, :meth:`states` to write what changed (then :meth:`written`),
    :meth:`apply_marker` when the topic's closing daemon publishes, and :meth:`revoke` once a partition's final state
    is written.
    """

    def __init__(self, settings: WindowSettings | None = None) -> None:
        self._settings = settings if settings is not None else WindowSettings()
        self._states: dict[tuple[str, int], PartitionState] = {}
        self._progress: dict[tuple[str, int], _PartitionState] = {}
        # A partition is dirty while its change count differs from the count of its last acknowledged write.
        self._changes: dict[tuple[str, int], int] = {}
        self._clean_at: dict[tuple[str, int], int] = {}
        self._copied_at: dict[tuple[str, int], int] = {}

    @property
    def settings(self) -> WindowSettings:
        return self._settings

    def owned(self) -> list[tuple[str, int]]:
        """Partitions held, sorted."""
        return sorted(self._states)

    def state(self, topic: str, partition: int) -> PartitionState:
        """The live state of an owned partition (read-only: it changes with the next batch); ``KeyError`` if not owned."""
        return self._states[(topic, int(partition))]

    def progress(self, now_ms: int | None = None) -> list[PartitionProgress]:
        """How far each owned partition has delivered, and whether it is idle at ``now_ms`` (for metrics)."""
        timeout = self._settings.idle_timeout_ms
        return [PartitionProgress(t, p, s.newest_ms, s.lag, s.idle(now_ms, timeout))
                for (t, p), s in sorted(self._progress.items())]

    # ------------------------------------------------------------------ ownership
    def assign(self, topic: str, partition: int, restored: PartitionState | None = None,
               now_ms: int | None = None) -> int | None:
        """Own a partition from ``restored`` (its latest changelog state) or from nothing.

        Returns the offset to seek the consumer to: the restored ``next_offset``, or None (read from the group's
        committed offset).  ``now_ms`` starts the idle timeout."""
        key = (str(topic), int(partition))
        if restored is not None and (restored.topic, restored.partition) != key:
            raise ValueError(f"state of {state_key(restored.topic, restored.partition)} given for {state_key(*key)}")
        state = restored.copy() if restored is not None else PartitionState(*key)
        state.idle = False
        self._states[key] = state
        self._progress[key] = _PartitionState(newest_ms=state.newest_ms, active_ms=now_ms)
        self._changed(key)
        return state.next_offset

    def revoke(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Forget partitions (write their :meth:`states` first: what is not written is read again by the next owner)."""
        for topic, partition in partitions:
            key = (str(topic), int(partition))
            self._states.pop(key, None)
            self._progress.pop(key, None)
            for book in (self._changes, self._clean_at, self._copied_at):
                book.pop(key, None)

    # ------------------------------------------------------------------ ingest
    def add(
        self,
        topics: np.ndarray,
        event_ms: np.ndarray,
        errors: np.ndarray,
        weights: np.ndarray | None,
        percentiles: np.ndarray,
        is_anomaly: np.ndarray,
        partitions: np.ndarray,
        offsets: np.ndarray,
        now_ms: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Add a batch of scored records to their partitions' partial windows.

        Columns as for :meth:`monitor.window.Windower.add`, plus ``offsets`` (each record's Kafka offset).  Records
        of a partition not owned yet make it owned from nothing.

        Returns
        -------
        late : np.ndarray of bool
            Records not counted because late: their window ended at or before their partition's watermark as of
            the record (the newest event time of the partition's records before it, in offset order, minus the
            allowed lateness), or is already published.  Batching does not change which records are late.
        covered : np.ndarray of bool
            Records not counted because the partition's state already covers their offset (a consumer that read
            again from before the state's ``next_offset``): counting them again would count them twice.
        """
        settings = self._settings
        size, offset = settings.size_ms, settings.offset_ms
        topics = np.asarray(topics).ravel()
        event_ms = np.asarray(event_ms)
        if event_ms.size and not np.issubdtype(event_ms.dtype, np.integer):
            raise ValueError(f"event_ms must be integer milliseconds, got dtype {event_ms.dtype}")
        event_ms = event_ms.astype(np.int64, copy=False).ravel()
        errors, weights, percentiles, is_anomaly = _validate_columns(errors, weights, percentiles, is_anomaly)
        partitions = np.asarray(partitions).ravel()
        offsets = np.asarray(offsets).ravel()
        n = event_ms.size
        for name, column in (("partitions", partitions), ("offsets", offsets)):
            if column.size and not np.issubdtype(column.dtype, np.integer):
                raise ValueError(f"{name} must be integers, got dtype {column.dtype}")
        if not (topics.size == errors.size == partitions.size == offsets.size == n):
            raise ValueError(
                f"record columns differ in length: topics {topics.size}, event_ms {n}, errors {errors.size}, "
                f"partitions {partitions.size}, offsets {offsets.size}"
            )
        if n == 0:
            return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
        partitions = partitions.astype(np.int64, copy=False)
        offsets = offsets.astype(np.int64, copy=False)

        names, topic_code = _factorize(topics)
        pair, code = np.unique((topic_code.astype(np.int64) << 32) | (partitions & 0xFFFFFFFF), return_inverse=True)
        code = code.ravel()
        keys = [(names[k >> 32], _signed32(k & 0xFFFFFFFF)) for k in pair.tolist()]
        for key in keys:
            if key not in self._states:
                self.assign(*key, now_ms=now_ms)
        states = [self._states[key] for key in keys]
        as_array = lambda values: np.array([_INT64_MIN if v is None else v for v in values], dtype=np.int64)
        next_offset = as_array(s.next_offset for s in states)
        published = as_array(s.published_through_ms for s in states)

        window_index = (event_ms - offset) // size
        start = window_index * size + offset
        covered = offsets < next_offset[code]
        ahead = _newest_before(code, offsets, np.where(covered, _INT64_MIN, event_ms), _newest_of(states))
        lateness = settings.allowed_lateness_ms
        late = ~covered & ((start + size + lateness <= ahead) | (start < published[code]))

        fresh = ~covered
        newest = np.full(pair.size, _INT64_MIN, dtype=np.int64)
        np.maximum.at(newest, code[fresh], event_ms[fresh])
        last = np.full(pair.size, _INT64_MIN, dtype=np.int64)
        np.maximum.at(last, code, offsets)
        late_counts = np.bincount(code[late], minlength=pair.size)
        for i, (key, state) in enumerate(zip(keys, states, strict=True)):
            if last[i] >= next_offset[i]:
                state.next_offset = int(last[i]) + 1
                self._changed(key)
            if newest[i] != _INT64_MIN:
                if state.newest_ms is None or newest[i] > state.newest_ms:
                    state.newest_ms = int(newest[i])
                _delivered(self._progress[key], int(newest[i]), now_ms)
            state.late_records += int(late_counts[i])

        accepted = fresh & ~late
        if accepted.any():
            absorb_grouped(
                [s.open for s in states], code[accepted], window_index[accepted], errors[accepted],
                weights[accepted], percentiles[accepted], is_anomaly[accepted], settings,
            )
        return late, covered

    def advance(self, next_offsets: Mapping[tuple[str, int], int]) -> None:
        """Owned partitions were read up to these next-offsets, including records that enter no window (invalid
        ones, which are not given to :meth:`add`): the state covers them, so they are not read again after a move.
        Call after :meth:`add` of the same batch; partitions not owned are ignored."""
        for key, next_offset in next_offsets.items():
            state = self._states.get((str(key[0]), int(key[1])))
            if state is not None and (state.next_offset is None or int(next_offset) > state.next_offset):
                state.next_offset = int(next_offset)
                self._changed((state.topic, state.partition))

    def report_lags(self, lags: Mapping[tuple[str, int], int | None]) -> None:
        """Records left to deliver per owned partition (missing or None: unknown); a lag of 0 makes it idle."""
        for key, progress in self._progress.items():
            lag = lags.get(key)
            progress.lag = None if lag is None else max(0, int(lag))

    # ------------------------------------------------------------------ publication
    def apply_marker(self, marker: TopicMarker) -> int:
        """The topic's windows before ``marker.published_through_ms`` are published: drop their partials.

        Returns the records that were in dropped partials beyond what the publication merged from this partition
        (an idle partition that delivered records of a window while it was being published); they are added to the
        partition's ``late_records``, so nothing vanishes without being counted."""
        through = marker.published_through_ms
        if through is None:
            return 0
        extra_total = 0
        for (topic, partition), state in self._states.items():
            if topic != marker.topic:
                continue
            if state.published_through_ms is None or through > state.published_through_ms:
                state.published_through_ms = through
                self._changed((topic, partition))
            for start in [s for s in state.open if s < through]:
                partial = state.open.pop(start)
                taken = marker.taken.get(start)
                if taken is not None:
                    extra = max(0, partial.count - taken.get(partition, 0))
                    state.late_records += extra
                    extra_total += extra
                self._changed((topic, partition))
        return extra_total

    # ------------------------------------------------------------------ writing
    def _changed(self, key: tuple[str, int]) -> None:
        self._changes[key] = self._changes.get(key, 0) + 1

    def dirty(self, now_ms: int | None = None) -> list[tuple[str, int]]:
        """Owned partitions whose state changed since it was last :meth:`written`, sorted; a partition whose
        idleness at ``now_ms`` differs from its last written state is dirty too (the closing daemon needs it)."""
        timeout = self._settings.idle_timeout_ms
        for key, state in self._states.items():
            if self._progress[key].idle(now_ms, timeout) != state.idle:
                state.idle = not state.idle
                self._changed(key)
        return sorted(key for key, n in self._changes.items() if self._clean_at.get(key) != n)

    def states(self, partitions: Iterable[tuple[str, int]] | None = None, now_ms: int | None = None
               ) -> list[PartitionState]:
        """Copies of the states of ``partitions`` (default: the :meth:`dirty` ones) to write, with ``idle`` judged
        at ``now_ms``; ordered by (topic, partition)."""
        keys = self.dirty(now_ms) if partitions is None else sorted((str(t), int(p)) for t, p in partitions)
        timeout = self._settings.idle_timeout_ms
        out = []
        for key in keys:
            state = self._states[key]
            state.idle = self._progress[key].idle(now_ms, timeout)
            self._copied_at[key] = self._changes.get(key, 0)
            out.append(state.copy())
        return out

    def written(self, states: Iterable[PartitionState]) -> None:
        """These states (from :meth:`states`) are acknowledged by the changelog: their partitions are clean unless
        changed since they were copied."""
        for state in states:
            key = (state.topic, state.partition)
            if key in self._copied_at:
                self._clean_at[key] = self._copied_at[key]


def _newest_of(states: list[PartitionState]) -> np.ndarray:
    """Newest event time each state has seen (int64 minimum for none)."""
    return np.array([_INT64_MIN if s.newest_ms is None else s.newest_ms for s in states], dtype=np.int64)


def _newest_before(code: np.ndarray, offsets: np.ndarray, event_ms: np.ndarray, start: np.ndarray) -> np.ndarray:
    """For each record, the newest event time of its partition before it (in offset order): ``start[code]`` joined
    with the records of the batch at lower offsets.  Judging lateness record by record, not against the state before
    the batch, makes it independent of how the consumer cut the partition into batches."""
    order = np.lexsort((offsets, code))
    code_s, event_s = code[order], event_ms[order]
    bounds = np.flatnonzero(np.diff(code_s)) + 1
    before = np.empty(code_s.size, dtype=np.int64)
    # One running maximum per partition of the batch: the loop is over partitions, never records.
    for lo, hi in zip(np.append(0, bounds).tolist(), np.append(bounds, code_s.size).tolist(), strict=True):
        running = np.maximum.accumulate(event_s[lo:hi])
        before[lo] = start[code_s[lo]]
        np.maximum(running[:-1], start[code_s[lo]], out=before[lo + 1:hi])
    out = np.empty_like(before)
    out[order] = before
    return out


def _delivered(progress: _PartitionState, newest_ms: int, now_ms: int | None) -> None:
    """As the Windower's partitions: a partition that delivered is active, and a reported lag of 0 is stale."""
    if progress.newest_ms is None or newest_ms > progress.newest_ms:
        progress.newest_ms = newest_ms
    if now_ms is not None:
        progress.active_ms = now_ms
    if progress.lag == 0:
        progress.lag = None


# ---------------------------------------------------------------------------------------------------------- closing


class MergeDecision(NamedTuple):
    """What the closing daemon publishes now, and the marker to write once it is published."""

    closed: list[ClosedWindow]  # ordered by start
    marker: TopicMarker
    waiting_for: list[int]  # partitions holding the topic back (no state yet, or not idle and behind); for metrics


def topic_watermark_ms(
    states: Mapping[int, PartitionState], partitions: Iterable[int], settings: WindowSettings,
    wall_clock_ms: int | None = None,
) -> tuple[int | None, list[int]]:
    """The watermark a topic's partition states allow, and the partitions holding it back.

    The lowest watermark of the partitions that are not idle; a partition without a state, or not idle and without
    records, holds the topic back entirely (None).  When every partition is idle: the newest event time seen minus
    the allowed lateness, or, with ``wall_clock_ms``, at least the wall clock minus the allowed lateness (a quiet
    topic's windows still close, with count 0)."""
    lateness = settings.allowed_lateness_ms
    partitions = sorted(set(int(p) for p in partitions))
    missing = [p for p in partitions if p not in states]
    if missing or not partitions:
        return None, missing
    holding = [p for p in partitions if not states[p].idle]
    if holding:
        newest = [states[p].newest_ms for p in holding]
        if any(ms is None for ms in newest):
            return None, [p for p in holding if states[p].newest_ms is None]
        low = min(newest)  # type: ignore[type-var]
        return low - lateness, [p for p, ms in zip(holding, newest, strict=True) if ms == low]
    seen = [states[p].newest_ms for p in partitions if states[p].newest_ms is not None]
    candidate = max(seen) - lateness if seen else None  # type: ignore[type-var]
    if wall_clock_ms is not None:
        by_clock = int(wall_clock_ms) - lateness
        candidate = by_clock if candidate is None else max(candidate, by_clock)
    return candidate, []


def merge_due(
    topic: str,
    states: Mapping[int, PartitionState],
    partitions: Iterable[int],
    marker: TopicMarker | None,
    settings: WindowSettings,
    wall_clock_ms: int | None = None,
) -> MergeDecision:
    """The topic windows that the partitions' states allow to close, each the exact merge of its partials.

    Parameters
    ----------
    topic : str
    states : mapping of partition to PartitionState
        The latest *written* state of each partition (read back from the changelog, never a daemon's unwritten
        state: a window published from records whose state was lost would see them again as late).
    partitions : iterable of int
        Every partition of the topic (from the cluster's metadata): one without a state holds the topic back.
    marker : TopicMarker or None
        The topic's last marker; None before the first publication.
    settings : WindowSettings
    wall_clock_ms : int, optional
        Wall clock, UTC epoch ms, to close a quiet topic's windows once every partition is idle.

    Returns
    -------
    MergeDecision
        ``closed``: windows ``[s, s + size)`` with ``s + size`` at or below the topic's watermark, from the first
        unpublished one on, in order, including count-0 windows; partials are merged in partition order so every
        daemon computes bit-identical figures.  ``marker``: the marker to write *after* the windows are published
        (unchanged if nothing closed).
    """
    size, offset = settings.size_ms, settings.offset_ms
    marker = marker if marker is not None else TopicMarker(topic)
    candidate, waiting = topic_watermark_ms(states, partitions, settings, wall_clock_ms)
    watermark = marker.watermark_ms
    if candidate is not None and (watermark is None or candidate > watermark):
        watermark = candidate
    through = marker.published_through_ms
    unchanged = MergeDecision([], marker, waiting)
    if watermark is None:
        return unchanged
    if through is not None:
        first = through
    else:
        starts = [start for s in states.values() for start in s.open]
        if not starts:
            return MergeDecision([], TopicMarker(topic, None, watermark, marker.last_closed, {}, marker.baseline),
                                 waiting)
        first = min(starts)
    limit = (watermark - offset) // size * size + offset
    if limit <= first:
        if watermark == marker.watermark_ms:
            return unchanged
        return MergeDecision([], TopicMarker(topic, through, watermark, marker.last_closed, marker.taken,
                                             marker.baseline), waiting)
    alpha = settings.sketch_alpha
    closed: list[ClosedWindow] = []
    taken: dict[int, dict[int, int]] = {}
    previous = marker.last_closed
    ordered = sorted(states.items())
    for start in range(first, limit, size):
        merged = WindowAggregate.empty(alpha)
        contributions: dict[int, int] = {}
        for partition, state in ordered:
            partial = state.open.get(start)
            if partial is not None:
                merged = merged.merge(partial)
                contributions[partition] = partial.count
        taken[start] = contributions
        closed.append(ClosedWindow(topic, start, start + size, merged, previous))
        previous = merged
    # Earlier publications' counts stay for a while: an owner that reads only a later marker still finds them.
    kept = {**marker.taken, **taken}
    kept = {start: kept[start] for start in sorted(kept)[-TAKEN_WINDOWS_KEPT:]}
    return MergeDecision(closed, TopicMarker(topic, limit, watermark, previous, kept, marker.baseline), waiting)


def is_closing_daemon(topic: str, assigned: Iterable[tuple[str, int]]) -> bool:
    """Whether the daemon that holds ``assigned`` closes ``topic``'s windows (it owns partition 0)."""
    return (topic, CLOSING_PARTITION) in {(str(t), int(p)) for t, p in assigned}
