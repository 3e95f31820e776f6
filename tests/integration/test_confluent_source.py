"""ConfluentSource (confluent-kafka / librdkafka) against a real broker, alone and under the daemon: no mocks."""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer
from kafka import KafkaProducer

from monitor.errors import ConfigError
from monitor.generate import SeedLikeGenerator
from monitor.pipeline import RecordBatch
from monitor.source import confluent_source
from monitor.source.confluent_source import ConfluentSource, translate_config
from tests.kafka_broker import create_topic

pytestmark = pytest.mark.slow  # runs a real broker

N_PARTITIONS = 3


def _topic(bootstrap: str, name: str, partitions: int = N_PARTITIONS) -> str:
    topic = f"seqmon-cf-{name}-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions)
    return topic


def _config(bootstrap: str, group: str | None = None, **extra) -> dict:
    return {
        "bootstrap_servers": [bootstrap],
        "group_id": group or f"g-{uuid.uuid4().hex[:8]}",
        "client_id": "seqmon-it-confluent",
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "max_poll_records": 500,  # ignored: poll's max_records caps a batch
        **extra,
    }


def _produce(bootstrap: str, topic: str, records) -> None:
    """records: (value, partition, timestamp_ms) triples."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic, key=b"k", value=v, partition=p, timestamp_ms=ts) for v, p, ts in records]
        producer.flush(timeout=30)
        for f in futures:
            f.get(timeout=30)
    finally:
        producer.close(timeout=10)


def _now_ms() -> int:
    return int(time.time() * 1000) - 60_000


def _poll_all(source: ConfluentSource, n: int, timeout_s: float = 60, max_records: int = 1000) -> list[RecordBatch]:
    batches, got = [], 0
    deadline = time.time() + timeout_s
    while got < n and time.time() < deadline:
        batch = source.poll(200, max_records)
        if batch is not None:
            assert len(batch) <= max_records
            batches.append(batch)
            got += len(batch)
    assert got == n, f"read {got} of {n} records"
    return batches


def _concat(batches: list[RecordBatch]) -> dict[tuple[str, int, int], tuple[bytes, int]]:
    """(topic, partition, offset) → (value, timestamp), checking the batch columns' types on the way."""
    out = {}
    for b in batches:
        assert b.timestamps_ms.dtype == np.int64 and b.offsets.dtype == np.int64 and b.partitions.dtype == np.int32
        assert b.topics.dtype == object and len(b.topics) == len(b.values) == len(b.offsets)
        for v, ts, t, p, o in zip(b.values, b.timestamps_ms.tolist(), b.topics, b.partitions.tolist(), b.offsets.tolist()):
            assert isinstance(v, bytes)
            key = (t, p, o)
            assert key not in out, f"record {key} read twice"
            out[key] = (v, ts)
    return out


def _drain(source: ConfluentSource, seconds: float) -> int:
    got, deadline = 0, time.time() + seconds
    while time.time() < deadline:
        batch = source.poll(200, 1000)
        got += len(batch) if batch is not None else 0
    return got


def test_config_is_translated():
    out = translate_config({
        "bootstrap_servers": ["a:1", "b:2"], "group_id": "g", "client_id": "c", "auto_offset_reset": "latest",
        "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 300_000,
        "max_poll_records": 10, "fetch_max_bytes": 1_000_000, "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN", "sasl_plain_username": "u", "sasl_plain_password": "p", "ssl_cafile": "/ca.pem",
        "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem",
    })
    assert out == {
        "bootstrap.servers": "a:1,b:2", "group.id": "g", "client.id": "c", "auto.offset.reset": "latest",
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 1000, "max.poll.interval.ms": 300_000,
        "fetch.max.bytes": 1_000_000, "max.partition.fetch.bytes": 1_000_000, "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
        "sasl.username": "u", "sasl.password": "p", "ssl.ca.location": "/ca.pem",
        "ssl.certificate.location": "/c.pem", "ssl.key.location": "/k.pem",
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        # The prefetch queue: max_poll_records per partition within 16 MiB, not librdkafka's 100,000 and 64 MiB.
        "queued.min.messages": 10, "queued.max.messages.kbytes": 16 * 1024,
        # Polled again 50 ms after a full queue, not librdkafka's 1 s, so that 1 MiB fetches keep the queue fed.
        "fetch.queue.backoff.ms": 50,
    }
    # Without fetch_max_bytes: 1 MiB per partition and fetch, librdkafka's own default (memory: README "End to end").
    assert translate_config({"group_id": "g"})["max.partition.fetch.bytes"] == 1024 * 1024
    # Given explicitly, they stay as given.
    given = translate_config({"group_id": "g", "queued.min.messages": 5, "queued.max.messages.kbytes": 1024})
    assert given["queued.min.messages"] == 5 and given["queued.max.messages.kbytes"] == 1024
    with pytest.raises(ConfigError, match="enable_auto_commit"):
        translate_config({"group_id": "g", "enable_auto_commit": True})
    with pytest.raises(ConfigError, match="no_such_setting"):
        translate_config({"group_id": "g", "no_such_setting": 1})


def test_poll_reads_every_record_once_with_its_metadata_and_lag_is_zero(kafka_bootstrap):
    topic = _topic(kafka_bootstrap, "all")
    base = _now_ms()
    sent = [(f"rec-{i}".encode(), i % N_PARTITIONS, base + i) for i in range(5000)]
    _produce(kafka_bootstrap, topic, sent)
    source = ConfluentSource(_config(kafka_bootstrap), topics=[topic])
    try:
        got = _concat(_poll_all(source, len(sent), max_records=700))
        assert _drain(source, 1.0) == 0
        expected, next_offset = {}, [0] * N_PARTITIONS
        for v, p, ts in sent:  # one producer, in order: offsets per partition follow the send order
            expected[(topic, p, next_offset[p])] = (v, ts)
            next_offset[p] += 1
        assert got == expected
        assert source.assignment() == [(topic, p) for p in range(N_PARTITIONS)]
        assert source.positions() == {(topic, p): next_offset[p] for p in range(N_PARTITIONS)}
        assert source.lag() == {(topic, p): 0 for p in range(N_PARTITIONS)}
        assert source.partition_counts([topic, "no-such-topic"]) == {topic: N_PARTITIONS}
    finally:
        source.close()
        source.close()  # idempotent


def test_commit_close_and_a_new_member_resumes_after_the_commits(kafka_bootstrap):
    topic = _topic(kafka_bootstrap, "resume")
    group = f"g-{uuid.uuid4().hex[:8]}"
    base = _now_ms()
    _produce(kafka_bootstrap, topic, [(f"a-{i}".encode(), i % N_PARTITIONS, base + i) for i in range(300)])
    first = ConfluentSource(_config(kafka_bootstrap, group), topics=[topic])
    try:
        _poll_all(first, 300)
        commits = {(topic, 0): 40, (topic, 1): 100, (topic, 2): 7}
        first.commit(commits)
        assert first.committed(commits) == commits
    finally:
        first.close()
    assigned = []
    second = ConfluentSource(_config(kafka_bootstrap, group), topics=[topic], on_assign=assigned.append)
    try:
        got = _concat(_poll_all(second, 300 - sum(commits.values())))
        assert _drain(second, 1.0) == 0
        for p in range(N_PARTITIONS):
            assert sorted(o for t, q, o in got if q == p) == list(range(commits[(topic, p)], 100))
        assert assigned == [[(topic, p) for p in range(N_PARTITIONS)]]
        assert second.committed([(topic, 0), (topic, 1), (topic, 2)]) == commits
    finally:
        second.close()


def test_seek_inside_on_assign_decides_where_reading_starts(kafka_bootstrap):
    topic = _topic(kafka_bootstrap, "seek")
    base = _now_ms()
    _produce(kafka_bootstrap, topic, [(f"s-{i}".encode(), i % N_PARTITIONS, base + i) for i in range(150)])
    source = None
    seen = {}

    def on_assign(keys):
        seen["committed"] = source.committed(keys)
        seen["assignment"] = source.assignment()
        source.seek({(topic, 0): 45, (topic, 2): 10})  # partition 1 not sought: earliest (nothing committed)
        with pytest.raises(ValueError, match="not assigned"):
            source.seek({(topic, 9): 0})

    source = ConfluentSource(_config(kafka_bootstrap), topics=[topic], on_assign=on_assign)
    try:
        got = _concat(_poll_all(source, 5 + 50 + 40))
        assert _drain(source, 1.0) == 0
        assert seen["committed"] == {(topic, p): None for p in range(N_PARTITIONS)}
        assert seen["assignment"] == [(topic, p) for p in range(N_PARTITIONS)]
        offsets = {p: sorted(o for _, q, o in got if q == p) for p in range(N_PARTITIONS)}
        assert offsets == {0: list(range(45, 50)), 1: list(range(50)), 2: list(range(10, 50))}
        # Outside the callback, seek moves an actively read partition.
        source.seek({(topic, 1): 48})
        again = _concat(_poll_all(source, 2))
        assert sorted(again) == [(topic, 1, 48), (topic, 1, 49)]
    finally:
        source.close()


def test_revoke_callback_commits_at_close(kafka_bootstrap):
    topic = _topic(kafka_bootstrap, "revoke")
    group = f"g-{uuid.uuid4().hex[:8]}"
    _produce(kafka_bootstrap, topic, [(b"x", p, _now_ms()) for p in range(N_PARTITIONS)])
    source = None
    revoked = []

    def on_revoke(keys):
        revoked.append((keys, source.assignment()))
        source.commit({k: 1 for k in keys})

    source = ConfluentSource(_config(kafka_bootstrap, group), topics=[topic], on_revoke=on_revoke)
    _poll_all(source, N_PARTITIONS)
    source.close()
    keys = [(topic, p) for p in range(N_PARTITIONS)]
    assert revoked == [(keys, keys)]
    check = ConfluentSource(_config(kafka_bootstrap, group), topics=[topic])
    try:
        assert check.committed(keys) == {k: 1 for k in keys}
    finally:
        check.close()


def test_tombstones_become_empty_bytes_and_pattern_subscription(kafka_bootstrap):
    topic = _topic(kafka_bootstrap, "tomb", partitions=1)
    base = _now_ms()
    _produce(kafka_bootstrap, topic, [(b"a", 0, base), (None, 0, base + 1), (b"", 0, base + 2), (b"c", 0, base + 3)])
    source = ConfluentSource(_config(kafka_bootstrap), pattern=topic.replace("-tomb-", "-tom.-"))
    try:
        got = _concat(_poll_all(source, 4))
        assert [got[(topic, 0, o)][0] for o in range(4)] == [b"a", b"", b"", b"c"]
    finally:
        source.close()


def _fill(bootstrap: str, topic: str, n: int, partitions: int = 4) -> None:
    """n seed-like records (values of ~13 bytes, no key) spread over the partitions."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000})
    lines = [s.encode() for s in SeedLikeGenerator(7).normal(1000)]
    ts = _now_ms()
    for i in range(n):
        while True:
            try:
                producer.produce(topic, value=lines[i % 1000], partition=i % partitions, timestamp=ts)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(30) == 0


def _most_queued(bootstrap: str, topic: str, monkeypatch, seconds: float = 6, **extra) -> int:
    """The most records librdkafka's consumer queue held (its statistics) while the daemon-like consumer took one
    record per poll: what the fetchers prefetch on their own, which is what its memory grows with."""
    queued = [0]
    monkeypatch.setattr(
        confluent_source,
        "Consumer",
        lambda config: Consumer({**config, "statistics.interval.ms": 100, "stats_cb": lambda s: queued.append(json.loads(s)["replyq"])}),
    )
    source = ConfluentSource(_config(bootstrap, max_poll_records=10_000, **extra), topics=[topic])
    try:
        source.poll(10_000, 1)  # joins the group and starts the fetchers
        deadline = time.time() + seconds
        while time.time() < deadline:
            source.poll(100, 1)  # serves the statistics callback
    finally:
        source.close()
    return max(queued)


def test_the_prefetched_records_are_bounded_by_one_small_fetch_per_partition(kafka_bootstrap, monkeypatch):
    # librdkafka keeps ~400 bytes per queued record whatever its size, and its queue bounds are checked before a
    # fetch only: the records of one fetch answer are all queued. 10 MiB fetches of small records made the daemon's
    # RSS 720 MiB (1.2-1.3 million records queued); the default is now librdkafka's 1 MiB (README "End to end").
    n = 800_000
    topic = _topic(kafka_bootstrap, "queue", partitions=4)
    _fill(kafka_bootstrap, topic, n)
    # queued.min.messages (max_poll_records) per partition, plus one 1 MiB answer of records of >= 20 bytes on the wire.
    bound = 4 * (10_000 + (1 << 20) // 20)
    default = _most_queued(kafka_bootstrap, topic, monkeypatch)
    wide = _most_queued(kafka_bootstrap, topic, monkeypatch, **{"max.partition.fetch.bytes": 10 << 20})
    print(f"\nrecords queued by librdkafka: {default:,} with the defaults, {wide:,} with 10 MiB per partition")
    assert 10_000 <= default <= bound < wide  # the test tells the two apart


def test_poll_throughput_is_printed(kafka_bootstrap):
    n = 200_000
    topic = _topic(kafka_bootstrap, "speed", partitions=4)
    _fill(kafka_bootstrap, topic, n)
    source = ConfluentSource(_config(kafka_bootstrap), topics=[topic])
    try:
        first = source.poll(10_000, 10_000)  # joins the group and starts the fetchers
        got, spent = len(first) if first is not None else 0, 0.0
        deadline = time.time() + 60
        while got < n and time.time() < deadline:
            started = time.perf_counter()
            batch = source.poll(500, 10_000)
            spent += time.perf_counter() - started
            got += len(batch) if batch is not None else 0
        assert got == n
        print(f"\nConfluentSource.poll: {n - (len(first) if first else 0):,} records in {spent:.3f} s = "
              f"{(n - (len(first) if first else 0)) / spent:,.0f} records/s")
    finally:
        source.close()
