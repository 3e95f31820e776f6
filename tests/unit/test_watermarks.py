"""Per-partition watermarks of the Windower: catch-up of a backlog read unevenly, idle partitions, the wall clock,
rebalances and snapshots. Zero allowed lateness throughout unless a test says otherwise: with partitions in event-time
order, no record may be late however the consumer interleaves them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitor.errors import StateError
from monitor.window import Windower, WindowSettings

H = 3_600_000
M = 60_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def add(w, topic, partition, event_ms, now_ms=None):
    """Feed records of one (topic, partition); returns (closed, late)."""
    event_ms = np.asarray(event_ms, dtype=np.int64)
    n = event_ms.size
    return w.add(
        np.full(n, topic, dtype=object), event_ms, np.ones(n), None, np.full(n, 50.0), np.zeros(n, bool),
        partitions=np.full(n, partition, dtype=np.int32), now_ms=now_ms,
    )


def add_mixed(w, topic, partitions, event_ms, now_ms=None):
    n = len(event_ms)
    return w.add(
        np.full(n, topic, dtype=object), np.asarray(event_ms, dtype=np.int64), np.ones(n), None, np.full(n, 50.0),
        np.zeros(n, bool), partitions=np.asarray(partitions, dtype=np.int32), now_ms=now_ms,
    )


def backlog(hours, per_hour, partitions, seed):
    """A backlog in event-time order, produced round-robin over the partitions: per partition, sorted times."""
    rng = np.random.default_rng(seed)
    stamps = np.sort(T0 + rng.integers(0, hours * H, hours * per_hour))
    part = np.arange(stamps.size) % partitions
    return stamps, part


def uneven_reads(stamps, part, partitions, seed):
    """Chunks as a consumer hands them over: a random partition at a time, random chunk sizes (up to a few hours'
    worth), each partition in its own order. Yields (partition, event times)."""
    rng = np.random.default_rng(seed)
    queues = [stamps[part == p] for p in range(partitions)]
    pos = [0] * partitions
    while any(pos[p] < len(queues[p]) for p in range(partitions)):
        p = int(rng.choice([q for q in range(partitions) if pos[q] < len(queues[q])]))
        n = int(rng.integers(1, 4_000))
        yield p, queues[p][pos[p]:pos[p] + n]
        pos[p] += n


def window_counts(closed):
    return {w.start_ms: w.aggregate.count for w in closed}


@pytest.mark.parametrize("seed", range(6))
def test_a_backlog_read_unevenly_counts_nothing_late_and_closes_every_hour_whole(seed):
    partitions = 4
    stamps, part = backlog(hours=6, per_hour=6_000, partitions=partitions, seed=seed)
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=0))
    w.assign([("t", p) for p in range(partitions)], now_ms=0)
    closed, late_total = [], 0
    for p, chunk in uneven_reads(stamps, part, partitions, seed):
        c, late = add(w, "t", p, chunk, now_ms=0)
        closed += c
        late_total += int(late.sum())
    assert late_total == 0
    # Everything is delivered: the consumer reports lag 0 everywhere, then the input ends.
    closed += w.report_lags({("t", p): 0 for p in range(partitions)}, now_ms=0)
    closed += w.close_all()
    expected = np.bincount((stamps - T0) // H, minlength=6)
    assert window_counts(closed) == {T0 + h * H: int(expected[h]) for h in range(6)}
    assert [w.start_ms for w in closed] == [T0 + h * H for h in range(6)]


def test_the_same_reads_with_one_watermark_per_topic_lose_records():
    """The control: the catch-up test above can fail. With every record on one partition (one watermark for the
    topic, the old behaviour) the same uneven reads count a large share late."""
    stamps, part = backlog(hours=6, per_hour=6_000, partitions=4, seed=0)
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=5 * M))
    late_total = sum(int(add(w, "t", 0, chunk)[1].sum()) for _, chunk in uneven_reads(stamps, part, 4, 0))
    assert late_total > 0.2 * stamps.size


def test_a_partition_ahead_does_not_close_windows_another_has_yet_to_deliver():
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=0))
    w.assign([("t", 0), ("t", 1)], now_ms=0)
    closed, _ = add(w, "t", 0, [10 * M, H + 10 * M, 5 * H])
    assert closed == [] and w.watermark_ms("t") is None  # partition 1 has not said where it is
    closed, late = add(w, "t", 1, [20 * M, 50 * M])
    assert not late.any()
    assert closed == [] and w.watermark_ms("t") == 50 * M
    closed, late = add(w, "t", 1, [H + 5 * M, 2 * H + 1])
    assert not late.any()
    assert [(c.start_ms, c.aggregate.count) for c in closed] == [(0, 3), (H, 2)]
    assert w.watermark_ms("t") == 2 * H + 1


def test_lateness_is_allowed_per_partition():
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=10 * M))
    w.assign([("t", 0), ("t", 1)])
    add(w, "t", 0, [3 * H])
    add(w, "t", 1, [H + 5 * M])
    assert w.watermark_ms("t") == H - 5 * M  # min of partitions' newest, minus lateness
    closed, late = add(w, "t", 1, [H + 9 * M, 50 * M])  # 50 min is 19 min behind partition 1, window 0 still open
    assert not late.any() and closed == []
    closed, late = add(w, "t", 1, [H + 11 * M])
    assert [(c.start_ms, c.aggregate.count) for c in closed] == [(0, 1)]
    _, late = add(w, "t", 1, [59 * M])
    assert late.tolist() == [True]


def test_a_caught_up_partition_stops_holding_the_others_back():
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=0))
    w.assign([("t", 0), ("t", 1), ("t", 2)], now_ms=0)
    add(w, "t", 0, [10 * M, 3 * H])
    add(w, "t", 1, [20 * M, 2 * H + 1])
    # Partition 2 never delivers: unknown, it holds the topic; reported lag > 0, it still does.
    assert w.report_lags({("t", 0): 100, ("t", 1): 0, ("t", 2): 5}, now_ms=0) == []
    progress = {p.partition: p for p in w.progress(now_ms=0)}
    assert (progress[1].idle, progress[2].idle, progress[2].newest_ms) == (True, False, None)
    # Partition 2 is empty after all (lag 0): partition 0 alone now bounds the topic; partition 1 is caught up.
    closed = w.report_lags({("t", 0): 100, ("t", 1): 0, ("t", 2): 0}, now_ms=0)
    assert [(c.start_ms, c.aggregate.count) for c in closed] == [(0, 2), (H, 0), (2 * H, 1)]
    assert w.watermark_ms("t") == 3 * H


def test_all_caught_up_closes_up_to_the_newest_event():
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=0))
    w.assign([("t", 0), ("t", 1)])
    add(w, "t", 0, [10 * M])
    add(w, "t", 1, [2 * H + 10 * M])
    assert w.watermark_ms("t") == 10 * M
    closed = w.report_lags({("t", 0): 0, ("t", 1): 0})
    assert [c.start_ms for c in closed] == [0, H]
    assert w.watermark_ms("t") == 2 * H + 10 * M


def test_records_after_a_lag_of_zero_make_the_partition_active_again():
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=0))
    w.assign([("t", 0), ("t", 1)])
    add(w, "t", 0, [10 * M])
    add(w, "t", 1, [20 * M])
    w.report_lags({("t", 0): 0, ("t", 1): 0})
    add(w, "t", 0, [30 * M])  # partition 0 had more: it holds again, at its newest event
    closed, _ = add(w, "t", 1, [3 * H])
    assert closed == [] and w.watermark_ms("t") == 30 * M


def test_silence_makes_a_partition_of_unknown_lag_idle_but_never_one_that_lags():
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=0, idle_timeout_ms=5 * M))
    w.assign([("t", 0), ("t", 1)], now_ms=T0)
    add(w, "t", 0, [10 * M, 2 * H + 1], now_ms=T0)
    assert w.report_lags({}, now_ms=T0 + 4 * M) == []  # partition 1: unknown lag, silent 4 min < 5
    closed = w.report_lags({}, now_ms=T0 + 5 * M)
    assert [c.start_ms for c in closed] == [0, H]
    # Partition 1 delivers: active again, holding at its newest event; then it lags and goes silent for an hour.
    w2 = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=0, idle_timeout_ms=5 * M))
    w2.assign([("t", 0), ("t", 1)], now_ms=T0)
    add(w2, "t", 0, [3 * H], now_ms=T0)
    add(w2, "t", 1, [10 * M], now_ms=T0)
    assert w2.report_lags({("t", 1): 500}, now_ms=T0 + H) == []
    assert w2.close_due(T0 + 10 * H) == []  # nor does the clock close what partition 1 has yet to deliver
    # With the timeout off, only a reported lag of 0 makes a silent partition idle.
    w3 = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=0, idle_timeout_ms=0))
    w3.assign([("t", 0), ("t", 1)], now_ms=T0)
    add(w3, "t", 0, [3 * H], now_ms=T0)
    assert w3.report_lags({}, now_ms=T0 + 100 * H) == []


def test_the_wall_clock_closes_only_when_every_assigned_partition_is_idle():
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=5 * M))
    w.assign([("t", 0), ("t", 1)])
    add(w, "t", 0, [10 * M])
    add(w, "t", 1, [20 * M])
    w.report_lags({("t", 0): 0, ("t", 1): 7})
    assert w.close_due(10 * H) == []
    w.report_lags({("t", 0): 0, ("t", 1): 0})
    closed = w.close_due(2 * H + 5 * M)
    assert [(c.start_ms, c.aggregate.count) for c in closed] == [(0, 2), (H, 0)]
    # A topic none of whose partitions is assigned here does not advance at all.
    w.revoke([("t", 0), ("t", 1)])
    assert w.close_due(10 * H) == [] and w.watermark_ms("t") == 2 * H


def test_revoking_the_slow_partition_releases_the_others_and_a_new_one_holds_until_it_reports():
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=0))
    w.assign([("t", 0), ("t", 1)])
    add(w, "t", 0, [10 * M, 2 * H + 1])
    add(w, "t", 1, [20 * M])
    assert w.watermark_ms("t") == 20 * M
    w.revoke([("t", 1)])
    assert [p.partition for p in w.progress()] == [0]
    w.assign([("t", 2)])
    closed = w.report_lags({("t", 0): 50})  # partition 2 is new and unknown: still held
    assert closed == []
    closed, _ = add(w, "t", 2, [3 * H])
    assert [(c.start_ms, c.aggregate.count) for c in closed] == [(0, 2), (H, 0)]  # the revoked one's record stays


def test_snapshot_keeps_partition_watermarks_and_restored_partitions_wait_until_assigned():
    settings = WindowSettings(size_ms=H, allowed_lateness_ms=0)
    w = Windower(settings)
    w.assign([("t", 0), ("t", 1)])
    add(w, "t", 0, [10 * M, 2 * H])
    add(w, "t", 1, [20 * M])
    snapshot = json.loads(json.dumps(w.snapshot()))
    assert snapshot["version"] == 2 and snapshot["topics"]["t"]["partitions"] == {"0": 2 * H, "1": 20 * M}
    restored = Windower.from_snapshot(settings, snapshot)
    assert restored.progress() == []  # dormant until assigned
    restored.assign([("t", 0), ("t", 1)])
    assert {p.partition: p.newest_ms for p in restored.progress()} == {0: 2 * H, 1: 20 * M}
    closed, late = add(restored, "t", 1, [H + 1])
    assert not late.any() and [c.start_ms for c in closed] == [0]
    # A restarted consumer given only partition 0: the other is not held against the topic.
    only0 = Windower.from_snapshot(settings, snapshot)
    only0.assign([("t", 0)])
    closed = only0.report_lags({("t", 0): 5})
    assert [c.start_ms for c in closed] == [0, H]


def test_version_1_snapshots_load_with_partitions_unknown():
    settings = WindowSettings(size_ms=H, allowed_lateness_ms=0)
    w = Windower(settings)
    add(w, "t", 0, [10 * M, 2 * H])
    v1 = json.loads(json.dumps(w.snapshot()))
    v1["version"] = 1
    del v1["topics"]["t"]["partitions"]
    del v1["settings"]["idle_timeout_ms"]
    restored = Windower.from_snapshot(settings, v1)
    assert restored.watermark_ms("t") == 2 * H and [o.start_ms for o in restored.open_windows()] == [2 * H]
    restored.assign([("t", 0), ("t", 1)])
    assert restored.report_lags({}) == []
    with pytest.raises(StateError, match="remove the state directory"):
        Windower.from_snapshot(settings, {**v1, "version": 3})


def test_one_batch_may_mix_partitions_and_order_does_not_matter():
    stamps, part = backlog(hours=3, per_hour=1_000, partitions=3, seed=9)
    order = np.random.default_rng(9).permutation(stamps.size)
    results = []
    for idx in (np.arange(stamps.size), order):
        w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=0))
        closed, late = add_mixed(w, "t", part[idx], stamps[idx])
        results.append((window_counts(closed), late.sum()))
    assert results[0] == results[1] and results[0][1] == 0
    expected = np.bincount((stamps - T0) // H)
    assert results[0][0] == {T0: int(expected[0]), T0 + H: int(expected[1])}  # hour 2 waits for its end


def test_idle_timeout_setting_is_validated():
    from monitor.errors import ConfigError

    with pytest.raises(ConfigError, match="idle_timeout_ms"):
        WindowSettings(idle_timeout_ms=-1)


def test_new_records_make_every_lag_of_zero_of_the_topic_stale():
    """All caught up, then the producer writes to every partition: one batch may carry partition 0's new records
    before partition 1's. Partition 1's lag of 0 is as stale as partition 0's, so it holds the topic until it
    delivers or reports again, and its records of the next window are not late (found in the two-daemon test)."""
    w = Windower(WindowSettings(size_ms=H, allowed_lateness_ms=0))
    w.assign([("t", 0), ("t", 1)])
    add(w, "t", 0, [10 * M])
    add(w, "t", 1, [20 * M])
    w.report_lags({("t", 0): 0, ("t", 1): 0}, now_ms=0)
    closed, late = add(w, "t", 0, [H + 5 * M, 2 * H + 5 * M])
    assert closed == [] and w.watermark_ms("t") == 20 * M  # partition 1 holds at its newest event
    closed, late = add(w, "t", 1, [H + 10 * M])
    assert not late.any() and [c.start_ms for c in closed] == [0]
    w.report_lags({("t", 0): 0, ("t", 1): 0}, now_ms=0)  # a fresh report: both caught up again
    assert w.watermark_ms("t") == 2 * H + 5 * M
