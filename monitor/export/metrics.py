"""Prometheus metrics of the monitor (the export stage).

Every metric is named ``seqmon_*`` and described once, in :data:`METRICS_DOC`,
from which :class:`Metrics` builds it; :func:`metrics_table` renders that list
for the README.  Times are Unix seconds (UTC), durations seconds, reconstruction
errors dimensionless, percentiles and abnormality 0-100, ratios of anomalies 0-1.

:class:`Metrics` takes its ``CollectorRegistry`` from the caller (tests use a
fresh one each).  Updates cost O(1) Python operations per batch: the per-record
error histogram is binned with numpy into a custom collector, because
``prometheus_client.Histogram`` can only observe one value at a time.
Nothing here reads a clock except :meth:`Metrics.set_bundle` when no load time is given.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.metrics_core import HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from monitor.deviation import SEVERITY

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from monitor.deviation import DeviationSettings
    from monitor.window import ClosedWindow, PartitionProgress

__all__ = ["ERROR_BUCKETS", "METRICS_DOC", "MetricDoc", "Metrics", "json_safe", "metrics_table", "serve"]


class MetricDoc(NamedTuple):
    """One exported metric: exposed name, Prometheus type, label names, help text."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str


_T = ("topic",)

METRICS_DOC: tuple[MetricDoc, ...] = (
    MetricDoc("seqmon_records_consumed_total", "counter", _T, "Records read from Kafka, valid or not."),
    MetricDoc("seqmon_records_scored_total", "counter", _T, "Records scored by the autoencoder."),
    MetricDoc(
        "seqmon_records_invalid_total",
        "counter",
        ("topic", "reason"),
        "Records that could not be decoded or scored, by reason.",
    ),
    MetricDoc(
        "seqmon_records_late_total",
        "counter",
        _T,
        "Scored records whose event-time window had already closed; they count in no window.",
    ),
    MetricDoc(
        "seqmon_records_late_after_publication_total",
        "counter",
        _T,
        "Fleet mode: records that entered a partition's partial window after the fleet had published that window "
        "(a partition judged idle that delivered again); also counted in seqmon_records_late_total.",
    ),
    MetricDoc(
        "seqmon_records_covered_total",
        "counter",
        _T,
        "Fleet mode: records read again that their partition's window state already covers (skipped, never counted "
        "twice).",
    ),
    MetricDoc(
        "seqmon_anomalies_total",
        "counter",
        _T,
        "Scored records whose reconstruction error exceeded the bundle threshold.",
    ),
    MetricDoc(
        "seqmon_record_error",
        "histogram",
        _T,
        "Per-record reconstruction error (dimensionless); non-finite errors land in +Inf and are left out of the sum.",
    ),
    MetricDoc("seqmon_batch_duration_seconds", "histogram", (), "Time to process one consumed batch, seconds."),
    MetricDoc(
        "seqmon_windows_closed_total", "counter", _T, "Event-time windows closed, including windows with no records."
    ),
    MetricDoc(
        "seqmon_window_start_timestamp_seconds",
        "gauge",
        _T,
        "Start of the last closed window, Unix seconds (event time).",
    ),
    MetricDoc(
        "seqmon_window_end_timestamp_seconds",
        "gauge",
        _T,
        "End (exclusive) of the last closed window, Unix seconds (event time).",
    ),
    MetricDoc(
        "seqmon_window_closed_timestamp_seconds",
        "gauge",
        _T,
        "Wall-clock time the last window was closed, Unix seconds.",
    ),
    MetricDoc("seqmon_window_records", "gauge", _T, "Records counted in the last closed window."),
    MetricDoc("seqmon_window_weight", "gauge", _T, "Sum of record weights in the last closed window."),
    MetricDoc(
        "seqmon_window_mean_error",
        "gauge",
        _T,
        "Weighted mean reconstruction error of the last closed window; NaN if empty.",
    ),
    MetricDoc(
        "seqmon_window_error_quantile",
        "gauge",
        ("topic", "quantile"),
        "Weighted reconstruction-error quantile of the last closed window (sketch accuracy); NaN if empty.",
    ),
    MetricDoc(
        "seqmon_window_anomaly_ratio",
        "gauge",
        _T,
        "Weighted share of anomalous records in the last closed window, 0-1; NaN if empty.",
    ),
    MetricDoc(
        "seqmon_window_mean_percentile",
        "gauge",
        _T,
        "Weighted mean percentile rank (0-100) of the last closed window's errors among the bundle's "
        "reference errors; NaN if empty.",
    ),
    MetricDoc(
        "seqmon_window_abnormality",
        "gauge",
        _T,
        "100 x probability that an error of the last closed window exceeds one of the window before "
        "(50 = unchanged), 0-100; NaN if either window is empty or there is none before.",
    ),
    MetricDoc(
        "seqmon_window_mean_error_ratio",
        "gauge",
        _T,
        "Weighted mean error of the last closed window / that of the window before; NaN if undefined.",
    ),
    MetricDoc(
        "seqmon_window_mean_error_percentile_in_previous",
        "gauge",
        _T,
        "Weighted share (0-100) of the previous window's errors at or below the last closed window's "
        "mean error; NaN if undefined.",
    ),
    MetricDoc(
        "seqmon_window_effective_records",
        "gauge",
        _T,
        "Kish effective record count (sum w)^2 / sum w^2 of the last closed window (its records when weights are 1).",
    ),
    MetricDoc(
        "seqmon_window_shift",
        "gauge",
        _T,
        "Headline: percentage (0-100) of the last closed window's weight that moved to higher errors, from the "
        "comparison and statistic that decided (KS shift or tail excess); NaN if nothing was compared.",
    ),
    MetricDoc(
        "seqmon_window_surprise",
        "gauge",
        _T,
        "Significance of seqmon_window_shift, -log10 p under 'same traffic' (Kish effective sizes); NaN if none.",
    ),
    MetricDoc(
        "seqmon_window_severity",
        "gauge",
        _T,
        "Decision about the last closed window, the most severe over its comparisons: 0 ok, 1 ticket, 2 page.",
    ),
    MetricDoc(
        "seqmon_window_comparison_shift",
        "gauge",
        ("topic", "comparison", "statistic"),
        "Shift (0-100) of the last closed window against the previous window or the baseline of recent normal "
        "windows, by statistic (ks, tail); NaN if that comparison was not possible.",
    ),
    MetricDoc(
        "seqmon_window_comparison_surprise",
        "gauge",
        ("topic", "comparison", "statistic"),
        "Surprise (-log10 p) of the shift against the previous window or the baseline, by statistic (ks, tail); "
        "NaN if not possible.",
    ),
    MetricDoc(
        "seqmon_window_comparison_severity",
        "gauge",
        ("topic", "comparison"),
        "Decision of one comparison (previous, baseline) of the last closed window: 0 ok, 1 ticket, 2 page.",
    ),
    MetricDoc(
        "seqmon_window_baseline_windows",
        "gauge",
        _T,
        "Windows merged into the baseline the last closed window was compared with (0: no baseline yet).",
    ),
    MetricDoc(
        "seqmon_deviation_shift_threshold",
        "gauge",
        ("severity",),
        "Configured shift (0-100) at or above which a significant comparison pages or tickets.",
    ),
    MetricDoc(
        "seqmon_deviation_surprise_threshold",
        "gauge",
        ("severity",),
        "Configured surprise (-log10 p) at or above which a large enough shift pages or tickets.",
    ),
    # "windows" (plural) marks sums over all closed windows; a counter named
    # seqmon_window_weight_total would be family seqmon_window_weight, clashing with the gauge.
    MetricDoc(
        "seqmon_windows_weight_total",
        "counter",
        _T,
        "Sum of record weights over all closed windows, for fleet-wide weighted means.",
    ),
    MetricDoc(
        "seqmon_windows_weighted_error_total",
        "counter",
        _T,
        "Sum of weight x reconstruction error over all closed windows; divide by seqmon_windows_weight_total.",
    ),
    MetricDoc(
        "seqmon_consumer_lag_records",
        "gauge",
        ("topic", "partition"),
        "Records between the consumer position and the end of the partition.",
    ),
    MetricDoc(
        "seqmon_partitions_assigned",
        "gauge",
        _T,
        "Partitions of the topic this daemon reads, its share of the consumer group's assignment.",
    ),
    MetricDoc(
        "seqmon_topic_partitions",
        "gauge",
        _T,
        "Partitions of the topic in the cluster; above seqmon_partitions_assigned, other group members read the rest "
        "(without state.changelog_topic, this daemon's windows then cover its partitions only).",
    ),
    MetricDoc(
        "seqmon_watermark_timestamp_seconds",
        "gauge",
        _T,
        "Event-time watermark of the topic, Unix seconds: windows ending at or before it are closed. The lowest "
        "partition watermark among the assigned partitions that are not idle.",
    ),
    MetricDoc(
        "seqmon_partition_idle",
        "gauge",
        ("topic", "partition"),
        "1 when the partition is idle (caught up, or silent for the idle timeout) and so does not hold its topic's "
        "windows open; 0 when it does.",
    ),
    MetricDoc(
        "seqmon_bundle_info", "gauge", ("content_hash", "created_at", "path"), "Model bundle in use (value always 1)."
    ),
    MetricDoc(
        "seqmon_bundle_load_timestamp_seconds",
        "gauge",
        (),
        "Wall-clock time the current model bundle was loaded, Unix seconds.",
    ),
    MetricDoc("seqmon_bundle_reloads_total", "counter", ("result",), "Model bundle reload attempts, by result."),
    MetricDoc(
        "seqmon_checkpoints_total",
        "counter",
        (),
        "State checkpoints written (fleet mode: writes of the partitions' window states to the changelog).",
    ),
    MetricDoc(
        "seqmon_changelog_records_written_total",
        "counter",
        (),
        "Fleet mode: window state records (partition states and published-through markers) acknowledged by the "
        "changelog topic.",
    ),
    MetricDoc(
        "seqmon_changelog_bytes_written_total",
        "counter",
        (),
        "Fleet mode: bytes of window state (compressed record values) acknowledged by the changelog topic.",
    ),
    MetricDoc(
        "seqmon_last_checkpoint_timestamp_seconds",
        "gauge",
        (),
        "Wall-clock time of the last state checkpoint, Unix seconds.",
    ),
)

_DOCS = {doc.name: doc for doc in METRICS_DOC}

# Half-decades from 1e-6 to 1, rounded to 3 significant digits so the `le`
# labels stay readable (1e-06, 3.16e-06, ..., 0.316, 1.0).
ERROR_BUCKETS: tuple[float, ...] = tuple(float(f"{10 ** (k / 2):.3g}") for k in range(-12, 1))

_BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_QUANTILES = (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"))

#: Attributes of :class:`Metrics` that time the last closed window (kept by :meth:`Metrics.forget_window`).
_WINDOW_TIMES = frozenset({"window_start", "window_end", "window_closed_at"})


def json_safe(value: Any) -> Any:
    """``value`` made JSON-safe for what seqmon writes out (results, JSON log lines): NaN and ±inf as None, NumPy
    scalars and arrays as plain values, dict keys as strings; any other unknown object as its ``str``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def metrics_table() -> str:
    """Markdown table (name, type, labels, help) of every ``seqmon_*`` metric, for the README."""
    rows = ["| Metric | Type | Labels | Description |", "|---|---|---|---|"]
    rows += [f"| `{d.name}` | {d.type} | {', '.join(d.labels)} | {d.help} |" for d in METRICS_DOC]
    return "\n".join(rows) + "\n"


@dataclass
class _Series:
    """One label set of a :class:`_BatchHistogram`: cumulative bucket counts (last is +Inf) and the sum of values."""

    cumulative: np.ndarray
    total: float = 0.0


class _BatchHistogram(Collector):
    """Labelled histogram fed whole numpy batches: bucket counts and sums live in arrays."""

    def __init__(self, doc: MetricDoc, bounds: Sequence[float]) -> None:
        self._doc = doc
        self._bounds = [float(b) for b in bounds]
        self._le = [floatToGoString(b) for b in bounds] + ["+Inf"]
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], _Series] = {}

    def observe_batch(self, label_values: tuple[str, ...], values: np.ndarray) -> None:
        """Add every value of ``values`` to the series ``label_values``."""
        values = np.asarray(values, dtype=np.float64).ravel()
        # One vectorized comparison per bound is ~4x faster than np.searchsorted on
        # unsorted values for a dozen bounds.  NaN compares False, so it only counts in +Inf.
        cumulative = np.fromiter(
            (np.count_nonzero(values <= bound) for bound in self._bounds), dtype=np.int64, count=len(self._bounds)
        )
        total = float(values.sum())
        if not math.isfinite(total):
            # One NaN would poison the sum for the life of the process.
            total = float(values[np.isfinite(values)].sum())
        with self._lock:
            series = self._series.get(label_values)
            if series is None:
                series = self._series[label_values] = _Series(np.zeros(len(self._bounds) + 1, dtype=np.int64))
            series.cumulative[:-1] += cumulative
            series.cumulative[-1] += values.size
            series.total += total

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self._doc.name, self._doc.help, labels=self._doc.labels)

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            snapshot = [(labels, series.cumulative.tolist(), series.total) for labels, series in self._series.items()]
        family = self._family()
        for labels, cumulative, total in snapshot:
            family.add_metric(list(labels), list(zip(self._le, cumulative, strict=True)), total)
        yield family


class Metrics:
    """All metrics of one monitor process, registered in ``registry``.

    Parameters
    ----------
    registry : CollectorRegistry
        Where to register; the process-wide ``prometheus_client.REGISTRY`` or a fresh one.
    process_metrics : bool, default True
        Also register the process, platform and GC collectors (``process_*``,
        ``python_*``).  Leave False for ``prometheus_client.REGISTRY``, which
        already has them.
    """

    def __init__(self, registry: CollectorRegistry, *, process_metrics: bool = True) -> None:
        self.registry = registry
        c, g = self._counter, self._gauge
        self.records_consumed = c("seqmon_records_consumed_total")
        self.records_scored = c("seqmon_records_scored_total")
        self.records_invalid = c("seqmon_records_invalid_total")
        self.records_late = c("seqmon_records_late_total")
        self.records_late_after_publication = c("seqmon_records_late_after_publication_total")
        self.records_covered = c("seqmon_records_covered_total")
        self.anomalies = c("seqmon_anomalies_total")
        self.record_error = _BatchHistogram(_DOCS["seqmon_record_error"], ERROR_BUCKETS)
        registry.register(self.record_error)
        doc = _DOCS["seqmon_batch_duration_seconds"]
        self.batch_duration = Histogram(
            doc.name, doc.help, doc.labels, registry=registry, buckets=_BATCH_SECONDS_BUCKETS
        )

        self.windows_closed = c("seqmon_windows_closed_total")
        self.window_start = g("seqmon_window_start_timestamp_seconds")
        self.window_end = g("seqmon_window_end_timestamp_seconds")
        self.window_closed_at = g("seqmon_window_closed_timestamp_seconds")
        self.window_records = g("seqmon_window_records")
        self.window_weight = g("seqmon_window_weight")
        self.window_mean_error = g("seqmon_window_mean_error")
        self.window_error_quantile = g("seqmon_window_error_quantile")
        self.window_anomaly_ratio = g("seqmon_window_anomaly_ratio")
        self.window_mean_percentile = g("seqmon_window_mean_percentile")
        self.window_abnormality = g("seqmon_window_abnormality")
        self.window_mean_error_ratio = g("seqmon_window_mean_error_ratio")
        self.window_mean_error_percentile_in_previous = g("seqmon_window_mean_error_percentile_in_previous")
        self.window_effective_records = g("seqmon_window_effective_records")
        self.window_shift = g("seqmon_window_shift")
        self.window_surprise = g("seqmon_window_surprise")
        self.window_severity = g("seqmon_window_severity")
        self.window_comparison_shift = g("seqmon_window_comparison_shift")
        self.window_comparison_surprise = g("seqmon_window_comparison_surprise")
        self.window_comparison_severity = g("seqmon_window_comparison_severity")
        self.window_baseline_windows = g("seqmon_window_baseline_windows")
        self.deviation_shift_threshold = g("seqmon_deviation_shift_threshold")
        self.deviation_surprise_threshold = g("seqmon_deviation_surprise_threshold")
        self.windows_weight_total = c("seqmon_windows_weight_total")
        self.windows_weighted_error_total = c("seqmon_windows_weighted_error_total")

        self.consumer_lag = g("seqmon_consumer_lag_records")
        self.partitions_assigned = g("seqmon_partitions_assigned")
        self.topic_partitions = g("seqmon_topic_partitions")
        self._partition_topics: set[str] = set()
        self.watermark = g("seqmon_watermark_timestamp_seconds")
        self.partition_idle = g("seqmon_partition_idle")
        self.bundle_info = g("seqmon_bundle_info")
        self.bundle_load_time = g("seqmon_bundle_load_timestamp_seconds")
        self.bundle_reloads = c("seqmon_bundle_reloads_total")
        # Both results exist from the start so increase() sees the first failure.
        for result in ("success", "failure"):
            self.bundle_reloads.labels(result)
        self.checkpoints = c("seqmon_checkpoints_total")
        self.last_checkpoint = g("seqmon_last_checkpoint_timestamp_seconds")
        self.changelog_records = c("seqmon_changelog_records_written_total")
        self.changelog_bytes = c("seqmon_changelog_bytes_written_total")

        if process_metrics:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

    def _counter(self, name: str) -> Counter:
        doc = _DOCS[name]
        return Counter(doc.name, doc.help, doc.labels, registry=self.registry)

    def _gauge(self, name: str) -> Gauge:
        doc = _DOCS[name]
        return Gauge(doc.name, doc.help, doc.labels, registry=self.registry)

    # ------------------------------------------------------------------ per batch
    def init_topic(self, topic: str, reasons: Sequence[str] = ()) -> None:
        """Create a topic's counters at 0 as soon as it is assigned.

        ``rate()`` and ``increase()`` need a first sample to count from: a series born holding its first batch would
        hide that batch (and the first invalid record of a reason) from every rule and panel.
        """
        for counter in (self.records_consumed, self.records_scored, self.records_late, self.anomalies,
                        self.windows_closed, self.windows_weight_total, self.windows_weighted_error_total):
            counter.labels(topic)
        for reason in reasons:
            self.records_invalid.labels(topic, reason)

    def record_batch(
        self,
        topic: str,
        consumed: int,
        scored_errors: np.ndarray,
        anomalies: int,
        late: int,
        invalid_by_reason: Mapping[str, int],
        duration_s: float | None,
    ) -> None:
        """Count one batch of one topic.

        Parameters
        ----------
        topic : str
        consumed : int
            Records read, valid or not.
        scored_errors : np.ndarray
            Reconstruction error of each scored record (dimensionless, >= 0); its
            size is the number of scored records.
        anomalies, late : int
            Scored records flagged anomalous / rejected as late by the windower.
        invalid_by_reason : Mapping[str, int]
            Records that could not be scored, per reason.
        duration_s : float or None
            Processing time of the batch, seconds.  When one consumed batch spans
            several topics, pass it with one topic and None with the others.
        """
        errors = np.asarray(scored_errors)
        self.records_consumed.labels(topic).inc(consumed)
        self.records_scored.labels(topic).inc(errors.size)
        self.anomalies.labels(topic).inc(anomalies)
        self.records_late.labels(topic).inc(late)
        for reason, count in invalid_by_reason.items():
            self.records_invalid.labels(topic, reason).inc(count)
        self.record_error.observe_batch((topic,), errors)
        if duration_s is not None:
            self.batch_duration.observe(duration_s)

    # ------------------------------------------------------------------ per window
    def record_closed_window(self, closed_window: ClosedWindow, closed_at_s: float) -> None:
        """Publish the figures of a window that just closed (NaN figures stay NaN).

        Parameters
        ----------
        closed_window : ClosedWindow
        closed_at_s : float
            Wall-clock time of closing, Unix seconds.
        """
        f = closed_window.figures()
        topic = f["topic"]
        self.windows_closed.labels(topic).inc()
        self.window_start.labels(topic).set(f["start_ms"] / 1000.0)
        self.window_end.labels(topic).set(f["end_ms"] / 1000.0)
        self.window_closed_at.labels(topic).set(closed_at_s)
        self.window_records.labels(topic).set(f["count"])
        self.window_weight.labels(topic).set(f["weight"])
        self.window_mean_error.labels(topic).set(f["mean_error"])
        for label, key in _QUANTILES:
            self.window_error_quantile.labels(topic, label).set(f[key])
        self.window_anomaly_ratio.labels(topic).set(f["anomaly_rate"])
        self.window_mean_percentile.labels(topic).set(f["mean_percentile"])
        self.window_abnormality.labels(topic).set(f["abnormality"])
        self.window_mean_error_ratio.labels(topic).set(f["mean_error_ratio"])
        self.window_mean_error_percentile_in_previous.labels(topic).set(f["mean_error_percentile_in_previous"])
        self.window_effective_records.labels(topic).set(f["effective_records"])
        if "decision" in f:  # assessed against the baseline (the daemon always does)
            self.window_shift.labels(topic).set(f["shift"])
            self.window_surprise.labels(topic).set(f["surprise"])
            self.window_severity.labels(topic).set(f["severity"])
            self.window_baseline_windows.labels(topic).set(f["baseline_windows"])
            for comparison in ("previous", "baseline"):
                for statistic in ("ks", "tail"):
                    key = f"{statistic}_shift_vs_{comparison}"
                    self.window_comparison_shift.labels(topic, comparison, statistic).set(f[key])
                    key = f"{statistic}_surprise_vs_{comparison}"
                    self.window_comparison_surprise.labels(topic, comparison, statistic).set(f[key])
                self.window_comparison_severity.labels(topic, comparison).set(
                    SEVERITY[f[f"decision_vs_{comparison}"]]
                )
        # From the raw sums, not mean x weight, which is NaN for an empty window.
        aggregate = closed_window.aggregate
        self.windows_weight_total.labels(topic).inc(aggregate.weight)
        self.windows_weighted_error_total.labels(topic).inc(aggregate.weighted_error)

    def forget_window(self, topic: str) -> None:
        """Drop the last-closed-window figures of ``topic`` (fleet mode: another daemon closes its windows now, and a
        stale copy here would page a second time for the same window).  The window's times stay: the newest over
        the fleet is what says a topic's windows stopped closing (``SeqmonNoClosedWindow``), even if the new closer
        never publishes."""
        for name, gauge in vars(self).items():
            if not (name.startswith("window_") and isinstance(gauge, Gauge)) or name in _WINDOW_TIMES:
                continue
            for family in gauge.collect():
                for sample in family.samples:
                    if sample.labels.get("topic") == topic:
                        try:  # a sample's labels are in the gauge's label order
                            gauge.remove(*sample.labels.values())
                        except KeyError:
                            pass

    def set_deviation_thresholds(self, settings: DeviationSettings) -> None:
        """Publish the thresholds the decision uses, so dashboards draw the very lines the code applies."""
        for severity in ("page", "ticket"):
            self.deviation_shift_threshold.labels(severity).set(getattr(settings, f"{severity}_shift"))
            self.deviation_surprise_threshold.labels(severity).set(getattr(settings, f"{severity}_surprise"))

    # ------------------------------------------------------------------ consumer, bundle, state
    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        """Records not yet consumed in one partition."""
        self.consumer_lag.labels(topic, str(partition)).set(lag)

    def remove_lag(self, topic: str, partition: int) -> None:
        """Drop a partition's lag and idle series, e.g. after a rebalance took it away (stale lag would be summed
        twice)."""
        for gauge in (self.consumer_lag, self.partition_idle):
            try:
                gauge.remove(topic, str(partition))
            except KeyError:
                pass

    def set_partitions(self, assigned: Mapping[str, int], totals: Mapping[str, int]) -> None:
        """How many partitions of each topic this daemon reads, and the topic has (where known); the series of
        topics no longer read here are dropped."""
        for gauge in (self.partitions_assigned, self.topic_partitions):
            for topic in self._partition_topics - set(assigned):
                try:
                    gauge.remove(topic)
                except KeyError:
                    pass
        for topic, count in assigned.items():
            self.partitions_assigned.labels(topic).set(count)
            if topic in totals:
                self.topic_partitions.labels(topic).set(totals[topic])
        self._partition_topics = set(assigned)

    def set_progress(self, progress: Sequence[PartitionProgress], watermarks: dict[str, int | None]) -> None:
        """Each assigned partition's idleness and each topic's watermark (UTC epoch ms; None: not started)."""
        for p in progress:
            self.partition_idle.labels(p.topic, str(p.partition)).set(1 if p.idle else 0)
        for topic, watermark_ms in watermarks.items():
            if watermark_ms is not None:
                self.watermark.labels(topic).set(watermark_ms / 1000.0)

    def set_bundle(self, content_hash: str, created_at: str, path: str, loaded_at_s: float | None = None) -> None:
        """Describe the bundle now in use, replacing the previous one's labels.

        ``loaded_at_s`` is the load time in Unix seconds; None means now.
        """
        self.bundle_info.clear()
        self.bundle_info.labels(str(content_hash), str(created_at), str(path)).set(1)
        if loaded_at_s is None:
            self.bundle_load_time.set_to_current_time()
        else:
            self.bundle_load_time.set(loaded_at_s)

    def record_covered(self, topic: str, records: int) -> None:
        """Count records skipped because their partition's window state already covers them (fleet mode)."""
        self.records_covered.labels(topic).inc(records)

    def record_late_after_publication(self, topic: str, records: int) -> None:
        """Count records dropped from partials of windows the fleet already published; they are late too."""
        self.records_late_after_publication.labels(topic).inc(records)
        self.records_late.labels(topic).inc(records)

    def record_changelog(self, records: int, size_bytes: int) -> None:
        """Count window state records and their bytes newly acknowledged by the changelog."""
        self.changelog_records.inc(records)
        self.changelog_bytes.inc(size_bytes)

    def record_reload(self, success: bool) -> None:
        """Count one bundle reload attempt."""
        self.bundle_reloads.labels("success" if success else "failure").inc()

    def record_checkpoint(self, at_s: float) -> None:
        """Count a checkpoint written at ``at_s`` (Unix seconds)."""
        self.checkpoints.inc()
        self.last_checkpoint.set(at_s)


def serve(
    registry: CollectorRegistry, host: str, port: int, web_config_file: str = ""
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``registry`` at ``http(s)://host:port/metrics`` from a daemon thread, one thread per request.

    ``web_config_file``: a Prometheus-style web configuration (:mod:`monitor.export.web_config`) that turns on TLS, client
    certificates and basic auth; ``""`` = plain HTTP. ``port`` 0 picks a free port (read it from
    ``server.server_address[1]``). Stop with ``server.shutdown(); server.server_close(); thread.join()``.
    """
    import socket  # noqa: PLC0415
    from socketserver import ThreadingMixIn  # noqa: PLC0415
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server  # noqa: PLC0415

    from monitor.export.web_config import BasicAuth, load_web_config  # noqa: PLC0415

    web = load_web_config(web_config_file) if web_config_file else None
    app = make_wsgi_app(registry)
    if web is not None and web.users:
        app = BasicAuth(app, web.users)

    class Handler(WSGIRequestHandler):
        timeout = 30  # a client that stalls (or never finishes its TLS handshake) frees its thread

        def log_message(self, format, *args):  # noqa: A002 - no access log on stderr
            pass

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        def get_request(self):
            conn, addr = super().get_request()
            if web is not None and web.tls is not None:
                # The handshake happens at the first read, on the request's thread, not in the accept loop.
                conn = web.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
            return conn, addr

        def handle_error(self, request, client_address):
            # A refused handshake (no or an untrusted client certificate) is the client's problem, not a traceback.
            pass

    server = make_server(host, port, app, Server, handler_class=Handler)
    thread = threading.Thread(target=server.serve_forever, name="seqmon-metrics", daemon=True)
    thread.start()
    return server, thread
