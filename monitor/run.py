"""``seqmon run``: the Kafka daemon. A thin shell: Kafka, files, clocks and signals here; the maths in the pipeline.

One thread owns all running state (windows, offsets, bundle). Signals and APScheduler jobs only raise flags that the
poll loop acts on between batches, so no lock guards the window state and no record is half-processed when the
daemon checkpoints, reloads or stops.

Never lose or double-count: a checkpoint (open windows, the last closed window per topic, and the next offset of
every partition) is written atomically at every window close, every ``state.checkpoint_interval_seconds``, on a
partition revoke and at shutdown; the consumer group's offsets are committed right after, to the same values. On start
(and on every assignment) a partition resumes at the later of the checkpoint's offset and the group's committed offset:
the first when the daemon died between writing and committing, the second when another member owned the partition
since.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from monitor.baseline import Baseline
from monitor.bundle import load_bundle
from monitor.checkpoint import read_checkpoint, write_checkpoint
from monitor.decode import REASONS, decode_json, decode_plain
from monitor.errors import BundleError
from monitor.pipeline import Pipeline, RecordBatch
from monitor.window import ClosedWindow, Windower

log = logging.getLogger("seqmon")

#: Seconds between asking the source for its partitions' lags (a metric, and what makes a caught-up partition idle).
LAG_INTERVAL_SECONDS = 10


def _key(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def _unkey(key: str) -> tuple[str, int]:
    topic, _, partition = key.rpartition("/")
    return topic, int(partition)


class Daemon:
    """The running daemon, built from validated settings. ``run()`` blocks until SIGTERM / SIGINT or ``stop()``."""

    def __init__(self, settings, registry=None, clock=time.time):
        from prometheus_client import CollectorRegistry  # noqa: PLC0415

        from monitor.export import Metrics  # noqa: PLC0415

        self.settings = settings
        self.clock = clock
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.bundle_path = Path(settings.model.bundle)
        bundle = load_bundle(self.bundle_path)  # a broken bundle stops the daemon here, at start
        self._bundle_stamp = self._stamp()
        self.metrics.set_bundle(bundle.content_hash, str(bundle.metadata.get("created_at", "")), str(self.bundle_path))
        self.state_dir = Path(settings.state.directory)
        window_settings = settings.window.window_settings()
        checkpoint = read_checkpoint(self.state_dir)
        if checkpoint is not None:
            windower = Windower.from_snapshot(window_settings, checkpoint["windower"])
            self.offsets: dict[str, int] = dict(checkpoint.get("offsets", {}))
            log.info("restored checkpoint written at %s: %d partitions", checkpoint.get("written_at"), len(self.offsets))
        else:
            windower = Windower(window_settings)
            self.offsets = {}
        records = settings.records
        if records.format == "json":
            fields = records.json_fields()
            decode = lambda values: decode_json(values, fields, records.max_bytes)  # noqa: E731
        else:
            decode = lambda values: decode_plain(values, records.max_bytes)  # noqa: E731
        self.pipeline = Pipeline(bundle, windower, decode)
        # Beside the windows, not in them: the baseline belongs to the bundle and is reset with it.
        deviation = settings.deviation.deviation_settings()
        self.baseline = Baseline.from_snapshot(deviation, (checkpoint or {}).get("baseline"), bundle.content_hash)
        self.metrics.set_deviation_thresholds(deviation)
        self.closed_windows: list[ClosedWindow] = []  # kept for tests and the final log; bounded below
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._close_due = threading.Event()
        self._last_checkpoint = self.clock()
        self._last_lag = -math.inf
        self._invalid_since_log: Counter = Counter()
        self._last_invalid_log = 0.0
        self.source = None
        self.partitions: list[tuple[str, int]] = []  # assigned by the group, as (topic, partition)
        self.sink = None
        self._server = None
        self._scheduler = None

    # --- life cycle ------------------------------------------------------------------------------------------------

    def start(self, source=None, serve_metrics: bool = True) -> None:
        """Open the source (the Kafka consumer group unless another source is given), the sink and the metrics server.

        Any object with the ``KafkaSource`` methods can be the source; ``monitor.source.FileSource`` replays a file.
        """
        from monitor.export import serve  # noqa: PLC0415
        from monitor.kafka_source import KafkaSink, KafkaSource  # noqa: PLC0415

        k = self.settings.kafka
        if serve_metrics:
            m = self.settings.metrics
            self._server = serve(self.registry, m.host, m.port, m.web_config_file)
        if source is None:
            if k.dead_letter_topic or k.results_topic:
                self.sink = KafkaSink(k.producer_config())
                self.sink.check_writable(
                    {t: f"kafka.{n}" for n in ("dead_letter_topic", "results_topic") if (t := getattr(k, n))}
                )
            if k.client == "confluent":
                from monitor.confluent_source import ConfluentSource  # noqa: PLC0415

                source_class = ConfluentSource
            else:
                source_class = KafkaSource
            source = source_class(
                k.consumer_config(),
                topics=list(k.topics) if not k.topic_pattern else None,
                pattern=k.topic_pattern or None,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
            )
        self.source = source
        assigned = self.source.assignment()
        # A source that knows its partitions at start (a file) resumes where the checkpoint left off; a consumer
        # group's partitions arrive later, through _on_assign.
        restored = {(t, p): self.offsets[_key(t, p)] for t, p in assigned if _key(t, p) in self.offsets}
        if restored:
            self.source.seek(restored)
            log.info("resuming %s", ", ".join(f"{_key(t, p)} at {o}" for (t, p), o in sorted(restored.items())))
        self.pipeline.windower.assign(assigned, now_ms=int(self.clock() * 1000))
        for topic in {t for t, _ in assigned}:
            self.metrics.init_topic(topic, REASONS)
        self._start_scheduler()
        log.info("seqmon running: bundle %s, metrics on %s:%d", self.bundle_path, self.settings.metrics.host, self.settings.metrics.port)

    def _start_scheduler(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler  # noqa: PLC0415

        scheduler = BackgroundScheduler(timezone="UTC")
        if self.settings.window.idle_close_interval_seconds:
            scheduler.add_job(self._close_due.set, "interval", seconds=self.settings.window.idle_close_interval_seconds)
        if self.settings.model.watch_interval_seconds:
            scheduler.add_job(self._watch_bundle, "interval", seconds=self.settings.model.watch_interval_seconds)
        scheduler.start()
        self._scheduler = scheduler

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Poll, process, checkpoint until stopped; then finish the batch, checkpoint, commit and close."""
        if self.source is None:
            self.start()
        b = self.settings.batch
        try:
            while not self._stop.is_set():
                batch = self.source.poll(b.max_latency_ms, b.max_records)
                if batch is not None:
                    self.process(batch)
                elif self.source.finished:
                    if getattr(self.source, "final", True):
                        self._close_all()
                    break
                self._between_batches()
        finally:
            self.shutdown()

    def _between_batches(self) -> None:
        now = self.clock()
        if self._reload.is_set():
            self._reload.clear()
            self.reload_bundle()
        if self._close_due.is_set():
            self._close_due.clear()
            closed = self.pipeline.windower.close_due(int(now * 1000))
            if closed:
                self._emit(closed, now)
                self.checkpoint()
        if now - self._last_checkpoint >= self.settings.state.checkpoint_interval_seconds:
            self.checkpoint()
        if now - self._last_lag >= LAG_INTERVAL_SECONDS:
            self._last_lag = now
            self.report_lags(now)
        if self._invalid_since_log and now - self._last_invalid_log >= self.settings.log.invalid_log_interval_seconds:
            log.warning("invalid records since the last report: %s", dict(self._invalid_since_log))
            self._invalid_since_log.clear()
            self._last_invalid_log = now

    def report_lags(self, now: float) -> None:
        """Tell the windower how far behind each assigned partition is: a caught-up partition stops holding its
        topic's windows open, which may close some."""
        lags = self.source.lag()
        for (topic, partition), lag in lags.items():
            self.metrics.set_lag(topic, partition, lag)
        windower = self.pipeline.windower
        closed = windower.report_lags(lags, now_ms=int(now * 1000))
        self.metrics.set_progress(
            windower.progress(now_ms=int(now * 1000)), {t: windower.watermark_ms(t) for t in windower.topics()}
        )
        if closed:
            self._emit(closed, now)
            self.checkpoint()

    def _close_all(self) -> None:
        """End of a finite source: close every open window, as the wall clock would once the stream went idle."""
        closed = self.pipeline.windower.close_all()
        if closed:
            self._emit(closed, self.clock())

    def shutdown(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if self.source is not None:
            try:
                self.checkpoint()
            finally:
                self.source.close()
                self.source = None
        if self.sink is not None:
            self.sink.flush()
            self.sink.close()
            self.sink = None
        if self._server is not None:
            server, thread = self._server
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._server = None
        log.info("seqmon stopped")

    # --- one batch -------------------------------------------------------------------------------------------------

    def process(self, batch: RecordBatch) -> None:
        started = time.perf_counter()
        now = self.clock()
        result = self.pipeline.process(
            batch, max_event_ms=int((now + self.settings.window.max_future_seconds) * 1000), now_ms=int(now * 1000)
        )
        for p_key, offset in _next_offsets(batch).items():
            self.offsets[p_key] = max(self.offsets.get(p_key, 0), offset)
        duration = time.perf_counter() - started
        topics = batch.topics
        for i, topic in enumerate(np.unique(topics.astype(str)) if len(topics) else []):
            mine = topics == topic
            reasons = result.reasons[mine]
            bad = Counter(r for r in reasons[reasons != ""].tolist())
            scored = result.errors[mine & (result.reasons == "")]
            self.metrics.record_batch(
                topic=str(topic),
                consumed=int(mine.sum()),
                scored_errors=scored,
                anomalies=int(self.pipeline.bundle.is_anomaly(scored).sum()),
                late=int((result.late & mine).sum()),
                invalid_by_reason=dict(bad),
                duration_s=duration if i == 0 else None,
            )
            self._invalid_since_log.update(bad)
        if self.sink is not None and self.settings.kafka.dead_letter_topic:
            dead = np.flatnonzero((result.reasons != "") | result.late)
            if len(dead):
                reasons = ["late" if result.late[i] else result.reasons[i] for i in dead]
                sources = [(str(batch.topics[i]), int(batch.partitions[i]), int(batch.offsets[i])) for i in dead]
                self.sink.dead_letters(self.settings.kafka.dead_letter_topic, [batch.values[i] for i in dead], reasons, sources)
        if result.closed:
            self._emit(result.closed, now)
            self.checkpoint()

    def _emit(self, closed: list[ClosedWindow], now: float) -> None:
        for window in closed:
            figures = self.baseline.assess(window)
            self.metrics.record_closed_window(window, now)
            log.info("window closed %s", json.dumps(figures, allow_nan=True, default=float), extra={"fields": {"window": figures}})
            if self.sink is not None and self.settings.kafka.results_topic:
                self.sink.result(self.settings.kafka.results_topic, f"{window.topic}/{window.start_ms}", figures)
        self.closed_windows.extend(closed)
        del self.closed_windows[:-1000]

    # --- state -----------------------------------------------------------------------------------------------------

    def checkpoint(self, keys: list[str] | None = None) -> None:
        """Write the checkpoint, then commit the same offsets to the group (those of ``keys``, or all assigned)."""
        now = self.clock()
        if self.sink is not None:
            self.sink.flush()  # dead letters and results before the offsets that cover them
        write_checkpoint(self.state_dir, {
            "written_at": now,
            "windower": self.pipeline.windower.snapshot(),
            "offsets": dict(self.offsets),
            "bundle": self.pipeline.bundle.content_hash,
            "baseline": self.baseline.snapshot(),
        })
        self.metrics.record_checkpoint(now)
        self._last_checkpoint = now
        if self.source is not None:
            assigned = {_key(t, p) for t, p in self.source.assignment()}
            wanted = assigned if keys is None else set(keys)
            commit = {_unkey(k): v for k, v in self.offsets.items() if k in wanted}
            if commit:
                self.source.commit(commit)

    def _on_revoke(self, partitions: list[tuple[str, int]]) -> None:
        self.partitions = [tp for tp in self.partitions if tp not in set(partitions)]
        self.checkpoint([_key(t, p) for t, p in partitions])
        self.pipeline.windower.revoke(partitions)  # their watermarks leave with them
        for topic, partition in partitions:
            self.metrics.remove_lag(topic, partition)

    def _on_assign(self, partitions: list[tuple[str, int]]) -> None:
        committed = self.source.committed(partitions) if partitions else {}
        seek = {}
        for topic, partition in partitions:
            ours = self.offsets.get(_key(topic, partition))
            theirs = committed.get((topic, partition))
            if ours is not None and (theirs is None or ours > theirs):
                seek[(topic, partition)] = ours
            elif theirs is not None:
                self.offsets[_key(topic, partition)] = theirs
        if seek:
            self.source.seek(seek)
        # New partitions hold their topics' windows open until they deliver or turn out idle.
        self.pipeline.windower.assign(partitions, now_ms=int(self.clock() * 1000))
        self._last_lag = -math.inf  # ask for lags at the next pause: an empty partition is then idle at once
        self.partitions = sorted(set(self.partitions) | set(partitions))
        for topic in {t for t, _ in partitions}:
            self.metrics.init_topic(topic, REASONS)
        log.info("assigned %s", ", ".join(_key(t, p) for t, p in partitions) or "nothing")

    # --- bundle ----------------------------------------------------------------------------------------------------

    def _stamp(self):
        try:
            return (self.bundle_path / "bundle.json").stat().st_mtime_ns
        except OSError:
            return None

    def _watch_bundle(self) -> None:
        if self._stamp() != self._bundle_stamp:
            self._reload.set()

    def reload_bundle(self) -> bool:
        """Load the bundle again; a bundle that fails to load is counted and the old one keeps scoring."""
        self._bundle_stamp = self._stamp()
        try:
            bundle = load_bundle(self.bundle_path)
        except BundleError as e:
            log.error("bundle reload failed, still scoring with %s: %s", self.pipeline.bundle.content_hash, e)
            self.metrics.record_reload(False)
            return False
        self.pipeline.bundle = bundle
        if bundle.content_hash != self.baseline.bundle:  # errors of two bundles are not on one scale
            self.baseline.reset(bundle.content_hash)
        self.metrics.record_reload(True)
        self.metrics.set_bundle(bundle.content_hash, str(bundle.metadata.get("created_at", "")), str(self.bundle_path))
        log.info("bundle reloaded: %s", bundle.content_hash)
        return True


def _next_offsets(batch: RecordBatch) -> dict[str, int]:
    """Next offset to read of every partition in the batch (its largest offset + 1), without a loop over records."""
    if batch.partitions is None or batch.offsets is None or not len(batch):
        return {}
    names, codes = np.unique(batch.topics.astype(str), return_inverse=True)
    combined = (codes.astype(np.int64) << 32) | batch.partitions.astype(np.int64)
    keys, inverse = np.unique(combined, return_inverse=True)
    largest = np.full(len(keys), -1, dtype=np.int64)
    np.maximum.at(largest, inverse, batch.offsets.astype(np.int64))
    return {_key(str(names[k >> 32]), int(k & 0xFFFFFFFF)): int(o) + 1 for k, o in zip(keys.tolist(), largest.tolist())}


# --- CLI ---------------------------------------------------------------------------------------------------------------


def cmd_run(args) -> int:
    from monitor.config import load_settings  # noqa: PLC0415
    from monitor.logs import configure_logging  # noqa: PLC0415

    overrides = list(args.set or [])
    if args.log_format:
        overrides.append(f"log.format={args.log_format}")
    settings = load_settings(args.config, overrides=overrides)
    configure_logging(settings.log.level, settings.log.format)
    daemon = Daemon(settings)
    daemon.install_signal_handlers()
    daemon.start()
    daemon.run()
    return 0


def register(sub) -> None:
    r = sub.add_parser("run", help="the Kafka daemon: score a stream, close hourly windows, serve Prometheus metrics")
    r.add_argument("--config", help="TOML settings file (see config/seqmon.toml)")
    r.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one setting (repeatable)")
    r.add_argument("--log-format", choices=("text", "json"), help="log lines as text or one JSON object each (log.format)")
    r.set_defaults(func=cmd_run)

