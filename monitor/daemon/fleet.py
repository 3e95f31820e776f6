"""Fleet-wide windows for a daemon in a consumer group: the calls a daemon makes on assignment, per batch, on commit,
on revocation and to close windows, over :mod:`monitor.partials` (the maths) and :mod:`monitor.daemon.changelog` (Kafka).

The order of the steps is what the guarantee rests on (see :mod:`monitor.daemon.changelog`): a partition's state is written
and acknowledged before the group's offsets are committed and before the partition is let go; a topic's windows are
merged only from written states, published, and then marked as published.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from monitor.daemon.changelog import Changelog
from monitor.export.sink import Sink
from monitor.partials import PartitionWindows, is_closing_daemon, merge_due
from monitor.window import ClosedWindow

__all__ = ["FleetWindows", "result_key"]

log = logging.getLogger(__name__)

#: Called with one topic's newly closed windows (in order) and the baseline stored in its marker; sets each window's
#: ``assessment`` and returns the baseline to store with the new marker.
Assess = Callable[[list[ClosedWindow], "dict[str, Any] | None"], "dict[str, Any] | None"]


def _offsets(states) -> dict[tuple[str, int], int]:
    return {(s.topic, s.partition): s.next_offset for s in states if s.next_offset is not None}


def _confirm_idle(states: dict, ends: dict[int, int]) -> None:
    """A state written idle with records after its ``next_offset`` is not idle: it holds its topic back (in place;
    the states are the changelog's copies)."""
    for partition, state in states.items():
        end = ends.get(partition)
        if state.idle and end is not None and (state.next_offset or 0) < end:
            state.idle = False


def result_key(window: ClosedWindow) -> str:
    """Key of a window on the results topic: one record per (topic, window)."""
    return f"{window.topic}/{window.start_ms}"


class FleetWindows:
    """One daemon's share of fleet-wide windows.

    Parameters
    ----------
    windows : PartitionWindows
        The partial windows of the partitions this daemon owns.
    changelog : Changelog
        The changelog topic (created or checked with ``ensure_topic`` beforehand).
    partitions_of : callable
        Every partition of a topic, from the cluster's metadata (a partition without a state holds the topic back).
    sink : monitor.export.sink.Sink, optional
        Where closed windows are published, under :func:`result_key`; with ``results_topic``.
    results_topic : str, optional
    assess : callable, optional
        See :data:`Assess`; without it windows are published with their own figures only.
    end_offsets : callable, optional
        ``(topic, partitions) -> {partition: end offset}`` from the cluster.  A state written idle whose
        ``next_offset`` is below its partition's end offset is not trusted to be idle when closing: its owner wrote
        it before records arrived (a lag of 0 is stale as soon as a producer writes), or died since reading them,
        and a window published past that partition would count those records late.
    """

    def __init__(
        self,
        windows: PartitionWindows,
        changelog: Changelog,
        partitions_of: Callable[[str], Iterable[int]],
        sink: Sink | None = None,
        results_topic: str | None = None,
        assess: Assess | None = None,
        end_offsets: Callable[[str, list[int]], dict[int, int]] | None = None,
    ) -> None:
        self.windows = windows
        self.changelog = changelog
        self._partitions_of = partitions_of
        self._sink = sink
        self._results_topic = results_topic
        self._assess = assess
        self._end_offsets = end_offsets
        #: Records dropped from partials beyond what a publication took, counted late (a metric for the daemon).
        self.late_after_publication = 0
        #: The same, by topic.
        self.late_after_publication_by_topic: Counter[str] = Counter()

    # ------------------------------------------------------------------ the consumer group
    def on_assign(self, partitions: Iterable[tuple[str, int]], now_ms: int | None = None) -> dict[tuple[str, int], int]:
        """Restore the partitions' latest states; returns where to seek each partition that has one (the others
        start at the group's committed offset)."""
        partitions = sorted((str(t), int(p)) for t, p in partitions)
        self.changelog.refresh()
        seek = {}
        for topic, partition in partitions:
            offset = self.windows.assign(topic, partition, self.changelog.partition_state(topic, partition), now_ms)
            if offset is not None:
                seek[(topic, partition)] = offset
        self._apply_markers({t for t, _ in partitions})
        if partitions:
            log.info("window state restored for %s", ", ".join(f"{t}/{p}" for t, p in partitions))
        return seek

    def on_revoke(self, partitions: Iterable[tuple[str, int]], now_ms: int | None = None) -> dict[tuple[str, int], int]:
        """Write the partitions' final states (acknowledged), then let them go.  Returns the offsets to commit for
        them (the written states' ``next_offset``)."""
        partitions = [(str(t), int(p)) for t, p in partitions]
        owned = set(self.windows.owned())
        mine = [key for key in partitions if key in owned]
        states = self.windows.states(mine, now_ms=now_ms)
        self.changelog.write_states(states)
        self.windows.written(states)
        self.windows.revoke(mine)
        return _offsets(states)

    def on_lost(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Partitions lost to an eviction: another member may own them already, so nothing is written."""
        self.windows.revoke(partitions)

    # ------------------------------------------------------------------ per batch
    def add(self, *columns: Any, **named: Any) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`PartitionWindows.add`: returns ``(late, covered)``."""
        return self.windows.add(*columns, **named)

    def report_lags(self, lags: dict[tuple[str, int], int | None]) -> None:
        self.windows.report_lags(lags)

    def commit(self, now_ms: int | None = None) -> dict[tuple[str, int], int]:
        """Write every changed state and wait for the acknowledgement, then learn the markers written since.

        Returns the offsets to commit to the group: the written states' ``next_offset`` (the group's offsets only
        show lag; where a partition resumes is decided by its state)."""
        states = self.windows.states(now_ms=now_ms)
        self.changelog.write_states(states)
        self.windows.written(states)
        self.changelog.refresh()
        self._apply_markers({t for t, _ in self.windows.owned()})
        return _offsets(states)

    # ------------------------------------------------------------------ closing
    def close(self, wall_clock_ms: int | None = None) -> list[ClosedWindow]:
        """For every topic whose partition 0 this daemon owns: merge the written states, publish the windows due,
        then write the marker.  Call after :meth:`commit` (so this daemon's own states are written).  With
        ``wall_clock_ms`` a topic whose partitions are all idle closes by the wall clock.  Returns the windows
        published, ordered by (start, topic)."""
        owned = self.windows.owned()
        topics = sorted({t for t, _ in owned if is_closing_daemon(t, owned)})
        if not topics:
            return []
        self.changelog.refresh()
        published: list[ClosedWindow] = []
        for topic in topics:
            states = self.changelog.topic_states(topic)
            if self._end_offsets is not None and any(s.idle for s in states.values()):
                _confirm_idle(states, self._end_offsets(topic, sorted(states)))
            decision = merge_due(
                topic, states, self._partitions_of(topic), self.changelog.marker(topic),
                self.windows.settings, wall_clock_ms=wall_clock_ms,
            )
            marker = decision.marker
            if decision.closed:
                if self._assess is not None:
                    marker.baseline = self._assess(decision.closed, marker.baseline)
                if self._sink is not None and self._results_topic:
                    for window in decision.closed:
                        self._sink.result(self._results_topic, result_key(window), window.figures())
                    self._sink.flush()  # published before marked: a crash in between publishes the same again
                published.extend(decision.closed)
                self.changelog.write_marker(marker)
                self._late_after_publication(topic, self.windows.apply_marker(marker))
        published.sort(key=lambda w: (w.start_ms, w.topic))
        return published

    def _apply_markers(self, topics: Iterable[str]) -> None:
        for topic in topics:
            marker = self.changelog.marker(topic)
            if marker is not None:
                self._late_after_publication(topic, self.windows.apply_marker(marker))

    def _late_after_publication(self, topic: str, extra: int) -> None:
        if extra:
            log.warning("%d record(s) of %s arrived for windows already published: counted late", extra, topic)
            self.late_after_publication += extra
            self.late_after_publication_by_topic[topic] += extra
