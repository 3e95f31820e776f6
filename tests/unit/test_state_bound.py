"""The checkpoint is bounded in hours and topics: open windows lie within window.max_past_seconds of the clock, and a
topic no longer read here and quiet for longer than that is forgotten, without losing or double-counting a record."""

import json

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from monitor.bundle import save_bundle
from monitor.config import load_settings
from monitor.daemon.checkpoint import read_checkpoint
from monitor.daemon.run import Daemon
from monitor.pipeline import RecordBatch
from monitor.score import DenseLayer
from monitor.vectorize import Vectorizer, VectorizerSettings
from monitor.window import Windower, WindowSettings

HOUR_MS = 3_600_000
DAY_S = 86_400
NOW_S = 1_780_000_000.0


def _add(windower, topic, stamps, partition=0):
    n = len(stamps)
    return windower.add(np.full(n, topic, dtype=object), np.array(stamps, dtype=np.int64), np.full(n, 0.1), None,
                        np.full(n, 50.0), np.zeros(n, dtype=bool), partitions=np.full(n, partition))


def test_only_topics_that_no_record_can_change_are_forgotten():
    w = Windower(WindowSettings(size_ms=HOUR_MS, allowed_lateness_ms=0))
    _add(w, "quiet", [0, HOUR_MS + 5])
    _add(w, "assigned", [0, HOUR_MS + 5])
    w.close_all()  # both closed up to 2 h; "assigned" is still read here
    _add(w, "open", [3 * HOUR_MS])
    w.revoke([("quiet", 0), ("open", 0)])  # not read here any more; a window of "open" holds records
    assert w.forget_quiet_topics(before_ms=HOUR_MS) == []  # closed up to 2 h: a record at 1 h would be late
    assert w.forget_quiet_topics(before_ms=5 * HOUR_MS) == ["quiet"]
    assert w.topics() == ["assigned", "open"] and [o.topic for o in w.open_windows()] == ["open"]


@pytest.fixture
def daemon(tmp_path):
    rng = np.random.default_rng(0)
    layers = [DenseLayer(rng.normal(size=(8, 3)).astype(np.float32), np.zeros(3, np.float32), "relu"),
              DenseLayer(rng.normal(size=(3, 8)).astype(np.float32), np.zeros(8, np.float32), "linear")]
    bundle = save_bundle(tmp_path / "bundle", vectorizer=Vectorizer(VectorizerSettings(vocab_size=8), ["df", "36"]),
                         layers=layers, reference_errors=np.linspace(0.01, 1, 50), threshold_percentile=99.0)
    settings = load_settings(None, env={}, overrides=[
        f"model.bundle={bundle}", f"state.directory={tmp_path / 'state'}", "window.allowed_lateness_seconds=0",
        f"window.max_past_seconds={30 * DAY_S}",
    ])
    clock = {"now": NOW_S - 40 * DAY_S}
    return Daemon(settings, registry=CollectorRegistry(), clock=lambda: clock["now"]), clock


def _batch(topic, stamps_ms, first_offset=0):
    n = len(stamps_ms)
    return RecordBatch(values=[b"df 36"] * n, timestamps_ms=np.array(stamps_ms, dtype=np.int64),
                       topics=np.full(n, topic, dtype=object), partitions=np.zeros(n, dtype=np.int64),
                       offsets=np.arange(first_offset, first_offset + n, dtype=np.int64))


def test_a_topic_quiet_for_longer_than_max_past_leaves_the_checkpoint(daemon):
    daemon, clock = daemon
    then_ms = int(clock["now"] * 1000) // HOUR_MS * HOUR_MS
    for hour in range(5):  # five hourly windows of "gone": four close and enter its baseline
        clock["now"] = then_ms / 1000 + hour * 3600
        daemon.process(_batch("gone", [then_ms + hour * HOUR_MS] * 3, first_offset=3 * hour))
    daemon.pipeline.windower.revoke([("gone", 0)])  # its partitions moved elsewhere
    daemon.checkpoint()
    stored = read_checkpoint(daemon.state_dir)
    assert "gone" in stored["windower"]["topics"] and stored["offsets"] == {"gone/0": 15}
    assert len(stored["baseline"]["topics"]["gone"]) == 4
    clock["now"] = NOW_S  # 40 days later
    daemon.process(_batch("live", [int(NOW_S * 1000)]))
    daemon.checkpoint()
    stored = read_checkpoint(daemon.state_dir)
    assert list(stored["windower"]["topics"]) == ["live"]
    # Its last open window (hour 4) could no longer receive a record: it was closed and emitted, then forgotten.
    assert [(w.topic, w.aggregate.count) for w in daemon.closed_windows][-2:] == [("gone", 3), ("gone", 3)]
    assert [w.start_ms - then_ms for w in daemon.closed_windows if w.topic == "gone"] == [h * HOUR_MS for h in range(5)]
    assert "gone" not in stored["baseline"]["topics"] and stored["offsets"] == {"live/0": 1}
    # A record for one of the forgotten windows would have been late; now it is too old: still in no window.
    before = daemon.registry.get_sample_value("seqmon_records_invalid_total", {"topic": "gone", "reason": "invalid_timestamp"})
    daemon.process(_batch("gone", [then_ms + HOUR_MS], first_offset=15))
    after = daemon.registry.get_sample_value("seqmon_records_invalid_total", {"topic": "gone", "reason": "invalid_timestamp"})
    assert (before or 0) + 1 == after
    assert [w.topic for w in daemon.pipeline.windower.open_windows()] == ["live"]
    json.dumps(stored)  # strict JSON


def test_without_a_past_bound_nothing_is_forgotten(daemon, tmp_path):
    daemon, clock = daemon
    settings = load_settings(None, env={}, overrides=[
        f"model.bundle={daemon.bundle_path}", f"state.directory={tmp_path / 'state2'}", "window.max_past_seconds=0",
    ])
    d = Daemon(settings, registry=CollectorRegistry(), clock=lambda: clock["now"])
    d.process(_batch("gone", [int(clock["now"] * 1000) - HOUR_MS, int(clock["now"] * 1000)]))
    d.pipeline.windower.close_all()
    d.pipeline.windower.revoke([("gone", 0)])
    clock["now"] += 400 * DAY_S
    d.checkpoint()
    assert "gone" in read_checkpoint(d.state_dir)["windower"]["topics"]
