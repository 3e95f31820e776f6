"""How far a window's errors moved above a reference, how sure that is, and what to do about it.

Pure functions over :class:`~monitor.sketch.ErrorSketch` es and record-weight sums; no state, clock or I/O.

The first of two statistics of a **shift** is the one-sided, weighted two-sample Kolmogorov-Smirnov distance

    D+ = max over t of (F_ref(t) - F_this(t))

between the weighted error distribution of a reference (the previous window, or the baseline of recent normal
windows) and of this window, reported 0-100.  If a share s of this window's weight is moved to higher errors and the
rest keeps the reference distribution, then D+ <= s, with near-equality when the moved records land above most of the
reference errors (which anomalies do): the shift is a lower bound on the percentage of the window that moved to
higher errors.  A window with fewer high errors than its reference has D+ ~ 0, so the hour after an incident reads as
unchanged, not as a change.  The earlier ``abnormality`` (``100 * P(e_this > e_prev)``) is at most about
``50 + 50 s`` for the same window: a page above 75 needed more than half of the records to break.

Its **surprise** is ``-log10 p`` for the one-sided asymptotic bound ``p = exp(-2 m D+^2)``,
``m = n_this n_ref / (n_this + n_ref)``, where each ``n`` is Kish's effective sample size ``(Σw)^2 / Σw^2`` (the
record count when every weight is 1).  The same surprise threshold therefore means the same false-alarm rate at 100
and at 1,000,000 records per window.  Errors are compared on the sketch's buckets: two errors within the sketch's
relative accuracy count as equal, which can only lower D+.

The KS shift needs the whole distribution to move and is weak when few records break: 50 anomalous records in an
hour of 1,000 are not significant by it.  The **tail** statistic is sized for that case: ``tail_excess`` is the share
(0-100) of this window above the reference's 99th percentile minus the reference's own share there (at most 1 %),
and its surprise comes from a one-sided likelihood-ratio test on the effective counts (:func:`tail_surprise`).

:func:`decide` turns (size, surprise) of a statistic into ``"page"``, ``"ticket"`` or ``"ok"`` with
:class:`DeviationSettings`; a comparison takes the more severe of its two statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.errors import ConfigError
from monitor.sketch import ErrorSketch

__all__ = [
    "DECISIONS",
    "DeviationSettings",
    "SEVERITY",
    "TAIL_QUANTILE",
    "compare_sketches",
    "decide",
    "effective_size",
    "shift",
    "surprise",
    "tail_excess",
    "tail_surprise",
]

#: The tail statistic counts errors above this quantile of the reference.
TAIL_QUANTILE = 0.99

#: Decisions from least to most severe; :data:`SEVERITY` maps each to the number exported as a metric.
DECISIONS = ("ok", "ticket", "page")
SEVERITY = {name: level for level, name in enumerate(DECISIONS)}

_LN10 = math.log(10.0)


def effective_size(weight: float, weight_squared: float, count: int) -> float:
    """Kish's effective sample size ``(Σw)^2 / Σw^2``: how many unit-weight records carry the same information.

    Parameters
    ----------
    weight, weight_squared : float
        Σw and Σw² of the records.
    count : int
        Number of records; returned when ``weight_squared`` is unknown (0, e.g. state written before it was kept).

    Returns
    -------
    float
        Between 1 and ``count`` for positive weights; 0.0 for no records.
    """
    if count <= 0 or weight <= 0.0:
        return 0.0
    if weight_squared <= 0.0:
        return float(count)
    return weight * weight / weight_squared


def shift(current: ErrorSketch, reference: ErrorSketch) -> float:
    """Weighted one-sided KS distance ``max_t (F_reference(t) - F_current(t))``, 0-100.

    The largest excess, in percentage points of weight, of the reference's cumulative distribution over the current
    one at any error; it lower-bounds the share (0-100) of the current window's weight that moved to higher errors.
    0 when the current errors are nowhere stochastically larger.  NaN if either sketch is empty.
    ``ValueError`` if the sketches are incompatible.
    """
    current._check_compatible(reference)
    ci, cw = current.buckets()
    ri, rw = reference.buckets()
    if ci.size == 0 or ri.size == 0:
        return math.nan
    # Both CDFs evaluated at the upper end of every bucket either sketch uses; between two such points neither changes.
    grid = np.union1d(ci, ri)
    cum_c = np.concatenate(([0.0], np.cumsum(cw)))
    cum_r = np.concatenate(([0.0], np.cumsum(rw)))
    f_c = cum_c[np.searchsorted(ci, grid, side="right")] / cum_c[-1]
    f_r = cum_r[np.searchsorted(ri, grid, side="right")] / cum_r[-1]
    return float(100.0 * max(0.0, float(np.max(f_r - f_c))))


def surprise(shift_percent: float, n_current: float, n_reference: float) -> float:
    """``-log10 p`` of a shift under "same distribution", ``p = exp(-2 m D^2)``, ``m = n1 n2 / (n1 + n2)``.

    Parameters
    ----------
    shift_percent : float
        The shift, 0-100 (D = shift / 100).
    n_current, n_reference : float
        Effective sample sizes (see :func:`effective_size`).

    Returns
    -------
    float
        >= 0; 4 means a chance of about 1 in 10,000 to see a shift this large between two windows of the same
        traffic.  NaN when the shift is NaN or either size is 0.
    """
    if math.isnan(shift_percent) or n_current <= 0.0 or n_reference <= 0.0:
        return math.nan
    m = n_current * n_reference / (n_current + n_reference)
    d = shift_percent / 100.0
    return 2.0 * m * d * d / _LN10


def tail_excess(current: ErrorSketch, reference: ErrorSketch, q: float = TAIL_QUANTILE) -> tuple[float, float, float]:
    """How much more of the current weight than of the reference's lies above the reference's ``q`` quantile.

    Returns
    -------
    (excess, current_share, reference_share)
        ``excess`` = ``100 * max(0, current_share - reference_share)``, percentage points: the share of the current
        window that moved into the reference's tail, beyond what the reference itself has there.  The shares (0-1)
        count weight in buckets strictly above the bucket of the reference's ``q`` quantile, so the reference's own
        share is at most ``1 - q``.  All NaN if either sketch is empty.
    """
    current._check_compatible(reference)
    ci, cw = current.buckets()
    ri, rw = reference.buckets()
    if ci.size == 0 or ri.size == 0:
        return math.nan, math.nan, math.nan
    cum_r = np.cumsum(rw)
    cut = ri[min(int(np.searchsorted(cum_r, q * cum_r[-1], side="left")), ri.size - 1)]
    reference_share = float(rw[ri > cut].sum() / cum_r[-1])
    current_share = float(cw[ci > cut].sum() / cw.sum())
    return 100.0 * max(0.0, current_share - reference_share), current_share, reference_share


def _xlogx_ratio(x: float, expected: float) -> float:
    return x * math.log(x / expected) if x > 0.0 else 0.0


def tail_surprise(current_share: float, reference_share: float, n_current: float, n_reference: float) -> float:
    """``-log10 p`` of a one-sided likelihood-ratio (G) test that the current tail share exceeds the reference's.

    The 2x2 table of (in the tail, not) x (current, reference) uses effective counts ``share * n`` (Kish sizes), so
    weights count as the information they carry; ``p = erfc(sqrt(G / 2)) / 2`` (chi-square with one degree of
    freedom, one-sided).  Unlike the KS surprise, which needs the whole distribution to move, this one is sized for a
    few records landing where the reference almost never is.  0 when the current share is not larger; NaN when a
    share is NaN or a size is 0.
    """
    if math.isnan(current_share) or math.isnan(reference_share) or n_current <= 0.0 or n_reference <= 0.0:
        return math.nan
    if current_share <= reference_share:
        return 0.0
    x1, x2 = current_share * n_current, reference_share * n_reference
    pooled = (x1 + x2) / (n_current + n_reference)
    g = 2.0 * (
        _xlogx_ratio(x1, n_current * pooled)
        + _xlogx_ratio(n_current - x1, n_current * (1.0 - pooled))
        + _xlogx_ratio(x2, n_reference * pooled)
        + _xlogx_ratio(n_reference - x2, n_reference * (1.0 - pooled))
    )
    z = math.sqrt(max(g, 0.0) / 2.0)
    if z < 20.0:
        return -math.log10(0.5 * math.erfc(z))
    # erfc underflows further out; its asymptote exp(-z^2) / (z sqrt(pi)) is within 0.1 % there.
    return (z * z + math.log(z * math.sqrt(math.pi)) + math.log(2.0)) / _LN10


def compare_sketches(
    current: ErrorSketch, n_current: float, reference: ErrorSketch, n_reference: float
) -> dict[str, float]:
    """Both statistics of one comparison: ``ks_shift`` and ``ks_surprise``, ``tail_shift`` (the tail excess) and
    ``tail_surprise``.

    ``n_current`` and ``n_reference`` are effective sizes (:func:`effective_size`); every figure is NaN when either
    sketch is empty.
    """
    moved = shift(current, reference)
    excess, current_share, reference_share = tail_excess(current, reference)
    return {
        "ks_shift": moved,
        "ks_surprise": surprise(moved, n_current, n_reference),
        "tail_shift": excess,
        "tail_surprise": tail_surprise(current_share, reference_share, n_current, n_reference),
    }


def _number(value: Any, name: str, minimum: float, maximum: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not (minimum <= value <= maximum):
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {value!r}")
    return value


@dataclass(frozen=True)
class DeviationSettings:
    """When a window deviates, and what the baseline of normal windows holds.

    A statistic **pages** when its size (the KS shift, or the tail excess; percentage points of the window) is at
    least ``page_shift`` *and* its surprise at least ``page_surprise`` (practically large and significant); it makes a
    **ticket** when size >= ``ticket_shift`` and surprise >= ``ticket_surprise``; otherwise it is ``ok``.  A
    comparison's decision is the more severe of its two statistics'.  The defaults come from ``tests/quality/test_alerting.py`` (see the
    README, "Alerting quality").

    Attributes
    ----------
    page_shift, ticket_shift : float
        Shift thresholds, percentage points (0-100).
    page_surprise, ticket_surprise : float
        Surprise thresholds, ``-log10 p``.
    baseline_windows : int
        How many of the most recent windows that were neither paged nor ticketed (and not empty) make the baseline;
        0 turns the baseline comparison off.
    baseline_min_windows : int
        The baseline is compared with only once it holds this many windows.
    """

    page_shift: float = 2.5
    page_surprise: float = 6.0
    ticket_shift: float = 1.0
    ticket_surprise: float = 4.0
    baseline_windows: int = 24
    baseline_min_windows: int = 3

    def __post_init__(self) -> None:
        for name in ("page_shift", "ticket_shift"):
            object.__setattr__(self, name, _number(getattr(self, name), name, 0.0, 100.0))
        for name in ("page_surprise", "ticket_surprise"):
            object.__setattr__(self, name, _number(getattr(self, name), name, 0.0))
        if self.ticket_shift > self.page_shift or self.ticket_surprise > self.page_surprise:
            raise ConfigError("ticket thresholds must not exceed the page thresholds")
        for name, low in (("baseline_windows", 0), ("baseline_min_windows", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
            object.__setattr__(self, name, int(value))


def decide(shift_percent: float, surprise_value: float, settings: DeviationSettings) -> str:
    """``"page"``, ``"ticket"`` or ``"ok"`` for one statistic (KS shift or tail excess, 0-100, and its surprise);
    NaN figures (nothing to compare) are ``"ok"``."""
    if math.isnan(shift_percent) or math.isnan(surprise_value):
        return "ok"
    if shift_percent >= settings.page_shift and surprise_value >= settings.page_surprise:
        return "page"
    if shift_percent >= settings.ticket_shift and surprise_value >= settings.ticket_surprise:
        return "ticket"
    return "ok"
