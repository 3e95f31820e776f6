"""The streaming step every source shares: decode → vectorize → score → window, one batch at a time.

The replay of a file, the demo and the Kafka daemon all call ``Pipeline.process`` with a ``RecordBatch``; only where
the batch comes from differs.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from monitor.bundle import Bundle
from monitor.decode import EMPTY, INVALID_TIMESTAMP, INVALID_WEIGHT, MAX_EVENT_MS, MAX_WEIGHT, Decoded, decode_plain
from monitor.errors import InputError
from monitor.window import ClosedWindow, Windower


@dataclass(frozen=True)
class RecordBatch:
    """Raw records as a source hands them over. Event times are UTC epoch ms (the Kafka record timestamp)."""

    values: Sequence[bytes]
    timestamps_ms: np.ndarray  # int64
    topics: np.ndarray  # object array of topic names, one per record
    weights: np.ndarray | None = None  # float64; None: every record weighs 1 unless its value carries a weight
    partitions: np.ndarray | None = None
    offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class BatchResult:
    closed: list[ClosedWindow]
    reasons: np.ndarray  # "" for a scored record, else why it was not
    late: np.ndarray  # bool: scored but its window had already closed
    errors: np.ndarray  # NaN where not scored
    invalid_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass
class ScoredBatch:
    """A batch decoded and scored, before windowing: per record of the batch ``reasons`` and ``errors``; per scored
    record (``scored``: their indices in the batch) the columns a window step takes."""

    reasons: np.ndarray
    errors: np.ndarray
    scored: np.ndarray
    event_ms: np.ndarray
    weights: np.ndarray
    percentiles: np.ndarray
    is_anomaly: np.ndarray

    def result(self, closed: list[ClosedWindow], late: np.ndarray) -> BatchResult:
        """The batch's result once windowed: ``late`` per record of the batch."""
        invalid = Counter(r for r in self.reasons[self.reasons != ""].tolist())
        return BatchResult(closed=closed, reasons=self.reasons, late=late, errors=self.errors,
                           invalid_by_reason=dict(invalid))


class Pipeline:
    """Decodes, scores and windows batches with one bundle; the bundle can be swapped between batches."""

    def __init__(self, bundle: Bundle, windower: Windower, decode: Callable[[Sequence[bytes]], Decoded] = decode_plain):
        self.bundle = bundle
        self.windower = windower
        self.decode = decode

    def score(
        self, batch: RecordBatch, max_event_ms: int | None = None, min_event_ms: int | None = None
    ) -> ScoredBatch:
        """Decode and score one batch, without windowing it.

        Records with an event time after ``max_event_ms`` or before ``min_event_ms`` (UTC epoch ms) are not scored
        but marked ``invalid_timestamp``: a clock far ahead would push the watermark and make the real records late,
        and one far behind would open a window that every hour since must close after it. Event times outside 0 …
        ``MAX_EVENT_MS`` (a Kafka record without a timestamp has -1) and weights that are not finite, > 0 and at most
        ``MAX_WEIGHT`` are invalid whatever the bounds."""
        decoded = self.decode(batch.values)
        ok = np.flatnonzero(decoded.ok)
        errors = np.full(len(batch), np.nan)
        if len(ok) == len(batch):
            errors[:] = self.bundle.errors(decoded.sequences)  # the usual batch: no per-record copy
        elif len(ok):
            errors[ok] = self.bundle.errors([decoded.sequences[i] for i in ok])
        reasons = decoded.reasons
        reasons[decoded.ok & np.isnan(errors)] = EMPTY
        stamps = np.where(decoded.timestamps_ms >= 0, decoded.timestamps_ms, batch.timestamps_ms)
        lowest = 0 if min_event_ms is None else max(0, min_event_ms)
        highest = MAX_EVENT_MS if max_event_ms is None else min(MAX_EVENT_MS, max_event_ms)
        reasons[(reasons == "") & ((stamps < lowest) | (stamps > highest))] = INVALID_TIMESTAMP
        if batch.weights is None:
            weights = decoded.weights
        else:
            weights = np.asarray(batch.weights, dtype=np.float64)
            usable = (weights > 0) & (weights <= MAX_WEIGHT)  # NaN fails both
            reasons[(reasons == "") & ~usable] = INVALID_WEIGHT
        scored = np.flatnonzero(reasons == "")
        e = errors[scored]
        return ScoredBatch(
            reasons=reasons, errors=errors, scored=scored, event_ms=stamps[scored], weights=weights[scored],
            percentiles=self.bundle.percentile_rank(e), is_anomaly=self.bundle.is_anomaly(e),
        )

    def process(
        self,
        batch: RecordBatch,
        max_event_ms: int | None = None,
        now_ms: int | None = None,
        min_event_ms: int | None = None,
    ) -> BatchResult:
        """Score (:meth:`score`) and window one batch; every record ends counted in a window, ``late`` or with a
        reason. ``now_ms`` (wall clock, UTC epoch ms) marks the batch's partitions active for the windower's idle
        timeout."""
        s = self.score(batch, max_event_ms, min_event_ms)
        closed, late_scored = self.windower.add(
            batch.topics[s.scored],
            s.event_ms,
            s.errors[s.scored],
            s.weights,
            s.percentiles,
            s.is_anomaly,
            partitions=None if batch.partitions is None else batch.partitions[s.scored],
            now_ms=now_ms,
        )
        late = np.zeros(len(batch), dtype=bool)
        late[s.scored[late_scored]] = True
        return s.result(closed, late)


def read_stream_csv(path: str | Path, topic: str = "replay", batch_size: int = 50_000) -> Iterator[RecordBatch]:
    """Batches of a timestamped file: CSV with columns ``timestamp_ms`` (UTC epoch ms) and ``sequence``, optionally
    ``weight`` (what ``seqmon generate --hours`` writes)."""
    import pandas as pd  # noqa: PLC0415

    path = Path(path)
    if not path.exists():
        raise InputError(f"stream file {path} does not exist")
    try:
        frame = pd.read_csv(path, dtype={"sequence": str}, keep_default_na=False)
    except (ValueError, OSError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    for column in ("timestamp_ms", "sequence"):
        if column not in frame.columns:
            raise InputError(f"{path} has no column {column!r}; its columns are: {', '.join(frame.columns)}")
    stamps = pd.to_numeric(frame["timestamp_ms"], errors="coerce")
    if stamps.isna().any():
        first = int(np.flatnonzero(stamps.isna().to_numpy())[0])
        raise InputError(f"{path}: timestamp_ms of row {first + 2} is not an integer of epoch milliseconds")
    stamps = stamps.to_numpy(dtype=np.int64)
    weights = frame["weight"].to_numpy(dtype=np.float64) if "weight" in frame.columns else None
    values = [s.encode("utf-8") for s in frame["sequence"].tolist()]
    for start in range(0, len(values), batch_size):
        stop = start + batch_size
        yield RecordBatch(
            values=values[start:stop],
            timestamps_ms=stamps[start:stop],
            topics=np.full(len(values[start:stop]), topic, dtype=object),
            weights=None if weights is None else weights[start:stop],
        )


def format_window(window: ClosedWindow) -> str:
    """One line of the hourly report (the figures of :meth:`monitor.baseline.Baseline.assess` when assessed)."""
    f = window.figures()
    start = time.strftime("%Y-%m-%d %H:%M", time.gmtime(window.start_ms / 1000))
    nan = float("nan")
    return (
        f"{start}Z  {window.topic:<10} {f['count']:>8,} {f['mean_error']:>11.3g} {f['p99']:>10.3g} "
        f"{100 * f['anomaly_rate']:>8.2f}% {f['mean_error_percentile_in_previous']:>8.1f} {f['abnormality']:>6.1f} "
        f"{f.get('shift', nan):>6.1f} {f.get('surprise', nan):>8.1f} {f.get('compared_with', ''):>8} "
        f"{f.get('statistic', ''):>4}  {f.get('decision', '')}"
    )


REPORT_HEADER = (
    f"{'window start (UTC)':<18} {'topic':<10} {'records':>8} {'mean error':>11} {'p99':>10} {'anomalies':>9} "
    f"{'orig pct':>8} {'abnorm':>6} {'shift':>6} {'surprise':>8} {'against':>8} {'stat':>4}  decision"
)


def window_record(window: ClosedWindow) -> dict:
    """One closed window as a JSON-safe object: ``window_start`` / ``window_end`` (ISO 8601 UTC), ``topic``,
    ``records``, ``deviating`` (the page decision) and every figure of the window; NaN figures become ``None``."""
    f = window.figures()

    def iso(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")

    out: dict = {
        "window_start": iso(window.start_ms),
        "window_end": iso(window.end_ms),
        "topic": window.topic,
        "records": f["count"],
        "deviating": bool(f.get("deviating", False)),
    }
    for key, value in f.items():
        if key in out or key == "count":
            continue
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        elif hasattr(value, "item"):  # numpy scalars
            value = value.item()
        out[key] = value
    return out
