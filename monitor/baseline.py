"""The baseline of normal traffic each closed window is compared with, beside the previous window; and the decision.

Comparing a window only with the one before it has two blind spots: from the second hour of an incident on, the hour
before looks the same, and the hour after an incident looks "better than before".  So every closed window is also
compared with the **baseline**: the merged error distribution of the most recent ``baseline_windows`` windows of its
topic that were neither paged nor ticketed (and not empty).  An incident never enters it, so each of its hours stays
flagged; once traffic is normal again it compares as normal.

Why a rolling baseline and not the bundle's reference errors: the reference errors are held-out *distinct* training
sequences, while live traffic repeats its common sequences, so the two distributions differ even for perfectly normal
traffic (a normal hour of the demo stream shifts by tens of points against them; see the README).  Recent normal
windows are the same kind of sample as the window being judged.

Errors of two bundles are not on one scale, so the baseline belongs to one bundle (its content hash): a reload
empties it, and a checkpoint written under another bundle is not restored.  Until a topic's baseline holds
``baseline_min_windows`` windows only the previous window is compared with.

The **decision** of a window is the most severe of the decisions of its comparisons (:func:`monitor.deviation.decide`);
its headline ``shift`` and ``surprise`` are those of the comparison that decided (the larger shift on a tie).
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from monitor.deviation import SEVERITY, DeviationSettings, decide, shift, surprise
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

        Returns the window's complete figures (``window.figures()``), which then hold:

        - ``shift_vs_baseline`` (0-100), ``surprise_vs_baseline`` (-log10 p): as for the previous window, against
          the baseline; NaN when there is no baseline yet or the window is empty.
        - ``baseline_windows``: windows in the baseline used (0: none yet).
        - ``decision_vs_previous``, ``decision_vs_baseline``: ``"page"``, ``"ticket"`` or ``"ok"``.
        - ``decision`` (the most severe of the two), ``severity`` (0 ok, 1 ticket, 2 page), ``deviating``
          (decision is ``"page"``), ``compared_with`` (``"baseline"``, ``"previous"`` or ``""``: which
          comparison decided), ``shift`` and ``surprise`` (that comparison's figures; NaN if there was none).

        A window whose decision is ``"ok"`` and that has records joins the baseline of its topic afterwards.
        """
        settings = self.settings
        figures = window.figures()
        current = window.aggregate
        reference = self.reference(window.topic)
        if reference is not None and current.weight > 0.0:
            moved = shift(current.sketch, reference.sketch)
            sure = surprise(moved, current.effective_records(), reference.effective_records())
        else:
            moved = sure = math.nan
        comparisons = {
            "previous": (figures["shift_vs_previous"], figures["surprise_vs_previous"]),
            "baseline": (moved, sure),
        }
        decisions = {name: decide(s, p, settings) for name, (s, p) in comparisons.items()}
        ranked = [
            (SEVERITY[decisions[name]], s, name) for name, (s, p) in comparisons.items() if not math.isnan(s)
        ]
        if ranked:
            level, _, chosen = max(ranked)
            headline_shift, headline_surprise = comparisons[chosen]
        else:
            level, chosen, headline_shift, headline_surprise = 0, "", math.nan, math.nan
        decision = next(name for name, value in SEVERITY.items() if value == level)
        window.assessment = {
            "shift_vs_baseline": moved,
            "surprise_vs_baseline": sure,
            "baseline_windows": 0 if reference is None else self.windows(window.topic),
            "decision_vs_previous": decisions["previous"],
            "decision_vs_baseline": decisions["baseline"],
            "shift": headline_shift,
            "surprise": headline_surprise,
            "compared_with": chosen,
            "decision": decision,
            "severity": level,
            "deviating": decision == "page",
        }
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
