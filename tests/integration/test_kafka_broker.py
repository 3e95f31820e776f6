"""Round trip through a real Kafka broker: no mocks."""

import time
import uuid
from collections import Counter, defaultdict

import pytest
from kafka import KafkaConsumer, KafkaProducer

from tests.kafka_broker import create_topic

pytestmark = pytest.mark.slow  # runs a real broker

N_RECORDS = 1000
N_PARTITIONS = 3


def test_produce_and_consume_every_record_exactly_once(kafka_bootstrap):
    run = uuid.uuid4().hex[:8]
    topic = f"seqmon-it-roundtrip-{run}"
    create_topic(kafka_bootstrap, topic, N_PARTITIONS)

    # Explicit, distinct timestamps. Recent ones: records far in the past would be
    # eligible for time-based retention, and Kafka 4 rejects timestamps more than
    # an hour in the future (log.message.timestamp.after.max.ms).
    base_ts = int(time.time() * 1000) - 60_000
    sent = {f"record-{i:04d}".encode(): base_ts + i for i in range(N_RECORDS)}

    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        client_id=f"seqmon-it-producer-{run}",
        acks="all",
        linger_ms=5,
    )
    try:
        futures = [
            producer.send(topic, value=value, partition=i % N_PARTITIONS, timestamp_ms=ts)
            for i, (value, ts) in enumerate(sent.items())
        ]
        producer.flush(timeout=30)
        metadata = [f.get(timeout=30) for f in futures]
    finally:
        producer.close(timeout=10)
    assert Counter(m.partition for m in metadata) == {0: 334, 1: 333, 2: 333}

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        client_id=f"seqmon-it-consumer-{run}",
        group_id=f"seqmon-it-group-{run}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        fetch_max_wait_ms=100,
    )
    received = []
    try:
        deadline = time.monotonic() + 40
        while len(received) < N_RECORDS and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received.extend(records)
        # One more short poll: anything delivered twice would show up here.
        for records in consumer.poll(timeout_ms=500).values():
            received.extend(records)
        consumer.commit()
    finally:
        consumer.close()

    values = Counter(r.value for r in received)
    assert len(received) == N_RECORDS, f"got {len(received)} records, expected {N_RECORDS}"
    assert set(values) == set(sent)
    assert max(values.values()) == 1, "some records came back more than once"
    for r in received:
        assert r.timestamp == sent[r.value], r
        assert r.timestamp_type == 0  # CreateTime: the producer's timestamp was kept

    # Within each partition the records come back in the order they were sent.
    by_partition = defaultdict(list)
    for r in received:
        by_partition[r.partition].append(r)
    assert sorted(by_partition) == list(range(N_PARTITIONS))
    for records in by_partition.values():
        offsets = [r.offset for r in records]
        assert offsets == list(range(len(records)))
        assert [r.value for r in records] == sorted(r.value for r in records)
