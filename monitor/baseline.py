"""The baseline of normal traffic each closed window is compared with, beside the previous window; and the decision.

Comparing a window only with the one before it has two blind spots: from the second hour of an incident on, the hour
before looks the same, and the hour after an incident looks "better than before".  So every closed window is also
compared with the **baseline**: the merged error distribution of the most recent ``baseline_windows`` windows of its
topic that were neither paged nor ticketed (and not empty).  An incident never enters it, so each of its hours stays
flagged; once traffic is normal again it compares as normal.

Why a rolling baseline and not the bundle's reference errors: the reference errors are held-out *normal* training
sequences, while live traffic carries its own steady background of odd records.  Measured on the demo stream (1 %
background anomalies), normal hours against the reference errors show a tail excess of 0.8-1.2 points with a
surprise of 2.9-5.3, so some would ticket; against the rolling baseline no non-incident hour of the evaluation
ticketed (largest surprise 3.5; README, "Alerting quality").  Recent normal windows are the same kind of sample as the window being judged.

Errors of two bundles are not on one scale, so the baseline belongs to one bundle (its content hash): a reload
empties it, and a checkpoint written under another bundle is not restored.  Until a topic's baseline holds
``baseline_min_windows`` windows only the previous window is compared with.

The **decision** of a window is the most severe over its two comparisons and, in each, its two statistics (the KS
shift and the tail excess, :mod:`monitor.deviation`); its headline ``shift`` and ``surprise`` are those of the
statistic that decided (the larger shift among equally severe ones).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from monitor.deviation import DECISIONS, SEVERITY, DeviationSettings, compare_sketches, decide
from monitor.errors import StateError
from monitor.window import ClosedWindow, WindowAggregate

__all__ = ["Baseline"]

SNAPSHOT_VERSION = 1


class Baseline:
    """Per topic, the last normal windows (start ms, aggregate), newest last; built for one bundle."""

    def __init__(self, settings: DeviationSettings | None = None, bundle: str = "") -> None:
        self.settings = settings if settings is not None else DeviationSettings()
        self.bundle = bundle
        self._windows: dict[str, deque[tuple[int, WindowAggregate]]] = {}

    def reset(self, bundle: str) -> None:
        """Forget every window: errors of ``bundle`` are not comparable with the ones kept."""
        self.bundle = bundle
        self._windows.clear()

    def forget(self, topics) -> None:
        """Drop the baseline of these topics (ones the windower forgot as quiet)."""
        for topic in topics:
            self._windows.pop(topic, None)

    def windows(self, topic: str) -> int:
        """How many windows the baseline of ``topic`` holds."""
        return len(self._windows.get(topic, ()))

    def reference(self, topic: str) -> WindowAggregate | None:
        """The merged baseline of ``topic``, or None while it holds fewer than ``baseline_min_windows`` windows."""
        kept = self._windows.get(topic, ())
        if self.settings.baseline_windows == 0 or len(kept) < self.settings.baseline_min_windows:
            return None
        merged = kept[0][1]
        for _, aggregate in list(kept)[1:]:
            merged = merged.merge(aggregate)
        return merged

    def assess(self, window: ClosedWindow) -> dict[str, Any]:
        """Compare ``window`` with its baseline, decide, set ``window.assessment`` and learn from the window.

        Returns the window's complete figures (``window.figures()``), which then hold, besides the comparison with
        the previous window (:func:`monitor.window.compare`):

        - ``ks_shift_vs_baseline``, ``ks_surprise_vs_baseline``, ``tail_shift_vs_baseline``,
          ``tail_surprise_vs_baseline``: the same statistics against the baseline; NaN when there is no baseline yet
          or the window is empty.
        - ``baseline_windows``: windows in the baseline used (0: none yet).
        - ``decision_vs_previous``, ``decision_vs_baseline``: ``"page"``, ``"ticket"`` or ``"ok"``, the more severe
          of the comparison's two statistics (:func:`monitor.deviation.decide`).
        - ``decision`` (the most severe of the two comparisons), ``severity`` (0 ok, 1 ticket, 2 page),
          ``deviating`` (decision is ``"page"``), and the headline: ``shift`` and ``surprise`` of the statistic that
          decided (the larger shift among equally severe ones), ``compared_with`` (``"previous"``, ``"baseline"``,
          ``""`` when nothing was compared) and ``statistic`` (``"ks"``, ``"tail"`` or ``""``).

        A window whose decision is ``"ok"`` and that has records joins the baseline of its topic afterwards.
        """
        settings = self.settings
        figures = window.figures()
        current = window.aggregate
        reference = self.reference(window.topic)
        if reference is not None and current.weight > 0.0:
            against_baseline = compare_sketches(
                current.sketch, current.effective_records(), reference.sketch, reference.effective_records()
            )
        else:
            against_baseline = dict.fromkeys(("ks_shift", "ks_surprise", "tail_shift", "tail_surprise"), math.nan)
        assessment: dict[str, Any] = {f"{k}_vs_baseline": v for k, v in against_baseline.items()}
        assessment["baseline_windows"] = 0 if reference is None else self.windows(window.topic)
        candidates = []  # (severity, shift, comparison, statistic, surprise)
        for comparison in ("previous", "baseline"):
            source = figures if comparison == "previous" else assessment
            level = 0
            for statistic in ("ks", "tail"):
                size = source[f"{statistic}_shift_vs_{comparison}"]
                sure = source[f"{statistic}_surprise_vs_{comparison}"]
                if math.isnan(size):
                    continue
                rank = SEVERITY[decide(size, sure, settings)]
                level = max(level, rank)
                candidates.append((rank, size, comparison, statistic, sure))
            assessment[f"decision_vs_{comparison}"] = DECISIONS[level]
        if candidates:
            level, headline_shift, chosen, statistic, headline_surprise = max(candidates)
        else:
            level, headline_shift, chosen, statistic, headline_surprise = 0, math.nan, "", "", math.nan
        decision = DECISIONS[level]
        assessment.update({
            "shift": headline_shift,
            "surprise": headline_surprise,
            "compared_with": chosen,
            "statistic": statistic,
            "decision": decision,
            "severity": level,
            "deviating": decision == "page",
        })
        window.assessment = assessment
        if decision == "ok" and current.count > 0 and settings.baseline_windows > 0:
            kept = self._windows.setdefault(window.topic, deque())
            kept.append((window.start_ms, current))
            while len(kept) > settings.baseline_windows:
                kept.popleft()
        return window.figures()

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe state for the checkpoint."""
        return {
            "version": SNAPSHOT_VERSION,
            "bundle": self.bundle,
            "topics": {
                topic: [[start, aggregate.to_dict()] for start, aggregate in kept]
                for topic, kept in sorted(self._windows.items())
            },
        }

    @classmethod
    def from_snapshot(cls, settings: DeviationSettings, snapshot: dict[str, Any] | None, bundle: str) -> Baseline:
        """Baseline restored from :meth:`snapshot`; empty when there is none or it belongs to another bundle.

        A smaller ``baseline_windows`` than when it was written keeps the newest windows.  ``StateError`` if malformed.
        """
        out = cls(settings, bundle)
        if snapshot is None:
            return out
        if not isinstance(snapshot, dict) or snapshot.get("version") != SNAPSHOT_VERSION:
            found = snapshot.get("version") if isinstance(snapshot, dict) else type(snapshot).__name__
            raise StateError(f"baseline state has version {found!r}, expected {SNAPSHOT_VERSION}")
        if snapshot.get("bundle") != bundle:
            return out
        try:
            for topic, kept in snapshot["topics"].items():
                windows = deque((int(start), WindowAggregate.from_dict(data)) for start, data in kept)
                while len(windows) > settings.baseline_windows:
                    windows.popleft()
                if windows:
                    out._windows[str(topic)] = windows
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"baseline state cannot be restored: {exc!r}") from exc
        return out
