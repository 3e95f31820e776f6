"""The changelog topic on a real broker: creating and checking it, writing and reading back window state, refusing
another bundle; and a 6-partition timed stream read by one owner against three (one killed without writing and
replaced, one added mid-stream, the closing owner moved), each restoring state from the changelog and seeking to its
offset, with the windows published on a results topic: the same windows, each published once.

The owners here (``monitor.daemon.fleet.FleetWindows`` beside a consumer) assign partitions by hand instead of through a
consumer group: what is tested is that the state in the changelog, and the offsets in it, are enough to move a
partition; the group protocol is the daemon's part."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from monitor.daemon.changelog import Changelog, ChangelogError
from monitor.daemon.fleet import FleetWindows
from monitor.errors import StateError
from monitor.export.sink import KafkaSink
from monitor.partials import PartitionState, PartitionWindows, TopicMarker
from monitor.window import WindowAggregate, WindowSettings
from tests.kafka_broker import create_topic

pytestmark = pytest.mark.slow  # runs a real broker

H = 3_600_000
M = 60_000
BUNDLE = "sha256:feed"
PARTITIONS = 6
SETTINGS = WindowSettings(size_ms=H, allowed_lateness_ms=5 * M)


def _name(what: str) -> str:
    return f"seqmon-it-{what}-{uuid.uuid4().hex[:8]}"


def _changelog(bootstrap, topic, bundle=BUNDLE) -> Changelog:
    return Changelog({"bootstrap_servers": bootstrap}, topic, bundle, SETTINGS)


def _agg(count: int, error: float = 1e-3) -> WindowAggregate:
    a = WindowAggregate.empty()
    a.add(np.full(count, error), None, np.full(count, 50.0), np.zeros(count, bool))
    return a


# ---------------------------------------------------------------------------------------------------------- the topic


def test_the_topic_is_created_compacted_once_and_a_deleting_topic_is_refused(kafka_bootstrap):
    name = _name("changelog")
    log = _changelog(kafka_bootstrap, name)
    try:
        assert log.ensure_topic() is True
        assert log.ensure_topic() is False  # a second daemon finds it
    finally:
        log.close()
    plain = _name("plain")
    create_topic(kafka_bootstrap, plain, 1)
    with pytest.raises(ChangelogError, match=rf"changelog topic {plain} has cleanup.policy=delete: .*compact"):
        _changelog(kafka_bootstrap, plain).ensure_topic()


def test_states_and_markers_written_by_one_daemon_are_read_back_by_another(kafka_bootstrap):
    name = _name("changelog")
    writer, reader = _changelog(kafka_bootstrap, name), _changelog(kafka_bootstrap, name)
    try:
        writer.ensure_topic(partitions=2)
        first = PartitionState("orders", 3, next_offset=10, newest_ms=5 * H, open={4 * H: _agg(4)})
        writer.write_states([first, PartitionState("orders", 0, next_offset=2, idle=True),
                             PartitionState("devices", 3, next_offset=1)])
        assert reader.refresh() == 3
        assert reader.partition_state("orders", 3) == first
        assert sorted(reader.topic_states("orders")) == [0, 3] and reader.topics() == ["devices", "orders"]
        assert reader.marker("orders") is None and reader.partition_state("orders", 1) is None

        newer = PartitionState("orders", 3, next_offset=25, newest_ms=5 * H + M, open={4 * H: _agg(9), 5 * H: _agg(1)})
        marker = TopicMarker("orders", published_through_ms=4 * H, watermark_ms=4 * H, last_closed=_agg(2),
                             taken={3 * H: {0: 0, 3: 2}})
        writer.write_states([newer])
        writer.write_marker(marker)
        assert reader.refresh() == 2  # only what was written since
        assert reader.partition_state("orders", 3) == newer
        assert reader.marker("orders") == marker

        # A daemon starting later reads the whole topic: the latest record per key.
        late_reader = _changelog(kafka_bootstrap, name)
        try:
            late_reader.refresh()
            assert late_reader.partition_state("orders", 3) == newer and late_reader.marker("orders") == marker
        finally:
            late_reader.close()
    finally:
        writer.close()
        reader.close()


def test_state_of_another_bundle_is_refused_naming_the_key_and_both_bundles(kafka_bootstrap):
    name = _name("changelog")
    writer = _changelog(kafka_bootstrap, name)
    other = _changelog(kafka_bootstrap, name, bundle="sha256:0ther")
    try:
        writer.ensure_topic()
        writer.write_states([PartitionState("orders", 1, next_offset=3)])
        other.refresh()
        with pytest.raises(StateError, match=rf"changelog {name}, key orders/1 was written by bundle 'sha256:feed', "
                                             r"this daemon scores with bundle 'sha256:0ther'"):
            other.partition_state("orders", 1)
    finally:
        writer.close()
        other.close()


def test_reading_a_missing_changelog_says_so(kafka_bootstrap):
    log = _changelog(kafka_bootstrap, _name("missing"))
    try:
        with pytest.raises(ChangelogError, match="does not exist"):
            log.refresh()
    finally:
        log.close()


# ---------------------------------------------------------------------------------------------------------- a fleet


def _produce_stream(bootstrap: str, topic: str, seed: int) -> tuple[dict[int, int], int]:
    """Five hours of scored records per partition, ten minutes out of order at most; the value carries the error,
    weight, percentile and anomaly flag that a bundle would have produced. Returns the records per partition and the
    end of the last window, UTC epoch ms."""
    rng = np.random.default_rng(seed)
    now = int(time.time() * 1000)
    t0 = (now - 6 * H) // H * H  # recent hours: Kafka refuses stamps far ahead and deletes old ones
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    sizes = {}
    try:
        for p in range(PARTITIONS):
            n = int(rng.integers(1_200, 1_800))
            times = np.sort(t0 + rng.integers(0, 5 * H, n)) - rng.integers(0, 10 * M, n)
            errors = rng.lognormal(-7.0, 0.6, n)
            weights = rng.integers(1, 4, n)
            percentiles = rng.uniform(0, 100, n)
            anomalies = rng.random(n) < 0.03
            for i in range(n):
                value = f"{float(errors[i])!r},{weights[i]},{float(percentiles[i])!r},{int(anomalies[i])}".encode()
                producer.send(topic, value=value, partition=p, timestamp_ms=int(times[i]))
            sizes[p] = n
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)
    return sizes, t0 + 5 * H


def _number_windows(windows, baseline):
    """A stand-in for the Baseline: numbers the windows, keeping its count in the marker, so that the numbering
    continues wherever the closing partition moves."""
    seen = 0 if baseline is None else baseline["windows"]
    for window in windows:
        window.assessment = {"window_number": seen}
        seen += 1
    return {"windows": seen}


class Owner:
    """One daemon: a consumer (hand-assigned here, a consumer group in the daemon) and its FleetWindows."""

    def __init__(self, bootstrap, topic, changelog_topic, results_topic, sizes):
        self.topic, self.sizes = topic, sizes
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                      auto_offset_reset="earliest", fetch_max_wait_ms=50)
        self.consumer.assign([])
        self.sink = KafkaSink({"bootstrap_servers": bootstrap})
        self.fleet = FleetWindows(PartitionWindows(SETTINGS), _changelog(bootstrap, changelog_topic),
                                  partitions_of=lambda topic: range(PARTITIONS), sink=self.sink,
                                  results_topic=results_topic, assess=_number_windows)
        self.read = Counter()

    def owned(self):
        return [p for _, p in self.fleet.windows.owned()]

    def take(self, partitions):
        """On assignment: restore each partition's latest state and read on from the offset in it."""
        seek = self.fleet.on_assign([(self.topic, p) for p in partitions], now_ms=0)
        self.consumer.assign([TopicPartition(self.topic, p) for p in self.owned()])
        for p in partitions:
            tp = TopicPartition(self.topic, p)
            if (self.topic, p) in seek:
                self.consumer.seek(tp, seek[(self.topic, p)])
            else:
                self.consumer.seek_to_beginning(tp)  # no state yet: the group's committed offset, here the earliest

    def give_up(self, partitions):
        """On revocation: write the partitions' final state, then let go."""
        self.fleet.on_revoke([(self.topic, p) for p in partitions], now_ms=0)
        self.consumer.assign([TopicPartition(self.topic, p) for p in self.owned()])

    def poll(self, max_records):
        for tp, records in self.consumer.poll(timeout_ms=300, max_records=max_records).items():
            if not records:
                continue
            fields = np.array([r.value.decode().split(",") for r in records], dtype=object)
            n = len(records)
            late, covered = self.fleet.add(
                np.full(n, tp.topic, dtype=object), np.array([r.timestamp for r in records], dtype=np.int64),
                fields[:, 0].astype(float), fields[:, 1].astype(float), fields[:, 2].astype(float),
                fields[:, 3].astype(int).astype(bool), np.full(n, tp.partition),
                np.array([r.offset for r in records], dtype=np.int64), now_ms=0,
            )
            assert not covered.any()
            self.read[tp.partition] += n

    def caught_up(self):
        return all(self.consumer.position(TopicPartition(self.topic, p)) >= self.sizes[p] for p in self.owned())

    def commit(self, final=False):
        if final:
            self.fleet.report_lags({(self.topic, p): 0 for p in self.owned()})
        offsets = self.fleet.commit(now_ms=0)  # the daemon commits these to the group
        for (topic, p), offset in offsets.items():
            assert offset <= self.consumer.position(TopicPartition(topic, p))

    def close_windows(self, wall_clock_ms=None):
        return self.fleet.close(wall_clock_ms=wall_clock_ms)

    def kill(self):
        """SIGKILL: nothing is written; the consumer and producers just go."""
        self.consumer.close(autocommit=False)
        self.fleet.changelog.close()
        self.sink.close()

    def stop(self):
        assert self.fleet.late_after_publication == 0
        self.kill()


def _results(bootstrap, topic):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    end = consumer.end_offsets([tp])[tp]
    out = []
    while consumer.position(tp) < end:
        for records in consumer.poll(timeout_ms=500).values():
            out += [(r.key.decode(), json.loads(r.value)) for r in records]
    consumer.close()
    return out


def _run(bootstrap, topic, sizes, end_ms, plan, seed):
    """Read the stream with owners as ``plan`` says: a list of (fraction read, action) steps."""
    changelog_topic, results_topic = _name("changelog"), _name("results")
    _changelog(bootstrap, changelog_topic).ensure_topic()
    create_topic(bootstrap, results_topic, 1)
    rng = np.random.default_rng(seed)
    owners: dict[str, Owner] = {}
    total = sum(sizes.values())
    killed_reads = [0]
    done = lambda: sum(sum(o.read.values()) for o in owners.values())

    def start(name, partitions):
        owners[name] = Owner(bootstrap, topic, changelog_topic, results_topic, sizes)
        owners[name].take(partitions)

    def read_until(fraction):
        deadline = time.monotonic() + 120
        while done() < total * fraction and not all(o.caught_up() for o in owners.values()):
            assert time.monotonic() < deadline, "the stream was not read in time"
            owner = owners[str(rng.choice(sorted(owners)))]
            owner.poll(int(rng.integers(50, 400)))
            if rng.random() < 0.5:
                owner.commit()
            if rng.random() < 0.3:
                for o in owners.values():
                    o.close_windows()

    try:
        for fraction, action in plan:
            read_until(fraction)
            before = set(owners.values())
            action(owners, start)
            killed_reads[0] += sum(sum(o.read.values()) for o in before - set(owners.values()))
        read_until(1.0)
        for owner in owners.values():
            owner.commit(final=True)
        for owner in owners.values():  # the stream went quiet: the wall clock closes the last window
            owner.close_windows(wall_clock_ms=end_ms + SETTINGS.allowed_lateness_ms)
        late = sum(o.fleet.changelog.partition_state(topic, p).late_records for o in owners.values()
                   for p in o.owned())
    finally:
        for owner in owners.values():
            owner.stop()
    return _results(bootstrap, results_topic), late, done() + killed_reads[0]


def test_one_owner_and_three_with_a_kill_and_a_join_publish_the_same_windows_once_each(kafka_bootstrap):
    topic = _name("timed")
    create_topic(kafka_bootstrap, topic, PARTITIONS)
    sizes, end_ms = _produce_stream(kafka_bootstrap, topic, seed=7)

    one, one_late, one_read = _run(kafka_bootstrap, topic, sizes, end_ms, [(0.0, lambda owners, start: start("a", range(PARTITIONS)))],
                         seed=1)

    def kill_b(owners, start):
        b = owners.pop("b")
        for _ in range(100):  # read something it will not write
            if b.fleet.windows.dirty(now_ms=0):
                break
            b.poll(300)
        assert b.fleet.windows.dirty(now_ms=0), "the owner to kill had nothing left to read"
        b.kill()
        owners["a"].take([3, 4, 5])  # the group gives b's partitions to a

    def restart_b(owners, start):
        owners["a"].give_up([4, 5])
        start("b", [4, 5])

    def add_c(owners, start):
        owners["a"].give_up([0])  # the closing partition moves too
        owners["b"].give_up([5])
        start("c", [0, 5])

    plan = [
        (0.0, lambda owners, start: (start("a", [0, 1, 2]), start("b", [3, 4, 5]))),
        (0.35, kill_b),
        (0.5, restart_b),
        (0.7, add_c),
    ]
    three, three_late, three_read = _run(kafka_bootstrap, topic, sizes, end_ms, plan, seed=2)

    keys = [key for key, _ in three]
    assert len(keys) == len(set(keys)), f"a window was published twice: {Counter(keys).most_common(3)}"
    assert [key for key, _ in one] == keys and len(keys) >= 5
    assert [f["window_number"] for _, f in three] == list(range(len(keys)))  # the closer's state moved with it
    assert one_late == three_late > 0
    assert one_read == sum(sizes.values()) < three_read  # the killed owner's unwritten work was read again
    assert sum(f["count"] for _, f in one) + one_late == sum(sizes.values())
    for (_, a), (_, b) in zip(one, three):
        assert (a["count"], a["weight"], a["p50"], a["p90"], a["p99"]) == (b["count"], b["weight"], b["p50"],
                                                                             b["p90"], b["p99"])
        for name in ("mean_error", "anomaly_rate", "mean_percentile", "abnormality", "ks_shift_vs_previous",
                     "tail_surprise_vs_previous"):
            if a[name] is None:
                assert b[name] is None, name
            else:
                assert a[name] == pytest.approx(b[name], rel=1e-9), name

