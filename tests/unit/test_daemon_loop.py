"""The daemon's loop without a broker: an in-memory source and sink, an injected clock and a small numpy bundle (no
TensorFlow), so the shell's logic (windows, offsets, checkpoints, commits, rebalances, timers, dead letters, bundle
reloads) runs in seconds. What only a broker can show stays in tests/integration/."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from monitor.bundle import load_bundle, save_bundle
from monitor.config import load_settings
from monitor.daemon.changelog import Changelog
from monitor.daemon.checkpoint import read_checkpoint
from monitor.daemon.fleet import FleetWindows
from monitor.daemon.run import Daemon, Every
from monitor.errors import ConfigError, StateError
from monitor.export.sink import MemorySink
from monitor.partials import PartitionState, PartitionWindows, decode_record, parse_key
from monitor.pipeline import RecordBatch
from monitor.score import DenseLayer
from monitor.source import MemorySource, Rebalance
from monitor.vectorize import Vectorizer, VectorizerSettings
from monitor.window import WindowSettings

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, seconds
WINDOW_S = 60
TOKENS = ["DF", "36", "FR", "GX567", "AB", "12"]


class Clock:
    """UTC epoch seconds that move only when a test says so."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_bundle(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    vectorizer = Vectorizer(VectorizerSettings(vocab_size=8), TOKENS)
    layers = [
        DenseLayer(rng.normal(size=(8, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32), "relu"),
        DenseLayer(rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32), "linear"),
    ]
    reference = np.sort(rng.gamma(2.0, 0.5, 500))
    return save_bundle(path, vectorizer=vectorizer, layers=layers, reference_errors=reference, threshold_percentile=99.0)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("numpy-bundle") / "bundle")


def settings_for(bundle, state, **extra):
    overrides = {
        "model.bundle": str(bundle),
        "model.watch_interval_seconds": "0",
        "state.directory": str(state),
        "window.size_seconds": str(WINDOW_S),
        "window.allowed_lateness_seconds": "0",
        "window.idle_close_interval_seconds": "0",
        "window.max_future_seconds": "3153600000",
        "kafka.topics": "t",
    }
    overrides.update(extra)
    return load_settings(None, env={}, overrides=[f"{k}={v}" for k, v in overrides.items()])


def sequences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(TOKENS, size=int(rng.integers(2, 6)))) for _ in range(n)]


def batch(values, stamps_s, topic="t", partition=0) -> RecordBatch:
    values = [v.encode() if isinstance(v, str) else v for v in values]
    n = len(values)
    return RecordBatch(
        values=values,
        timestamps_ms=(np.asarray(stamps_s, dtype=np.float64) * 1000).astype(np.int64),
        topics=np.full(n, topic, dtype=object),
        partitions=np.full(n, partition, dtype=np.int32),
    )


def minute_batches(minutes: int, per_minute: int, seed: int = 0, topic="t", partition=0) -> list[RecordBatch]:
    """One batch per window, records spread over it in time order."""
    out = []
    for m in range(minutes):
        rng = np.random.default_rng(seed + m)
        stamps = T0 + m * WINDOW_S + np.sort(rng.uniform(0, WINDOW_S, per_minute))
        out.append(batch(sequences(per_minute, seed + 100 + m), stamps, topic, partition))
    return out


def started(settings, source, clock=None, sink=None) -> Daemon:
    daemon = Daemon(settings, registry=CollectorRegistry(), clock=clock or Clock(T0))
    daemon.start(source=source, sink=sink, serve_metrics=False)
    return daemon


def test_a_finite_source_closes_every_window_with_independent_figures(bundle_dir, tmp_path):
    batches = minute_batches(3, 200)
    source = MemorySource(batches, assignment=[("t", 0)])
    daemon = started(settings_for(bundle_dir, tmp_path / "state"), source)
    daemon.run()

    bundle = load_bundle(bundle_dir)
    assert [w.start_ms for w in daemon.closed_windows] == [(T0 + m * WINDOW_S) * 1000 for m in range(3)]
    for b, window in zip(batches, daemon.closed_windows):
        errors = bundle.errors([v.decode() for v in b.values])
        f = window.figures()
        assert f["count"] == 200
        assert f["mean_error"] == pytest.approx(errors.mean(), rel=1e-9)
        assert f["anomaly_rate"] == pytest.approx((errors > bundle.threshold).mean())
    reg = daemon.registry
    assert reg.get_sample_value("seqmon_records_consumed_total", {"topic": "t"}) == 600
    assert reg.get_sample_value("seqmon_windows_closed_total", {"topic": "t"}) == 3
    # The checkpoint and the commit agree: past the last record.
    assert read_checkpoint(tmp_path / "state")["offsets"] == {"t/0": 600}
    assert source.commits == {("t", 0): 600} and source.closed


def test_a_restart_resumes_after_the_checkpoint_and_counts_nothing_twice(bundle_dir, tmp_path):
    batches = minute_batches(4, 100, seed=5)
    settings = settings_for(bundle_dir, tmp_path / "state")
    # The first run reads two windows' batches; the input is only paused, so windows close by watermark alone.
    first = started(settings, MemorySource(batches[:2], assignment=[("t", 0)], final=False))
    first.run()
    assert [w.figures()["count"] for w in first.closed_windows] == [100]  # the second window is still open

    source = MemorySource(batches, assignment=[("t", 0)])
    second = started(settings, source)
    second.run()
    assert [w.figures()["count"] for w in second.closed_windows] == [100, 100, 100]
    assert second.closed_windows[0].start_ms == (T0 + WINDOW_S) * 1000
    assert second.registry.get_sample_value("seqmon_records_consumed_total", {"topic": "t"}) == 200
    assert source.commits == {("t", 0): 400}


def test_the_later_of_checkpoint_and_group_offset_wins(bundle_dir, tmp_path):
    batches = minute_batches(3, 100, seed=9)
    settings = settings_for(bundle_dir, tmp_path / "state")
    started(settings, MemorySource(batches[:1], assignment=[("t", 0)], final=False)).run()  # checkpoint at 100
    # Another member has read on since and committed 200: the daemon starts there, not at its checkpoint.
    source = MemorySource(batches, assignment=[("t", 0)], committed={("t", 0): 200})
    daemon = started(settings, source)
    daemon.run()
    assert daemon.registry.get_sample_value("seqmon_records_consumed_total", {"topic": "t"}) == 100
    assert daemon.offsets.snapshot() == {"t/0": 300}


def test_bad_and_late_records_are_counted_and_sent_as_dead_letters(bundle_dir, tmp_path):
    good = minute_batches(2, 50, seed=3)
    bad = batch([b"\xff\xfe", b"x" * 5000, b"DF 36"], [T0 + 70, T0 + 71, T0 + 10])  # the last is late: window 0 closed
    source = MemorySource([good[0], good[1], bad], assignment=[("t", 0)])
    sink = MemorySink()
    daemon = started(settings_for(bundle_dir, tmp_path / "state", **{"kafka.dead_letter_topic": "dlq",
                                                                      "kafka.results_topic": "results"}), source, sink=sink)
    daemon.run()
    reg = daemon.registry
    assert reg.get_sample_value("seqmon_records_invalid_total", {"topic": "t", "reason": "invalid_utf8"}) == 1
    assert reg.get_sample_value("seqmon_records_invalid_total", {"topic": "t", "reason": "too_long"}) == 1
    assert reg.get_sample_value("seqmon_records_late_total", {"topic": "t"}) == 1
    assert [(topic, reason, where) for topic, _, reason, where in sink.dead] == [
        ("dlq", "invalid_utf8", ("t", 0, 100)), ("dlq", "too_long", ("t", 0, 101)), ("dlq", "late", ("t", 0, 102)),
    ]
    assert sink.dead[0][1] == b"\xff\xfe"
    assert [(topic, key) for topic, key, _ in sink.results] == [("results", f"t/{(T0 + m * WINDOW_S) * 1000}") for m in range(2)]
    assert sink.results[0][2]["count"] == 50
    assert sink.flushes >= 2 and sink.closed  # flushed before every checkpoint's commit


def test_json_records_carry_their_event_time_and_weight(bundle_dir, tmp_path):
    docs = [{"sequence": "DF 36", "weight": 3, "ts": (T0 + 5) * 1000}, {"sequence": "AB 12", "ts": (T0 + 65) * 1000}]
    values = [json.dumps(d).encode() for d in docs]
    # The Kafka timestamps say otherwise; the records' own times decide their windows.
    source = MemorySource([batch(values, [T0 + 500, T0 + 500])], assignment=[("t", 0)])
    daemon = started(settings_for(bundle_dir, tmp_path / "state", **{"records.format": "json",
                                                                      "records.timestamp_field": "ts"}), source)
    daemon.run()
    assert [(w.start_ms, w.figures()["count"], w.aggregate.weight) for w in daemon.closed_windows] == [
        (T0 * 1000, 1, 3.0), ((T0 + WINDOW_S) * 1000, 1, 1.0),
    ]


def test_a_quiet_stream_closes_its_windows_by_the_injected_clock(bundle_dir, tmp_path):
    clock = Clock(T0 + 10)
    source = MemorySource(minute_batches(1, 20), assignment=[("t", 0)], ends=False)
    daemon = started(settings_for(bundle_dir, tmp_path / "state", **{"window.idle_close_interval_seconds": "30"}),
                     source, clock=clock)
    assert daemon.step() and daemon.closed_windows == []  # the batch; caught up, but the window is not over
    clock.now = T0 + WINDOW_S - 1
    assert daemon.step() and daemon.closed_windows == []
    clock.now = T0 + WINDOW_S + 1
    assert daemon.step() and daemon.closed_windows == []  # over, but neither the lag nor the idle-close timer is due
    clock.now = T0 + WINDOW_S + 30
    assert daemon.step()
    assert [(w.start_ms, w.figures()["count"]) for w in daemon.closed_windows] == [(T0 * 1000, 20)]
    assert read_checkpoint(tmp_path / "state")["written_at"] == T0 + WINDOW_S + 30  # a close is checkpointed at once
    daemon.stop()
    daemon.run()  # stopped: only the shutdown
    assert source.closed and source.polls == 4


def test_timers_are_due_by_the_clock_they_are_given():
    every = Every(30, start=100.0)
    assert [every.due(t) for t in (100.0, 129.9, 130.0, 131.0, 159.0, 160.0)] == [False, False, True, False, False, True]
    assert not Every(0, start=0.0).due(1e12)  # 0: switched off


def test_checkpoints_are_due_by_the_clock_and_commit_what_was_processed(bundle_dir, tmp_path):
    clock = Clock(T0)
    records = batch(sequences(10, 1), np.full(10, T0 + 1.0))
    source = MemorySource([records, None, None], assignment=[("t", 0)], ends=False)
    daemon = started(settings_for(bundle_dir, tmp_path / "state", **{"state.checkpoint_interval_seconds": "60"}),
                     source, clock=clock)
    daemon.step()
    assert source.commits == {} and read_checkpoint(tmp_path / "state") is None
    clock.now = T0 + 60
    daemon.step()
    assert source.commits == {("t", 0): 10}
    assert read_checkpoint(tmp_path / "state")["written_at"] == T0 + 60
    assert daemon.registry.get_sample_value("seqmon_checkpoints_total") == 1


def test_a_rebalance_checkpoints_the_revoked_partition_and_forgets_it(bundle_dir, tmp_path):
    p0 = minute_batches(1, 30, seed=1, partition=0)[0]
    p1 = minute_batches(1, 40, seed=2, partition=1)[0]
    events = [p0, p1, Rebalance(revoked=[("t", 1)]), Rebalance(assigned=[("t", 2)])]
    source = MemorySource(events, assignment=[("t", 0), ("t", 1)], ends=False)
    daemon = started(settings_for(bundle_dir, tmp_path / "state"), source)
    assert daemon.partitions == [("t", 0), ("t", 1)]
    for _ in range(3):
        daemon.step()
    assert source.commits == {("t", 1): 40}  # only the revoked partition, at once
    assert daemon.partitions == [("t", 0)]
    assert ("t", 1) not in {(p.topic, p.partition) for p in daemon.pipeline.windower.progress()}
    daemon.step()
    assert daemon.partitions == [("t", 0), ("t", 2)]
    daemon.stop()
    daemon.run()
    assert source.commits == {("t", 0): 30, ("t", 1): 40}  # no offset known yet for the new partition: none committed


def test_the_bundle_watch_reloads_a_changed_bundle_on_the_clock(tmp_path):
    bundle = make_bundle(tmp_path / "bundle", seed=1)
    clock = Clock(T0)
    source = MemorySource([None, None, None], assignment=[("t", 0)], ends=False)
    daemon = started(settings_for(bundle, tmp_path / "state", **{"model.watch_interval_seconds": "10"}), source,
                     clock=clock)
    before = daemon.pipeline.bundle.content_hash
    make_bundle(tmp_path / "bundle", seed=2)  # a new bundle written over the old one
    daemon.step()
    assert daemon.pipeline.bundle.content_hash == before  # not due yet
    clock.now = T0 + 10
    daemon.step()
    assert daemon.pipeline.bundle.content_hash != before
    assert daemon.registry.get_sample_value("seqmon_bundle_reloads_total", {"result": "success"}) == 1


def _interrupted(bundle, state, batches) -> Daemon:
    """A daemon that read ``batches`` and stopped (the input only paused), its last window open in the checkpoint."""
    daemon = started(settings_for(bundle, state), MemorySource(batches, assignment=[("t", 0)], final=False))
    daemon.run()
    return daemon


def test_a_checkpoint_of_another_bundle_stops_the_daemon_in_one_line(bundle_dir, tmp_path):
    state = tmp_path / "state"
    _interrupted(bundle_dir, state, minute_batches(2, 50, seed=11))
    retrained = make_bundle(tmp_path / "retrained", seed=3)
    old, new = load_bundle(bundle_dir).content_hash, load_bundle(retrained).content_hash
    assert read_checkpoint(state)["bundle"] == read_checkpoint(state)["windower"]["bundle"] == old
    with pytest.raises(StateError) as refused:
        Daemon(settings_for(retrained, state), registry=CollectorRegistry(), clock=Clock(T0))
    message = str(refused.value)
    assert "\n" not in message
    for part in (f"state directory {state} ", old, new, f"start with bundle {old} again", f"move or delete {state}",
                 "--set state.on_bundle_change=discard"):
        assert part in message
    assert read_checkpoint(state)["bundle"] == old  # left as it was


def test_a_checkpoint_of_another_window_size_names_its_state_directory(bundle_dir, tmp_path):
    state = tmp_path / "state"
    _interrupted(bundle_dir, state, minute_batches(2, 50, seed=11))
    with pytest.raises(StateError) as refused:
        Daemon(settings_for(bundle_dir, state, **{"window.size_seconds": str(2 * WINDOW_S)}),
               registry=CollectorRegistry(), clock=Clock(T0))
    message = str(refused.value)
    assert message.startswith(f"state directory {state}: ") and "size_ms" in message and "\n" not in message


def test_discarding_the_state_of_another_bundle_keeps_offsets_and_closed_windows(bundle_dir, tmp_path, caplog):
    state = tmp_path / "state"
    batches = minute_batches(4, 50, seed=11)
    _interrupted(bundle_dir, state, batches[:2])  # window 0 closed, window 1 open with 50 records
    retrained = make_bundle(tmp_path / "retrained", seed=3)
    old, new = load_bundle(bundle_dir).content_hash, load_bundle(retrained).content_hash
    source = MemorySource(batches, assignment=[("t", 0)])
    with caplog.at_level("WARNING", logger="seqmon"):
        daemon = started(settings_for(retrained, state, **{"state.on_bundle_change": "discard"}), source)
    dropped = [r.getMessage() for r in caplog.records if "dropped the window state" in r.getMessage()]
    assert len(dropped) == 1
    assert old in dropped[0] and new in dropped[0] and "1 open window(s) holding 50 record(s)" in dropped[0]
    assert daemon.pipeline.windower.open_windows() == [] and daemon.baseline.snapshot()["topics"] == {}
    daemon.run()
    # Reading resumed at the checkpoint's offset: window 1 starts again empty, window 0 is not published again.
    assert [w.start_ms for w in daemon.closed_windows] == [(T0 + m * WINDOW_S) * 1000 for m in (1, 2, 3)]
    assert [w.figures()["count"] for w in daemon.closed_windows] == [0, 50, 50]
    assert daemon.closed_windows[0].previous is None  # the old bundle's window is no reference for the new one
    assert source.commits == {("t", 0): 200}
    assert read_checkpoint(state)["bundle"] == read_checkpoint(state)["windower"]["bundle"] == new


def test_a_reload_names_the_new_bundle_in_the_checkpoint_at_once(tmp_path):
    path = make_bundle(tmp_path / "bundle", seed=1)
    state = tmp_path / "state"
    source = MemorySource([*minute_batches(2, 50, seed=13), None], assignment=[("t", 0)], ends=False)
    daemon = started(settings_for(path, state), source)
    daemon.step()
    daemon.step()  # window 0 closed, window 1 open
    make_bundle(path, seed=2)
    daemon._reload.set()
    daemon.step()
    new = load_bundle(path).content_hash
    checkpoint = read_checkpoint(state)
    assert checkpoint["bundle"] == checkpoint["windower"]["bundle"] == new
    # Killed here: a restart on the bundle now in place carries the open window on, as the reload did.
    again = Daemon(settings_for(path, state), registry=CollectorRegistry(), clock=Clock(T0))
    assert [w.aggregate.count for w in again.pipeline.windower.open_windows()] == [50]


def test_seqmon_run_refuses_the_state_of_another_bundle_with_one_line_and_exit_2(bundle_dir, tmp_path):
    state = tmp_path / "state"
    _interrupted(bundle_dir, state, minute_batches(2, 20, seed=17))
    retrained = make_bundle(tmp_path / "retrained", seed=3)
    sets = [f"model.bundle={retrained}", f"state.directory={state}", "kafka.topics=t",
            f"window.size_seconds={WINDOW_S}", "kafka.bootstrap_servers=127.0.0.1:9"]  # never reached: refused first
    out = subprocess.run([sys.executable, "-m", "monitor.cli", "run", *[a for s in sets for a in ("--set", s)]],
                         cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"seqmon: error: state directory {state} "), out.stderr


def test_a_daemon_reading_part_of_a_topic_says_its_windows_are_its_share(bundle_dir, tmp_path, caplog):
    events = [minute_batches(1, 20, seed=1)[0], None, Rebalance(assigned=[("t", 2)]),
              Rebalance(assigned=[("t", 3), ("t", 4), ("t", 5)]), None]
    source = MemorySource(events, assignment=[("t", 0), ("t", 1)], ends=False, partitions={"t": 6})
    daemon = started(settings_for(bundle_dir, tmp_path / "state"), source)

    def shares():
        return [r.getMessage() for r in caplog.records if "this daemon reads" in r.getMessage()]

    def gauges():
        return tuple(daemon.registry.get_sample_value(name, {"topic": "t"})
                     for name in ("seqmon_partitions_assigned", "seqmon_topic_partitions"))

    with caplog.at_level("WARNING", logger="seqmon"):
        daemon.step()
        daemon.step()  # the same assignment: no second warning
        assert len(shares()) == 1 and gauges() == (2, 6)
        assert "topic t: this daemon reads 2 of its 6 partitions" in shares()[0]
        assert "consumer group seqmon" in shares()[0] and "state.changelog_topic" in shares()[0]
        daemon.step()
        assert len(shares()) == 2 and "reads 3 of its 6" in shares()[1] and gauges() == (3, 6)
        daemon.step()  # now all of them: the windows are the whole topic's
        daemon.step()
        assert len(shares()) == 2 and gauges() == (6, 6)


def test_the_daemon_tests_run_without_tensorflow():
    """Run this file's other tests in a fresh interpreter, then look at what it imported."""
    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys, pytest\n"
        f"rc = pytest.main(['-q', '-p', 'no:cacheprovider', {str(Path(__file__))!r}, '-k', 'not without_tensorflow'])\n"
        "print('tensorflow imported' if 'tensorflow' in sys.modules else 'no tensorflow', 'rc', int(rc))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "no tensorflow rc 0", out.stdout[-3000:] + out.stderr[-3000:]


# ---------------------------------------------------------------------------------------------------------- fleet mode


class MemoryChangelog(Changelog):
    """The changelog over a list shared by the daemons of a test (the topic's records, in order) instead of Kafka:
    writes append to it, ``refresh`` reads what was appended since, so each daemon sees only what was written."""

    def __init__(self, log: list, bundle: str, settings: WindowSettings, partitions: int = 6):
        super().__init__({"bootstrap_servers": "memory"}, "changelog", bundle, settings)
        self.log, self._read, self._partitions = log, 0, partitions

    def ensure_topic(self, *args, **kwargs) -> bool:
        return False

    def _send_all(self, records, timeout_s):
        self.log.extend(records)
        self._written(records)

    def refresh(self, timeout_s: float = 60.0) -> int:
        new = self.log[self._read:]
        self._read = len(self.log)
        for key, value in new:
            self._latest[key] = value
            self._decoded.pop(key, None)
        return len(new)

    def partitions_of(self, topic: str) -> list[int]:
        return list(range(self._partitions))

    def end_offsets(self, topic: str, partitions) -> dict[int, int]:
        """Unknown here (each test's source knows its own): idle states are taken at their word."""
        return {}

    def close(self) -> None:
        pass


FLEET_PARTITIONS = 6


def uneven_stream(windows: int = 8, disorder_s: float = 0.0, seed: int = 0) -> list[RecordBatch]:
    """Six partitions of timed records in event-time order (or up to ``disorder_s`` out of it), handed over in
    chunks whose sizes differ by partition: partition 0 runs far ahead of partition 5 in event time."""
    rng = np.random.default_rng(seed)
    per_partition = []
    for p in range(FLEET_PARTITIONS):
        n = int(rng.integers(150, 300))
        stamps = T0 + np.sort(rng.uniform(0, windows * WINDOW_S, n)) - rng.uniform(0, disorder_s, n)
        per_partition.append((sequences(n, seed + 10 + p), stamps))
    out, positions = [], [0] * FLEET_PARTITIONS
    while any(pos < len(per_partition[p][0]) for p, pos in enumerate(positions)):
        for p in range(FLEET_PARTITIONS):
            values, stamps = per_partition[p]
            lo = positions[p]
            hi = min(len(values), lo + 60 - 9 * p)
            if hi > lo:
                out.append(batch(values[lo:hi], stamps[lo:hi], partition=p))
                positions[p] = hi
    return out


def fleet_settings(bundle, tmp_path, **extra):
    return settings_for(bundle, tmp_path / "unused", **{
        "state.changelog_topic": "changelog", "kafka.results_topic": "results", "kafka.dead_letter_topic": "dlq",
        "state.checkpoint_interval_seconds": "1", **extra,
    })


class Member:
    """One daemon of a fleet in a test: its own clock, source and sink, the fleet's shared changelog list."""

    def __init__(self, settings, log, events, assignment):
        self.clock, self.sink = Clock(T0), MemorySink()
        self.source = MemorySource(events, assignment=assignment, ends=False)
        self.daemon = Daemon(settings, registry=CollectorRegistry(), clock=self.clock)
        bundle = self.daemon.pipeline.bundle.content_hash
        self.daemon.start(source=self.source, sink=self.sink, serve_metrics=False,
                          changelog=MemoryChangelog(log, bundle, self.daemon.window_settings))

    def step(self, write: bool = True):
        """One turn of the loop; ``write``: the checkpoint (the changelog write) is due after it."""
        if write:
            self.clock.now += 1
        return self.daemon.step()

    def drained(self) -> bool:
        return self.source._next >= len(self.source._events)

    def finish(self):
        """Everything delivered: the partitions turn idle, their states are written and the windows due closed."""
        self.clock.now += 11
        self.daemon.report_lags(self.clock.now)
        self.daemon.checkpoint()


def fleet_outcome(members, log, settings):
    """What a fleet published (key -> figures, from every member's sink), publications per key, and the late
    records of every partition's latest state."""
    published = [(key, figures) for m in members for topic, key, figures in m.sink.results if topic == "results"]
    counts = Counter(key for key, _ in published)
    bundle = members[0].daemon.pipeline.bundle.content_hash
    latest = {}
    for key, value in log:
        latest[key] = value
    late = sum(decode_record(v, bundle, settings).late_records for k, v in latest.items() if parse_key(k)[1] is not None)
    return dict(published), counts, late


def one_fleet_daemon(bundle, tmp_path, events):
    settings = fleet_settings(bundle, tmp_path)
    log: list = []
    a = Member(settings, log, events, [("t", p) for p in range(FLEET_PARTITIONS)])
    while not a.drained():
        a.step()
    a.finish()
    return fleet_outcome([a], log, a.daemon.window_settings), a


def three_fleet_daemons(bundle, tmp_path, events):
    """a and b split the partitions; b reads on without writing and is killed; b comes back later; c joins and
    takes partition 0, so the closing moves too."""
    settings = fleet_settings(bundle, tmp_path)
    log: list = []
    sixth = len(events) // 6
    a_events = events[:sixth] + [Rebalance(revoked=[("t", 3), ("t", 4), ("t", 5)])] + events[sixth:2 * sixth] + [
        Rebalance(revoked=[("t", 0)])] + events[2 * sixth:]
    a = Member(settings, log, a_events, [("t", p) for p in range(FLEET_PARTITIONS)])
    while ("t", 3) in a.daemon.partitions:
        a.step()
    b = Member(settings, log, events, [("t", 3), ("t", 4), ("t", 5)])
    for _ in range(8):
        b.step()
    for _ in range(4):
        b.step(write=False)  # read, never written: SIGKILL now
    assert b.daemon.fleet.windows.dirty(), "the daemon to kill had read nothing unwritten"
    killed = b
    for _ in range(5):
        a.step()
    b = Member(settings, log, events, [("t", 3), ("t", 4), ("t", 5)])  # restarted; the group gives it its partitions
    for _ in range(5):
        b.step()
        a.step()
    while ("t", 0) in a.daemon.partitions:
        a.step()
    c = Member(settings, log, events, [("t", 0)])
    members = [a, b, c]
    assert c.source.lag()[("t", 0)] > 0, "partition 0 moved after it was read to its end"
    while not all(m.drained() for m in members):
        for m in members:
            m.step()
    for m in members:
        m.finish()
    c.finish()  # the closer again, now that every state is written idle
    return fleet_outcome([a, killed, b, c], log, a.daemon.window_settings), (a, killed, b, c)


@pytest.mark.parametrize("disorder_s", [0.0, 20.0])
def test_three_daemons_with_a_kill_and_a_join_publish_what_one_publishes(bundle_dir, tmp_path, disorder_s):
    events = uneven_stream(disorder_s=disorder_s, seed=4)
    (one, one_counts, one_late), _ = one_fleet_daemon(bundle_dir, tmp_path, events)
    (three, three_counts, three_late), members = three_fleet_daemons(bundle_dir, tmp_path, events)

    assert max(one_counts.values()) == 1 and max(three_counts.values()) == 1  # each window published once
    assert sorted(one) == sorted(three) and len(one) >= 6
    assert one_late == three_late
    if disorder_s == 0:
        assert one_late == 0  # zero lateness, partitions in order: however uneven, no record is late
    else:
        assert one_late > 0
    stamps = np.concatenate([b.timestamps_ms for b in events])
    total = len(stamps)
    consumed = [m.daemon.registry.get_sample_value("seqmon_records_consumed_total", {"topic": "t"}) for m in members]
    assert sum(consumed) > total and min(consumed) > 0  # the killed daemon's unwritten reads were read again
    a, c = members[0].daemon.registry, members[-1].daemon.registry
    assert a.get_sample_value("seqmon_windows_closed_total", {"topic": "t"}) > 0  # a closed some before p0 moved,
    assert a.get_sample_value("seqmon_window_records", {"topic": "t"}) is None  # and reports no stale window since
    assert a.get_sample_value("seqmon_window_error_quantile", {"topic": "t", "quantile": "0.5"}) is None
    assert a.get_sample_value("seqmon_window_severity", {"topic": "t"}) is None
    assert a.get_sample_value("seqmon_window_closed_timestamp_seconds", {"topic": "t"}) > 0  # for SeqmonNoClosedWindow
    assert c.get_sample_value("seqmon_window_records", {"topic": "t"}) == one[max(one)]["count"]
    assert sum(f["count"] for f in one.values()) + one_late <= total
    for key in one:
        a, b = one[key], three[key]
        assert (a["count"], a["weight"], a["p50"], a["p90"], a["p99"]) == (b["count"], b["weight"], b["p50"],
                                                                             b["p90"], b["p99"]), key
        for name in ("mean_error", "anomaly_rate", "mean_percentile", "abnormality", "shift", "surprise"):
            if a[name] is None:
                assert b[name] is None, name
            else:
                assert a[name] == pytest.approx(b[name], rel=1e-9), name
        assert a["decision"] == b["decision"] and a["baseline_windows"] == b["baseline_windows"]
    if disorder_s == 0:
        start = int(np.min(stamps)) // (WINDOW_S * 1000) * WINDOW_S * 1000
        for key, f in one.items():
            lo = int(key.split("/")[1])
            assert f["count"] == int(((stamps >= lo) & (stamps < lo + WINDOW_S * 1000)).sum()), key
        assert min(int(k.split("/")[1]) for k in one) == start


def test_a_fleet_daemon_counts_and_reports_what_it_publishes(bundle_dir, tmp_path):
    events = uneven_stream(seed=6)
    (published, _, _), a = one_fleet_daemon(bundle_dir, tmp_path, events)
    reg = a.daemon.registry
    closed = reg.get_sample_value("seqmon_windows_closed_total", {"topic": "t"})
    assert closed == len(published) == len(a.daemon.closed_windows)
    last = max(published, key=lambda k: int(k.split("/")[1]))
    assert reg.get_sample_value("seqmon_window_records", {"topic": "t"}) == published[last]["count"]
    assert reg.get_sample_value("seqmon_records_consumed_total", {"topic": "t"}) == sum(len(b) for b in events)
    assert reg.get_sample_value("seqmon_changelog_records_written_total") == a.daemon.changelog.records_written > 0
    assert reg.get_sample_value("seqmon_changelog_bytes_written_total") == a.daemon.changelog.bytes_written > 0
    # The group's offsets are those of the written states: everything read.
    sizes = Counter()
    for b in events:
        sizes[("t", int(b.partitions[0]))] += len(b)
    assert a.source.commits == dict(sizes)
    assert not (tmp_path / "unused").exists()  # the state directory is not used in fleet mode


def test_a_fleet_daemon_reading_part_of_a_topic_counts_its_partitions_without_a_warning(bundle_dir, tmp_path,
                                                                                          caplog):
    with caplog.at_level("WARNING", logger="seqmon"):
        a = Member(fleet_settings(bundle_dir, tmp_path), [], uneven_stream(seed=6), [("t", 0), ("t", 1)])
        a.step()
    assert not [r for r in caplog.records if "this daemon reads" in r.getMessage()]  # its windows are fleet-wide
    reg = a.daemon.registry
    assert reg.get_sample_value("seqmon_partitions_assigned", {"topic": "t"}) == 2
    assert reg.get_sample_value("seqmon_topic_partitions", {"topic": "t"}) == FLEET_PARTITIONS


def test_a_restored_partition_resumes_at_its_state_and_invalid_records_are_covered(bundle_dir, tmp_path):
    settings = fleet_settings(bundle_dir, tmp_path)
    log: list = []
    records = batch(sequences(10, 1) + ["", "\xff"], np.full(12, T0 + 1.0))  # the last two are invalid
    first = Member(settings, log, [records], [("t", 0)])
    first.step()
    first.daemon.shutdown()
    assert first.source.commits == {("t", 0): 12}
    # The group lost the commit, say: the state alone decides where the next owner reads on.
    again = Member(settings, log, [records, batch(sequences(5, 2), np.full(5, T0 + 2.0))], [("t", 0)])
    again.step()
    reg = again.daemon.registry
    assert reg.get_sample_value("seqmon_records_consumed_total", {"topic": "t"}) == 5
    assert again.daemon.fleet.windows.state("t", 0).next_offset == 17


def test_a_lost_partition_writes_nothing_and_a_revoked_one_writes_its_state(bundle_dir, tmp_path):
    settings = fleet_settings(bundle_dir, tmp_path)
    log: list = []
    events = [batch(sequences(4, 1), np.full(4, T0 + 1.0), partition=0),
              batch(sequences(3, 2), np.full(3, T0 + 2.0), partition=1),
              Rebalance(lost=[("t", 0)]), Rebalance(revoked=[("t", 1)])]
    m = Member(settings, log, events, [("t", 0), ("t", 1)])
    m.step(write=False)
    m.step(write=False)
    written = len(log)
    m.step(write=False)  # lost: another member may own it, so nothing is written for it
    assert len(log) == written and m.daemon.partitions == [("t", 1)]
    m.step(write=False)  # revoked: its state is written and its offset committed
    assert [k for k, _ in log[written:]] == ["t/1"] and m.source.commits == {("t", 1): 3}
    assert m.daemon.fleet.windows.owned() == []


def test_a_commit_the_group_refuses_in_a_rebalance_does_not_stop_a_fleet_daemon(bundle_dir, tmp_path):
    """Found on the real broker: a member closing after its eviction had its revoke commit refused (UNKNOWN_MEMBER_ID)
    and exited 1. In fleet mode the changelog holds the position; the group's offsets only show lag."""
    from monitor.errors import KafkaAccessError

    settings = fleet_settings(bundle_dir, tmp_path)
    log: list = []
    events = [batch(sequences(3, 2), np.full(3, T0 + 2.0), partition=1), Rebalance(revoked=[("t", 1)])]
    m = Member(settings, log, events, [("t", 1)])

    def refused(offsets):
        raise RuntimeError("Commit failed: Broker: Unknown member")

    m.source.commit = refused
    m.step(write=False)
    written = len(log)
    assert m.step(write=False)  # the revoke: its state is written, the refused commit only logged
    assert [k for k, _ in log[written:]] == ["t/1"] and m.daemon.partitions == []

    def not_allowed(offsets):
        raise KafkaAccessError("Kafka refused: the group needs READ")

    m.source.commit = not_allowed
    with pytest.raises(KafkaAccessError):  # a missing right still stops the daemon
        m.daemon._commit_fleet_offsets({("t", 1): 3})


def test_a_state_written_idle_before_records_arrived_holds_its_topic_back():
    """The closer checks an idle state against its partition's end offset: a lag of 0 turns stale as soon as a
    producer writes, and an owner that died after reading has left its last state idle."""
    settings = WindowSettings(size_ms=WINDOW_S * 1000, allowed_lateness_ms=0)
    log: list = []
    ends = {0: 10, 1: 5}
    fleet = FleetWindows(PartitionWindows(settings), MemoryChangelog(log, "b", settings, partitions=2),
                         lambda topic: [0, 1], end_offsets=lambda topic, partitions: dict(ends))
    t = T0 * 1000
    fleet.on_assign([("t", 0), ("t", 1)], now_ms=t)
    for p, n, until_s in ((0, 10, 3 * WINDOW_S), (1, 5, 10)):
        fleet.add(np.full(n, "t", dtype=object), t + np.linspace(0, until_s * 1000, n).astype(np.int64),
                  np.full(n, 0.1), None, np.full(n, 50.0), np.zeros(n, bool), np.full(n, p), np.arange(n))
    fleet.report_lags({("t", 0): 0, ("t", 1): 0})
    fleet.commit(now_ms=t)
    ends[1] = 7  # two records more on partition 1, not delivered yet: it is not idle, whatever its state says
    assert fleet.close() == []
    ends[1] = 5
    assert [w.start_ms for w in fleet.close()] == [t + m * WINDOW_S * 1000 for m in range(3)]


def test_a_fleet_refuses_to_reload_another_bundle(tmp_path):
    bundle = make_bundle(tmp_path / "bundle", seed=1)
    m = Member(fleet_settings(bundle, tmp_path), [], [None], [("t", 0)])
    before = m.daemon.pipeline.bundle.content_hash
    make_bundle(tmp_path / "bundle", seed=2)
    assert m.daemon.reload_bundle() is False
    assert m.daemon.pipeline.bundle.content_hash == before
    assert m.daemon.registry.get_sample_value("seqmon_bundle_reloads_total", {"result": "failure"}) == 1


@pytest.mark.parametrize(("extra", "message"), [
    ({"kafka.topics": "changelog"}, "state.changelog_topic 'changelog' is also a consumed topic"),
    ({"kafka.results_topic": "changelog"}, "state.changelog_topic and kafka.results_topic are both 'changelog'"),
    ({"state.changelog_topic": "no spaces"}, "state.changelog_topic must be a Kafka topic name"),
    ({"state.changelog_replication_factor": "0"}, "state.changelog_replication_factor must be a positive integer"),
])
def test_fleet_settings_are_checked_at_start(bundle_dir, tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        fleet_settings(bundle_dir, tmp_path, **extra)


def test_a_replay_of_a_file_is_not_run_in_fleet_mode(bundle_dir, tmp_path):
    from monitor.source import FileSource

    stream = tmp_path / "stream.csv"
    stream.write_text(f"timestamp_ms,sequence\n{T0 * 1000},DF 36\n")
    daemon = Daemon(fleet_settings(bundle_dir, tmp_path), registry=CollectorRegistry(), clock=Clock(T0))
    with pytest.raises(ConfigError, match="state.changelog_topic .fleet mode. is for the consumer group of seqmon run"):
        daemon.start(source=FileSource(stream, topic="t"), serve_metrics=False)


def test_a_partition_state_of_another_bundle_stops_the_daemon_and_nothing_is_written(bundle_dir, tmp_path):
    settings = fleet_settings(bundle_dir, tmp_path)
    log: list = []
    other = MemoryChangelog(log, "sha256:0ther", settings.window.window_settings())
    other.write_states([PartitionState("t", 0, next_offset=3)])
    m = Member(settings, log, [batch(sequences(5, 1), np.full(5, T0 + 1.0))], [("t", 0)])
    with pytest.raises(StateError, match="key t/0 was written by bundle 'sha256:0ther', this daemon scores with"):
        m.daemon.run()
    assert len(log) == 1 and m.source.commits == {} and m.source.closed
