"""KafkaSource and KafkaSink against a real broker: no mocks."""

import json
import threading
import time
import uuid
from collections import Counter

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError

from monitor.errors import ConfigError
from monitor.source.kafka_source import REASON_HEADER, SOURCE_HEADER, KafkaSink, KafkaSource
from tests.kafka_broker import create_topic

pytestmark = pytest.mark.slow  # runs a real broker

N_PARTITIONS = 3


def _run() -> str:
    return uuid.uuid4().hex[:8]


def _topic(bootstrap: str, name: str, partitions: int = N_PARTITIONS) -> str:
    topic = f"seqmon-it-{name}-{_run()}"
    create_topic(bootstrap, topic, partitions)
    return topic


def _consumer_config(bootstrap: str, group: str, **extra) -> dict:
    return {
        "bootstrap_servers": bootstrap,
        "group_id": group,
        "client_id": f"seqmon-it-{group}",
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "fetch_max_wait_ms": 100,
        **extra,
    }


def _produce(bootstrap: str, topic: str, records, **config) -> None:
    """records: (value, partition, timestamp_ms) triples."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, **config)
    try:
        futures = [producer.send(topic, value=v, partition=p, timestamp_ms=ts) for v, p, ts in records]
        producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=30)
    finally:
        producer.close(timeout=10)


def _now_ms() -> int:
    # Recent stamps: Kafka 4 refuses ones more than an hour ahead, and old ones fall to time retention.
    return int(time.time() * 1000) - 60_000


def _wait_assigned(source: KafkaSource, n: int, timeout_s: float = 30) -> list:
    """Poll (and keep what arrives) until n partitions are assigned."""
    batches = []
    deadline = time.monotonic() + timeout_s
    while len(source.assignment()) < n:
        assert time.monotonic() < deadline, f"only {source.assignment()} assigned after {timeout_s}s"
        batch = source.poll(timeout_ms=200, max_records=1000)
        if batch is not None:
            batches.append(batch)
    return batches


def _poll_n(source: KafkaSource, n: int, max_records: int = 1000, timeout_s: float = 40, batches=None) -> list:
    """Batches until they hold n records, then one more short poll to catch duplicates."""
    batches = list(batches or [])
    deadline = time.monotonic() + timeout_s
    while sum(len(b) for b in batches) < n and time.monotonic() < deadline:
        batch = source.poll(timeout_ms=200, max_records=max_records)
        if batch is not None:
            assert len(batch) <= max_records
            batches.append(batch)
    extra = source.poll(timeout_ms=500, max_records=max_records)
    if extra is not None:
        batches.append(extra)
    return batches


def _records(batches) -> list[tuple]:
    """(value, timestamp, topic, partition, offset) of every record."""
    return [
        (v, int(ts), t, int(p), int(o))
        for b in batches
        for v, ts, t, p, o in zip(b.values, b.timestamps_ms, b.topics, b.partitions, b.offsets)
    ]


def test_every_record_arrives_once_with_its_timestamp_partition_and_offset(kafka_bootstrap):
    topic = _topic(kafka_bootstrap, "source-all")
    base = _now_ms()
    n = 5000
    sent = [(f"seq-{i:05d} a b c".encode(), i % N_PARTITIONS, base + i) for i in range(n)]
    _produce(kafka_bootstrap, topic, sent)
    # Offsets follow the send order within each partition.
    expected = {}
    next_offset = Counter()
    for value, partition, ts in sent:
        expected[value] = (ts, topic, partition, next_offset[partition])
        next_offset[partition] += 1

    source = KafkaSource(_consumer_config(kafka_bootstrap, f"g-all-{_run()}"), topics=[topic])
    try:
        batches = _poll_n(source, n, max_records=700)
        for b in batches:
            assert b.timestamps_ms.dtype == np.int64 and b.offsets.dtype == np.int64
            assert b.partitions.dtype == np.int32 and b.topics.dtype == object
            assert all(isinstance(v, bytes) for v in b.values)
            assert len(b.timestamps_ms) == len(b.topics) == len(b.partitions) == len(b.offsets) == len(b)
        got = _records(batches)
        assert len(got) == n, f"got {len(got)} records, expected {n}"
        assert Counter(r[0] for r in got) == Counter(expected.keys()), "records missing or delivered twice"
        for value, *rest in got:
            assert tuple(rest) == expected[value]
        ends = {(topic, p): c for p, c in next_offset.items()}
        assert source.assignment() == sorted(ends)
        assert source.positions() == ends
        assert source.lag() == {key: 0 for key in ends}
        assert source.partition_counts([topic, "no-such-topic"]) == {topic: N_PARTITIONS}
    finally:
        source.close()


def test_a_new_source_in_the_group_resumes_after_the_committed_offsets(kafka_bootstrap):
    topic = _topic(kafka_bootstrap, "source-resume")
    group = f"g-resume-{_run()}"
    base = _now_ms()
    first = [(f"first-{i}".encode(), i % N_PARTITIONS, base + i) for i in range(300)]
    second = [(f"second-{i}".encode(), i % N_PARTITIONS, base + 1000 + i) for i in range(150)]
    _produce(kafka_bootstrap, topic, first)

    source = KafkaSource(_consumer_config(kafka_bootstrap, group), topics=[topic])
    try:
        got = _records(_poll_n(source, len(first)))
        assert sorted(r[0] for r in got) == sorted(v for v, _, _ in first)
        positions = source.positions()
        assert positions == {(topic, p): 100 for p in range(N_PARTITIONS)}
        assert source.committed(positions) == dict.fromkeys(positions)  # nothing committed yet
        source.commit(positions)
        assert source.committed(positions) == positions
    finally:
        source.close()

    _produce(kafka_bootstrap, topic, second)
    source = KafkaSource(_consumer_config(kafka_bootstrap, group), topics=[topic])
    try:
        got = _records(_poll_n(source, len(second)))
        assert sorted(r[0] for r in got) == sorted(v for v, _, _ in second)
        assert all(r[4] >= 100 for r in got)
        assert source.lag() == {(topic, p): 0 for p in range(N_PARTITIONS)}
    finally:
        source.close()


def test_close_does_not_commit(kafka_bootstrap):
    topic = _topic(kafka_bootstrap, "source-nocommit", partitions=1)
    group = f"g-nocommit-{_run()}"
    _produce(kafka_bootstrap, topic, [(b"x", 0, _now_ms()), (b"y", 0, _now_ms())])
    for _ in range(2):  # the second source reads everything again
        source = KafkaSource(_consumer_config(kafka_bootstrap, group), topics=[topic])
        try:
            assert [r[0] for r in _records(_poll_n(source, 2))] == [b"x", b"y"]
            assert source.committed([(topic, 0)]) == {(topic, 0): None}
        finally:
            source.close()


def test_seek_inside_on_assign_decides_where_reading_starts(kafka_bootstrap):
    topic = _topic(kafka_bootstrap, "source-seek")
    base = _now_ms()
    sent = [(f"r-{i}".encode(), i % N_PARTITIONS, base + i) for i in range(600)]  # 200 per partition
    _produce(kafka_bootstrap, topic, sent)
    start = {(topic, 0): 150, (topic, 1): 0, (topic, 2): 199}
    assigned = []

    def on_assign(keys):
        assigned.append(keys)
        source.seek({k: start[k] for k in keys})

    source = KafkaSource(_consumer_config(kafka_bootstrap, f"g-seek-{_run()}"), topics=[topic], on_assign=on_assign)
    try:
        got = _records(_poll_n(source, 50 + 200 + 1))
        assert assigned == [sorted(start)]
        by_partition = {p: sorted(r[4] for r in got if r[3] == p) for p in range(N_PARTITIONS)}
        assert by_partition == {p: list(range(start[(topic, p)], 200)) for p in range(N_PARTITIONS)}
        with pytest.raises(ValueError, match="not assigned"):
            source.seek({(topic, 7): 0})
    finally:
        source.close()


def test_blocking_calls_work_inside_the_rebalance_callbacks(kafka_bootstrap):
    """kafka-python 3 calls listeners on its IO thread; KafkaSource moves them off it, so commit / committed /
    positions may be called there (here: resume at committed offsets + 10, commit the positions on revoke)."""
    topic = _topic(kafka_bootstrap, "source-callbacks")
    group = f"g-callbacks-{_run()}"
    base = _now_ms()
    _produce(kafka_bootstrap, topic, [(f"r-{i}".encode(), i % N_PARTITIONS, base + i) for i in range(300)])
    events = []

    def on_assign(keys):
        committed = source.committed(keys)
        events.append(("assign", keys, committed))
        source.seek({k: (committed[k] or 0) + 10 for k in keys})

    def on_revoke(keys):
        positions = source.positions()
        events.append(("revoke", keys, positions))
        source.commit(positions)

    for round_, (first, end) in enumerate([(10, 100), (110, 130)]):
        if round_ == 1:  # 30 more per partition; reading resumes at the offsets committed on close (100) + 10
            _produce(kafka_bootstrap, topic, [(b"later", i % N_PARTITIONS, base + 1000 + i) for i in range(90)])
        source = KafkaSource(
            _consumer_config(kafka_bootstrap, group), topics=[topic], on_assign=on_assign, on_revoke=on_revoke
        )
        try:
            got = _records(_poll_n(source, N_PARTITIONS * (end - first)))
            for p in range(N_PARTITIONS):
                assert sorted(r[4] for r in got if r[3] == p) == list(range(first, end))
        finally:
            source.close()  # on_revoke commits the positions

    keys = [(topic, p) for p in range(N_PARTITIONS)]
    assert events == [
        ("assign", keys, dict.fromkeys(keys)),
        ("revoke", keys, dict.fromkeys(keys, 100)),
        ("assign", keys, dict.fromkeys(keys, 100)),
        ("revoke", keys, dict.fromkeys(keys, 130)),
    ]
    source = KafkaSource(_consumer_config(kafka_bootstrap, group), topics=[topic])
    try:
        assert source.committed(keys) == dict.fromkeys(keys, 130)
    finally:
        source.close()


def test_a_failing_callback_surfaces_from_poll_and_close(kafka_bootstrap):
    topic = _topic(kafka_bootstrap, "source-failing", partitions=1)

    def fail(keys):
        raise RuntimeError(f"callback failed for {keys}")

    source = KafkaSource(_consumer_config(kafka_bootstrap, f"g-fail-{_run()}"), topics=[topic], on_assign=fail)
    try:
        with pytest.raises(KafkaError) as raised:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                source.poll(timeout_ms=200, max_records=10)
        assert isinstance(raised.value.__cause__, RuntimeError)
        assert source.assignment() == [(topic, 0)]  # kafka-python keeps the assignment
    finally:
        source.close()

    client_id = f"seqmon-it-g-revoke-fail-{_run()}"
    source = KafkaSource(
        {**_consumer_config(kafka_bootstrap, f"g-revoke-fail-{_run()}"), "client_id": client_id},
        topics=[topic],
        on_revoke=fail,
    )
    _wait_assigned(source, 1)
    with pytest.raises(KafkaError) as raised:
        source.close()
    assert isinstance(raised.value.__cause__, RuntimeError)
    time.sleep(0.5)
    assert not [t for t in threading.enumerate() if client_id in t.name], "the consumer's IO thread outlived close()"
    source.close()  # idempotent


def test_pattern_subscription_and_tombstones(kafka_bootstrap):
    run = _run()
    topics = [f"seqmon-it-pat-{run}-{name}" for name in ("a", "b")]
    for t in topics:
        create_topic(kafka_bootstrap, t, 1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        producer.send(topics[0], value=None, key=b"k", partition=0)  # tombstone
        producer.send(topics[0], value=b"", partition=0)
        producer.send(topics[1], value=b"hello", partition=0)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)

    source = KafkaSource(_consumer_config(kafka_bootstrap, f"g-pat-{run}"), pattern=f"^seqmon-it-pat-{run}-.*")
    try:
        got = _records(_poll_n(source, 3))
        assert sorted((r[2], r[4], r[0]) for r in got) == [
            (topics[0], 0, b""),
            (topics[0], 1, b""),
            (topics[1], 0, b"hello"),
        ]
        assert source.assignment() == [(t, 0) for t in topics]
    finally:
        source.close()


def test_config_mistakes_are_refused(kafka_bootstrap):
    config = _consumer_config(kafka_bootstrap, "g-never")
    with pytest.raises(ConfigError, match="enable_auto_commit"):
        KafkaSource({**config, "enable_auto_commit": True}, topics=["t"])
    with pytest.raises(ConfigError, match="group_id"):
        KafkaSource({k: v for k, v in config.items() if k != "group_id"}, topics=["t"])
    with pytest.raises(ConfigError, match="topics or a topic pattern"):
        KafkaSource(config, topics=["t"], pattern="t.*")
    with pytest.raises(ConfigError, match="acks"):
        KafkaSink({"bootstrap_servers": kafka_bootstrap, "acks": 1})


def _read_all(bootstrap: str, topic: str, n: int) -> list:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"g-read-{_run()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        fetch_max_wait_ms=100,
    )
    received = []
    try:
        deadline = time.monotonic() + 30
        while len(received) < n and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received.extend(records)
    finally:
        consumer.close(autocommit=False)
    return received


def test_sink_writes_dead_letters_with_headers_and_json_results(kafka_bootstrap):
    dead = _topic(kafka_bootstrap, "dead", partitions=1)
    results = _topic(kafka_bootstrap, "results", partitions=1)
    sink = KafkaSink({"bootstrap_servers": kafka_bootstrap})
    try:
        sink.dead_letters(
            dead,
            [b"\xff\xfe bad", b""],
            ["invalid_utf8", "empty"],
            [("events", 2, 41), ("other.topic", 0, 7)],
        )
        window = {
            "topic": "events",
            "window_start_ms": 1_700_000_000_000,
            "count": np.int64(12),
            "mean_error": float("nan"),
            "p99": np.float64(0.25),
            "ratio": float("inf"),
            "nested": [1.5, float("nan"), {"x": np.nan}],
        }
        sink.result(results, "events/1700000000000", window)
        sink.flush()
    finally:
        sink.close()

    letters = _read_all(kafka_bootstrap, dead, 2)
    assert [r.value for r in letters] == [b"\xff\xfe bad", b""]
    assert [dict(r.headers) for r in letters] == [
        {REASON_HEADER: b"invalid_utf8", SOURCE_HEADER: b"events/2/41"},
        {REASON_HEADER: b"empty", SOURCE_HEADER: b"other.topic/0/7"},
    ]
    (record,) = _read_all(kafka_bootstrap, results, 1)
    assert record.key == b"events/1700000000000"
    assert b"NaN" not in record.value and b"Infinity" not in record.value
    assert json.loads(record.value) == {
        "topic": "events",
        "window_start_ms": 1_700_000_000_000,
        "count": 12,
        "mean_error": None,
        "p99": 0.25,
        "ratio": None,
        "nested": [1.5, None, {"x": None}],
    }


def test_poll_throughput(kafka_bootstrap):
    """Prints producer and KafkaSource.poll rates; asserts only that every record arrived once."""
    topic = _topic(kafka_bootstrap, "throughput")
    n = 200_000
    values = [f"GET /api/v1/items/{i % 977} 200 user{i % 131}".encode() for i in range(n)]
    base = _now_ms()

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=50, batch_size=1 << 20)
    try:
        t0 = time.perf_counter()
        for i, v in enumerate(values):
            producer.send(topic, value=v, timestamp_ms=base + i // 100)
        producer.flush(timeout=120)
        produce_s = time.perf_counter() - t0
    finally:
        producer.close(timeout=10)

    source = KafkaSource(
        _consumer_config(kafka_bootstrap, f"g-tp-{_run()}", fetch_max_bytes=50 * 1024 * 1024), topics=[topic]
    )
    try:
        t_start = time.perf_counter()
        first = _wait_assigned(source, N_PARTITIONS)
        t_assigned = time.perf_counter()
        got = sum(len(b) for b in first)
        polls = 0
        poll_s = 0.0
        deadline = time.monotonic() + 120
        while got < n and time.monotonic() < deadline:
            t = time.perf_counter()
            batch = source.poll(timeout_ms=500, max_records=10_000)
            poll_s += time.perf_counter() - t
            polls += 1
            if batch is not None:
                got += len(batch)
        t_end = time.perf_counter()
        assert got == n, f"got {got} of {n} records"  # with zero lag over n offsets: each record once
        assert source.lag() == {(topic, p): 0 for p in range(N_PARTITIONS)}
    finally:
        source.close()
    consume_s = t_end - t_assigned
    print(
        f"\nthroughput: produced {n:,} records in {produce_s:.2f}s = {n / produce_s:,.0f} records/s; "
        f"consumed {n - sum(len(b) for b in first):,} after assignment in {consume_s:.2f}s = "
        f"{(n - sum(len(b) for b in first)) / consume_s:,.0f} records/s over {polls} polls "
        f"(join {t_assigned - t_start:.2f}s, {poll_s / max(polls, 1) * 1000:.1f} ms per poll)"
    )
