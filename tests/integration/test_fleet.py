"""Fleet-wide windows with real ``seqmon run`` processes on a real broker (issue 11, done when).

A timed stream over 6 partitions of uneven density is produced in four parts, each taking every partition up to the
same event time (mid-hour), then read

(a) by one daemon, once everything is produced;
(b) by a consumer group of daemons while it is produced: two start, the one that does not close windows is SIGKILLed
    in the middle of an hour, the other takes its partitions over, the killed one is started again later, and a
    third joins mid-stream.

Every window (b) publishes equals (a)'s: same records and weight, quantiles within the sketch's accuracy, the same
mean error, comparison and deviation figures; each window is on the results topic once; and the records counted
late are the very records (partition, offset) that (a) counted late, all of them in the one partition produced out of
event-time order: with zero allowed lateness, no record of an in-order partition is late.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from monitor.bundle import load_bundle
from monitor.config import load_settings
from monitor.daemon.changelog import Changelog
from monitor.generate import SeedLikeGenerator
from tests.kafka_broker import create_topic, free_port

pytestmark = pytest.mark.slow

H = 3_600_000
PARTITIONS = 6
SIZES = (900, 700, 520, 400, 300, 200)  # records per partition: uneven event-time progress of a consumer
DISORDERED = 5  # the one partition produced up to 10 minutes out of event-time order
PARTS_END_H = (1.5, 3.25, 4.5, 6.0)  # each part of the stream takes every partition up to this hour
REPO = Path(__file__).resolve().parents[2]


def _name(what: str) -> str:
    return f"seqmon-fleet-{what}-{uuid.uuid4().hex[:8]}"


def make_stream(t0: int) -> list[list[tuple[int, int, bytes]]]:
    """The stream's four parts, as (partition, timestamp ms, value) records, in production order."""
    rng = np.random.default_rng(11)
    gen = SeedLikeGenerator(31)
    parts: list[list[tuple[int, int, bytes]]] = [[] for _ in PARTS_END_H]
    for p, n in enumerate(SIZES):
        base = np.sort(rng.integers(0, 6 * H, n))
        stamps = np.maximum(t0, t0 + base - (rng.integers(0, 10 * 60_000, n) if p == DISORDERED else 0))
        values = gen.normal(n - n // 50) + gen.abnormal(n // 50, "unknown")
        order = rng.permutation(n)  # abnormal records spread over the hours
        part = np.searchsorted(np.array(PARTS_END_H) * H, base, side="right")
        for i in range(n):
            parts[int(part[i])].append((p, int(stamps[i]), values[order[i]].encode()))
    return parts


def produce(bootstrap: str, topic: str, records) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    try:
        for partition, ts, value in records:
            producer.send(topic, value=value, partition=partition, timestamp_ms=ts)
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)


class Run:
    """One reading of the stream: a consumer group, its changelog, results and dead-letter topics, its daemons."""

    def __init__(self, bootstrap, bundle_path, topic, tmp_path, what, client="kafka-python"):
        self.bootstrap, self.bundle_path, self.topic, self.client = bootstrap, bundle_path, topic, client
        self.group, self.changelog, self.results, self.dlq = (_name(f"{what}-{k}") for k in ("group", "log", "res", "dlq"))
        for name in (self.results, self.dlq):
            create_topic(bootstrap, name, 1)
        self.tmp_path = tmp_path / what
        self.daemons: dict[str, tuple[subprocess.Popen, int]] = {}

    def settings(self) -> list[str]:
        return [
            f"kafka.client={self.client}", f"kafka.bootstrap_servers={self.bootstrap}", f"kafka.topics={self.topic}",
            f"kafka.group_id={self.group}",
            "kafka.session_timeout_ms=6000", "kafka.heartbeat_interval_ms=1000",
            f"kafka.results_topic={self.results}", f"kafka.dead_letter_topic={self.dlq}",
            f"state.changelog_topic={self.changelog}", "state.checkpoint_interval_seconds=1",
            f"state.directory={self.tmp_path / 'state'}", f"model.bundle={self.bundle_path}",
            "model.watch_interval_seconds=0", "window.size_seconds=3600", "window.allowed_lateness_seconds=0",
            # The wall clock would close the stream's past hours while it waits between two parts.
            "window.idle_close_interval_seconds=0", "batch.max_records=200", "batch.max_latency_ms=200",
        ]

    def start(self, name: str) -> None:
        port = free_port()
        args = [sys.executable, "-m", "monitor.cli", "run", "--set", f"metrics.port={port}"]
        for setting in self.settings():
            args += ["--set", setting]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEQMON_")}
        log = open(self.tmp_path.parent / f"{self.tmp_path.name}-{name}-{len(self.daemons)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)
        log.close()
        self.daemons[name] = (proc, port)

    def scrape(self, name: str) -> str:
        proc, port = self.daemons[name]
        assert proc.poll() is None, f"daemon {name} exited with {proc.returncode}: {self.log_tail()}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                return response.read().decode()
        except OSError:
            return ""  # not serving yet

    def consumed(self, name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in self.scrape(name).splitlines()
                   if line.startswith("seqmon_records_consumed_total{"))

    def partitions(self, name: str) -> set[int]:
        """Partitions the daemon holds, from its seqmon_partition_idle series (set once lags are known)."""
        out = set()
        for line in self.scrape(name).splitlines():
            if line.startswith("seqmon_partition_idle{"):
                out.add(int(line.split('partition="')[1].split('"')[0]))
        return out

    def wait(self, what: str, predicate, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s; {self.log_tail()}"
            time.sleep(0.3)

    def kill(self, name: str) -> None:
        proc, _ = self.daemons.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM each daemon in turn (the others take its partitions over); each must exit 0."""
        codes = {}
        for name, (proc, _) in list(self.daemons.items()):
            proc.send_signal(signal.SIGTERM)
            try:
                codes[name] = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
                codes[name] = "hung"
            del self.daemons[name]
        assert set(codes.values()) <= {0}, f"exit codes {codes}: {self.log_tail()}"

    def log_tail(self) -> str:
        logs = sorted(self.tmp_path.parent.glob(f"{self.tmp_path.name}-*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in logs)

    def read(self, topic: str) -> list:
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, auto_offset_reset="earliest")
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            end = consumer.end_offsets([tp])[tp]
            out = []
            while consumer.position(tp) < end:
                for records in consumer.poll(timeout_ms=500).values():
                    out += records
            return out
        finally:
            consumer.close()

    def published(self) -> list[tuple[str, dict]]:
        return [(r.key.decode(), json.loads(r.value)) for r in self.read(self.results)]

    def late(self) -> set[tuple[int, int]]:
        """(partition, offset) of every record sent to the dead-letter topic as late (a re-read one appears twice)."""
        out = set()
        for r in self.read(self.dlq):
            headers = dict(r.headers)
            if headers["seqmon-reason"] == b"late":
                _, partition, offset = headers["seqmon-source"].decode().rsplit("/", 2)
                out.add((int(partition), int(offset)))
        return out

    def late_in_states(self, bundle: str) -> int:
        settings = load_settings(None, env={}, overrides=self.settings())
        log = Changelog({"bootstrap_servers": self.bootstrap}, self.changelog, bundle, settings.window.window_settings())
        try:
            log.refresh()
            states = log.topic_states(self.topic)
        finally:
            log.close()
        assert sorted(states) == list(range(PARTITIONS))
        return sum(s.late_records for s in states.values())


@pytest.mark.parametrize("client", ["kafka-python", "confluent"])
def test_a_fleet_with_a_kill_a_restart_and_a_join_publishes_what_one_daemon_publishes(
        kafka_bootstrap, bundle_path, tmp_path, client):
    topic = _name("stream")
    create_topic(kafka_bootstrap, topic, PARTITIONS)
    t0 = int(time.time() * 1000) // H * H - 7 * H  # recent hours: the broker keeps them; the last one closes too
    parts = make_stream(t0)
    # Every partition once more in hour 7 (never published): the watermark passes the end of hour 6.
    closers = [(p, t0 + 6 * H + 30 * 60_000, b"DF 36 FR GX567") for p in range(PARTITIONS)]
    total = sum(SIZES) + PARTITIONS
    hours = 6

    fleet = Run(kafka_bootstrap, bundle_path, topic, tmp_path, "fleet", client)
    try:
        produce(kafka_bootstrap, topic, parts[0])
        fleet.start("d1")
        fleet.start("d2")
        fleet.wait("both daemons hold partitions", lambda: fleet.partitions("d1") and fleet.partitions("d2"))
        fleet.wait("part 1 read", lambda: fleet.consumed("d1") + fleet.consumed("d2") >= len(parts[0]))
        before = fleet.consumed("d1") + fleet.consumed("d2")
        produce(kafka_bootstrap, topic, parts[1])
        # Kill the daemon that does not close (a closer killed between publishing and marking publishes again).
        victim, survivor = ("d2", "d1") if 0 in fleet.partitions("d1") else ("d1", "d2")
        fleet.wait("part 2 being read", lambda: fleet.consumed("d1") + fleet.consumed("d2") > before)
        fleet.kill(victim)  # in the middle of hour 3: its open windows die with it, unwritten work and all
        produce(kafka_bootstrap, topic, parts[2])
        fleet.wait("the survivor takes every partition", lambda: len(fleet.partitions(survivor)) == PARTITIONS)
        fleet.start(victim)  # started again later
        fleet.wait("the restarted daemon holds partitions", lambda: fleet.partitions(victim))
        fleet.start("d3")  # and a third joins mid-stream
        fleet.wait("the third holds partitions", lambda: fleet.partitions("d3"))
        produce(kafka_bootstrap, topic, parts[3] + closers)
        fleet.wait("every hour published", lambda: len({k for k, _ in fleet.published()}) >= hours, timeout=120)
        fleet.stop()
    finally:
        for name in list(fleet.daemons):
            fleet.kill(name)

    one = Run(kafka_bootstrap, bundle_path, topic, tmp_path, "one", client)
    try:
        one.start("a")
        one.wait("every hour published", lambda: len({k for k, _ in one.published()}) >= hours, timeout=120)
        assert one.consumed("a") == total
        one.stop()
    finally:
        for name in list(one.daemons):
            one.kill(name)

    a, b = one.published(), fleet.published()
    keys = [k for k, _ in b]
    assert len(keys) == len(set(keys)) == hours, f"published more than once: {Counter(keys).most_common(2)}"
    assert [k for k, _ in a] == keys == [f"{topic}/{t0 + h * H}" for h in range(hours)]
    bundle = load_bundle(bundle_path).content_hash
    late = one.late()
    assert fleet.late() == late and len(late) == one.late_in_states(bundle) == fleet.late_in_states(bundle) > 0
    assert {p for p, _ in late} == {DISORDERED}  # in-order partitions, zero lateness: none of theirs is late
    assert sum(f["count"] for _, f in a) + len(late) == total - PARTITIONS  # the closers wait in hour 7
    alpha = 0.001  # the sketch's relative accuracy
    for (key, x), (_, y) in zip(a, b, strict=True):
        assert (x["count"], x["weight"]) == (y["count"], y["weight"]), key
        for q in ("p50", "p90", "p99"):
            assert x[q] == pytest.approx(y[q], rel=2 * alpha), (key, q)
        # Errors are float32: a record scored in another batch can differ by ~1e-7 relative (README, "Scoring").
        assert x["mean_error"] == pytest.approx(y["mean_error"], rel=1e-6), key
        assert x["anomaly_rate"] == pytest.approx(y["anomaly_rate"], abs=1.01 / x["count"]), key
        for name in ("abnormality", "mean_percentile", "ks_shift_vs_previous", "tail_shift_vs_previous", "shift"):
            if x[name] is None:
                assert y[name] is None, (key, name)
            else:
                assert x[name] == pytest.approx(y[name], abs=0.5), (key, name)
        for name in ("decision", "compared_with", "statistic", "baseline_windows"):
            assert x[name] == y[name], (key, name)


def test_a_changelog_topic_that_deletes_old_records_stops_seqmon_run_with_one_line(kafka_bootstrap, bundle_path,
                                                                                    tmp_path):
    topic, plain = _name("stream"), _name("plain")
    create_topic(kafka_bootstrap, topic, 1)
    create_topic(kafka_bootstrap, plain, 1)  # cleanup.policy=delete: the state of quiet partitions would age out
    run = Run(kafka_bootstrap, bundle_path, topic, tmp_path, "refused")
    settings = [s for s in run.settings() if not s.startswith("state.changelog_topic=")]
    args = [sys.executable, "-m", "monitor.cli", "run", "--set", f"metrics.port={free_port()}",
            "--set", f"state.changelog_topic={plain}"]
    for setting in settings:
        args += ["--set", setting]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQMON_")}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last == (f"seqmon: error: changelog topic {plain} has cleanup.policy=delete: window state needs a "
                    "compacted topic (cleanup.policy=compact); set it, or name a new topic"), done.stderr[-2000:]
