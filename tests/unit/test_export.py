"""Prometheus export: counters, the batch-fed error histogram, window gauges, bundle info, docs and HTTP serving."""

import math
import os
import threading
import urllib.request

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from monitor.baseline import Baseline
from monitor.deviation import DeviationSettings
from monitor.export.metrics import ERROR_BUCKETS, METRICS_DOC, Metrics, metrics_table, serve
from monitor.window import ClosedWindow, PartitionProgress, WindowAggregate

T = "orders"
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
H = 3_600_000


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def metrics(registry):
    return Metrics(registry, process_metrics=False)


def value(registry, name, **labels):
    return registry.get_sample_value(name, labels)


def aggregate(errors, weights=None, percentiles=None, anomalies=None):
    errors = np.asarray(errors, dtype=float)
    agg = WindowAggregate.empty()
    agg.add(
        errors,
        None if weights is None else np.asarray(weights, dtype=float),
        np.full(errors.size, 50.0) if percentiles is None else np.asarray(percentiles, dtype=float),
        np.zeros(errors.size, bool) if anomalies is None else np.asarray(anomalies, dtype=bool),
    )
    return agg


def test_record_batch_counters(registry, metrics):
    errors = np.array([1e-7, 2e-3, 2e-3, 0.5])
    metrics.record_batch(T, 7, errors, 1, 2, {"decode": 2, "too_long": 1}, 0.02)
    metrics.record_batch(T, 3, errors[:1], 0, 0, {"decode": 1}, 0.2)
    assert value(registry, "seqmon_records_consumed_total", topic=T) == 10
    assert value(registry, "seqmon_records_scored_total", topic=T) == 5
    assert value(registry, "seqmon_anomalies_total", topic=T) == 1
    assert value(registry, "seqmon_records_late_total", topic=T) == 2
    assert value(registry, "seqmon_records_invalid_total", topic=T, reason="decode") == 3
    assert value(registry, "seqmon_records_invalid_total", topic=T, reason="too_long") == 1
    assert value(registry, "seqmon_batch_duration_seconds_count") == 2
    assert value(registry, "seqmon_batch_duration_seconds_sum") == pytest.approx(0.22)
    assert value(registry, "seqmon_batch_duration_seconds_bucket", le="0.025") == 1
    assert value(registry, "seqmon_records_consumed_total", topic="other") is None


def test_error_histogram_buckets_and_sum(registry, metrics):
    metrics.record_batch(T, 4, np.array([1e-7, 2e-3, 2e-3, 0.5]), 0, 0, {}, None)
    # 1e-7 <= 1e-06; both 2e-3 <= 0.00316; 0.5 <= 1.0 (cumulative counts).
    expected = {
        "1e-06": 1, "3.16e-06": 1, "1e-05": 1, "3.16e-05": 1, "0.0001": 1, "0.000316": 1, "0.001": 1,
        "0.00316": 3, "0.01": 3, "0.0316": 3, "0.1": 3, "0.316": 3,
        "1.0": 4, "+Inf": 4,
    }  # fmt: skip
    assert len(expected) == len(ERROR_BUCKETS) + 1
    for le, count in expected.items():
        assert value(registry, "seqmon_record_error_bucket", topic=T, le=le) == count, le
    assert value(registry, "seqmon_record_error_count", topic=T) == 4
    assert value(registry, "seqmon_record_error_sum", topic=T) == pytest.approx(0.5040001, rel=1e-12)

    # A value equal to a bound belongs to that bucket; batches accumulate; float32 is accepted.
    metrics.record_batch(T, 2, np.array([1e-3, 2.0]), 0, 0, {}, None)
    metrics.record_batch(T, 1, np.array([0.25], dtype=np.float32), 0, 0, {}, None)
    assert value(registry, "seqmon_record_error_bucket", topic=T, le="0.001") == 2
    assert value(registry, "seqmon_record_error_bucket", topic=T, le="0.316") == 5
    assert value(registry, "seqmon_record_error_bucket", topic=T, le="1.0") == 6
    assert value(registry, "seqmon_record_error_bucket", topic=T, le="+Inf") == 7
    assert value(registry, "seqmon_record_error_sum", topic=T) == pytest.approx(2.7550001, rel=1e-12)


def test_error_histogram_nonfinite_and_empty(registry, metrics):
    metrics.record_batch(T, 3, np.array([0.5, np.nan, np.inf]), 0, 0, {}, None)
    assert value(registry, "seqmon_record_error_bucket", topic=T, le="1.0") == 1
    assert value(registry, "seqmon_record_error_bucket", topic=T, le="+Inf") == 3
    assert value(registry, "seqmon_record_error_sum", topic=T) == 0.5
    # An empty batch still creates the series, so rate() works from the first scrape.
    metrics.record_batch("quiet", 2, np.array([]), 0, 0, {"decode": 2}, None)
    assert value(registry, "seqmon_record_error_count", topic="quiet") == 0
    assert value(registry, "seqmon_record_error_sum", topic="quiet") == 0
    assert value(registry, "seqmon_records_scored_total", topic="quiet") == 0


def test_error_histogram_is_thread_safe(registry, metrics):
    batch = np.full(1000, 0.05)

    def feed():
        for _ in range(50):
            metrics.record_batch(T, batch.size, batch, 0, 0, {}, None)
            registry.get_sample_value("seqmon_record_error_count", {"topic": T})  # scrape concurrently

    threads = [threading.Thread(target=feed) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert value(registry, "seqmon_record_error_bucket", topic=T, le="0.0316") == 0
    assert value(registry, "seqmon_record_error_bucket", topic=T, le="0.1") == 200_000
    assert value(registry, "seqmon_records_scored_total", topic=T) == 200_000
    assert value(registry, "seqmon_record_error_sum", topic=T) == pytest.approx(10_000.0)


def test_closed_window_gauges(registry, metrics):
    current = aggregate([0.1, 0.4], weights=[3, 1], percentiles=[50, 90], anomalies=[False, True])
    previous = aggregate([0.05, 0.05])
    window = ClosedWindow(T, START_MS + H, START_MS + 2 * H, current, previous)
    metrics.record_closed_window(window, closed_at_s=1_704_074_700.5)

    assert value(registry, "seqmon_windows_closed_total", topic=T) == 1
    assert value(registry, "seqmon_window_start_timestamp_seconds", topic=T) == 1_704_070_800
    assert value(registry, "seqmon_window_end_timestamp_seconds", topic=T) == 1_704_074_400
    assert value(registry, "seqmon_window_closed_timestamp_seconds", topic=T) == 1_704_074_700.5
    assert value(registry, "seqmon_window_records", topic=T) == 2
    assert value(registry, "seqmon_window_weight", topic=T) == 4
    assert value(registry, "seqmon_window_mean_error", topic=T) == pytest.approx(0.175)  # (3*0.1 + 0.4) / 4
    assert value(registry, "seqmon_window_anomaly_ratio", topic=T) == 0.25
    assert value(registry, "seqmon_window_mean_percentile", topic=T) == 60  # (3*50 + 90) / 4
    assert value(registry, "seqmon_window_abnormality", topic=T) == 100  # every error above every previous one
    assert value(registry, "seqmon_window_mean_error_ratio", topic=T) == pytest.approx(3.5)  # 0.175 / 0.05
    assert value(registry, "seqmon_window_mean_error_percentile_in_previous", topic=T) == 100
    figures = window.figures()
    for q, key, near in (("0.5", "p50", 0.1), ("0.9", "p90", 0.4), ("0.99", "p99", 0.4)):
        got = value(registry, "seqmon_window_error_quantile", topic=T, quantile=q)
        assert got == figures[key]
        assert got == pytest.approx(near, rel=2e-3)  # sketch relative accuracy 0.001
    assert value(registry, "seqmon_windows_weight_total", topic=T) == 4
    assert value(registry, "seqmon_windows_weighted_error_total", topic=T) == pytest.approx(0.7)

    # The next window (empty) overwrites the gauges and adds nothing to the sums.
    empty = ClosedWindow(T, START_MS + 2 * H, START_MS + 3 * H, WindowAggregate.empty(), current)
    metrics.record_closed_window(empty, closed_at_s=1_704_078_300.0)
    assert value(registry, "seqmon_windows_closed_total", topic=T) == 2
    assert value(registry, "seqmon_window_records", topic=T) == 0
    assert value(registry, "seqmon_windows_weight_total", topic=T) == 4
    assert value(registry, "seqmon_windows_weighted_error_total", topic=T) == pytest.approx(0.7)


def test_nan_figures_are_exported_as_nan(registry, metrics):
    metrics.record_closed_window(ClosedWindow(T, START_MS, START_MS + H, WindowAggregate.empty(), None), 1.0)
    assert value(registry, "seqmon_window_records", topic=T) == 0
    assert value(registry, "seqmon_window_weight", topic=T) == 0
    for name in (
        "seqmon_window_mean_error",
        "seqmon_window_anomaly_ratio",
        "seqmon_window_mean_percentile",
        "seqmon_window_abnormality",
        "seqmon_window_mean_error_ratio",
        "seqmon_window_mean_error_percentile_in_previous",
    ):
        assert math.isnan(value(registry, name, topic=T)), name
    assert math.isnan(value(registry, "seqmon_window_error_quantile", topic=T, quantile="0.99"))
    assert value(registry, "seqmon_windows_weighted_error_total", topic=T) == 0

    # A non-empty window after an empty one: comparison figures are NaN, the rest are not.
    after = ClosedWindow(T, START_MS + H, START_MS + 2 * H, aggregate([0.2]), WindowAggregate.empty())
    metrics.record_closed_window(after, 2.0)
    assert value(registry, "seqmon_window_mean_error", topic=T) == pytest.approx(0.2)
    assert math.isnan(value(registry, "seqmon_window_abnormality", topic=T))


def test_bundle_info_is_relabelled(registry, metrics):
    metrics.set_bundle("abc123", "2024-01-01T00:00:00Z", "/models/a", loaded_at_s=100.0)
    old = {"content_hash": "abc123", "created_at": "2024-01-01T00:00:00Z", "path": "/models/a"}
    assert value(registry, "seqmon_bundle_info", **old) == 1
    metrics.set_bundle("def456", "2024-02-01T00:00:00Z", "/models/b", loaded_at_s=200.0)
    assert value(registry, "seqmon_bundle_info", **old) is None
    new = {"content_hash": "def456", "created_at": "2024-02-01T00:00:00Z", "path": "/models/b"}
    assert value(registry, "seqmon_bundle_info", **new) == 1
    assert value(registry, "seqmon_bundle_load_timestamp_seconds") == 200.0


def test_reloads_checkpoints_and_lag(registry, metrics):
    assert value(registry, "seqmon_bundle_reloads_total", result="failure") == 0
    metrics.record_reload(True)
    metrics.record_reload(False)
    metrics.record_reload(False)
    assert value(registry, "seqmon_bundle_reloads_total", result="success") == 1
    assert value(registry, "seqmon_bundle_reloads_total", result="failure") == 2

    metrics.record_checkpoint(1_704_067_200.25)
    metrics.record_checkpoint(1_704_067_260.5)
    assert value(registry, "seqmon_checkpoints_total") == 2
    assert value(registry, "seqmon_last_checkpoint_timestamp_seconds") == 1_704_067_260.5

    metrics.set_lag(T, 0, 12)
    metrics.set_lag(T, 3, 0)
    assert value(registry, "seqmon_consumer_lag_records", topic=T, partition="0") == 12
    assert value(registry, "seqmon_consumer_lag_records", topic=T, partition="3") == 0
    metrics.set_progress(
        [PartitionProgress(T, 0, START_MS, 12, False), PartitionProgress(T, 3, None, 0, True)],
        {T: START_MS - 60_000, "unstarted": None},
    )
    assert value(registry, "seqmon_partition_idle", topic=T, partition="0") == 0
    assert value(registry, "seqmon_partition_idle", topic=T, partition="3") == 1
    assert value(registry, "seqmon_watermark_timestamp_seconds", topic=T) == (START_MS - 60_000) / 1000
    assert value(registry, "seqmon_watermark_timestamp_seconds", topic="unstarted") is None
    metrics.remove_lag(T, 0)
    metrics.remove_lag(T, 9)  # unknown partition: no error
    assert value(registry, "seqmon_consumer_lag_records", topic=T, partition="0") is None
    assert value(registry, "seqmon_partition_idle", topic=T, partition="0") is None


def test_partitions_read_per_topic_and_the_series_of_topics_no_longer_read_go(metrics, registry):
    metrics.set_partitions({T: 2, "other": 1}, {T: 6})  # the cluster did not say how many "other" has
    assert value(registry, "seqmon_partitions_assigned", topic=T) == 2
    assert value(registry, "seqmon_topic_partitions", topic=T) == 6
    assert value(registry, "seqmon_partitions_assigned", topic="other") == 1
    assert value(registry, "seqmon_topic_partitions", topic="other") is None
    metrics.set_partitions({T: 3}, {T: 6})
    assert value(registry, "seqmon_partitions_assigned", topic=T) == 3
    assert value(registry, "seqmon_partitions_assigned", topic="other") is None


def test_every_exposed_metric_is_documented(registry):
    metrics = Metrics(registry)  # with process metrics: they must be the only undocumented families
    metrics.record_batch(T, 1, np.array([0.1]), 0, 0, {"decode": 1}, 0.01)
    window = ClosedWindow(T, START_MS, START_MS + H, aggregate([0.1]), None)
    Baseline().assess(window)
    metrics.record_closed_window(window, 1.0)
    metrics.set_deviation_thresholds(DeviationSettings())
    metrics.set_lag(T, 0, 1)
    metrics.set_partitions({T: 1}, {T: 2})
    metrics.set_progress([PartitionProgress(T, 0, START_MS, 0, True)], {T: START_MS, "unstarted": None})
    metrics.set_bundle("h", "c", "p", loaded_at_s=1.0)
    metrics.record_checkpoint(1.0)
    metrics.record_covered(T, 2)
    metrics.record_late_after_publication(T, 1)
    metrics.record_changelog(3, 4096)

    docs = {d.name: d for d in METRICS_DOC}
    assert len(docs) == len(METRICS_DOC)
    seen = set()
    for family in registry.collect():
        if not family.name.startswith("seqmon_"):
            assert family.name.startswith(("process_", "python_")), family.name
            continue
        exposed = family.name + "_total" if family.type == "counter" else family.name
        assert exposed in docs, exposed
        doc = docs[exposed]
        assert (family.type, family.documentation) == (doc.type, doc.help)
        assert family.samples, f"{exposed} has no sample to check its labels"
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(doc.labels), sample
        seen.add(exposed)
    assert seen == set(docs)
    assert all(f"`{name}`" in metrics_table() for name in docs)
    if os.path.exists("/proc/self/stat"):  # ProcessCollector reads /proc
        assert registry.get_sample_value("process_cpu_seconds_total") is not None


def test_serve_exposes_metrics_over_http(registry, metrics):
    metrics.record_batch(T, 2, np.array([0.1, 0.2]), 0, 0, {}, None)
    server, thread = serve(registry, "127.0.0.1", 0)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.status == 200
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert f'seqmon_records_scored_total{{topic="{T}"}} 2.0' in text
    assert "# HELP seqmon_record_error " in text
    assert not thread.is_alive()


def test_deviation_gauges_follow_the_assessment(registry, metrics):
    baseline = Baseline(DeviationSettings(baseline_min_windows=1))
    normal = np.linspace(1.0, 2.0, 1000)
    first = ClosedWindow(T, START_MS, START_MS + H, aggregate(normal), None)
    incident = ClosedWindow(
        T, START_MS + H, START_MS + 2 * H, aggregate(np.concatenate([normal[:900], np.full(100, 50.0)])),
        first.aggregate,
    )
    metrics.set_deviation_thresholds(DeviationSettings(page_shift=3.0))
    for window in (first, incident):
        figures = baseline.assess(window)
        metrics.record_closed_window(window, 1.0)
    assert value(registry, "seqmon_window_severity", topic=T) == 2
    # 100 records of 1,000 jumped far up; against 1,000 records the KS shift (10) is a ticket (surprise 4.3), the tail
    # excess (10 % above the reference p99 less the reference's own 0.7 %, which shares buckets there) pages.
    assert figures["statistic"] == "tail" and figures["ks_shift_vs_previous"] == pytest.approx(10.0)
    assert value(registry, "seqmon_window_shift", topic=T) == figures["shift"] == pytest.approx(9.3)
    assert value(registry, "seqmon_window_surprise", topic=T) == figures["surprise"] > 6
    assert value(registry, "seqmon_window_baseline_windows", topic=T) == 1
    for comparison in ("previous", "baseline"):
        assert value(registry, "seqmon_window_comparison_severity", topic=T, comparison=comparison) == 2
        for statistic in ("ks", "tail"):
            got = value(registry, "seqmon_window_comparison_shift", topic=T, comparison=comparison, statistic=statistic)
            assert got == figures[f"{statistic}_shift_vs_{comparison}"]
    assert value(registry, "seqmon_deviation_shift_threshold", severity="page") == 3.0
    assert value(registry, "seqmon_deviation_surprise_threshold", severity="ticket") == 4.0
    assert value(registry, "seqmon_window_effective_records", topic=T) == 1000
