"""Window alignment, WindowAggregate, compare(), WindowSettings and the Windower state machine."""

import json
import math

import numpy as np
import pytest

from monitor.errors import ConfigError, StateError
from monitor.sketch import ErrorSketch
from monitor.window import (
    ClosedWindow,
    WindowAggregate,
    Windower,
    WindowSettings,
    compare,
    window_start_ms,
)

H = 3_600_000
M = 60_000
DAY = 24 * H
JAN1_2024 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def aggregate(errors, weights=None, percentiles=None, anomalies=None, alpha=0.001):
    errors = np.asarray(errors, dtype=float)
    agg = WindowAggregate.empty(alpha)
    agg.add(
        errors,
        None if weights is None else np.asarray(weights, dtype=float),
        np.full(errors.size, 50.0) if percentiles is None else np.asarray(percentiles, dtype=float),
        np.zeros(errors.size, bool) if anomalies is None else np.asarray(anomalies, dtype=bool),
    )
    return agg


def feed(windower, topics, event_ms, errors=None, weights=None, percentiles=None, anomalies=None):
    n = len(event_ms)
    return windower.add(
        np.asarray(topics if not isinstance(topics, str) else [topics] * n),
        np.asarray(event_ms, dtype=np.int64),
        np.ones(n) if errors is None else np.asarray(errors, dtype=float),
        None if weights is None else np.asarray(weights, dtype=float),
        np.full(n, 50.0) if percentiles is None else np.asarray(percentiles, dtype=float),
        np.zeros(n, bool) if anomalies is None else np.asarray(anomalies, dtype=bool),
    )


def summary(closed):
    return [(w.topic, w.start_ms, w.aggregate.count) for w in closed]


# ---------------------------------------------------------------- window_start_ms


def test_window_start_hourly_utc():
    got = window_start_ms(np.array([0, 1, H - 1, H, H + 1, -1, -H, -H - 1]), H)
    assert got.tolist() == [0, 0, 0, H, H, -H, -H, -2 * H]
    assert got.dtype == np.int64


def test_window_start_with_offset_floors_below_zero():
    # size 10, boundaries at ... -17, -7, 3, 13 ...
    got = window_start_ms(np.array([-8, -7, 2, 3, 12, 13]), 10, 3)
    assert got.tolist() == [-17, -7, -7, 3, 3, 13]
    # A negative offset is the same grid.
    assert window_start_ms(np.array([-8, -7, 2, 3, 12, 13]), 10, -7).tolist() == [-17, -7, -7, 3, 3, 13]


def test_window_start_daily_local_midnight_utc_plus_two():
    # Local midnight at UTC+02:00 is 22:00 UTC the day before.
    events = np.array([JAN1_2024 + 23 * H, JAN1_2024 + 21 * H, JAN1_2024 + 22 * H])
    got = window_start_ms(events, DAY, -2 * H)
    assert got.tolist() == [JAN1_2024 + 22 * H, JAN1_2024 - 2 * H, JAN1_2024 + 22 * H]
    assert window_start_ms(events, DAY, DAY - 2 * H).tolist() == got.tolist()


def test_window_start_half_hour_zone():
    # Hourly windows for a UTC+05:30 zone start at hh:30 UTC.
    assert window_start_ms(np.array([JAN1_2024 + 10 * H + 15 * M]), H, 30 * M).tolist() == [JAN1_2024 + 9 * H + 30 * M]


def test_window_start_rejects_bad_size():
    with pytest.raises(ValueError):
        window_start_ms(np.array([1]), 0)


# ---------------------------------------------------------------- WindowAggregate


def test_aggregate_weighted_figures():
    agg = aggregate([1.0, 2.0, 4.0], [1.0, 1.0, 2.0], [10.0, 20.0, 90.0], [False, False, True])
    f = agg.figures()
    assert f["count"] == 3
    assert f["weight"] == 4.0
    assert f["mean_error"] == 2.75  # (1 + 2 + 2*4) / 4
    assert f["anomaly_rate"] == 0.5  # weight 2 of 4
    assert f["mean_percentile"] == 52.5  # (10 + 20 + 2*90) / 4
    # Cumulative weights 1, 2, 4: the median reaches weight 2 at error 2, p90 and p99 at error 4.
    assert f["p50"] == pytest.approx(2.0, rel=0.001)
    assert f["p90"] == pytest.approx(4.0, rel=0.001)
    assert f["p99"] == pytest.approx(4.0, rel=0.001)


def test_aggregate_default_weights_and_batches_accumulate():
    agg = aggregate([1.0, 3.0])
    agg.add(np.array([5.0]), np.array([2.0]), np.array([100.0]), np.array([True]))
    assert (agg.count, agg.weight, agg.weighted_error, agg.anomaly_weight, agg.weighted_percentile) == (
        3,
        4.0,
        14.0,
        2.0,
        300.0,
    )
    assert agg.figures()["mean_error"] == 3.5


def test_empty_aggregate_figures():
    f = WindowAggregate().figures()
    assert f["count"] == 0 and f["weight"] == 0.0
    for key in ("mean_error", "p50", "p90", "p99", "anomaly_rate", "mean_percentile"):
        assert math.isnan(f[key]), key


def test_aggregate_rejects_bad_columns():
    with pytest.raises(ValueError):
        aggregate([1.0], percentiles=[101.0])
    with pytest.raises(ValueError):
        aggregate([1.0, 2.0], percentiles=[1.0])
    with pytest.raises(ValueError):
        aggregate([-1.0])


def test_merge_figures_equal_single_aggregate():
    rng = np.random.default_rng(10)
    n = 3000
    errors = rng.lognormal(size=n)
    weights = rng.integers(1, 4, n).astype(float)
    pct = rng.uniform(0, 100, n)
    anomalies = rng.random(n) < 0.1
    whole = aggregate(errors, weights, pct, anomalies)
    a = aggregate(errors[:1000], weights[:1000], pct[:1000], anomalies[:1000])
    b = aggregate(errors[1000:], weights[1000:], pct[1000:], anomalies[1000:])
    merged = a.merge(b)
    assert merged.figures() == pytest.approx(whole.figures(), rel=1e-12)
    assert merged.sketch == whole.sketch  # integer weights: bucket sums are exact
    assert merged.count == n
    assert a.count == 1000  # inputs untouched


def test_aggregate_dict_round_trip():
    agg = aggregate([0.0, 1.0, 2.5], [0.5, 1.0, 3.0], [0.0, 50.0, 99.9], [False, False, True])
    restored = WindowAggregate.from_dict(json.loads(json.dumps(agg.to_dict())))
    assert restored == agg
    assert WindowAggregate.from_dict(WindowAggregate().to_dict()) == WindowAggregate()
    with pytest.raises(StateError):
        WindowAggregate.from_dict({"count": 1})


# ---------------------------------------------------------------- compare


def test_compare_identical_windows():
    rng = np.random.default_rng(11)
    errors, weights = rng.lognormal(size=500), rng.uniform(0.5, 2.0, 500)
    current, previous = aggregate(errors, weights), aggregate(errors[::-1], weights[::-1])
    got = compare(current, previous)
    assert got["abnormality"] == 50.0
    assert got["mean_error_ratio"] == pytest.approx(1.0, rel=1e-12)


def test_compare_all_larger_and_hand_values():
    previous = aggregate([1.0, 2.0, 3.0, 4.0])
    current = aggregate([5.0, 5.0])
    got = compare(current, previous)
    assert got["abnormality"] == 100.0
    assert got["mean_error_ratio"] == 2.0  # 5 / 2.5
    assert got["mean_error_percentile_in_previous"] == 100.0
    # Current mean 2.5: previous errors 1 and 2 are <= 2.5 -> 50 %.
    got = compare(aggregate([2.0, 3.0]), previous)
    assert got["mean_error_percentile_in_previous"] == 50.0
    assert got["mean_error_ratio"] == 1.0
    # Pairs: 2 vs (1, 2, 3, 4) -> 1 + 0.5 + 0 + 0; 3 vs same -> 1 + 1 + 0.5 + 0: 4 / 8
    assert got["abnormality"] == 50.0
    assert compare(aggregate([0.5]), previous)["abnormality"] == 0.0


def test_compare_weighted_ties():
    # Weighted 2-vs-2 with one shared value: (1*2/2 + 3*2 + 3*2) / 16 = 13/16
    got = compare(aggregate([1.0, 3.0], [1.0, 3.0]), aggregate([1.0, 2.0], [2.0, 2.0]))
    assert got["abnormality"] == 100.0 * 13 / 16


def test_compare_nan_cases():
    some = aggregate([1.0, 2.0])
    for current, previous in [(some, None), (WindowAggregate(), some), (some, WindowAggregate())]:
        got = compare(current, previous)
        assert set(got) == {
            "abnormality",
            "mean_error_ratio",
            "mean_error_percentile_in_previous",
            "ks_shift_vs_previous",
            "ks_surprise_vs_previous",
            "tail_shift_vs_previous",
            "tail_surprise_vs_previous",
        }
        assert all(math.isnan(v) for v in got.values())
    # Previous mean 0: ratio undefined, the distribution comparison still works.
    got = compare(some, aggregate([0.0, 0.0]))
    assert math.isnan(got["mean_error_ratio"])
    assert got["abnormality"] == 100.0
    assert got["mean_error_percentile_in_previous"] == 100.0


# ---------------------------------------------------------------- WindowSettings / ClosedWindow


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"size_ms": 0}, "size_ms"),
        ({"size_ms": 1.5}, "size_ms"),
        ({"size_ms": True}, "size_ms"),
        ({"allowed_lateness_ms": -1}, "allowed_lateness_ms"),
        ({"offset_ms": 0.5}, "offset_ms"),
        ({"sketch_alpha": 0.0}, "sketch_alpha"),
        ({"sketch_alpha": 1.0}, "sketch_alpha"),
        ({"sketch_alpha": "0.01"}, "sketch_alpha"),
    ],
)
def test_settings_validation_names_field(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        WindowSettings(**kwargs)


def test_settings_defaults_and_normalization():
    s = WindowSettings(size_ms=np.int64(60_000))
    assert (s.size_ms, s.allowed_lateness_ms, s.offset_ms, s.sketch_alpha) == (60_000, 300_000, 0, 0.001)
    assert type(s.size_ms) is int
    assert WindowSettings() == WindowSettings(3_600_000, 300_000, 0, 0.001)


def test_closed_window_figures_and_round_trip():
    previous = aggregate([1.0, 2.0, 3.0, 4.0])
    window = ClosedWindow("t", H, 2 * H, aggregate([5.0, 5.0]), previous)
    f = window.figures()
    assert (f["topic"], f["start_ms"], f["end_ms"], f["count"]) == ("t", H, 2 * H, 2)
    assert (f["abnormality"], f["mean_error_ratio"]) == (100.0, 2.0)
    assert f["mean_error"] == 5.0
    assert ClosedWindow.from_dict(json.loads(json.dumps(window.to_dict()))) == window
    first = ClosedWindow("t", 0, H, previous, None)
    assert ClosedWindow.from_dict(json.loads(json.dumps(first.to_dict()))) == first
    assert math.isnan(first.figures()["abnormality"])


# ---------------------------------------------------------------- Windower


def test_late_record_is_masked_and_not_counted():
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=5 * M))
    closed, late = feed(w, "a", [30 * M, H + 10 * M], errors=[1.0, 2.0])
    # Watermark H+5min passes the end of window 0.
    assert summary(closed) == [("a", 0, 1)]
    assert late.tolist() == [False, False]
    assert w.watermark_ms("a") == H + 5 * M
    closed, late = feed(w, "a", [50 * M, H + 1 * M, 59 * M], errors=[9.0, 3.0, 9.0])
    assert closed == []
    assert late.tolist() == [True, False, True]
    (open_window,) = w.open_windows()
    assert (open_window.topic, open_window.start_ms, open_window.end_ms) == ("a", H, 2 * H)
    assert open_window.aggregate.count == 2
    assert open_window.aggregate.weighted_error == 5.0  # the late 9.0s are not in it


def test_discarded_figures_keep_the_event_time_progress():
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=5 * M))
    feed(w, "a", [30 * M, H + 10 * M, H + 20 * M], errors=[1.0, 2.0, 2.0])
    dropped = w.discard_figures()
    assert [(d.topic, d.start_ms, d.aggregate.count) for d in dropped] == [("a", H, 2)]
    assert w.open_windows() == [] and w.watermark_ms("a") == H + 15 * M
    closed, late = feed(w, "a", [50 * M, H + 30 * M, 2 * H + 10 * M], errors=[9.0, 3.0, 4.0])
    assert late.tolist() == [True, False, False]  # window 0 stays closed
    assert summary(closed) == [("a", H, 1)]  # the open window started again empty
    assert closed[0].previous is None  # window 0's figures went too


def test_out_of_order_within_lateness_is_accepted_and_closes_in_order():
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=5 * M))
    closed, late = feed(w, "a", [H + 2 * M], errors=[2.0])
    assert closed == [] and not late.any()
    # 58 min is behind the newest event but window 0 ends at H > watermark H-3min.
    closed, late = feed(w, "a", [58 * M], errors=[1.0])
    assert closed == [] and not late.any()
    assert [(o.start_ms, o.aggregate.count) for o in w.open_windows()] == [(0, 1), (H, 1)]
    closed, late = feed(w, "a", [2 * H + 10 * M], errors=[3.0])
    assert summary(closed) == [("a", 0, 1), ("a", H, 1)]
    assert closed[0].previous is None
    assert closed[1].previous == closed[0].aggregate
    assert closed[1].figures()["abnormality"] == 100.0
    assert closed[1].figures()["mean_error_ratio"] == 2.0


def test_order_within_a_batch_does_not_matter():
    settings = WindowSettings(size_ms=H, allowed_lateness_ms=5 * M)
    w1, w2 = Windower(settings), Windower(settings)
    _, late1 = feed(w1, "a", [10 * M, 2 * H + 30 * M])
    _, late2 = feed(w2, "a", [2 * H + 30 * M, 10 * M])
    assert not late1.any() and not late2.any()
    assert w1.snapshot() == w2.snapshot()


def test_gap_yields_empty_windows_in_order():
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=5 * M))
    feed(w, "a", [10 * M], errors=[1.0])
    closed, _ = feed(w, "a", [3 * H + 30 * M], errors=[2.0])
    assert summary(closed) == [("a", 0, 1), ("a", H, 0), ("a", 2 * H, 0)]
    assert [(c.start_ms, c.end_ms) for c in closed] == [(0, H), (H, 2 * H), (2 * H, 3 * H)]
    assert closed[1].previous is closed[0].aggregate
    assert closed[2].previous is closed[1].aggregate
    f = closed[1].figures()
    assert f["count"] == 0 and math.isnan(f["mean_error"]) and math.isnan(f["abnormality"])
    closed, _ = feed(w, "a", [4 * H + 10 * M], errors=[2.0])
    assert summary(closed) == [("a", 3 * H, 1)]
    assert closed[0].previous == WindowAggregate.empty(0.001)  # the silent hour before it
    assert math.isnan(closed[0].figures()["abnormality"])


def test_close_due_on_idle_topic():
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=5 * M))
    feed(w, "a", [10 * M], errors=[1.0])
    assert w.close_due(5 * H) == []  # the clock does not close a topic whose partition may have more to deliver
    assert w.report_lags({("a", 0): 0}) == []  # caught up: now the clock may close
    assert w.close_due(H + 4 * M) == []  # end H + lateness 5 min not reached yet
    closed = w.close_due(H + 5 * M)
    assert summary(closed) == [("a", 0, 1)]
    assert w.watermark_ms("a") == H
    closed = w.close_due(3 * H + 5 * M)
    assert summary(closed) == [("a", H, 0), ("a", 2 * H, 0)]
    assert w.close_due(3 * H + 5 * M) == []  # idempotent
    assert w.close_due(0) == []  # the watermark never moves back
    assert w.watermark_ms("a") == 3 * H
    closed, late = feed(w, "a", [2 * H + 30 * M, 3 * H + 1 * M])
    assert late.tolist() == [True, False]
    assert closed == []
    assert [(o.start_ms, o.aggregate.count) for o in w.open_windows()] == [(3 * H, 1)]


def test_topics_are_independent():
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=5 * M))
    closed, late = feed(w, ["a", "b"], [10 * M, 2 * H + 10 * M])
    assert closed == [] and not late.any()  # b's watermark does not close a's window
    assert (w.watermark_ms("a"), w.watermark_ms("b")) == (5 * M, 2 * H + 5 * M)
    closed, late = feed(w, ["a", "b", "b"], [20 * M, 30 * M, 2 * H + 20 * M])
    assert late.tolist() == [False, True, False]  # b's window 0 has passed b's watermark
    assert closed == []
    assert [(o.topic, o.start_ms, o.aggregate.count) for o in w.open_windows()] == [("a", 0, 2), ("b", 2 * H, 2)]
    assert w.report_lags({("a", 0): 0, ("b", 0): 0}) == []
    closed = w.close_due(3 * H + 5 * M)
    # Ordered by (start, topic); b starts at its first window, a emits its silent hours.
    assert summary(closed) == [("a", 0, 2), ("a", H, 0), ("a", 2 * H, 0), ("b", 2 * H, 2)]
    assert w.watermark_ms("c") is None


def test_batch_grouping_matches_direct_aggregation():
    rng = np.random.default_rng(12)
    n = 20_000
    names = np.array(["alpha", "beta", "gamma"])
    topics = names[rng.integers(0, 3, n)]
    events = rng.integers(0, 5 * H, n)
    errors = np.where(rng.random(n) < 0.01, 0.0, rng.lognormal(size=n))
    weights = rng.integers(1, 4, n).astype(float)
    pct = rng.uniform(0, 100, n)
    anomalies = rng.random(n) < 0.05
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=10 * H))  # nothing closes
    closed, late = w.add(topics.astype(object), events, errors, weights, pct, anomalies)
    assert closed == [] and not late.any()
    windows = w.open_windows()
    assert len(windows) == 15
    for o in windows:
        m = (topics == o.topic) & (events // H * H == o.start_ms)
        expected = aggregate(errors[m], weights[m], pct[m], anomalies[m])
        assert o.aggregate.count == int(m.sum())
        assert o.aggregate.sketch == expected.sketch
        assert o.aggregate.figures() == pytest.approx(expected.figures(), rel=1e-12)


def test_many_topics_use_the_sort_path():
    n_topics = 40
    topics = np.array([f"t{i:02d}" for i in range(n_topics)] * 3)
    events = np.repeat(np.array([10 * M, 20 * M, 70 * M]), n_topics)
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=0))
    closed, late = feed(w, topics, events)
    assert not late.any()
    assert summary(closed) == [(f"t{i:02d}", 0, 2) for i in range(n_topics)]
    assert w.topics() == sorted(set(topics.tolist()))


def test_windower_with_offset():
    w = Windower(WindowSettings(size_ms=DAY, allowed_lateness_ms=0, offset_ms=-2 * H))
    closed, _ = feed(w, "a", [JAN1_2024 + 21 * H, JAN1_2024 + 23 * H])
    assert summary(closed) == [("a", JAN1_2024 - 2 * H, 1)]
    assert closed[0].end_ms == JAN1_2024 + 22 * H


def test_add_validation():
    w = Windower()
    with pytest.raises(ValueError):
        w.add(np.array(["a"]), np.array([1.5]), np.ones(1), None, np.ones(1), np.zeros(1, bool))
    with pytest.raises(ValueError):
        w.add(np.array(["a", "b"]), np.array([1]), np.ones(1), None, np.ones(1), np.zeros(1, bool))
    closed, late = w.add(np.array([], dtype=str), np.array([], dtype=np.int64), [], None, [], [])
    assert closed == [] and late.shape == (0,)


def random_stream(rng, n_records, topics=("a", "b", "c")):
    """Records over ~30 hours, roughly in time order with up to 15 min of jitter, in random-size batches."""
    base = np.sort(rng.integers(0, 30 * H, n_records))
    events = base + rng.integers(-15 * M, 15 * M, n_records)
    topic = np.array(topics)[rng.integers(0, len(topics), n_records)]
    # Topic "c" goes silent for hours in the middle to exercise empty windows.
    keep = ~((topic == "c") & (events > 8 * H) & (events < 14 * H))
    events, topic = events[keep], topic[keep]
    n = events.size
    errors = np.where(rng.random(n) < 0.01, 0.0, rng.lognormal(-1.0, 1.0, n))
    weights = rng.uniform(0.1, 3.0, n)
    pct = rng.uniform(0, 100, n)
    anomalies = rng.random(n) < 0.05
    cuts = np.sort(rng.choice(np.arange(1, n), size=60, replace=False))
    bounds = [0, *cuts.tolist(), n]
    batches = [
        (topic[i:j], events[i:j], errors[i:j], weights[i:j], pct[i:j], anomalies[i:j])
        for i, j in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    return batches


def run(windower, batches, log, first_index=0):
    for k, batch in enumerate(batches, start=first_index):
        closed, late = windower.add(*batch)
        log.append(("add", [c.to_dict() for c in closed], late.tolist()))
        if k % 7 == 3:
            # Wall-clock closing shortly behind the newest event time of the batch.
            now_ms = int(batch[1].max()) - 20 * M
            log.append(("due", [c.to_dict() for c in windower.close_due(now_ms)]))
    return windower


@pytest.mark.parametrize("seed", [20, 21, 22])
def test_snapshot_restore_equals_uninterrupted_run(seed):
    rng = np.random.default_rng(seed)
    settings = WindowSettings(size_ms=H, allowed_lateness_ms=int(rng.integers(0, 20)) * M, offset_ms=-30 * M)
    batches = random_stream(rng, 20_000)
    split = int(rng.integers(1, len(batches)))

    straight_log = []
    straight = run(Windower(settings), batches, straight_log)

    resumed_log = []
    first = run(Windower(settings), batches[:split], resumed_log)
    snapshot = json.loads(json.dumps(first.snapshot()))
    resumed = run(Windower.from_snapshot(settings, snapshot), batches[split:], resumed_log, first_index=split)

    assert [entry[0] for entry in resumed_log] == [entry[0] for entry in straight_log]
    straight_closed = [c for entry in straight_log for c in entry[1]]
    resumed_closed = [c for entry in resumed_log for c in entry[1]]
    assert len(straight_closed) > 50
    assert resumed_closed == straight_closed
    assert [entry[2] for entry in resumed_log if entry[0] == "add"] == [
        entry[2] for entry in straight_log if entry[0] == "add"
    ]
    assert any(any(entry[2]) for entry in straight_log if entry[0] == "add")  # some records were late
    assert any(c["aggregate"]["count"] == 0 for c in straight_closed)  # some windows were silent
    straight_figures = [ClosedWindow.from_dict(c).figures() for c in straight_closed]
    resumed_figures = [ClosedWindow.from_dict(c).figures() for c in resumed_closed]
    assert json.dumps(resumed_figures) == json.dumps(straight_figures)  # NaN-safe exact comparison
    assert resumed.snapshot() == straight.snapshot()


def test_snapshot_is_json_and_restores_open_state():
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=5 * M))
    feed(w, ["a", "b"], [10 * M, 2 * H], errors=[1.0, 2.0])
    feed(w, "a", [3 * H], errors=[3.0])
    snapshot = w.snapshot()
    text = json.dumps(snapshot, allow_nan=False)
    restored = Windower.from_snapshot(w.settings, json.loads(text))
    assert restored.snapshot() == snapshot
    assert restored.open_windows() == w.open_windows()
    assert restored.watermark_ms("a") == 3 * H - 5 * M


def test_from_snapshot_rejects_incompatible_state():
    w = Windower(WindowSettings(size_ms=H))
    feed(w, "a", [10 * M])
    snapshot = w.snapshot()
    with pytest.raises(StateError, match="size_ms"):
        Windower.from_snapshot(WindowSettings(size_ms=2 * H), snapshot)
    with pytest.raises(StateError, match="sketch_alpha"):
        Windower.from_snapshot(WindowSettings(size_ms=H, sketch_alpha=0.01), snapshot)
    with pytest.raises(StateError):
        Windower.from_snapshot(WindowSettings(size_ms=H), {**snapshot, "version": 99})
    with pytest.raises(StateError):
        Windower.from_snapshot(WindowSettings(size_ms=H), {**snapshot, "topics": {"a": {}}})
    # A different lateness is allowed: stored watermarks are kept.
    restored = Windower.from_snapshot(WindowSettings(size_ms=H, allowed_lateness_ms=0), snapshot)
    assert restored.watermark_ms("a") == 10 * M - 300_000


def test_a_snapshot_records_its_bundle_and_another_bundle_is_refused():
    w = Windower(WindowSettings(size_ms=H))
    feed(w, "a", [10 * M])
    snapshot = w.snapshot(bundle="sha256:aaaa")
    assert Windower.from_snapshot(w.settings, snapshot, bundle="sha256:aaaa").open_windows() == w.open_windows()
    with pytest.raises(StateError, match=r"written by bundle 'sha256:aaaa', this daemon scores with bundle 'sha256:bb'"):
        Windower.from_snapshot(w.settings, snapshot, bundle="sha256:bb")
    # State written before bundles were recorded still loads.
    assert Windower.from_snapshot(w.settings, w.snapshot(), bundle="sha256:bb").open_windows() == w.open_windows()

def test_sketch_alpha_reaches_windows():
    w = Windower(WindowSettings(size_ms=H, sketch_alpha=0.01))
    feed(w, "a", [10 * M], errors=[1.0])
    assert w.open_windows()[0].aggregate.sketch.alpha == 0.01
    assert isinstance(w.open_windows()[0].aggregate.sketch, ErrorSketch)
