"""Offset bookkeeping, and the sources the daemon reads all meeting one Source protocol."""

import numpy as np
import pytest

from monitor.daemon.offsets import Offsets, next_offsets
from monitor.pipeline import RecordBatch
from monitor.source import FileSource, MemorySource, Rebalance, Source
from monitor.source.confluent_source import ConfluentSource
from monitor.source.kafka_source import KafkaSource


def batch(topics, partitions, offsets):
    n = len(topics)
    return RecordBatch(values=[b"x"] * n, timestamps_ms=np.zeros(n, dtype=np.int64), topics=np.array(topics, dtype=object),
                       partitions=np.array(partitions, dtype=np.int32), offsets=np.array(offsets, dtype=np.int64))


def test_next_offsets_per_partition_of_a_mixed_batch():
    b = batch(["a", "b", "a", "a", "b"], [0, 0, 1, 0, 0], [7, 3, 40, 5, 9])
    assert next_offsets(b) == {"a/0": 8, "a/1": 41, "b/0": 10}
    assert next_offsets(RecordBatch([b"x"], np.zeros(1, dtype=np.int64), np.array(["a"], dtype=object))) == {}


def test_offsets_only_move_forward_and_keep_the_checkpoint_format():
    o = Offsets.from_snapshot({"a/0": 10, "with/slash/3": 4})
    o.advance(batch(["a", "a"], [0, 0], [3, 4]))  # a re-read after a seek back
    assert o.get("a", 0) == 10
    o.advance(batch(["a"], [0], [11]))
    assert o.snapshot() == {"a/0": 12, "with/slash/3": 4}
    assert o.to_commit([("with/slash", 3), ("a", 9)]) == {("with/slash", 3): 4}


def test_resume_takes_the_later_of_ours_and_the_groups():
    o = Offsets({"t/0": 100, "t/1": 50, "t/2": 7})
    seek = o.resume([("t", 0), ("t", 1), ("t", 2), ("t", 3), ("t", 4)],
                    {("t", 0): 80, ("t", 1): 90, ("t", 2): None, ("t", 3): 5})
    assert seek == {("t", 0): 100, ("t", 2): 7}  # the group's offset is where an unsought partition starts anyway
    assert o.get("t", 1) == 90 and o.get("t", 3) == 5 and o.get("t", 4) is None


def test_every_source_meets_the_protocol(tmp_path):
    stream = tmp_path / "s.csv"
    stream.write_text("timestamp_ms,sequence\n1,DF 36\n")
    assert isinstance(FileSource(stream), Source) and isinstance(MemorySource([]), Source)
    members = ("finished", "final", "listen", "poll", "assignment", "seek", "committed", "commit", "lag", "close")
    for cls in (KafkaSource, ConfluentSource):  # opening one needs a broker: tests/integration
        assert [m for m in members if not hasattr(cls, m)] == []


def test_memory_source_numbers_filters_and_rebalances():
    one = RecordBatch([b"a", b"b", b"c"], np.zeros(3, dtype=np.int64), np.array(["t"] * 3, dtype=object),
                      partitions=np.array([0, 1, 0], dtype=np.int32))
    seen = []
    source = MemorySource([one, Rebalance(revoked=[("t", 1)]), one], assignment=[("t", 0), ("t", 1)])
    source.listen(lambda p: seen.append(("assign", p)), lambda p: seen.append(("revoke", p)))
    assert source.lag() == {("t", 0): 4, ("t", 1): 2}
    first = source.poll(0, 10)
    assert first.offsets.tolist() == [0, 0, 1] and first.partitions.tolist() == [0, 1, 0]
    assert source.poll(0, 10) is None and source.assignment() == [("t", 0)]
    source.seek({("t", 0): 3})
    third = source.poll(0, 10)
    assert third.offsets.tolist() == [3] and third.values == [b"c"]  # partition 1 is no longer ours
    assert source.finished and source.poll(0, 10) is None
    assert seen == [("assign", [("t", 0), ("t", 1)]), ("revoke", [("t", 1)])]
    with pytest.raises(ValueError, match="not assigned"):
        source.seek({("t", 1): 0})
