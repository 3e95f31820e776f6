"""Event-time tumbling windows per topic over batches of scored records.

Every record carries an event time (UTC epoch milliseconds), a topic, a partition, a weight (> 0), a reconstruction
error (>= 0), the error's percentile rank (0-100) against the bundle's reference errors and an anomaly flag.  Records
are grouped into fixed-size windows aligned to ``offset_ms`` (see :func:`window_start_ms`); each window of each topic
accumulates a :class:`WindowAggregate`, which is mergeable and serializable.

:class:`Windower` keeps the open windows and a watermark per (topic, partition): the partition's newest event time
minus the allowed lateness.  A topic's windows close when the lowest watermark of its assigned partitions that still
have something to deliver has passed their end, as in Flink and Kafka Streams, so a consumer that reads one partition
hours ahead of another (a backlog being caught up, a rebalance) cannot close windows the others have not delivered yet.
A partition stops holding the others back while it is idle: its reported lag is 0, or its lag is unknown and it has
been silent for ``idle_timeout_ms``; a partition with lag > 0 is never idle.  From a topic's first window onward every
window is emitted exactly once and in order, including windows in which no record fell (count 0), and each closed
window is compared with the one just before it.  Records for an already closed window are late: they are not counted
and are reported in a mask.

Everything is batch-vectorized: the only Python loops run over topics, partitions, over (topic, window) groups of a
batch and over closed windows, never over records.  Nothing here reads a clock or does I/O: the caller passes the
wall-clock time and the partitions' lags.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from monitor.deviation import compare_sketches, effective_size
from monitor.errors import ConfigError, StateError
from monitor.sketch import ErrorSketch, _as_weights, prob_greater

__all__ = [
    "ClosedWindow",
    "OpenWindow",
    "PartitionProgress",
    "WindowAggregate",
    "WindowSettings",
    "Windower",
    "compare",
    "window_start_ms",
]

SNAPSHOT_VERSION = 2
# Version 1 kept one watermark per topic; it loads, and its partitions start unknown (see Windower.from_snapshot).
_READABLE_SNAPSHOT_VERSIONS = (1, 2)

_INT64_MIN = np.iinfo(np.int64).min
# Beyond this many distinct topics in one batch, topic codes come from one sort
# instead of one equality scan per topic (scans are ~10x faster per topic but O(n*T)).
_MAX_TOPIC_SCANS = 16


def window_start_ms(event_ms: np.ndarray, size_ms: int, offset_ms: int = 0) -> np.ndarray:
    """Start of the window containing each event time.

    Windows are ``[start, start + size_ms)`` with starts at every
    ``offset_ms + k * size_ms`` (k any integer), so alignment is a floor and works
    for times before the epoch too.

    Parameters
    ----------
    event_ms : np.ndarray
        Event times, UTC epoch milliseconds (integers).
    size_ms : int
        Window length in milliseconds, > 0.
    offset_ms : int, default 0
        UTC time (modulo ``size_ms``) of a window boundary.  To align daily windows
        to local midnight of a zone at UTC+02:00 use ``-2 * 3_600_000`` (local
        midnight is 22:00 UTC); ``offset_ms`` and ``offset_ms + size_ms`` are equivalent.

    Returns
    -------
    np.ndarray of int64
        Window start times, UTC epoch milliseconds.
    """
    size_ms = int(size_ms)
    offset_ms = int(offset_ms)
    if size_ms <= 0:
        raise ValueError(f"size_ms must be > 0, got {size_ms}")
    event_ms = np.asarray(event_ms, dtype=np.int64)
    # Integer floor division floors toward -inf, which is what alignment needs.
    return (event_ms - offset_ms) // size_ms * size_ms + offset_ms


def _weighted_mean(total: float, weight: float) -> float:
    return total / weight if weight > 0.0 else math.nan


@dataclass(eq=True)
class WindowAggregate:
    """Mergeable summary of the records of one window of one topic.

    Attributes
    ----------
    count : int
        Number of records.
    weight : float
        Sum of record weights, Σw.
    weighted_error : float
        Σ w·error.
    anomaly_weight : float
        Σ w over records flagged anomalous.
    weighted_percentile : float
        Σ w·percentile, percentiles in 0-100.
    sketch : ErrorSketch
        Weighted error distribution.
    weight_squared : float
        Σ w², for the effective sample size (Kish) that significance needs; 0 when unknown (state written
        before it was kept), which counts every record as weight 1.

    Notes
    -----
    Only sums are stored so that merging is exact addition and the order of
    records does not matter (up to float rounding).
    """

    count: int = 0
    weight: float = 0.0
    weighted_error: float = 0.0
    anomaly_weight: float = 0.0
    weighted_percentile: float = 0.0
    sketch: ErrorSketch = field(default_factory=ErrorSketch)
    weight_squared: float = 0.0

    @classmethod
    def empty(cls, sketch_alpha: float = 0.001) -> WindowAggregate:
        """Aggregate of no records whose sketch has relative accuracy ``sketch_alpha``."""
        return cls(sketch=ErrorSketch(sketch_alpha))

    def add(
        self,
        errors: np.ndarray,
        weights: np.ndarray | None,
        percentiles: np.ndarray,
        is_anomaly: np.ndarray,
    ) -> None:
        """Add a batch of records (vectorized, in place).

        Parameters
        ----------
        errors : np.ndarray
            Reconstruction errors, finite, >= 0.
        weights : np.ndarray or None
            Record weights, finite, > 0; ``None`` means 1 each.
        percentiles : np.ndarray
            Percentile rank of each error against the bundle's reference errors, 0-100.
        is_anomaly : np.ndarray of bool
            Whether each record exceeded the bundle threshold.
        """
        errors, weights, percentiles, is_anomaly = _validate_columns(errors, weights, percentiles, is_anomaly)
        if errors.size == 0:
            return
        self.count += int(errors.size)
        self.weight += float(weights.sum())
        self.weighted_error += float(np.dot(weights, errors))
        self.anomaly_weight += float(weights[is_anomaly].sum())
        self.weighted_percentile += float(np.dot(weights, percentiles))
        self.weight_squared += float(np.dot(weights, weights))
        self.sketch.add(errors, weights)

    def merge(self, other: WindowAggregate) -> WindowAggregate:
        """New aggregate of the records of both; ``ValueError`` if the sketches are incompatible."""
        return WindowAggregate(
            count=self.count + other.count,
            weight=self.weight + other.weight,
            weighted_error=self.weighted_error + other.weighted_error,
            anomaly_weight=self.anomaly_weight + other.anomaly_weight,
            weighted_percentile=self.weighted_percentile + other.weighted_percentile,
            sketch=self.sketch.merge(other.sketch),
            weight_squared=self.weight_squared + other.weight_squared,
        )

    def mean_error(self) -> float:
        """Weighted mean error Σw·e / Σw; NaN when empty."""
        return _weighted_mean(self.weighted_error, self.weight)

    def effective_records(self) -> float:
        """Kish's effective sample size (Σw)² / Σw²; the record count when all weights are 1; 0 when empty."""
        return effective_size(self.weight, self.weight_squared, self.count)

    def figures(self) -> dict[str, Any]:
        """Reportable figures of the window.

        Returns
        -------
        dict
            ``count`` (records), ``weight`` (Σw), ``mean_error`` (weighted mean),
            ``p50``/``p90``/``p99`` (weighted error quantiles, relative accuracy
            ``sketch.alpha``), ``anomaly_rate`` (weighted share of anomalies, 0-1),
            ``mean_percentile`` (weighted mean percentile, 0-100),
            ``effective_records`` (Kish's (Σw)²/Σw², 0 when empty).  All but
            ``count``, ``weight`` and ``effective_records`` are NaN for an empty window.
        """
        return {
            "count": self.count,
            "weight": self.weight,
            "mean_error": self.mean_error(),
            "p50": self.sketch.quantile(0.5),
            "p90": self.sketch.quantile(0.9),
            "p99": self.sketch.quantile(0.99),
            "anomaly_rate": _weighted_mean(self.anomaly_weight, self.weight),
            "mean_percentile": _weighted_mean(self.weighted_percentile, self.weight),
            "effective_records": self.effective_records(),
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe representation."""
        return {
            "count": int(self.count),
            "weight": float(self.weight),
            "weighted_error": float(self.weighted_error),
            "anomaly_weight": float(self.anomaly_weight),
            "weighted_percentile": float(self.weighted_percentile),
            "sketch": self.sketch.to_dict(),
            "weight_squared": float(self.weight_squared),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowAggregate:
        """Inverse of :meth:`to_dict`; ``StateError`` if malformed."""
        try:
            return cls(
                count=int(data["count"]),
                weight=float(data["weight"]),
                weighted_error=float(data["weighted_error"]),
                anomaly_weight=float(data["anomaly_weight"]),
                weighted_percentile=float(data["weighted_percentile"]),
                sketch=ErrorSketch.from_dict(data["sketch"]),
                weight_squared=float(data.get("weight_squared", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"window aggregate cannot be restored: {exc!r}") from exc


def compare(current: WindowAggregate, previous: WindowAggregate | None) -> dict[str, float]:
    """How a window's errors compare with the window before it.

    Returns
    -------
    dict
        ``abnormality``: 100 × probability that a (weighted) error of ``current``
        exceeds one of ``previous``, same-bucket pairs counting half; 50 means
        "like before", 100 "every error larger".  ``mean_error_ratio``: current
        weighted mean error / previous one.  ``mean_error_percentile_in_previous``:
        weighted share (0-100) of the previous window's errors at or below the
        current weighted mean error.  ``ks_shift_vs_previous``, ``ks_surprise_vs_previous``,
        ``tail_shift_vs_previous``, ``tail_surprise_vs_previous``: the statistics of
        :func:`monitor.deviation.compare_sketches` (shifts 0-100, surprises -log10 p).
        Each is NaN when there is no previous window or either window is empty; the
        ratio is also NaN when the previous mean is 0.
    """
    nan = {
        "abnormality": math.nan,
        "mean_error_ratio": math.nan,
        "mean_error_percentile_in_previous": math.nan,
        "ks_shift_vs_previous": math.nan,
        "ks_surprise_vs_previous": math.nan,
        "tail_shift_vs_previous": math.nan,
        "tail_surprise_vs_previous": math.nan,
    }
    if previous is None or current.weight <= 0.0 or previous.weight <= 0.0:
        return nan
    current_mean = current.mean_error()
    previous_mean = previous.mean_error()
    statistics = compare_sketches(
        current.sketch, current.effective_records(), previous.sketch, previous.effective_records()
    )
    return {
        "abnormality": 100.0 * prob_greater(current.sketch, previous.sketch),
        "mean_error_ratio": current_mean / previous_mean if previous_mean > 0.0 else math.nan,
        "mean_error_percentile_in_previous": 100.0 * previous.sketch.rank(current_mean),
        **{f"{name}_vs_previous": value for name, value in statistics.items()},
    }


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class WindowSettings:
    """How records are windowed.

    Attributes
    ----------
    size_ms : int
        Window length, ms (> 0).  Default one hour.
    allowed_lateness_ms : int
        How far behind the newest event time of its partition a record may be and
        still count, ms (>= 0).  Default five minutes.
    offset_ms : int
        UTC time (mod ``size_ms``) of a window boundary, ms; see :func:`window_start_ms`.
    sketch_alpha : float
        Relative accuracy of the per-window error quantiles, in (0, 1).
    idle_timeout_ms : int
        A partition whose lag is unknown and that delivered nothing for this long,
        ms, stops holding its topic's windows open; 0 = never by silence (only a
        reported lag of 0 makes a partition idle).  Default five minutes.
    """

    size_ms: int = 3_600_000
    allowed_lateness_ms: int = 300_000
    offset_ms: int = 0
    sketch_alpha: float = 0.001
    idle_timeout_ms: int = 300_000

    def __post_init__(self) -> None:
        if not _is_int(self.size_ms) or self.size_ms <= 0:
            raise ConfigError(f"size_ms must be a positive integer number of milliseconds, got {self.size_ms!r}")
        if not _is_int(self.allowed_lateness_ms) or self.allowed_lateness_ms < 0:
            raise ConfigError(
                f"allowed_lateness_ms must be an integer number of milliseconds >= 0, got {self.allowed_lateness_ms!r}"
            )
        if not _is_int(self.offset_ms):
            raise ConfigError(f"offset_ms must be an integer number of milliseconds, got {self.offset_ms!r}")
        if not _is_int(self.idle_timeout_ms) or self.idle_timeout_ms < 0:
            raise ConfigError(
                f"idle_timeout_ms must be an integer number of milliseconds >= 0, got {self.idle_timeout_ms!r}"
            )
        alpha = self.sketch_alpha
        if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.integer, np.floating)):
            raise ConfigError(f"sketch_alpha must be a number in (0, 1), got {alpha!r}")
        if not (0.0 < float(alpha) < 1.0):
            raise ConfigError(f"sketch_alpha must be a number in (0, 1), got {alpha!r}")
        # Normalize numpy scalars so settings compare and serialize as plain Python values.
        object.__setattr__(self, "size_ms", int(self.size_ms))
        object.__setattr__(self, "allowed_lateness_ms", int(self.allowed_lateness_ms))
        object.__setattr__(self, "offset_ms", int(self.offset_ms))
        object.__setattr__(self, "sketch_alpha", float(alpha))
        object.__setattr__(self, "idle_timeout_ms", int(self.idle_timeout_ms))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe representation."""
        return {
            "size_ms": self.size_ms,
            "allowed_lateness_ms": self.allowed_lateness_ms,
            "offset_ms": self.offset_ms,
            "sketch_alpha": self.sketch_alpha,
            "idle_timeout_ms": self.idle_timeout_ms,
        }


@dataclass
class ClosedWindow:
    """A window of one topic that will receive no more records.

    Attributes
    ----------
    topic : str
    start_ms, end_ms : int
        Window bounds ``[start_ms, end_ms)``, UTC epoch milliseconds.
    aggregate : WindowAggregate
        Its records (count 0 for a window in which nothing arrived).
    previous : WindowAggregate or None
        The topic's window immediately before it in time (possibly empty); None
        for the topic's first window.
    assessment : dict or None
        Figures added after closing by whoever holds more context than the
        window (the baseline comparison and the decision, see
        :meth:`monitor.baseline.Baseline.assess`); None until then.

    Notes
    -----
    A window's ``aggregate`` is the very object that the next window holds as
    ``previous`` (and the Windower keeps as comparison base), so treat both as
    read-only; use ``merge`` to combine.
    """

    topic: str
    start_ms: int
    end_ms: int
    aggregate: WindowAggregate
    previous: WindowAggregate | None
    assessment: dict[str, Any] | None = field(default=None, compare=False)

    def figures(self) -> dict[str, Any]:
        """``topic``, ``start_ms``, ``end_ms``, the aggregate's figures, the :func:`compare` figures and the assessment."""
        out: dict[str, Any] = {"topic": self.topic, "start_ms": self.start_ms, "end_ms": self.end_ms}
        out.update(self.aggregate.figures())
        out.update(compare(self.aggregate, self.previous))
        out.update(self.assessment or {})
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe representation."""
        return {
            "topic": self.topic,
            "start_ms": int(self.start_ms),
            "end_ms": int(self.end_ms),
            "aggregate": self.aggregate.to_dict(),
            "previous": None if self.previous is None else self.previous.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClosedWindow:
        """Inverse of :meth:`to_dict`; ``StateError`` if malformed."""
        try:
            previous = data["previous"]
            return cls(
                topic=str(data["topic"]),
                start_ms=int(data["start_ms"]),
                end_ms=int(data["end_ms"]),
                aggregate=WindowAggregate.from_dict(data["aggregate"]),
                previous=None if previous is None else WindowAggregate.from_dict(previous),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"closed window cannot be restored: {exc!r}") from exc


class OpenWindow(NamedTuple):
    """A window still accepting records (for inspection; the aggregate is live, do not mutate)."""

    topic: str
    start_ms: int
    end_ms: int
    aggregate: WindowAggregate


def _validate_columns(
    errors: np.ndarray, weights: np.ndarray | None, percentiles: np.ndarray, is_anomaly: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Record columns as flat float64/bool arrays of one length, or ``ValueError``."""
    errors = np.asarray(errors, dtype=np.float64).ravel()
    n = errors.size
    weights = _as_weights(weights, n)
    percentiles = np.asarray(percentiles, dtype=np.float64).ravel()
    is_anomaly = np.asarray(is_anomaly, dtype=bool).ravel()
    if percentiles.size != n or is_anomaly.size != n:
        raise ValueError(
            f"record columns differ in length: errors {n}, percentiles {percentiles.size}, is_anomaly {is_anomaly.size}"
        )
    if n:
        if not (np.isfinite(errors).all() and (errors >= 0.0).all()):
            raise ValueError("errors must be finite and >= 0")
        if not ((percentiles >= 0.0).all() and (percentiles <= 100.0).all()):
            raise ValueError("percentiles must be in [0, 100]")
    return errors, weights, percentiles, is_anomaly


def _factorize(topics: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Distinct topics (first-seen order for the first few) and each record's code into them.

    One equality scan per topic over the whole batch beats ``np.unique`` on
    strings several-fold when a batch holds a handful of topics, the common case
    (subsetting the string array between scans would cost more than rescanning);
    many topics fall back to one sort of the records not yet coded.
    """
    n = topics.size
    codes = np.full(n, -1, dtype=np.intp)
    names: list[Any] = []
    first = 0
    while len(names) < _MAX_TOPIC_SCANS:
        name = topics[first]
        codes[np.asarray(topics == name, dtype=bool)] = len(names)
        names.append(name)
        first = int(np.argmax(codes < 0))
        if codes[first] >= 0:
            return [str(name) for name in names], codes
    remaining = np.flatnonzero(codes < 0)
    unique, inverse = np.unique(topics[remaining], return_inverse=True)
    codes[remaining] = inverse.ravel() + len(names)
    names.extend(unique.tolist())
    return [str(name) for name in names], codes


def _run_starts(*sorted_keys: np.ndarray) -> np.ndarray:
    """Positions where any of the co-sorted key arrays changes value (always includes 0)."""
    n = sorted_keys[0].size
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for key in sorted_keys:
        change[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(change)


def absorb_grouped(
    targets: list[dict[int, WindowAggregate]],
    code: np.ndarray,
    window_index: np.ndarray,
    errors: np.ndarray,
    weights: np.ndarray,
    percentiles: np.ndarray,
    is_anomaly: np.ndarray,
    settings: WindowSettings,
) -> None:
    """Add records to open windows: record ``i`` goes to ``targets[code[i]][start of window_index[i]]``.

    ``targets`` are the open windows (by start, UTC epoch ms) of whatever the caller groups by: a topic (the Windower)
    or one partition of a topic (:mod:`monitor.partials`).  Records are grouped by (target, window, sketch bucket)
    with one sort and each group's sums are added, so the only Python loop runs over (target, window) groups.
    Columns must already be validated (:func:`_validate_columns`); missing windows are created empty.
    """
    alpha = settings.sketch_alpha
    bucket = ErrorSketch(alpha).bucket_indices(errors)

    # One int64 key sorts by target, then window, then bucket; fall back to a
    # lexsort when the ranges are too wide to pack (absurd time spans).
    k_min, k_span = int(window_index.min()), int(window_index.max() - window_index.min()) + 1
    b_min, b_span = int(bucket.min()), int(bucket.max() - bucket.min()) + 1
    t_span = int(code.max()) + 1
    if t_span * k_span * b_span < 2**62:
        key = (code.astype(np.int64) * k_span + (window_index - k_min)) * b_span + (bucket - b_min)
        order = np.argsort(key)
    else:
        order = np.lexsort((bucket, window_index, code))
    code_s, window_s, bucket_s = code[order], window_index[order], bucket[order]
    weight_s = weights[order]

    group_starts = _run_starts(code_s, window_s)
    pair_starts = _run_starts(code_s, window_s, bucket_s)
    counts = np.diff(np.append(group_starts, code_s.size))
    weight_sum = np.add.reduceat(weight_s, group_starts)
    weight_squared_sum = np.add.reduceat(weight_s * weight_s, group_starts)
    error_sum = np.add.reduceat(weight_s * errors[order], group_starts)
    anomaly_sum = np.add.reduceat(np.where(is_anomaly[order], weight_s, 0.0), group_starts)
    percentile_sum = np.add.reduceat(weight_s * percentiles[order], group_starts)
    pair_weight = np.add.reduceat(weight_s, pair_starts)
    pair_bucket = bucket_s[pair_starts]
    # Pairs are nested in groups, so each group's buckets are a contiguous, sorted slice.
    pair_bounds = np.append(np.searchsorted(pair_starts, group_starts), pair_starts.size).tolist()

    size, offset = settings.size_ms, settings.offset_ms
    group_code = code_s[group_starts].tolist()
    group_start_ms = (window_s[group_starts] * size + offset).tolist()
    for g, (c, start_ms) in enumerate(zip(group_code, group_start_ms, strict=True)):
        open_windows = targets[c]
        aggregate = open_windows.get(start_ms)
        if aggregate is None:
            aggregate = open_windows[start_ms] = WindowAggregate.empty(alpha)
        aggregate.count += int(counts[g])
        aggregate.weight += float(weight_sum[g])
        aggregate.weighted_error += float(error_sum[g])
        aggregate.anomaly_weight += float(anomaly_sum[g])
        aggregate.weighted_percentile += float(percentile_sum[g])
        aggregate.weight_squared += float(weight_squared_sum[g])
        lo, hi = pair_bounds[g], pair_bounds[g + 1]
        aggregate.sketch.add_buckets(pair_bucket[lo:hi], pair_weight[lo:hi])


class PartitionProgress(NamedTuple):
    """How far one partition has delivered, for inspection and metrics."""

    topic: str
    partition: int
    newest_ms: int | None  # newest event time delivered, UTC epoch ms; None: nothing yet
    lag: int | None  # records left to deliver as last reported; None: unknown
    idle: bool  # not holding its topic's windows open


class _PartitionState:
    """One partition's progress: newest event time delivered, last reported lag, last activity (assignment or
    records, wall clock), and whether it is assigned here (restored partitions wait dormant until assigned again)."""

    __slots__ = ("newest_ms", "lag", "active_ms", "assigned")

    def __init__(self, newest_ms: int | None = None, assigned: bool = True, active_ms: int | None = None) -> None:
        self.newest_ms = newest_ms
        self.lag: int | None = None
        self.active_ms = active_ms
        self.assigned = assigned

    def idle(self, now_ms: int | None, idle_timeout_ms: int) -> bool:
        """Whether this partition has nothing to deliver: lag 0, or lag unknown and silent for the idle timeout.

        A partition with lag > 0 is never idle, however long it stays silent: the consumer will get to it."""
        if self.lag is not None:
            return self.lag == 0
        if idle_timeout_ms <= 0 or now_ms is None or self.active_ms is None:
            return False
        return now_ms - self.active_ms >= idle_timeout_ms


class _TopicState:
    """Per-topic progress: watermark, how far windows are closed, open windows, last closed window, partitions."""

    __slots__ = ("watermark_ms", "closed_until_ms", "open", "last_closed", "partitions")

    def __init__(self) -> None:
        # Topic watermark: never moves back; windows ending at or before it are closed.
        self.watermark_ms: int | None = None
        # End of the last closed window == start of the next window to close.
        self.closed_until_ms: int | None = None
        self.open: dict[int, WindowAggregate] = {}
        self.last_closed: WindowAggregate | None = None
        self.partitions: dict[int, _PartitionState] = {}


class Windower:
    """Running per-topic tumbling windows over event time, with a watermark per partition.

    Parameters
    ----------
    settings : WindowSettings

    Notes
    -----
    **Watermarks.**  A partition's watermark is its newest event time minus ``allowed_lateness_ms``.  A topic's
    watermark is the lowest watermark of its assigned partitions that are not idle; a partition that is assigned but
    has delivered nothing yet holds the topic back entirely.  When every assigned partition is idle (everything has
    been delivered), the topic's watermark is the newest event time seen minus the allowed lateness, as for a single
    partition (Kafka Streams' stream time).  The topic watermark never moves back.  A window ``[s, s + size_ms)``
    closes when ``s + size_ms <= watermark``.

    **Idle partitions.**  A partition is idle when its last reported lag (:meth:`report_lags`) is 0 and it has
    delivered nothing since, or when its lag is unknown and it has delivered nothing for ``idle_timeout_ms`` of wall
    clock (counted from its assignment or its last records; only when the caller passes ``now_ms``).  A partition
    with a reported lag > 0 is never idle.

    **Assignment.**  Partitions enter by :meth:`assign` (unknown until they deliver or are idle) or implicitly with
    their first records; :meth:`revoke` drops their watermarks.  A topic none of whose partitions is assigned does
    not advance.

    **Closing.**  Closing starts at the topic's first window (the earliest window of the records that created the
    topic, or an earlier one opened before anything closed) and proceeds window by window, so gaps produce count-0
    windows.  Closed windows of one call are returned ordered by ``(start_ms, topic)``.
    """

    def __init__(self, settings: WindowSettings | None = None) -> None:
        self._settings = settings if settings is not None else WindowSettings()
        self._topics: dict[str, _TopicState] = {}

    @property
    def settings(self) -> WindowSettings:
        return self._settings

    def topics(self) -> list[str]:
        """Known topics, sorted."""
        return sorted(self._topics)

    def watermark_ms(self, topic: str) -> int | None:
        """Current watermark of ``topic`` (UTC epoch ms), None for an unknown topic or one not started."""
        state = self._topics.get(topic)
        return None if state is None else state.watermark_ms

    def progress(self, now_ms: int | None = None) -> list[PartitionProgress]:
        """Every assigned partition's progress, ordered by ``(topic, partition)``; ``now_ms`` judges idleness."""
        timeout = self._settings.idle_timeout_ms
        return [
            PartitionProgress(name, p, part.newest_ms, part.lag, part.idle(now_ms, timeout))
            for name in sorted(self._topics)
            for p, part in sorted(self._topics[name].partitions.items())
            if part.assigned
        ]

    # ------------------------------------------------------------------ assignment
    def assign(self, partitions: Iterable[tuple[str, int]], now_ms: int | None = None) -> None:
        """Partitions now read by the caller.  New ones start unknown and hold their topic back until they deliver
        records or turn idle; one restored from a snapshot keeps its watermark.  ``now_ms`` (wall clock) starts the
        idle timeout."""
        for topic, partition in partitions:
            state = self._topics.setdefault(str(topic), _TopicState())
            part = state.partitions.get(int(partition))
            if part is None:
                state.partitions[int(partition)] = _PartitionState(active_ms=now_ms)
            else:
                part.assigned, part.lag, part.active_ms = True, None, now_ms

    def revoke(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Partitions no longer read by the caller: their watermarks leave with them.  Open windows stay (they hold
        the records already counted); the remaining partitions close them."""
        for topic, partition in partitions:
            state = self._topics.get(str(topic))
            if state is not None:
                state.partitions.pop(int(partition), None)

    def close_abandoned(self, before_ms: int) -> list[ClosedWindow]:
        """Close the open windows of every topic none of whose partitions is assigned here any more, once all of them
        ended at or before ``before_ms`` (UTC epoch ms, the caller's oldest acceptable event time): no record can
        reach them, and no watermark of this consumer would ever close them. Ordered by ``(start_ms, topic)``."""
        size = self._settings.size_ms
        closed: list[ClosedWindow] = []
        for name, state in self._topics.items():
            if not state.open or any(part.assigned for part in state.partitions.values()):
                continue
            end = max(state.open) + size
            if end > before_ms:
                continue
            if state.watermark_ms is None or end > state.watermark_ms:
                state.watermark_ms = end
            closed.extend(self._close_topic(name, state))
        closed.sort(key=lambda w: (w.start_ms, w.topic))
        return closed

    def forget_quiet_topics(self, before_ms: int) -> list[str]:
        """Drop the state of every topic that no record can change any more; return their names, sorted.

        A topic is quiet when none of its partitions is assigned here, none of its windows is open, and its windows
        closed, and its watermark, lie before ``before_ms`` (UTC epoch ms). The caller passes its oldest acceptable
        event time (the daemon: now minus ``window.max_past_seconds``), so a record that the forgotten state would have
        made late is refused as too old instead: forgetting loses nothing, and the state is bounded by the topics
        active within that span rather than by every topic ever read."""
        quiet = []
        for name, state in self._topics.items():
            if state.open or any(part.assigned for part in state.partitions.values()):
                continue
            progress = max((ms for ms in (state.closed_until_ms, state.watermark_ms) if ms is not None), default=None)
            if progress is None or progress <= before_ms:
                quiet.append(name)
        for name in quiet:
            del self._topics[name]
        return sorted(quiet)

    def report_lags(self, lags: Mapping[tuple[str, int], int | None], now_ms: int | None = None) -> list[ClosedWindow]:
        """Record how many records each assigned partition has left to deliver and close what that makes due.

        Parameters
        ----------
        lags : mapping of (topic, partition) to int or None
            Records between the consumer's position and the end of the partition.  An assigned partition missing
            from ``lags`` (or mapped to None) has an unknown lag.
        now_ms : int, optional
            Wall clock, UTC epoch ms, for the idle timeout.

        Returns
        -------
        list of ClosedWindow
            Ordered by ``(start_ms, topic)``.
        """
        for name, state in self._topics.items():
            for p, part in state.partitions.items():
                if part.assigned:
                    lag = lags.get((name, p))
                    part.lag = None if lag is None else max(0, int(lag))
        return self._advance_all(now_ms, wall_clock=False)

    # ------------------------------------------------------------------ ingest
    def add(
        self,
        topics: np.ndarray,
        event_ms: np.ndarray,
        errors: np.ndarray,
        weights: np.ndarray | None,
        percentiles: np.ndarray,
        is_anomaly: np.ndarray,
        partitions: np.ndarray | None = None,
        now_ms: int | None = None,
    ) -> tuple[list[ClosedWindow], np.ndarray]:
        """Add a batch of scored records and close the windows the batch makes due.

        Parameters
        ----------
        topics : np.ndarray of str or object
            Topic of each record.
        event_ms : np.ndarray of int
            Event time of each record, UTC epoch milliseconds.
        errors : np.ndarray
            Reconstruction errors, finite, >= 0.
        weights : np.ndarray or None
            Record weights, finite, > 0; ``None`` means 1 each.
        percentiles : np.ndarray
            Percentile rank of each error against the bundle's reference errors, 0-100.
        is_anomaly : np.ndarray of bool
            Anomaly flags.
        partitions : np.ndarray of int, optional
            Partition of each record; ``None`` means partition 0 for all.
        now_ms : int, optional
            Wall clock, UTC epoch ms: the partitions that delivered records are active as of then (idle timeout).

        Returns
        -------
        closed : list of ClosedWindow
            Windows closed by this batch, ordered by ``(start_ms, topic)``.
        late : np.ndarray of bool
            Per record, True if it was late (its window was already closed for its
            topic when the batch arrived) and was therefore not counted.

        Notes
        -----
        Lateness is judged against the state before the batch, so the order of
        records within a batch does not matter.
        """
        settings = self._settings
        size = settings.size_ms
        offset = settings.offset_ms
        topics = np.asarray(topics).ravel()
        event_ms = np.asarray(event_ms)
        if event_ms.size and not np.issubdtype(event_ms.dtype, np.integer):
            raise ValueError(f"event_ms must be integer milliseconds, got dtype {event_ms.dtype}")
        event_ms = event_ms.astype(np.int64, copy=False).ravel()
        errors, weights, percentiles, is_anomaly = _validate_columns(errors, weights, percentiles, is_anomaly)
        n = event_ms.size
        if partitions is None:
            partitions = np.zeros(n, dtype=np.int64)
        else:
            partitions = np.asarray(partitions).ravel()
            if partitions.size and not np.issubdtype(partitions.dtype, np.integer):
                raise ValueError(f"partitions must be integers, got dtype {partitions.dtype}")
            partitions = partitions.astype(np.int64, copy=False)
        if topics.size != n or errors.size != n or partitions.size != n:
            raise ValueError(
                f"record columns differ in length: topics {topics.size}, event_ms {n}, errors {errors.size}, "
                f"partitions {partitions.size}"
            )
        if n == 0:
            return [], np.zeros(0, dtype=bool)

        names, code = _factorize(topics)
        states = [self._topics.setdefault(name, _TopicState()) for name in names]
        watermark = np.array([_INT64_MIN if s.watermark_ms is None else s.watermark_ms for s in states], dtype=np.int64)
        closed_until = np.array(
            [_INT64_MIN if s.closed_until_ms is None else s.closed_until_ms for s in states], dtype=np.int64
        )

        window_index = (event_ms - offset) // size
        start = window_index * size + offset
        late = (start + size <= watermark[code]) | (start < closed_until[code])

        # Newest event time per (topic, partition) of the batch.  Late records are behind their topic's watermark,
        # hence behind their partition's newest event, so including them changes nothing.
        pair, pair_of = np.unique((code.astype(np.int64) << 32) | (partitions & 0xFFFFFFFF), return_inverse=True)
        newest = np.full(pair.size, _INT64_MIN, dtype=np.int64)
        np.maximum.at(newest, pair_of.ravel(), event_ms)
        for key, latest in zip(pair.tolist(), newest.tolist(), strict=True):
            self._delivered(states[key >> 32], _signed32(key & 0xFFFFFFFF), latest, now_ms)

        accepted = ~late
        if not accepted.all():
            code, window_index = code[accepted], window_index[accepted]
            errors, weights = errors[accepted], weights[accepted]
            percentiles, is_anomaly = percentiles[accepted], is_anomaly[accepted]
        if code.size:
            self._absorb(states, code, window_index, errors, weights, percentiles, is_anomaly)

        closed: list[ClosedWindow] = []
        for name, state in zip(names, states, strict=True):
            closed.extend(self._advance(name, state, now_ms, wall_clock=False))
        closed.sort(key=lambda w: (w.start_ms, w.topic))
        return closed, late

    @staticmethod
    def _delivered(state: _TopicState, partition: int, newest_ms: int, now_ms: int | None) -> None:
        """A partition delivered records up to ``newest_ms``: it is assigned, active, and a lag of 0 is stale."""
        part = state.partitions.get(partition)
        if part is None:
            part = state.partitions[partition] = _PartitionState()
        part.assigned = True
        if part.newest_ms is None or newest_ms > part.newest_ms:
            part.newest_ms = newest_ms
        if now_ms is not None:
            part.active_ms = now_ms
        if part.lag == 0:
            # It had more after all, so the producer wrote after the report: every lag of 0 in this topic is as stale
            # (a batch may carry one partition's new records before another's). A lag > 0 stays until the next
            # report (holding back is safe).
            for other in state.partitions.values():
                if other.lag == 0:
                    other.lag = None

    def _absorb(
        self,
        states: list[_TopicState],
        code: np.ndarray,
        window_index: np.ndarray,
        errors: np.ndarray,
        weights: np.ndarray,
        percentiles: np.ndarray,
        is_anomaly: np.ndarray,
    ) -> None:
        """Add accepted records to their topics' open windows."""
        opens = [state.open for state in states]
        absorb_grouped(opens, code, window_index, errors, weights, percentiles, is_anomaly, self._settings)

    # ------------------------------------------------------------------ watermarks and closing
    def _topic_candidate(self, state: _TopicState, now_ms: int | None, wall_clock: bool) -> int | None:
        """The watermark the topic's partitions (and, with ``wall_clock``, the clock) allow now; None: no advance."""
        assigned = [part for part in state.partitions.values() if part.assigned]
        if not assigned:
            return None
        lateness, timeout = self._settings.allowed_lateness_ms, self._settings.idle_timeout_ms
        holding = [part for part in assigned if not part.idle(now_ms, timeout)]
        if holding:
            newest = [part.newest_ms for part in holding]
            if any(ms is None for ms in newest):
                return None  # an assigned partition has not said where it is
            return min(newest) - lateness  # type: ignore[type-var]
        # Every assigned partition has delivered all it holds: nothing is left to wait for.
        seen = [part.newest_ms for part in assigned if part.newest_ms is not None]
        candidate = max(seen) - lateness if seen else None
        if wall_clock and now_ms is not None:
            by_clock = int(now_ms) - lateness
            candidate = by_clock if candidate is None else max(candidate, by_clock)
        return candidate

    def _advance(self, topic: str, state: _TopicState, now_ms: int | None, wall_clock: bool) -> list[ClosedWindow]:
        candidate = self._topic_candidate(state, now_ms, wall_clock)
        if candidate is not None and (state.watermark_ms is None or candidate > state.watermark_ms):
            state.watermark_ms = candidate
        return self._close_topic(topic, state)

    def _advance_all(self, now_ms: int | None, wall_clock: bool) -> list[ClosedWindow]:
        closed: list[ClosedWindow] = []
        for name, state in self._topics.items():
            closed.extend(self._advance(name, state, now_ms, wall_clock))
        closed.sort(key=lambda w: (w.start_ms, w.topic))
        return closed

    def _close_topic(self, topic: str, state: _TopicState) -> list[ClosedWindow]:
        """Close, in order, every window of ``topic`` whose end is at or below its watermark."""
        if state.watermark_ms is None:
            return []
        size, offset = self._settings.size_ms, self._settings.offset_ms
        if state.closed_until_ms is not None:
            first = state.closed_until_ms
        elif state.open:
            first = min(state.open)
        else:
            return []
        # Largest window boundary <= watermark: windows starting before it have ended.
        limit = (state.watermark_ms - offset) // size * size + offset
        if limit <= first:
            return []
        alpha = self._settings.sketch_alpha
        out = []
        for start in range(first, limit, size):
            aggregate = state.open.pop(start, None)
            if aggregate is None:
                aggregate = WindowAggregate.empty(alpha)
            out.append(ClosedWindow(topic, start, start + size, aggregate, state.last_closed))
            state.last_closed = aggregate
        state.closed_until_ms = limit
        return out

    def close_due(self, now_ms: int) -> list[ClosedWindow]:
        """Close windows by wall clock, for topics whose records stopped arriving.

        For every topic whose assigned partitions are all idle (caught up, or silent for the idle timeout), the
        watermark is raised to ``now_ms - allowed_lateness_ms`` (never lowered), and every window ending at or before
        it closes, including count-0 windows up to then.  A topic with a partition that still has records to deliver
        (lag > 0, or unknown and not silent long enough) is left alone: the clock must not close windows that a
        lagging partition has yet to fill.  Records arriving later for closed windows are late.

        Parameters
        ----------
        now_ms : int
            Current wall-clock time, UTC epoch milliseconds, supplied by the caller.

        Returns
        -------
        list of ClosedWindow
            Ordered by ``(start_ms, topic)``.

        Notes
        -----
        Only meaningful when event time tracks wall-clock time; while a backlog is read its partitions have lag > 0,
        which is what keeps the clock out.
        """
        return self._advance_all(int(now_ms), wall_clock=True)

    def close_all(self) -> list[ClosedWindow]:
        """The input has ended (a file was read to its end): close every open window of every topic.

        Every topic's watermark is raised to the end of the latest open window of any topic, so all topics close up
        to the same time (quiet ones with count-0 windows).  Returns the closed windows ordered by ``(start_ms,
        topic)``."""
        size = self._settings.size_ms
        ends = [start + size for state in self._topics.values() for start in state.open]
        if not ends:
            return []
        end = max(ends)
        closed: list[ClosedWindow] = []
        for name, state in self._topics.items():
            if state.watermark_ms is None or end > state.watermark_ms:
                state.watermark_ms = end
            closed.extend(self._close_topic(name, state))
        closed.sort(key=lambda w: (w.start_ms, w.topic))
        return closed

    # ------------------------------------------------------------------ inspection / state
    def open_windows(self) -> list[OpenWindow]:
        """Windows still accepting records, ordered by ``(topic, start_ms)``."""
        size = self._settings.size_ms
        return [
            OpenWindow(name, start, start + size, aggregate)
            for name in sorted(self._topics)
            for start, aggregate in sorted(self._topics[name].open.items())
        ]

    def discard_figures(self) -> list[OpenWindow]:
        """Drop every figure and keep the event-time progress; return the open windows dropped, ordered by
        ``(topic, start_ms)``.

        For a state whose errors are of another bundle: the open windows and each topic's last closed window (what
        the next one would be compared with) go; watermarks, how far windows are closed and the partitions' newest
        event times stay, so no closed window opens again and a record late before is late still.  A window that was
        open starts again empty and holds only the records added from now on."""
        dropped = self.open_windows()
        for state in self._topics.values():
            state.open = {}
            state.last_closed = None
        return dropped

    def snapshot(self, bundle: str | None = None) -> dict[str, Any]:
        """JSON-safe state; :meth:`from_snapshot` continues exactly where this left off.

        Per partition only the newest event time is kept: lags and activity times belong to the running consumer.
        ``bundle`` (the content hash of the bundle whose scores the windows hold) is recorded, so that a restore
        under another bundle is refused."""
        topics = {}
        for name in sorted(self._topics):
            state = self._topics[name]
            topics[name] = {
                "watermark_ms": state.watermark_ms,
                "closed_until_ms": state.closed_until_ms,
                "last_closed": None if state.last_closed is None else state.last_closed.to_dict(),
                "open": [[start, state.open[start].to_dict()] for start in sorted(state.open)],
                "partitions": {
                    str(p): part.newest_ms for p, part in sorted(state.partitions.items()) if part.newest_ms is not None
                },
            }
        out = {"version": SNAPSHOT_VERSION, "settings": self._settings.to_dict(), "topics": topics}
        if bundle is not None:
            out["bundle"] = bundle
        return out

    @classmethod
    def from_snapshot(cls, settings: WindowSettings, snapshot: dict[str, Any], bundle: str | None = None) -> Windower:
        """Windower restored from :meth:`snapshot` output (possibly via JSON).

        ``settings`` may change ``allowed_lateness_ms`` and ``idle_timeout_ms`` (watermarks are kept as they were),
        but not ``size_ms``, ``offset_ms`` or ``sketch_alpha``, which would make the stored windows meaningless.

        Restored partitions keep their newest event time but wait, dormant, until :meth:`assign` (or their records)
        says they are read here again: a partition that moved to another consumer while this one was down must not
        hold its topic back.  A version-1 snapshot (one watermark per topic) restores its windows and topic
        watermarks; its partitions start unknown.

        With ``bundle``, a snapshot recorded under another bundle is refused (errors of two bundles are not on one
        scale, so their windows must not be continued); one that recorded no bundle (written before bundles were
        recorded) is accepted.

        Raises
        ------
        StateError
            If the snapshot is malformed, of another version or incompatible with ``settings``.
        """
        version = snapshot.get("version") if isinstance(snapshot, dict) else type(snapshot).__name__
        if version not in _READABLE_SNAPSHOT_VERSIONS:
            raise StateError(
                f"window state has version {version!r}; this seqmon reads versions "
                f"{', '.join(map(str, _READABLE_SNAPSHOT_VERSIONS))}: remove the state directory to start afresh"
            )
        written_by = snapshot.get("bundle")
        if bundle is not None and written_by is not None and written_by != bundle:
            raise StateError(
                f"window state was written by bundle {written_by!r}, this daemon scores with bundle {bundle!r}: "
                "windows of two bundles are not on one scale; run that bundle, or remove the state to start afresh"
            )
        try:
            stored = snapshot["settings"]
            for key in ("size_ms", "offset_ms", "sketch_alpha"):
                if stored[key] != getattr(settings, key):
                    raise StateError(
                        f"window state was written with {key}={stored[key]!r} but settings say "
                        f"{getattr(settings, key)!r}; remove the state or restore the setting"
                    )
            out = cls(settings)
            for name, data in snapshot["topics"].items():
                state = _TopicState()
                state.watermark_ms = None if data["watermark_ms"] is None else int(data["watermark_ms"])
                state.closed_until_ms = None if data["closed_until_ms"] is None else int(data["closed_until_ms"])
                last = data["last_closed"]
                state.last_closed = None if last is None else WindowAggregate.from_dict(last)
                state.open = {int(start): WindowAggregate.from_dict(agg) for start, agg in data["open"]}
                state.partitions = {
                    int(p): _PartitionState(newest_ms=int(ms), assigned=False)
                    for p, ms in data.get("partitions", {}).items()
                }
                out._topics[str(name)] = state
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"window state cannot be restored: {exc!r}") from exc
        return out


def _signed32(value: int) -> int:
    """A partition number back from its low 32 bits (partitions are >= 0 in Kafka; -1 survives for tests)."""
    return value - (1 << 32) if value >= 1 << 31 else value
