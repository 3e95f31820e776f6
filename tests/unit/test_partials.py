"""Per-partition partial windows, their merge into topic windows, and the changelog records that carry them: pure,
no broker.  A dict of encoded records stands in for the compacted changelog topic (latest value per key), so every
state a simulated daemon restores or merges went through encode and decode."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monitor.errors import StateError
from monitor.partials import (
    PartitionState,
    PartitionWindows,
    TopicMarker,
    decode_record,
    encode_marker,
    encode_state,
    is_closing_daemon,
    marker_key,
    merge_due,
    parse_key,
    state_key,
)
from monitor.window import WindowAggregate, Windower, WindowSettings

H = 3_600_000
M = 60_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00:00Z
BUNDLE = "sha256:aaaa"
TOPIC = "orders"


# ---------------------------------------------------------------------------------------------------------- streams


class Stream:
    """A timed stream on ``partitions`` partitions: per partition, offsets 0.. and scored columns."""

    def __init__(self, partitions=6, hours=5, per_hour=1_200, disorder_ms=0, seed=0):
        rng = np.random.default_rng(seed)
        self.partitions = partitions
        self.parts = []
        for _ in range(partitions):
            n = int(hours * per_hour / partitions * rng.uniform(0.7, 1.3))
            times = np.sort(T0 + rng.integers(0, hours * H, n))
            if disorder_ms:
                times = times - rng.integers(0, disorder_ms, n)  # out of order within the partition
            self.parts.append({
                "event_ms": times.astype(np.int64),
                # Integer weights keep Σw, the sketch's bucket weights and the counts exact under any grouping.
                "weights": rng.integers(1, 4, n).astype(float),
                "errors": rng.lognormal(-7.0, 0.6, n),
                "percentiles": rng.uniform(0, 100, n),
                "is_anomaly": rng.random(n) < 0.03,
            })

    def size(self, p):
        return self.parts[p]["event_ms"].size

    def columns(self, p, lo, hi):
        part = self.parts[p]
        n = hi - lo
        return dict(
            topics=np.full(n, TOPIC, dtype=object), event_ms=part["event_ms"][lo:hi], errors=part["errors"][lo:hi],
            weights=part["weights"][lo:hi], percentiles=part["percentiles"][lo:hi],
            is_anomaly=part["is_anomaly"][lo:hi], partitions=np.full(n, p, dtype=np.int32),
            offsets=np.arange(lo, hi, dtype=np.int64),
        )


class Fleet:
    """Daemons that own partitions, write their states to a changelog (a dict: latest value per key), and, for the
    owner of partition 0, merge written states into published windows, as the daemon will."""

    def __init__(self, stream, settings, seed):
        self.stream, self.settings = stream, settings
        self.rng = np.random.default_rng(seed)
        self.changelog: dict[str, bytes] = {}
        self.published: dict[tuple[str, int], object] = {}
        self.publications: list[tuple[str, int]] = []
        self.daemons: dict[str, dict] = {}
        self.extra_late = 0

    def start(self, name, partitions):
        daemon = self.daemons[name] = {"windows": PartitionWindows(self.settings), "position": {}}
        for p in partitions:
            self.restore(daemon, p)

    def restore(self, daemon, p):
        value = self.changelog.get(state_key(TOPIC, p))
        restored = None if value is None else decode_record(value, BUNDLE, self.settings)
        offset = daemon["windows"].assign(TOPIC, p, restored, now_ms=0)
        daemon["position"][p] = 0 if offset is None else offset  # no committed offset here: the earliest
        marker = self.marker()
        if marker is not None:
            self.extra_late += daemon["windows"].apply_marker(marker)

    def marker(self):
        value = self.changelog.get(marker_key(TOPIC))
        return None if value is None else decode_record(value, BUNDLE, self.settings)

    def owner(self, p):
        return next(d for d in self.daemons.values() if p in d["position"])

    def read(self, name, p, n):
        daemon = self.daemons[name]
        lo = daemon["position"][p]
        hi = min(self.stream.size(p), lo + n)
        if hi > lo:
            late, covered = daemon["windows"].add(**self.stream.columns(p, lo, hi), now_ms=0)
            assert not covered.any()
            daemon["position"][p] = hi

    def write(self, name):
        windows = self.daemons[name]["windows"]
        states = windows.states(now_ms=0)
        for state in states:
            self.changelog[state_key(state.topic, state.partition)] = encode_state(state, BUNDLE, self.settings)
        windows.written(states)

    def report_lags(self, name):
        daemon = self.daemons[name]
        daemon["windows"].report_lags(
            {(TOPIC, p): self.stream.size(p) - pos for p, pos in daemon["position"].items()})

    def kill(self, name):
        """SIGKILL: whatever was not written is gone."""
        del self.daemons[name]

    def move(self, p, to):
        """A rebalance: the old owner writes the partition's final state and lets go; the new owner restores it."""
        old = self.owner(p)
        windows = old["windows"]
        states = windows.states([(TOPIC, p)], now_ms=0)
        for state in states:
            self.changelog[state_key(TOPIC, p)] = encode_state(state, BUNDLE, self.settings)
        windows.written(states)
        windows.revoke([(TOPIC, p)])
        del old["position"][p]
        self.restore(self.daemons[to], p)

    def close(self, wall_clock_ms=None):
        """The owner of partition 0 merges the *written* states, publishes, then writes the marker."""
        closer = [d for d in self.daemons.values() if is_closing_daemon(TOPIC, [(TOPIC, p) for p in d["position"]])]
        if not closer:
            return
        states = {}
        for p in range(self.stream.partitions):
            value = self.changelog.get(state_key(TOPIC, p))
            if value is not None:
                states[p] = decode_record(value, BUNDLE, self.settings)
        decision = merge_due(TOPIC, states, range(self.stream.partitions), self.marker(), self.settings,
                             wall_clock_ms=wall_clock_ms)
        for window in decision.closed:
            key = (window.topic, window.start_ms)
            self.publications.append(key)
            self.published[key] = window
        if decision.marker != self.marker():
            self.changelog[marker_key(TOPIC)] = encode_marker(decision.marker, BUNDLE, self.settings)
            for daemon in self.daemons.values():
                self.extra_late += daemon["windows"].apply_marker(decision.marker)

    def done(self):
        return all(pos >= self.stream.size(p) for d in self.daemons.values() for p, pos in d["position"].items())

    def step(self):
        name = str(self.rng.choice(sorted(self.daemons)))
        daemon = self.daemons[name]
        open_parts = [p for p, pos in daemon["position"].items() if pos < self.stream.size(p)]
        if open_parts:
            self.read(name, int(self.rng.choice(open_parts)), int(self.rng.integers(1, 400)))
        if self.rng.random() < 0.3:
            self.write(name)
        if self.rng.random() < 0.2:
            self.close()

    def finish(self, end_ms):
        for name in self.daemons:
            self.report_lags(name)
            self.write(name)
        self.close(wall_clock_ms=end_ms)

    def late_records(self):
        return sum(decode_record(self.changelog[state_key(TOPIC, p)], BUNDLE, self.settings).late_records
                   for p in range(self.stream.partitions))


def run_one_daemon(stream, settings, seed):
    fleet = Fleet(stream, settings, seed)
    fleet.start("a", range(stream.partitions))
    while not fleet.done():
        fleet.step()
    fleet.finish(T0 + 5 * H + settings.allowed_lateness_ms)
    return fleet


def run_three_daemons(stream, settings, seed):
    """a and b share the partitions; b is SIGKILLed mid-stream and restarted; c joins later and takes two."""
    fleet = Fleet(stream, settings, seed)
    fleet.start("a", [0, 1, 2])
    fleet.start("b", [3, 4, 5])
    total = sum(stream.size(p) for p in range(stream.partitions))
    read = lambda: sum(pos for d in fleet.daemons.values() for pos in d["position"].values())
    while read() < total * 0.35:
        fleet.step()
    fleet.kill("b")
    for p in [3, 4, 5]:  # the group hands b's partitions to a until b is back
        fleet.restore(fleet.daemons["a"], p)
    while read() < total * 0.5:
        fleet.step()
    fleet.start("b", [])
    for p in [4, 5]:
        fleet.move(p, "b")
    while read() < total * 0.7:
        fleet.step()
    fleet.start("c", [])
    fleet.move(0, "c")  # the closing daemon changes too
    fleet.move(5, "c")
    while not fleet.done():
        fleet.step()
    fleet.finish(T0 + 5 * H + settings.allowed_lateness_ms)
    return fleet


def assert_same_windows(ours, theirs):
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        a, b = ours[key].aggregate, theirs[key].aggregate
        assert a.count == b.count
        assert a.weight == b.weight
        assert a.weight_squared == b.weight_squared
        assert a.sketch == b.sketch  # bucket indices and (integer) bucket weights: the quantiles are identical
        assert a.weighted_error == pytest.approx(b.weighted_error, rel=1e-12)
        assert a.anomaly_weight == b.anomaly_weight
        assert a.weighted_percentile == pytest.approx(b.weighted_percentile, rel=1e-12)
        fa, fb = ours[key].figures(), theirs[key].figures()
        for name, value in fa.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(fb[name]), name
            elif isinstance(value, float):
                assert value == pytest.approx(fb[name], rel=1e-9, abs=1e-12), name
            else:
                assert value == fb[name], name


# ---------------------------------------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("seed", range(4))
def test_merged_partials_equal_one_windower_over_the_whole_stream(seed):
    stream = Stream(seed=seed)
    settings = WindowSettings(size_ms=H, allowed_lateness_ms=0)
    fleet = run_three_daemons(stream, settings, seed)

    reference = Windower(settings)
    reference.assign([(TOPIC, p) for p in range(stream.partitions)])
    closed = []
    for p in range(stream.partitions):
        cols = stream.columns(p, 0, stream.size(p))
        cols.pop("offsets")
        c, late = reference.add(**cols)
        closed += c
        assert not late.any()
    closed += reference.close_all()
    expected = {(w.topic, w.start_ms): w for w in closed}

    assert fleet.late_records() == 0 and fleet.extra_late == 0
    assert sorted(fleet.published) == [(TOPIC, T0 + h * H) for h in range(5)]
    assert sum(w.aggregate.count for w in fleet.published.values()) == sum(map(stream.size, range(6)))
    assert_same_windows(fleet.published, expected)


@pytest.mark.parametrize("seed", range(4))
def test_three_daemons_with_a_kill_and_a_join_publish_what_one_daemon_publishes_once_each(seed):
    # Records out of order within partitions by up to 10 minutes, 5 minutes allowed: some are late, the same ones.
    stream = Stream(disorder_ms=10 * M, seed=seed)
    settings = WindowSettings(size_ms=H, allowed_lateness_ms=5 * M)
    one = run_one_daemon(stream, settings, seed)
    three = run_three_daemons(stream, settings, seed + 100)
    assert one.late_records() > 0
    assert three.late_records() == one.late_records()
    assert one.extra_late == three.extra_late == 0
    assert len(three.publications) == len(set(three.publications)) == len(one.publications)
    assert_same_windows(three.published, one.published)
    counted = sum(w.aggregate.count for w in one.published.values())
    assert counted + one.late_records() == sum(map(stream.size, range(6)))


def test_a_replay_from_before_the_state_is_not_counted_twice():
    stream = Stream(partitions=1, hours=2, seed=3)
    settings = WindowSettings(size_ms=H, allowed_lateness_ms=0)
    windows = PartitionWindows(settings)
    windows.add(**stream.columns(0, 0, 500))
    before = windows.state(TOPIC, 0).copy()
    late, covered = windows.add(**stream.columns(0, 300, 700))  # a consumer that seeked to an older offset
    assert covered.tolist() == [True] * 200 + [False] * 200
    assert not late.any()
    state = windows.state(TOPIC, 0)
    assert state.next_offset == 700
    assert sum(a.count for a in state.open.values()) == sum(a.count for a in before.open.values()) + 200


def test_lateness_is_judged_per_partition_and_against_the_published_marker():
    settings = WindowSettings(size_ms=H, allowed_lateness_ms=0)
    windows = PartitionWindows(settings)

    def add(p, times, first_offset):
        n = len(times)
        return windows.add(np.full(n, TOPIC, dtype=object), np.asarray(times, dtype=np.int64), np.full(n, 1e-3),
                           None, np.full(n, 50.0), np.zeros(n, bool), np.full(n, p), np.arange(n) + first_offset)

    add(0, [T0 + 2 * H], 0)  # partition 0 is two hours ahead
    late, _ = add(1, [T0 + 10 * M], 0)  # partition 1's own watermark is what counts: not late
    assert not late.any()
    late, _ = add(0, [T0 + 10 * M], 1)  # behind partition 0's own watermark: late
    assert late.tolist() == [True]
    assert windows.state(TOPIC, 0).late_records == 1
    windows.apply_marker(TopicMarker(TOPIC, published_through_ms=T0 + H))
    late, _ = add(1, [T0 + 20 * M, T0 + H + M], 1)  # the first hour is published
    assert late.tolist() == [True, False]
    assert sorted(windows.state(TOPIC, 1).open) == [T0 + H]


def test_records_a_publication_did_not_take_are_counted_late_not_lost():
    settings = WindowSettings(size_ms=H, allowed_lateness_ms=0)
    windows = PartitionWindows(settings)
    n = 5
    windows.add(np.full(n, TOPIC, dtype=object), np.full(n, T0 + M, dtype=np.int64), np.full(n, 1e-3), None,
                np.full(n, 50.0), np.zeros(n, bool), np.full(n, 2), np.arange(n))
    # The closing daemon merged 3 of them (the written state of an idle partition), then 2 more arrived here.
    extra = windows.apply_marker(TopicMarker(TOPIC, published_through_ms=T0 + H, taken={T0: {2: 3}}))
    assert extra == 2
    state = windows.state(TOPIC, 2)
    assert state.late_records == 2 and state.open == {} and state.published_through_ms == T0 + H


# ---------------------------------------------------------------------------------------------------------- closing


def state(p, newest_ms=None, idle=False, open_=None):
    return PartitionState(TOPIC, p, next_offset=1, newest_ms=newest_ms, open=open_ or {}, idle=idle)


def agg(count, error=1e-3):
    a = WindowAggregate.empty()
    a.add(np.full(count, error), None, np.full(count, 50.0), np.zeros(count, bool))
    return a


SETTINGS = WindowSettings(size_ms=H, allowed_lateness_ms=5 * M)


def test_a_partition_without_state_or_records_holds_its_topic_back():
    states = {0: state(0, T0 + 3 * H, open_={T0: agg(2)}), 1: state(1, T0 + 3 * H)}
    decision = merge_due(TOPIC, states, [0, 1, 2], None, SETTINGS)
    assert decision.closed == [] and decision.waiting_for == [2]
    states[2] = state(2)  # assigned, nothing delivered, not idle
    decision = merge_due(TOPIC, states, [0, 1, 2], None, SETTINGS)
    assert decision.closed == [] and decision.waiting_for == [2]
    states[2] = state(2, idle=True)  # caught up: it holds nothing back
    decision = merge_due(TOPIC, states, [0, 1, 2], None, SETTINGS)
    assert [w.start_ms for w in decision.closed] == [T0, T0 + H]
    assert decision.marker.published_through_ms == T0 + 2 * H


def test_the_lowest_busy_watermark_closes_with_count_zero_gaps_and_exact_merges():
    states = {
        0: state(0, T0 + 3 * H + 5 * M, open_={T0: agg(2), T0 + 2 * H: agg(1), T0 + 3 * H: agg(4)}),
        1: state(1, T0 + 3 * H + 6 * M, open_={T0: agg(3, 2e-3)}),
    }
    decision = merge_due(TOPIC, states, [0, 1], None, SETTINGS)
    assert [(w.start_ms, w.aggregate.count) for w in decision.closed] == [(T0, 5), (T0 + H, 0), (T0 + 2 * H, 1)]
    assert decision.closed[0].aggregate == agg(2).merge(agg(3, 2e-3))
    assert decision.closed[0].previous is None and decision.closed[1].previous is decision.closed[0].aggregate
    assert decision.marker.taken == {T0: {0: 2, 1: 3}, T0 + H: {}, T0 + 2 * H: {0: 1}}
    assert decision.marker.last_closed == agg(1)
    later = {0: state(0, T0 + 4 * H + 5 * M, open_={T0 + 3 * H: agg(4)}), 1: state(1, T0 + 4 * H + 6 * M)}
    assert merge_due(TOPIC, later, [0, 1], decision.marker, SETTINGS).marker.taken == {
        T0: {0: 2, 1: 3}, T0 + H: {}, T0 + 2 * H: {0: 1}, T0 + 3 * H: {0: 4}}  # earlier counts are kept
    # The same states again, with the marker written: nothing is published twice.
    again = merge_due(TOPIC, states, [0, 1], decision.marker, SETTINGS)
    assert again.closed == [] and again.marker == decision.marker


def test_the_wall_clock_closes_a_quiet_topic_only_when_every_partition_is_idle():
    states = {0: state(0, T0 + 10 * M, idle=True, open_={T0: agg(1)}), 1: state(1, T0 + 5 * M, open_={T0: agg(1)})}
    assert merge_due(TOPIC, states, [0, 1], None, SETTINGS, wall_clock_ms=T0 + 3 * H).closed == []
    states[1].idle = True
    closed = merge_due(TOPIC, states, [0, 1], None, SETTINGS, wall_clock_ms=T0 + 3 * H).closed
    assert [(w.start_ms, w.aggregate.count) for w in closed] == [(T0, 2), (T0 + H, 0)]


def test_the_next_window_is_compared_with_the_marker_s_last_window():
    marker = TopicMarker(TOPIC, published_through_ms=T0 + H, watermark_ms=T0 + H, last_closed=agg(5),
                         baseline={"kept": 1})
    states = {0: state(0, T0 + 2 * H + 5 * M, open_={T0 + H: agg(2, 5e-3)})}
    decision = merge_due(TOPIC, states, [0], marker, SETTINGS)
    (window,) = decision.closed
    assert window.previous == agg(5)
    assert window.figures()["abnormality"] == 100.0
    assert decision.marker.baseline == {"kept": 1}


def test_only_the_owner_of_partition_0_closes():
    assert is_closing_daemon(TOPIC, [(TOPIC, 0), ("other", 1)])
    assert not is_closing_daemon(TOPIC, [(TOPIC, 1), ("other", 0)])


# ---------------------------------------------------------------------------------------------------------- records


def test_records_round_trip_and_stay_small():
    stream = Stream(partitions=1, hours=2, per_hour=50_000, seed=1)
    windows = PartitionWindows(SETTINGS)
    windows.add(**stream.columns(0, 0, stream.size(0)))
    (written,) = windows.states()
    value = encode_state(written, BUNDLE, SETTINGS)
    assert decode_record(value, BUNDLE, SETTINGS) == written
    buckets = sum(a.sketch.bucket_count for a in written.open.values())
    assert buckets > 1_000
    # Two open windows of ~50,000 records: some kilobytes per thousand buckets, far under Kafka's 1 MB default.
    assert len(value) < 12 * buckets
    marker = TopicMarker(TOPIC, T0 + H, T0 + H, agg(3), {T0: {0: 3, 1: 0}}, {"windows": []})
    assert decode_record(encode_marker(marker, BUNDLE, SETTINGS), BUNDLE, SETTINGS) == marker


def test_a_record_of_another_bundle_is_refused_with_both_named():
    value = encode_state(state(0, T0), BUNDLE, SETTINGS)
    with pytest.raises(StateError, match=r"orders/0 was written by bundle 'sha256:aaaa'.*bundle 'sha256:bbbb'"):
        decode_record(value, "sha256:bbbb", SETTINGS, where="changelog seqmon-state, key orders/0")
    assert decode_record(value, None, SETTINGS) == state(0, T0)  # inspection without a bundle


def test_records_of_other_window_settings_versions_or_formats_are_refused():
    value = encode_state(state(0, T0), BUNDLE, SETTINGS)
    with pytest.raises(StateError, match=r"size_ms=3600000 \(now 60000\)"):
        decode_record(value, BUNDLE, WindowSettings(size_ms=M))
    # Lateness and the idle timeout may change: they do not change what a stored window means.
    decode_record(value, BUNDLE, WindowSettings(allowed_lateness_ms=0, idle_timeout_ms=0))

    import json
    import zlib

    envelope = json.loads(zlib.decompress(value))
    envelope["version"] = 2
    with pytest.raises(StateError, match="version 2; this seqmon reads version 1"):
        decode_record(zlib.compress(json.dumps(envelope).encode()), BUNDLE, SETTINGS)
    with pytest.raises(StateError, match="not a seqmon window state record"):
        decode_record(b"{}", BUNDLE, SETTINGS)
    envelope["version"] = 1
    del envelope["partition"]["open"]
    with pytest.raises(StateError, match="is damaged"):
        decode_record(zlib.compress(json.dumps(envelope).encode()), BUNDLE, SETTINGS)


def test_keys():
    assert state_key("orders.eu", 12) == "orders.eu/12" and parse_key("orders.eu/12") == ("orders.eu", 12)
    assert parse_key(marker_key("orders")) == ("orders", None)
    for bad in ("orders", "/3", "orders/x"):
        with pytest.raises(ValueError):
            parse_key(bad)


def test_only_changed_partitions_are_written_again():
    windows = PartitionWindows(SETTINGS)
    windows.assign(TOPIC, 0, now_ms=0)
    windows.assign(TOPIC, 1, now_ms=0)
    states = windows.states(now_ms=0)
    assert [(s.topic, s.partition) for s in states] == [(TOPIC, 0), (TOPIC, 1)]
    windows.add(np.array([TOPIC]), np.array([T0]), np.array([1e-3]), None, np.array([50.0]), np.array([False]),
                np.array([1]), np.array([7]))
    windows.written(states)  # acknowledged after partition 1 changed again: it stays dirty
    assert windows.dirty(now_ms=0) == [(TOPIC, 1)]
    windows.report_lags({(TOPIC, 0): 0, (TOPIC, 1): 3})  # partition 0 turns idle: the closer must know
    assert windows.dirty(now_ms=0) == [(TOPIC, 0), (TOPIC, 1)]
    written = windows.states(now_ms=0)
    assert [s.idle for s in written] == [True, False] and written[1].next_offset == 8
    windows.written(written)
    assert windows.dirty(now_ms=0) == []


@pytest.mark.parametrize("seed", range(3))
def test_which_records_are_late_does_not_depend_on_batching_or_on_other_partitions(seed):
    stream = Stream(partitions=3, hours=3, disorder_ms=15 * M, seed=seed)
    settings = WindowSettings(size_ms=H, allowed_lateness_ms=5 * M)
    whole = PartitionWindows(settings)
    expected = {p: whole.add(**stream.columns(p, 0, stream.size(p)))[0] for p in range(3)}
    assert sum(int(late.sum()) for late in expected.values()) > 0

    # All partitions in one batch, shuffled, then the same again record by record in random chunks.
    shuffled = PartitionWindows(settings)
    cols = [stream.columns(p, 0, stream.size(p)) for p in range(3)]
    joined = {k: np.concatenate([c[k] for c in cols]) for k in cols[0]}
    order = np.random.default_rng(seed).permutation(joined["offsets"].size)
    late, _ = shuffled.add(**{k: v[order] for k, v in joined.items()})
    back = np.empty_like(late)
    back[order] = late
    bounds = np.cumsum([0] + [stream.size(p) for p in range(3)])
    for p in range(3):
        assert back[bounds[p]:bounds[p + 1]].tolist() == expected[p].tolist()

    chunked = PartitionWindows(settings)
    rng = np.random.default_rng(seed + 10)
    for p in range(3):
        lo, got = 0, []
        while lo < stream.size(p):
            hi = min(stream.size(p), lo + int(rng.integers(1, 50)))
            got += chunked.add(**stream.columns(p, lo, hi))[0].tolist()
            lo = hi
        assert got == expected[p].tolist()
        assert chunked.state(TOPIC, p).open.keys() == whole.state(TOPIC, p).open.keys()
        assert chunked.state(TOPIC, p).late_records == int(expected[p].sum())


def test_a_closer_killed_between_publishing_and_marking_publishes_the_same_figures_again():
    stream = Stream(disorder_ms=10 * M, seed=5)
    settings = WindowSettings(size_ms=H, allowed_lateness_ms=5 * M)
    fleet = Fleet(stream, settings, seed=5)
    fleet.start("a", range(stream.partitions))
    while not fleet.done():
        fleet.step()
    for name in fleet.daemons:
        fleet.report_lags(name)
        fleet.write(name)
    # Publish without writing the marker (the closer dies), then a new closer does it all again.
    states = {p: decode_record(fleet.changelog[state_key(TOPIC, p)], BUNDLE, settings) for p in range(6)}
    first = merge_due(TOPIC, states, range(6), fleet.marker(), settings, wall_clock_ms=T0 + 5 * H + 5 * M)
    fleet.kill("a")
    fleet.start("b", range(stream.partitions))
    fleet.close(wall_clock_ms=T0 + 5 * H + 5 * M)
    assert first.closed
    again = {(w.topic, w.start_ms): w for w in first.closed}
    for key, window in again.items():
        assert fleet.published[key].figures() == window.figures()  # same key, same value: idempotent
