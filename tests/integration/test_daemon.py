"""The daemon against a real Kafka broker: window figures, bad and late records, idle closing, SIGKILL and restart.

Every figure is checked against values computed here, independently, from the same errors.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from monitor.config import load_settings
from monitor.daemon.run import Daemon
from monitor.generate import SeedLikeGenerator
from tests.kafka_broker import create_topic, free_port

pytestmark = pytest.mark.slow
WINDOW_S = 10


def settings_for(bootstrap, bundle_path, state_dir, topic, **extra):
    overrides = {
        "kafka.bootstrap_servers": bootstrap,
        "kafka.topics": topic,
        "kafka.group_id": f"g-{uuid.uuid4().hex[:8]}",
        "kafka.session_timeout_ms": "6000",
        "kafka.heartbeat_interval_ms": "1000",
        "model.bundle": str(bundle_path),
        "model.watch_interval_seconds": "0",
        "state.directory": str(state_dir),
        "window.size_seconds": str(WINDOW_S),
        # Zero: with watermarks per partition, records in order per partition are never late.
        "window.allowed_lateness_seconds": "0",
        "window.idle_close_interval_seconds": "0",
        "metrics.port": str(free_port()),
        "batch.max_latency_ms": "200",
    }
    overrides.update(extra)
    return load_settings(None, env={}, overrides=[f"{k}={v}" for k, v in overrides.items()])


def produce(bootstrap, topic, records, partition=None):
    """records: (timestamp_ms, value bytes) pairs."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    for ts, value in records:
        producer.send(topic, value=value, timestamp_ms=int(ts), partition=partition)
    producer.flush()
    producer.close()


def run_until(daemon, predicate, timeout=90):
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and not predicate():
            time.sleep(0.2)
        assert predicate(), "the daemon did not get there in time"
    finally:
        daemon.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()


def window_start(ms):
    return ms - ms % (WINDOW_S * 1000)


def base_ms():
    # Two minutes ago, aligned: inside the broker's timestamp limits, and windows are whole.
    return window_start(int(time.time() * 1000) - 120_000)


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_closed_windows_match_independent_figures(kafka_bootstrap, bundle_path, tmp_path, client):
    topic = f"seq-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 2)
    gen = SeedLikeGenerator(22)
    base = base_ms()
    rng = np.random.default_rng(0)
    records = []
    for w in range(4):
        rate = 0.3 if w == 2 else 0.0
        n = 400
        seqs = gen.normal(n) if not rate else gen.normal(int(n * (1 - rate))) + gen.abnormal(int(n * rate), "unknown")
        stamps = base + w * WINDOW_S * 1000 + np.sort(rng.integers(0, WINDOW_S * 1000, len(seqs)))
        records += [(t, s.encode()) for t, s in zip(stamps.tolist(), seqs)]
    closer = (base + 6 * WINDOW_S * 1000, b"DF 36 FR GX567")  # moves the watermark past window 4
    produce(kafka_bootstrap, topic, records + [closer])

    settings = settings_for(kafka_bootstrap, bundle_path, tmp_path / "state", topic, **{"kafka.client": client})
    daemon = Daemon(settings, registry=CollectorRegistry())
    daemon.start()
    assert type(daemon.source).__name__ == {"kafka-python": "KafkaSource", "confluent": "ConfluentSource"}[client]
    run_until(daemon, lambda: len(daemon.closed_windows) >= 4)

    from monitor.bundle import load_bundle

    bundle = load_bundle(bundle_path)
    values = [v.decode() for _, v in records]
    errors = bundle.errors(values)
    stamps = np.array([t for t, _ in records])
    previous = None
    for w, window in enumerate(daemon.closed_windows[:4]):
        f = window.figures()
        assert f["start_ms"] == base + w * WINDOW_S * 1000
        mine = errors[(stamps >= f["start_ms"]) & (stamps < f["end_ms"])]
        assert f["count"] == len(mine) == 400
        # The scorer runs in float32: another batch layout can move an error by ~1e-7 relative, so figures agree to
        # that precision, and a record that ties a reference error (repeated sequences do) may flip its rank.
        assert f["mean_error"] == pytest.approx(mine.mean(), rel=1e-6)
        assert f["anomaly_rate"] == pytest.approx((mine > bundle.threshold).mean(), abs=1.01 / len(mine))
        assert f["mean_percentile"] == pytest.approx(bundle.percentile_rank(mine).mean(), abs=0.2)
        assert f["p50"] == pytest.approx(np.quantile(mine, 0.5), rel=0.01)
        if previous is None:
            assert np.isnan(f["abnormality"])
        else:
            exact = (np.sum(mine[:, None] > previous[None, :]) + 0.5 * np.sum(mine[:, None] == previous[None, :])) / (len(mine) * len(previous))
            assert f["abnormality"] == pytest.approx(100 * exact, abs=0.5)
            assert f["mean_error_ratio"] == pytest.approx(mine.mean() / previous.mean(), rel=1e-6)
            assert f["mean_error_percentile_in_previous"] == pytest.approx(100 * np.mean(previous <= mine.mean()), abs=0.5)
        previous = mine
    assert daemon.closed_windows[2].figures()["abnormality"] > 58  # the hour with injected anomalies stands out
    reg = daemon.registry
    assert reg.get_sample_value("seqmon_records_consumed_total", {"topic": topic}) == len(records) + 1
    # The closer's event time (zero lateness) also closed windows 5 and 6, in which no record fell, once both
    # partitions were caught up: the gauges show the last closed window.
    assert [w.figures()["count"] for w in daemon.closed_windows] == [400, 400, 400, 400, 0, 0]
    assert reg.get_sample_value("seqmon_window_records", {"topic": topic}) == 0
    assert reg.get_sample_value("seqmon_windows_closed_total", {"topic": topic}) == 6
    # At shutdown the daemon committed the offsets of everything it read, through whichever client it used.
    reader = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=settings.kafka.group_id, enable_auto_commit=False)
    try:
        committed = [reader.committed(TopicPartition(topic, p)) for p in (0, 1)]
    finally:
        reader.close()
    assert sum(committed) == len(records) + 1


def test_bad_and_late_records_are_counted_and_dead_lettered(kafka_bootstrap, bundle_path, tmp_path):
    topic = f"seq-{uuid.uuid4().hex[:8]}"
    dlq = f"dlq-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 1)
    create_topic(kafka_bootstrap, dlq, 1)
    base = base_ms()
    good = SeedLikeGenerator(23).normal(50)
    produce(kafka_bootstrap, topic, [(base + i, s.encode()) for i, s in enumerate(good)])
    produce(kafka_bootstrap, topic, [
        (base + 100, b""),
        (base + 101, b"DF \xff 36"),
        (base + 102, b"X" * 5000),
        (base + 3 * WINDOW_S * 1000, b"DF 36 FR GX567"),  # closes the first window
    ])
    daemon = Daemon(settings_for(kafka_bootstrap, bundle_path, tmp_path / "state", topic, **{"kafka.dead_letter_topic": dlq}), registry=CollectorRegistry())
    daemon.start()
    reg = daemon.registry

    def late_once_first_window_closed():
        if daemon.closed_windows and not getattr(daemon, "_late_sent", False):
            daemon._late_sent = True
            produce(kafka_bootstrap, topic, [(base + 200, b"DF 36 FR GX567")])  # late: its window has closed
        return reg.get_sample_value("seqmon_records_late_total", {"topic": topic}) == 1

    run_until(daemon, late_once_first_window_closed)
    for reason in ("empty", "invalid_utf8", "too_long"):
        assert reg.get_sample_value("seqmon_records_invalid_total", {"topic": topic, "reason": reason}) == 1
    assert reg.get_sample_value("seqmon_records_consumed_total", {"topic": topic}) == 55
    assert daemon.closed_windows[0].figures()["count"] == 50
    consumer = KafkaConsumer(dlq, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=10_000)
    got = {dict(m.headers)["seqmon-reason"].decode(): m.value for m in consumer}
    consumer.close()
    assert got == {"empty": b"", "invalid_utf8": b"DF \xff 36", "too_long": b"X" * 5000, "late": b"DF 36 FR GX567"}


def test_an_idle_stream_still_closes_its_windows(kafka_bootstrap, bundle_path, tmp_path):
    topic = f"seq-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 1)
    now_ms = int(time.time() * 1000)
    produce(kafka_bootstrap, topic, [(now_ms, s.encode()) for s in SeedLikeGenerator(24).normal(20)])
    settings = settings_for(kafka_bootstrap, bundle_path, tmp_path / "state", topic, **{
        "window.size_seconds": "2", "window.allowed_lateness_seconds": "0", "window.idle_close_interval_seconds": "1",
    })
    daemon = Daemon(settings, registry=CollectorRegistry())
    daemon.start()
    run_until(daemon, lambda: len(daemon.closed_windows) >= 3, timeout=60)
    counts = [w.figures()["count"] for w in daemon.closed_windows]
    assert counts[0] == 20 and counts[1:3] == [0, 0]  # silence shows as empty windows, not as nothing
    starts = [w.start_ms for w in daemon.closed_windows]
    assert starts == sorted(starts) and np.all(np.diff(starts) == 2000)


def results(bootstrap, topic):
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    out = {m.key.decode(): json.loads(m.value) for m in consumer}  # a replayed window writes its key again
    consumer.close()
    return out


def start_daemon_process(bootstrap, bundle_path, state_dir, topic, group, results_topic, port):
    args = [
        sys.executable, "-m", "monitor.cli", "run",
        "--set", f"kafka.bootstrap_servers={bootstrap}", "--set", f"kafka.topics={topic}", "--set", f"kafka.group_id={group}",
        "--set", "kafka.session_timeout_ms=6000", "--set", "kafka.heartbeat_interval_ms=1000",
        "--set", f"kafka.results_topic={results_topic}", "--set", f"model.bundle={bundle_path}",
        "--set", f"state.directory={state_dir}", "--set", f"window.size_seconds={WINDOW_S}",
        "--set", "window.allowed_lateness_seconds=0", "--set", "window.idle_close_interval_seconds=0",
        "--set", "model.watch_interval_seconds=0", "--set", f"metrics.port={port}", "--set", "batch.max_records=500",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQMON_")}
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2])


def wait_for_results(bootstrap, topic, n, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = results(bootstrap, topic)
        if len(got) >= n:
            return got
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
    raise AssertionError(f"fewer than {n} results in {topic}")


def test_sigkill_mid_window_and_restart_gives_the_same_windows(kafka_bootstrap, bundle_path, tmp_path):
    topic = f"seq-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 1)
    gen = SeedLikeGenerator(25)
    base = base_ms()
    rng = np.random.default_rng(1)

    def window_records(w, n=1500):
        stamps = base + w * WINDOW_S * 1000 + np.sort(rng.integers(0, WINDOW_S * 1000, n))
        return [(t, s.encode()) for t, s in zip(stamps.tolist(), gen.normal(n))]

    w3 = window_records(2)
    phase1 = window_records(0) + window_records(1) + w3[:700]
    phase2 = w3[700:] + window_records(3) + [(base + 6 * WINDOW_S * 1000, b"DF 36 FR GX567")]
    produce(kafka_bootstrap, topic, phase1)

    killed_results, whole_results = f"res-{uuid.uuid4().hex[:8]}", f"res-{uuid.uuid4().hex[:8]}"
    for name in (killed_results, whole_results):
        create_topic(kafka_bootstrap, name, 1)
    group = f"g-{uuid.uuid4().hex[:8]}"
    state = tmp_path / "state-killed"
    proc = start_daemon_process(kafka_bootstrap, bundle_path, state, topic, group, killed_results, free_port())
    try:
        wait_for_results(kafka_bootstrap, killed_results, 2, proc)  # windows 1 and 2 closed; window 3 is open
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    produce(kafka_bootstrap, topic, phase2)
    proc = start_daemon_process(kafka_bootstrap, bundle_path, state, topic, group, killed_results, free_port())
    try:
        killed = wait_for_results(kafka_bootstrap, killed_results, 4, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0

    proc = start_daemon_process(kafka_bootstrap, bundle_path, tmp_path / "state-whole", topic, f"g-{uuid.uuid4().hex[:8]}", whole_results, free_port())
    try:
        whole = wait_for_results(kafka_bootstrap, whole_results, 4, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert sorted(killed) == sorted(whole)
    for key in whole:
        assert killed[key] == whole[key], key
    assert [whole[k]["count"] for k in sorted(whole, key=lambda k: int(k.split("/")[-1]))][:4] == [1500] * 4


def test_two_daemons_in_one_group_count_every_record_once(kafka_bootstrap, bundle_path, tmp_path):
    topic = f"seq-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 4)
    base = base_ms() - 60_000
    n = 40_000
    stamps = base + np.sort(np.random.default_rng(3).integers(0, 4 * WINDOW_S * 1000, n))
    seqs = SeedLikeGenerator(26).normal(n)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=20)

    def send(rows):
        for i in rows:
            producer.send(topic, value=seqs[i].encode(), timestamp_ms=int(stamps[i]), partition=i % 4)
        producer.flush()

    send(range(n // 2))
    # Zero lateness: whichever partition a daemon reads first, and across the rebalance, no record is late.
    extra = {"kafka.group_id": f"g-{uuid.uuid4().hex[:8]}", "batch.max_records": "200"}
    a = Daemon(settings_for(kafka_bootstrap, bundle_path, tmp_path / "a", topic, **extra), registry=CollectorRegistry())
    b = Daemon(settings_for(kafka_bootstrap, bundle_path, tmp_path / "b", topic, **extra), registry=CollectorRegistry())
    consumed = lambda d: d.registry.get_sample_value("seqmon_records_consumed_total", {"topic": topic}) or 0  # noqa: E731
    threads = []
    try:
        a.start()
        threads.append(threading.Thread(target=a.run, daemon=True))
        threads[-1].start()
        deadline = time.time() + 60
        while consumed(a) < 2000 and time.time() < deadline:
            time.sleep(0.05)
        b.start()  # joins mid-stream: the group rebalances while a is consuming
        threads.append(threading.Thread(target=b.run, daemon=True))
        threads[-1].start()
        deadline = time.time() + 60
        while not (b.partitions and a.partitions) and time.time() < deadline:
            time.sleep(0.1)
        assert b.partitions and a.partitions and not set(a.partitions) & set(b.partitions)
        send(range(n // 2, n))  # the second half lands on partitions of both daemons
        deadline = time.time() + 120
        while consumed(a) + consumed(b) < n and time.time() < deadline:
            time.sleep(0.2)
        assert consumed(a) + consumed(b) == n
        assert consumed(b) > 0, "the second daemon got no partition"
        closer = base + 12 * WINDOW_S * 1000
        for p in range(4):
            producer.send(topic, value=b"DF 36 FR GX567", timestamp_ms=closer, partition=p)
        producer.flush()
        deadline = time.time() + 60
        while (len(a.closed_windows) < 4 or len(b.closed_windows) < 4) and time.time() < deadline:
            time.sleep(0.2)
    finally:
        producer.close()
        for d in (a, b):
            d.stop()
        for t in threads:
            t.join(timeout=30)
    assert consumed(a) + consumed(b) == n + 4
    for d in (a, b):
        assert d.registry.get_sample_value("seqmon_records_late_total", {"topic": topic}) == 0
    for w in range(4):
        start = base - base % (WINDOW_S * 1000) + w * WINDOW_S * 1000
        expected = int(((stamps >= start) & (stamps < start + WINDOW_S * 1000)).sum())
        counts = [sum(x.figures()["count"] for x in d.closed_windows if x.start_ms == start) for d in (a, b)]
        assert sum(counts) == expected, (w, counts, expected)


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_one_daemon_catches_up_a_multi_hour_backlog_with_no_record_late(kafka_bootstrap, bundle_path, tmp_path, client):
    """An operator's restart after an outage: 6 hours of traffic on 4 partitions (round-robin, event-time order per
    partition, ending an hour ago) wait in the topic; one daemon with zero allowed lateness reads it all. However
    unevenly the client hands the partitions over, every hour closes with all of its records and none is late."""
    topic = f"backlog-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_bootstrap, topic, 4)
    hour = 3_600_000
    base = int(time.time() * 1000) // hour * hour - 7 * hour
    n = 56_400
    stamps = np.sort(base + np.random.default_rng(10).integers(0, 6 * hour, n))
    seqs = SeedLikeGenerator(27).normal(n)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50, batch_size=256 * 1024)
    for i in range(n):
        producer.send(topic, value=seqs[i].encode(), timestamp_ms=int(stamps[i]), partition=i % 4)
    producer.flush()
    producer.close()

    settings = settings_for(kafka_bootstrap, bundle_path, tmp_path / "state", topic, **{
        "kafka.client": client,
        "window.size_seconds": "3600",
        "window.allowed_lateness_seconds": "0",
        "window.idle_close_interval_seconds": "1",  # the clock is asked often, and must keep out while partitions lag
        "batch.max_records": "2000",
    })
    daemon = Daemon(settings, registry=CollectorRegistry())
    daemon.start()
    reg = daemon.registry
    idle = lambda: [reg.get_sample_value("seqmon_partition_idle", {"topic": topic, "partition": str(p)}) for p in range(4)]  # noqa: E731
    # The 6 hours, then the empty hour up to the clock's last whole hour, closed by the wall clock once caught up,
    # with every partition shown idle (the gauges leave with the partitions when the daemon stops).
    run_until(daemon, lambda: len(daemon.closed_windows) >= 7 and idle() == [1, 1, 1, 1], timeout=120)
    assert reg.get_sample_value("seqmon_records_consumed_total", {"topic": topic}) == n
    assert reg.get_sample_value("seqmon_records_late_total", {"topic": topic}) == 0
    expected = np.bincount((stamps - base) // hour, minlength=6).tolist()
    closed = [(w.start_ms, w.aggregate.count) for w in daemon.closed_windows]
    assert closed[:7] == [(base + h * hour, c) for h, c in enumerate(expected)] + [(base + 6 * hour, 0)]
    assert daemon.pipeline.windower.watermark_ms(topic) >= base + 7 * hour
