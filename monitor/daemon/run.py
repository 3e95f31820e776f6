"""``seqmon run``: the Kafka daemon. A thin shell: Kafka, files, clocks and signals here; the maths in the pipeline.

The shell's parts: a :class:`monitor.source.Source` hands over record batches and owns the partitions (the Kafka
consumer groups of ``monitor.source.kafka_source`` / ``monitor.source.confluent_source``, a file, or memory);
:class:`monitor.daemon.offsets.Offsets` keeps the next offset of every partition; a :class:`monitor.export.sink.Sink` takes dead
letters and results; :class:`monitor.pipeline.Pipeline` decodes, scores and windows; ``monitor.export.metrics.Metrics`` and
the checkpoint record what happened. :class:`Daemon` wires them and runs the loop.

One thread owns all running state (windows, offsets, bundle). Signals only raise flags that the loop acts on between
batches, and timers (idle closing, bundle watch, checkpoints, lags) are due by the injected clock, checked there too,
so no lock guards the window state and no record is half-processed when the daemon checkpoints, reloads or stops.

Never lose or double-count: a checkpoint (open windows, the last closed window per topic, the next offset of
every partition, and the bundle that scores them, which a restart must run too) is written atomically at every window close, every ``state.checkpoint_interval_seconds``, on a
partition revoke and at shutdown; the consumer group's offsets are committed right after, to the same values. On start
(and on every assignment) a partition resumes at the later of the checkpoint's offset and the group's committed offset:
the first when the daemon died between writing and committing, the second when another member owned the partition
since.

Fleet mode (``state.changelog_topic`` set): the windows are fleet-wide. Each partition's partial windows and the
offset they cover live in the changelog topic (:class:`monitor.daemon.fleet.FleetWindows`), written every
``state.checkpoint_interval_seconds`` and on revocation before the group's offsets are committed; a partition resumes
where its state says, whichever daemon gets it. The owner of a topic's partition 0 merges the written states, judges
and publishes each window once; only it reports that topic's window figures. ``state.directory`` is not used.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from monitor.baseline import Baseline
from monitor.bundle import load_bundle
from monitor.daemon.checkpoint import CHECKPOINT_NAME, read_checkpoint, write_checkpoint
from monitor.daemon.offsets import Offsets, key, next_offsets, unkey
from monitor.decode import REASONS, decode_json, decode_plain
from monitor.errors import BundleError, ConfigError, KafkaAccessError, MonitorError, StateError
from monitor.partials import CLOSING_PARTITION
from monitor.pipeline import BatchResult, Pipeline, RecordBatch
from monitor.source import FileSource
from monitor.window import ClosedWindow, Windower

log = logging.getLogger("seqmon")

#: Seconds between asking the source for its partitions' lags (a metric, and what makes a caught-up partition idle).
LAG_INTERVAL_SECONDS = 10


def _window_name(window) -> str:
    """``topic [start, end)`` of a window, in UTC ISO 8601, for a log line."""
    start, end = (datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                  for ms in (window.start_ms, window.end_ms))
    return f"{window.topic} [{start}, {end})"


class Every:
    """A timer on the injected clock: ``due(now)`` is true once ``seconds`` have passed since it was last true (or
    since ``start``); 0 seconds: never due."""

    def __init__(self, seconds: float, start: float):
        self.seconds = seconds
        self.last = start

    def due(self, now: float) -> bool:
        if not self.seconds or now - self.last < self.seconds:
            return False
        self.last = now
        return True


class Daemon:
    """The running daemon, built from validated settings. ``run()`` blocks until SIGTERM / SIGINT, ``stop()`` or the
    end of a finite source; ``step()`` is one turn of its loop. ``clock`` gives UTC epoch seconds."""

    def __init__(self, settings, registry=None, clock=time.time):
        from prometheus_client import CollectorRegistry  # noqa: PLC0415

        from monitor.export.metrics import Metrics  # noqa: PLC0415

        self.settings = settings
        self.clock = clock
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.bundle_path = Path(settings.model.bundle)
        bundle = load_bundle(self.bundle_path)  # a broken bundle stops the daemon here, at start
        self._bundle_stamp = self._stamp()
        self.metrics.set_bundle(bundle.content_hash, str(bundle.metadata.get("created_at", "")), str(self.bundle_path))
        self.state_dir = Path(settings.state.directory)
        window_settings = self.window_settings = settings.window.window_settings()
        #: Fleet-wide windows through the changelog (fleet mode), made by :meth:`start`; None: this daemon's own.
        self.fleet = None
        self.changelog = None
        self._changelog_written = (0, 0)
        self._late_after_publication: Counter = Counter()
        checkpoint = None if settings.state.changelog_topic else read_checkpoint(self.state_dir)
        if checkpoint is not None:
            windower = self._restore_windows(checkpoint, bundle.content_hash)
            self.offsets = Offsets.from_snapshot(checkpoint.get("offsets"))
            log.info("restored checkpoint written at %s: %d partitions", checkpoint.get("written_at"), len(self.offsets))
        else:
            windower = Windower(window_settings)
            self.offsets = Offsets()
        records = settings.records
        if records.format == "json":
            fields = records.json_fields()
            decode = lambda values: decode_json(values, fields, records.max_bytes)  # noqa: E731
        else:
            decode = lambda values: decode_plain(values, records.max_bytes)  # noqa: E731
        self.pipeline = Pipeline(bundle, windower, decode)
        # Beside the windows, not in them: the baseline belongs to the bundle and is reset with it.
        deviation = self.deviation = settings.deviation.deviation_settings()
        self.baseline = Baseline.from_snapshot(deviation, (checkpoint or {}).get("baseline"), bundle.content_hash)
        self.metrics.set_deviation_thresholds(deviation)
        self.closed_windows: list[ClosedWindow] = []  # kept for tests and the final log; bounded below
        self._stop = threading.Event()
        self._reload = threading.Event()
        now = self.clock()
        self._last_checkpoint = now
        self._idle_close = Every(settings.window.idle_close_interval_seconds, now)
        self._bundle_watch = Every(settings.model.watch_interval_seconds, now)
        self._last_lag = -math.inf
        self._invalid_since_log: Counter = Counter()
        self._last_invalid_log = 0.0
        self.source = None
        self.partitions: list[tuple[str, int]] = []  # assigned by the group, as (topic, partition)
        self._assignment_changed = False  # reported between batches: counting a topic's partitions may ask Kafka
        self.sink = None
        self._server = None
        #: An error raised inside a rebalance callback (where the consumer client would wrap it in its own), raised
        #: again by :meth:`step` before anything else is read or written.
        self._fatal: MonitorError | None = None

    def _restore_windows(self, checkpoint: dict, bundle: str) -> Windower:
        """The windows of the checkpoint, which names the bundle whose scores they hold. Another bundle's open windows
        cannot go on (errors of two bundles are not on one scale): refused in one line, or with
        ``state.on_bundle_change = "discard"`` dropped with their previous windows (the baseline resets on its own).
        A checkpoint without open windows holds nothing to lose, and only its figures are dropped."""
        written_by = checkpoint.get("bundle") or None  # None: written before checkpoints named their bundle
        try:
            windower = Windower.from_snapshot(self.window_settings, checkpoint["windower"], bundle=written_by)
        except StateError as e:  # another geometry or version: say which directory holds it
            raise StateError(f"state directory {self.state_dir}: {e}") from None
        if written_by is None or written_by == bundle:
            return windower
        holding = [w for w in windower.open_windows() if w.aggregate.count]
        if holding and self.settings.state.on_bundle_change != "discard":
            raise StateError(
                f"state directory {self.state_dir} holds open windows scored by bundle {written_by}, but "
                f"{self.bundle_path} is bundle {bundle}, and errors of two bundles are not on one scale: start with "
                f"bundle {written_by} again, or move or delete {self.state_dir}, or set state.on_bundle_change=discard "
                "(--set state.on_bundle_change=discard) to drop those windows and start them afresh"
            )
        dropped = windower.discard_figures()
        records = sum(w.aggregate.count for w in dropped)
        shown = "; ".join(f"{_window_name(w)}: {w.aggregate.count}" for w in dropped[:10])
        log.warning(
            "dropped the window state of bundle %s in %s (this daemon scores with bundle %s): %d open window(s) "
            "holding %d record(s)%s, the previous window of each topic and the baseline; reading resumes at the "
            "checkpoint's offsets, so those records count in no window", written_by, self.state_dir, bundle,
            len(dropped), records, f" ({shown}{'; …' if len(dropped) > 10 else ''})" if dropped else "",
        )
        return windower

    # --- life cycle ------------------------------------------------------------------------------------------------

    def start(self, source=None, sink=None, serve_metrics: bool = True, changelog=None) -> None:
        """Open the source and the sink (the Kafka consumer group and producer of the settings unless a
        :class:`monitor.source.Source` is given, with an optional :class:`monitor.export.sink.Sink`) and the metrics server;
        in fleet mode also the changelog (created if missing, unless a :class:`monitor.daemon.changelog.Changelog` is
        given)."""
        from monitor.export.metrics import serve  # noqa: PLC0415

        fleet_mode = bool(self.settings.state.changelog_topic)
        if fleet_mode and changelog is None and isinstance(source, FileSource):
            raise ConfigError(
                "state.changelog_topic (fleet mode) is for the consumer group of seqmon run; a replay of a file keeps "
                "its windows in state.directory: unset state.changelog_topic"
            )
        if serve_metrics:
            m = self.settings.metrics
            self._server = serve(self.registry, m.host, m.port, m.web_config_file)
        if source is None:
            source, sink = open_kafka(self.settings.kafka)
        self.source, self.sink = source, sink
        if fleet_mode:
            try:
                self._start_fleet(changelog)
            except BaseException:
                self.source.close()  # nothing assigned yet: nothing to write
                self.source = None
                self._close_outputs()
                raise
        # A source with fixed partitions assigns them now.
        self.source.listen(self._on_assign, self._on_revoke, self._on_lost)
        now = self.clock()
        self._idle_close.last = self._bundle_watch.last = now
        log.info("seqmon running: bundle %s, metrics on %s:%d", self.bundle_path, self.settings.metrics.host, self.settings.metrics.port)

    def _start_fleet(self, changelog) -> None:
        from monitor.daemon.fleet import FleetWindows  # noqa: PLC0415
        from monitor.partials import PartitionWindows  # noqa: PLC0415

        state = self.settings.state
        if changelog is None:
            from monitor.daemon.changelog import Changelog  # noqa: PLC0415

            changelog = Changelog(self.settings.kafka.producer_config(), state.changelog_topic,
                                  self.pipeline.bundle.content_hash, self.window_settings)
            try:
                changelog.ensure_topic(replication_factor=state.changelog_replication_factor)
            except BaseException:
                changelog.close()
                raise
        self.changelog = changelog
        self.fleet = FleetWindows(
            PartitionWindows(self.window_settings), changelog, changelog.partitions_of, sink=self.sink,
            results_topic=self.settings.kafka.results_topic or None, assess=self._assess,
            end_offsets=changelog.end_offsets,
        )
        if (self.state_dir / CHECKPOINT_NAME).exists():
            log.info("fleet mode: the checkpoint in %s is not used; window state is in changelog %s",
                     self.state_dir, state.changelog_topic)

    def _assess(self, windows: list[ClosedWindow], stored: dict | None) -> dict:
        """The closing daemon's judgement of a topic's windows, against the baseline carried in the topic's marker
        (so it moves with the topic's partition 0)."""
        baseline = Baseline.from_snapshot(self.deviation, stored, self.pipeline.bundle.content_hash)
        for window in windows:
            baseline.assess(window)
        return baseline.snapshot()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Poll, process, checkpoint until stopped or a finite source ends; then checkpoint, commit and close."""
        if self.source is None:
            self.start()
        try:
            while not self._stop.is_set() and self.step():
                pass
            if self._fatal is not None:
                raise self._fatal
        finally:
            self.shutdown()

    def step(self) -> bool:
        """One poll, its batch, and what is due after it; False once a finite source is read to its end."""
        batch = self.source.poll(self.settings.batch.max_latency_ms, self.settings.batch.max_records)
        if self._fatal is not None:
            raise self._fatal
        if batch is not None:
            self.process(batch)
        elif self.source.finished:
            if self.fleet is not None:
                # Everything was delivered: every partition is idle, and the windows its records close are due.
                self.fleet.report_lags(dict.fromkeys(self.fleet.windows.owned(), 0))
                self.checkpoint()
            elif getattr(self.source, "final", True):
                self._emit(self.pipeline.windower.close_all(), self.clock())  # the input ended: so did its windows
            return False
        self._between_batches(self.clock())
        return True

    def _between_batches(self, now: float) -> None:
        if self._assignment_changed:
            self._report_assignment()
        if self._bundle_watch.due(now):
            self._watch_bundle()
        if self._reload.is_set():
            self._reload.clear()
            self.reload_bundle()
        if self._idle_close.due(now):
            if self.fleet is not None:
                self.checkpoint(wall_clock=True)
            elif self._emit(self.pipeline.windower.close_due(int(now * 1000)), now):
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

    def _report_assignment(self) -> None:
        """How many of each topic's partitions this daemon reads (gauges). Without a changelog, a topic read here in
        part has windows of this daemon's share only: one warning per topic and assignment says so."""
        self._assignment_changed = False
        mine = Counter(t for t, _ in self.partitions)
        try:
            totals = self.source.partition_counts(sorted(mine)) if mine else {}
        except Exception as e:  # advisory, as lags are: a busy broker must not stop the daemon
            log.warning("could not read how many partitions %s have: %s", ", ".join(sorted(mine)), e)
            totals = {}
        self.metrics.set_partitions(mine, totals)
        if self.fleet is not None:
            return
        for topic, count in sorted(mine.items()):
            if count < totals.get(topic, 0):
                log.warning(
                    "topic %s: this daemon reads %d of its %d partitions (other members of consumer group %s read the "
                    "rest), so its windows and their figures, shift and decision cover those %d only; set "
                    "state.changelog_topic on every member for fleet-wide windows",
                    topic, count, totals[topic], self.settings.kafka.group_id, count,
                )

    def report_lags(self, now: float) -> None:
        """Tell the windower how far behind each assigned partition is: a caught-up partition stops holding its
        topic's windows open, which may close some."""
        try:
            lags = self.source.lag()
        except Exception as e:  # lags are advisory: a broker too busy to answer must not stop the daemon
            log.warning("could not read partition lags (asking again in %d s): %s", LAG_INTERVAL_SECONDS, e)
            return
        for (topic, partition), lag in lags.items():
            self.metrics.set_lag(topic, partition, lag)
        if self.fleet is not None:  # windows close after the states are written (checkpoint)
            self.fleet.report_lags(lags)
            markers = {t: self.changelog.marker(t) for t in {t for t, _ in self.fleet.windows.owned()}}
            self.metrics.set_progress(
                self.fleet.windows.progress(now_ms=int(now * 1000)),
                {t: m.watermark_ms for t, m in markers.items() if m is not None},
            )
            return
        windower = self.pipeline.windower
        closed = windower.report_lags(lags, now_ms=int(now * 1000))
        self.metrics.set_progress(
            windower.progress(now_ms=int(now * 1000)), {t: windower.watermark_ms(t) for t in windower.topics()}
        )
        if self._emit(closed, now):
            self.checkpoint()

    def shutdown(self) -> None:
        if self.source is not None:
            try:
                if self._fatal is None:  # after a refused state, write nothing that could overwrite it
                    self.checkpoint()
            finally:
                self.source.close()
                self.source = None
        self._close_outputs()
        log.info("seqmon stopped")

    def _close_outputs(self) -> None:
        if self.changelog is not None:
            self.changelog.close()
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

    # --- one batch -------------------------------------------------------------------------------------------------

    def process(self, batch: RecordBatch) -> None:
        started = time.perf_counter()
        now = self.clock()
        w = self.settings.window
        max_event_ms = int((now + w.max_future_seconds) * 1000)
        min_event_ms = int((now - w.max_past_seconds) * 1000) if w.max_past_seconds else None
        covered = None
        if self.fleet is not None:
            result, covered = self._process_fleet(batch, max_event_ms, int(now * 1000), min_event_ms)
        else:
            result = self.pipeline.process(
                batch, max_event_ms=max_event_ms, now_ms=int(now * 1000), min_event_ms=min_event_ms
            )
            self.offsets.advance(batch)
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
            if covered is not None and (covered & mine).any():
                self.metrics.record_covered(str(topic), int((covered & mine).sum()))
        if self.sink is not None and self.settings.kafka.dead_letter_topic:
            dead = np.flatnonzero((result.reasons != "") | result.late)
            if len(dead):
                reasons = ["late" if result.late[i] else result.reasons[i] for i in dead]
                sources = [(str(batch.topics[i]), int(batch.partitions[i]), int(batch.offsets[i])) for i in dead]
                self.sink.dead_letters(self.settings.kafka.dead_letter_topic, [batch.values[i] for i in dead], reasons, sources)
        if self._emit(result.closed, now):
            self.checkpoint()

    def _process_fleet(
        self, batch: RecordBatch, max_event_ms: int, now_ms: int, min_event_ms: int | None = None
    ) -> tuple[BatchResult, np.ndarray]:
        """Score a batch and add it to its partitions' partial windows; returns its result and which records the
        partitions' states already covered (read again, not counted)."""
        if batch.partitions is None or batch.offsets is None:
            raise ValueError("fleet mode needs records with partitions and offsets (a Kafka source)")
        scored = self.pipeline.score(batch, max_event_ms, min_event_ms)
        rows = scored.scored
        late_scored, covered_scored = self.fleet.add(
            batch.topics[rows], scored.event_ms, scored.errors[rows], scored.weights, scored.percentiles,
            scored.is_anomaly, batch.partitions[rows], batch.offsets[rows], now_ms=now_ms,
        )
        self.fleet.windows.advance({unkey(k): v for k, v in next_offsets(batch).items()})
        late = np.zeros(len(batch), dtype=bool)
        late[rows[late_scored]] = True
        covered = np.zeros(len(batch), dtype=bool)
        covered[rows[covered_scored]] = True
        return scored.result([], late), covered

    def _emit(self, closed: list[ClosedWindow], now: float) -> bool:
        """Assess, record and send closed windows (in fleet mode they come assessed and published); True if there
        were any."""
        for window in closed:
            figures = self.baseline.assess(window) if self.fleet is None else window.figures()
            self.metrics.record_closed_window(window, now)
            log.info("window closed %s", json.dumps(figures, allow_nan=True, default=float), extra={"fields": {"window": figures}})
            if self.fleet is None and self.sink is not None and self.settings.kafka.results_topic:
                self.sink.result(self.settings.kafka.results_topic, f"{window.topic}/{window.start_ms}", figures)
        self.closed_windows.extend(closed)
        del self.closed_windows[:-1000]
        return bool(closed)

    # --- state -----------------------------------------------------------------------------------------------------

    def checkpoint(self, partitions: list[tuple[str, int]] | None = None, wall_clock: bool = False) -> None:
        """Write the checkpoint, then commit the same offsets to the group (those of ``partitions``, or all
        assigned). In fleet mode: write the changed partition states to the changelog, commit their offsets, then
        close and publish the windows they allow (``wall_clock``: also those of quiet topics, by the clock)."""
        now = self.clock()
        self._forget_quiet_topics(now)
        if self.sink is not None:
            self.sink.flush()  # dead letters and results before the offsets that cover them
        if self.fleet is not None:
            self._checkpoint_fleet(now, wall_clock)
            return
        write_checkpoint(self.state_dir, {
            "written_at": now,
            "windower": self.pipeline.windower.snapshot(bundle=self.pipeline.bundle.content_hash or None),
            "offsets": self.offsets.snapshot(),
            "bundle": self.pipeline.bundle.content_hash,  # the bundle that scores now: a restart must run it
            "baseline": self.baseline.snapshot(),
        })
        self.metrics.record_checkpoint(now)
        self._last_checkpoint = now
        if self.source is not None:
            commit = self.offsets.to_commit(self.source.assignment() if partitions is None else partitions)
            if commit:
                self.source.commit(commit)

    def _forget_quiet_topics(self, now: float) -> None:
        """Keep the checkpoint bounded by the topics active within ``window.max_past_seconds``: a topic no longer
        read here and with nothing newer than that has its last open windows closed (emitted as usual) and is then
        dropped (windows, baseline, offsets)."""
        max_past = self.settings.window.max_past_seconds
        if not max_past:
            return
        before_ms = int((now - max_past) * 1000)
        closed = self.pipeline.windower.close_abandoned(before_ms)
        if closed:
            self._emit(closed, now)
        gone = self.pipeline.windower.forget_quiet_topics(before_ms)
        if not gone:
            return
        self.baseline.forget(gone)
        assigned = {t for t, _ in self.source.assignment()} if self.source is not None else set()
        dropped = set(gone) - assigned
        self.offsets.forget_topics(dropped)
        log.info("forgot the state of %d topic(s) quiet for over %d s: %s", len(gone), max_past, ", ".join(gone))

    def _checkpoint_fleet(self, now: float, wall_clock: bool) -> None:
        offsets = self.fleet.commit(now_ms=int(now * 1000))
        self.metrics.record_checkpoint(now)
        self._last_checkpoint = now
        if self.source is not None and offsets:
            self._commit_fleet_offsets(offsets)
        self._emit(self.fleet.close(wall_clock_ms=int(now * 1000) if wall_clock else None), now)
        self._fleet_metrics()

    def _commit_fleet_offsets(self, offsets: dict) -> None:
        """In fleet mode the group's offsets only show lag: the changelog decides where a partition resumes. So a
        commit the group refuses in a rebalance (an evicted or departed member: ``UNKNOWN_MEMBER_ID``) is logged, not
        fatal; a missing right still stops the daemon."""
        try:
            self.source.commit(offsets)
        except KafkaAccessError:
            raise
        except Exception as exc:  # noqa: BLE001  (any client's commit error: the state is already in the changelog)
            log.warning("offset commit refused (the changelog holds the position, so nothing is lost): %s", exc)

    def _fleet_metrics(self) -> None:
        """Bring the counters kept by the changelog and the fleet windows into the metrics."""
        written = (self.changelog.records_written, self.changelog.bytes_written)
        self.metrics.record_changelog(written[0] - self._changelog_written[0], written[1] - self._changelog_written[1])
        self._changelog_written = written
        for topic, count in self.fleet.late_after_publication_by_topic.items():
            if count > self._late_after_publication[topic]:
                self.metrics.record_late_after_publication(topic, count - self._late_after_publication[topic])
                self._late_after_publication[topic] = count

    def _on_revoke(self, partitions: list[tuple[str, int]]) -> None:
        self.partitions = [tp for tp in self.partitions if tp not in set(partitions)]
        self._assignment_changed = True
        if self.fleet is not None:
            if self._fatal is not None:
                return
            if self.sink is not None:
                self.sink.flush()
            offsets = self.fleet.on_revoke(partitions, now_ms=int(self.clock() * 1000))
            if offsets:
                self._commit_fleet_offsets(offsets)
            self._fleet_metrics()
            self._stop_closing(partitions)
            for topic, partition in partitions:
                self.metrics.remove_lag(topic, partition)
            return
        self.checkpoint(partitions)
        self.pipeline.windower.revoke(partitions)  # their watermarks leave with them
        for topic, partition in partitions:
            self.metrics.remove_lag(topic, partition)

    def _stop_closing(self, partitions: list[tuple[str, int]]) -> None:
        """Topics whose partition 0 left: their windows are closed and reported by its new owner from now on."""
        for topic, partition in partitions:
            if partition == CLOSING_PARTITION:
                self.metrics.forget_window(topic)

    def _on_lost(self, partitions: list[tuple[str, int]]) -> None:
        """Partitions taken by an eviction: another member may own them already, so in fleet mode nothing is
        written for them (its writes would race the new owner's)."""
        if self.fleet is None:
            self._on_revoke(partitions)
            return
        self.partitions = [tp for tp in self.partitions if tp not in set(partitions)]
        self._assignment_changed = True
        self.fleet.on_lost(partitions)
        self._stop_closing(partitions)
        for topic, partition in partitions:
            self.metrics.remove_lag(topic, partition)
        log.warning("lost %s to an eviction: their unwritten work will be read again by their new owner",
                    ", ".join(key(t, p) for t, p in partitions))

    def _on_assign(self, partitions: list[tuple[str, int]]) -> None:
        if self.fleet is not None:
            try:
                seek = self.fleet.on_assign(partitions, now_ms=int(self.clock() * 1000))
            except MonitorError as exc:  # a state of another bundle, version or geometry; the changelog unreadable
                log.error("cannot take over %s: %s", ", ".join(key(t, p) for t, p in partitions), exc)
                self._fatal = exc
                self._stop.set()
                return
            self._fleet_metrics()
        else:
            seek = self.offsets.resume(partitions, self.source.committed(partitions) if partitions else {})
        if seek:
            self.source.seek(seek)
            log.info("resuming %s", ", ".join(f"{key(t, p)} at {o}" for (t, p), o in sorted(seek.items())))
        # New partitions hold their topics' windows open until they deliver or turn out idle.
        if self.fleet is None:
            self.pipeline.windower.assign(partitions, now_ms=int(self.clock() * 1000))
        self._last_lag = -math.inf  # ask for lags at the next pause: an empty partition is then idle at once
        self.partitions = sorted(set(self.partitions) | set(partitions))
        self._assignment_changed = True
        for topic in {t for t, _ in partitions}:
            self.metrics.init_topic(topic, REASONS)
        log.info("assigned %s", ", ".join(key(t, p) for t, p in partitions) or "nothing")

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
        if self.fleet is not None and bundle.content_hash != self.pipeline.bundle.content_hash:
            log.error(
                "bundle reload refused: changelog %s holds windows scored by bundle %s, and errors of two bundles are "
                "not on one scale; to change the bundle of a fleet, stop it and start every daemon with the new bundle "
                "and a new state.changelog_topic", self.changelog.topic, self.pipeline.bundle.content_hash,
            )
            self.metrics.record_reload(False)
            return False
        changed = bundle.content_hash != self.pipeline.bundle.content_hash
        self.pipeline.bundle = bundle
        if bundle.content_hash != self.baseline.bundle:  # errors of two bundles are not on one scale
            self.baseline.reset(bundle.content_hash)
        self.metrics.record_reload(True)
        self.metrics.set_bundle(bundle.content_hash, str(bundle.metadata.get("created_at", "")), str(self.bundle_path))
        log.info("bundle reloaded: %s", bundle.content_hash)
        if changed and self.fleet is None:
            # The open windows go on with the new bundle: name it in the state directory at once, so a restart
            # before the next checkpoint runs the bundle that scores now instead of refusing the state.
            self.checkpoint()
        return True


def open_kafka(k):
    """The consumer group source of the ``[kafka]`` settings, and a producer sink when a dead-letter or results topic
    is set (else None)."""
    from monitor.export.sink import KafkaSink  # noqa: PLC0415

    if k.client == "confluent":
        from monitor.source.confluent_source import ConfluentSource as source_class  # noqa: PLC0415
    else:
        from monitor.source.kafka_source import KafkaSource as source_class  # noqa: PLC0415
    sink = KafkaSink(k.producer_config()) if k.dead_letter_topic or k.results_topic else None
    if sink is not None:  # a missing WRITE right stops the start, not the first dead letter
        sink.check_writable({t: f"kafka.{n}" for n in ("dead_letter_topic", "results_topic") if (t := getattr(k, n))})
    try:
        source = source_class(
            k.consumer_config(),
            topics=list(k.topics) if not k.topic_pattern else None,
            pattern=k.topic_pattern or None,
        )
    except BaseException:
        if sink is not None:
            sink.close()
        raise
    return source, sink


# --- CLI ---------------------------------------------------------------------------------------------------------------


def cmd_run(args) -> int:
    from monitor.config import load_settings  # noqa: PLC0415
    from monitor.daemon.logs import configure_logging  # noqa: PLC0415

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

