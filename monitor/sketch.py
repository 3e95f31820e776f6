"""Mergeable weighted histogram of reconstruction errors with relative accuracy.

``ErrorSketch`` is a DDSketch-like histogram: bucket ``i`` covers the error
interval ``(gamma**(i-1), gamma**i]`` with ``gamma = (1 + alpha) / (1 - alpha)``,
and every error in it is represented by ``2 * gamma**i / (gamma + 1)``, which is
within a relative distance ``alpha`` of any value in the bucket.  Errors at or
below ``min_error`` (exact zeros, denormal noise) share one dedicated zero
bucket represented by ``0.0``.

Only non-empty buckets are stored, as two sorted numpy arrays, so memory grows
with the number of distinct buckets (at most ``log(max/min) / log(gamma)``, a few
thousand for realistic error ranges) and never with the number of records.  Two
sketches with the same ``alpha`` and ``min_error`` merge exactly: merging is the
same as having added both record sets to one sketch (up to float rounding of the
weight sums).

Errors are dimensionless reconstruction errors (>= 0); weights are positive
record weights (1 per record unless the caller says otherwise).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["ErrorSketch", "prob_greater"]


def _merge_buckets(
    index_a: np.ndarray, weight_a: np.ndarray, index_b: np.ndarray, weight_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Union of two sorted, duplicate-free bucket lists with weights of shared buckets summed.

    Linear in the bucket counts apart from one binary search, which matters because
    this runs once per (window, batch) on the hot path.
    """
    if index_a.size == 0:
        return index_b.copy(), weight_b.copy()
    if index_b.size == 0:
        return index_a.copy(), weight_a.copy()
    pos = np.searchsorted(index_a, index_b)
    hit = pos < index_a.size
    hit[hit] = index_a[pos[hit]] == index_b[hit]
    weight = weight_a.copy()
    # index_b is duplicate-free, so pos[hit] is too and fancy "+=" cannot lose updates.
    weight[pos[hit]] += weight_b[hit]
    new = ~hit
    if not new.any():
        return index_a.copy(), weight
    # Interleave without sorting: the k-th new bucket (in sorted order) lands at its
    # insertion point in index_a shifted by the k new buckets before it; the old
    # buckets fill the remaining slots in order.  (np.insert would argsort again.)
    destination = pos[new] + np.arange(int(new.sum()))
    old_slots = np.ones(index_a.size + destination.size, dtype=bool)
    old_slots[destination] = False
    index = np.empty(old_slots.size, dtype=np.int64)
    merged = np.empty(old_slots.size, dtype=np.float64)
    index[destination], merged[destination] = index_b[new], weight_b[new]
    index[old_slots], merged[old_slots] = index_a, weight
    return index, merged


class ErrorSketch:
    """Weighted, mergeable histogram of errors with log-spaced buckets.

    Parameters
    ----------
    alpha : float, default 0.001
        Relative accuracy in (0, 1): every quantile estimate is within a factor
        ``1 +- alpha`` of an error of the right rank.
    min_error : float, default 1e-12
        Errors ``<= min_error`` go to the zero bucket (estimated as ``0.0``).  Must be > 0.

    Notes
    -----
    ``add`` mutates the sketch; ``merge`` returns a new one.  Two sketches compare
    equal when their parameters, bucket indices and bucket weights are identical.
    """

    __slots__ = ("_alpha", "_min_error", "_gamma", "_log_gamma", "_zero_index", "_index", "_weight")

    def __init__(self, alpha: float = 0.001, min_error: float = 1e-12) -> None:
        alpha = float(alpha)
        min_error = float(min_error)
        if not (0.0 < alpha < 1.0):
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        if not (math.isfinite(min_error) and min_error > 0.0):
            raise ValueError(f"min_error must be a finite number > 0, got {min_error!r}")
        self._alpha = alpha
        self._min_error = min_error
        self._gamma = (1.0 + alpha) / (1.0 - alpha)
        self._log_gamma = math.log(self._gamma)
        # The zero bucket sits just below the first real bucket instead of at a far
        # sentinel, so bucket indices of a batch span a small range and callers can
        # pack them into one int64 sort key.
        self._zero_index = math.ceil(math.log(min_error) / self._log_gamma) - 1
        self._index = np.empty(0, dtype=np.int64)
        self._weight = np.empty(0, dtype=np.float64)

    # ------------------------------------------------------------------ properties
    @property
    def alpha(self) -> float:
        """Relative accuracy of quantile estimates."""
        return self._alpha

    @property
    def min_error(self) -> float:
        """Errors at or below this value are counted in the zero bucket."""
        return self._min_error

    @property
    def gamma(self) -> float:
        """Ratio between consecutive bucket bounds, ``(1 + alpha) / (1 - alpha)``."""
        return self._gamma

    @property
    def zero_index(self) -> int:
        """Bucket index used for errors ``<= min_error``; below every real bucket."""
        return self._zero_index

    @property
    def total_weight(self) -> float:
        """Sum of the weights of all added errors (0.0 when empty)."""
        return float(self._weight.sum())

    @property
    def bucket_count(self) -> int:
        """Number of non-empty buckets, i.e. the memory footprint in array elements."""
        return int(self._index.size)

    @property
    def is_empty(self) -> bool:
        """True when no error has been added."""
        return self._index.size == 0

    def buckets(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the sorted bucket indices (int64) and their weights (float64)."""
        return self._index.copy(), self._weight.copy()

    # ------------------------------------------------------------------ building
    def bucket_indices(self, errors: np.ndarray) -> np.ndarray:
        """Bucket index (int64) of every error, without adding anything.

        Parameters
        ----------
        errors : np.ndarray
            Finite errors >= 0; validated, ``ValueError`` otherwise.
        """
        errors = np.asarray(errors, dtype=np.float64)
        if errors.size and not (np.isfinite(errors).all() and (errors >= 0.0).all()):
            raise ValueError("errors must be finite and >= 0")
        above = errors > self._min_error
        # Clamping before the log avoids log(0) warnings; clamped values are replaced below.
        raw = np.ceil(np.log(np.maximum(errors, self._min_error)) / self._log_gamma)
        index = raw.astype(np.int64)
        # Rounding in log() must never push a real error into the zero bucket.
        np.maximum(index, self._zero_index + 1, out=index)
        index[~above] = self._zero_index
        return index

    def add(self, errors: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add a batch of errors with their weights (vectorized, in place).

        Parameters
        ----------
        errors : np.ndarray
            Finite errors >= 0.
        weights : np.ndarray or None
            Finite weights > 0, same length as ``errors``; ``None`` means 1 each.
        """
        errors = np.asarray(errors, dtype=np.float64).ravel()
        weights = _as_weights(weights, errors.size)
        if errors.size == 0:
            return
        index = self.bucket_indices(errors)
        unique, inverse = np.unique(index, return_inverse=True)
        summed = np.bincount(inverse.ravel(), weights=weights, minlength=unique.size)
        self.add_buckets(unique, summed)

    def add_buckets(self, index: np.ndarray, weight: np.ndarray) -> None:
        """Add pre-aggregated buckets (in place).

        Parameters
        ----------
        index : np.ndarray of int64
            Strictly increasing bucket indices, as from :meth:`bucket_indices`.
        weight : np.ndarray of float64
            Positive weight of each bucket.

        Notes
        -----
        Exists so a caller grouping a large batch by window can bucket it once and
        hand each window its slice; inputs are trusted (not re-validated).
        """
        self._index, self._weight = _merge_buckets(
            self._index, self._weight, np.asarray(index, dtype=np.int64), np.asarray(weight, dtype=np.float64)
        )

    def merge(self, other: ErrorSketch) -> ErrorSketch:
        """New sketch holding the errors of both; neither input changes.

        Raises
        ------
        ValueError
            If ``alpha`` or ``min_error`` differ (buckets would not line up).
        """
        self._check_compatible(other)
        out = ErrorSketch(self._alpha, self._min_error)
        out._index, out._weight = _merge_buckets(self._index, self._weight, other._index, other._weight)
        return out

    def copy(self) -> ErrorSketch:
        """Independent copy."""
        out = ErrorSketch(self._alpha, self._min_error)
        out._index, out._weight = self._index.copy(), self._weight.copy()
        return out

    # ------------------------------------------------------------------ queries
    def representative(self, index: np.ndarray) -> np.ndarray:
        """Value reported for each bucket index: ``2 * gamma**i / (gamma + 1)``, 0.0 for the zero bucket."""
        index = np.asarray(index, dtype=np.int64)
        value = np.exp(index * self._log_gamma) * (2.0 / (self._gamma + 1.0))
        return np.where(index == self._zero_index, 0.0, value)

    def quantile(self, q: float) -> float:
        """Weighted quantile: representative of the first bucket whose cumulative weight reaches ``q`` of the total.

        Parameters
        ----------
        q : float
            Quantile level in [0, 1].

        Returns
        -------
        float
            Error estimate within relative accuracy ``alpha``; NaN when the sketch is empty.
        """
        q = float(q)
        if not (0.0 <= q <= 1.0):
            raise ValueError(f"q must be in [0, 1], got {q!r}")
        if self._index.size == 0:
            return math.nan
        cumulative = np.cumsum(self._weight)
        position = int(np.searchsorted(cumulative, q * cumulative[-1], side="left"))
        # q * total can round above the last cumulative sum when q == 1.
        position = min(position, self._index.size - 1)
        return float(self.representative(self._index[position]))

    def rank(self, value: float) -> float:
        """Weighted share in [0, 1] of errors ``<= value``.

        The bucket containing ``value`` counts in full, so the result can overstate
        the true share by at most that bucket's weight; it is consistent with
        :meth:`quantile` in that ``rank(quantile(q)) >= q``.  NaN when the sketch is
        empty or ``value`` is NaN.
        """
        value = float(value)
        if self._index.size == 0 or math.isnan(value):
            return math.nan
        if value < 0.0:
            return 0.0
        if math.isinf(value):
            return 1.0
        bucket = int(self.bucket_indices(np.array([value]))[0])
        position = int(np.searchsorted(self._index, bucket, side="right"))
        total = self._weight.sum()
        return float(min(1.0, self._weight[:position].sum() / total))

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe representation (floats round-trip exactly through ``json``)."""
        return {
            "alpha": self._alpha,
            "min_error": self._min_error,
            "index": self._index.tolist(),
            "weight": self._weight.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorSketch:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        StateError
            If the data is malformed (missing keys, unsorted indices, bad weights).
        """
        from monitor.errors import StateError

        try:
            out = cls(data["alpha"], data["min_error"])
            index = np.asarray(data["index"], dtype=np.int64).ravel()
            weight = np.asarray(data["weight"], dtype=np.float64).ravel()
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"error sketch cannot be restored: {exc}") from exc
        if index.size != weight.size:
            raise StateError("error sketch cannot be restored: index and weight lengths differ")
        if index.size and not (np.all(np.diff(index) > 0) and np.isfinite(weight).all() and (weight > 0).all()):
            raise StateError("error sketch cannot be restored: indices not increasing or weights not positive")
        out._index, out._weight = index, weight
        return out

    # ------------------------------------------------------------------ dunder
    def _check_compatible(self, other: ErrorSketch) -> None:
        if not isinstance(other, ErrorSketch):
            raise TypeError(f"expected ErrorSketch, got {type(other).__name__}")
        if self._alpha != other._alpha or self._min_error != other._min_error:
            raise ValueError(
                f"sketches are incompatible: alpha {self._alpha} vs {other._alpha}, "
                f"min_error {self._min_error} vs {other._min_error}"
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ErrorSketch):
            return NotImplemented
        return (
            self._alpha == other._alpha
            and self._min_error == other._min_error
            and np.array_equal(self._index, other._index)
            and np.array_equal(self._weight, other._weight)
        )

    __hash__ = None  # mutable

    def __repr__(self) -> str:
        return (
            f"ErrorSketch(alpha={self._alpha}, min_error={self._min_error}, "
            f"buckets={self._index.size}, total_weight={self.total_weight})"
        )


def _as_weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    """Validated float64 weights of length ``n``; ``None`` means 1 per record."""
    if weights is None:
        return np.ones(n, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64).ravel()
    if weights.size != n:
        raise ValueError(f"weights has {weights.size} values for {n} errors")
    if n and not (np.isfinite(weights).all() and (weights > 0.0).all()):
        raise ValueError("weights must be finite and > 0")
    return weights


def prob_greater(current: ErrorSketch, previous: ErrorSketch) -> float:
    """Probability that an error drawn from ``current`` exceeds one drawn from ``previous``.

    Both draws are weighted by record weight.  Pairs falling in the same bucket
    (values equal within relative accuracy ``alpha``) are ties and count half, so
    identical sketches give exactly 0.5, a ``current`` entirely above ``previous``
    gives 1.0 and entirely below gives 0.0.  This is the common-language effect
    size (AUC / normalized Mann-Whitney U) of the two error distributions.

    Parameters
    ----------
    current, previous : ErrorSketch
        Sketches with equal ``alpha`` and ``min_error`` (``ValueError`` otherwise).

    Returns
    -------
    float
        Probability in [0, 1]; NaN if either sketch is empty.
    """
    current._check_compatible(previous)
    ci, cw = current._index, current._weight
    pi, pw = previous._index, previous._weight
    if ci.size == 0 or pi.size == 0:
        return math.nan
    # Disjoint supports are decided without arithmetic so they come out exactly 0 or 1.
    if ci[0] > pi[-1]:
        return 1.0
    if ci[-1] < pi[0]:
        return 0.0
    # Weight of the other sketch strictly below each bucket, via cumulative sums
    # looked up at the merged positions of the sorted index arrays.
    previous_below = np.concatenate(([0.0], np.cumsum(pw)))[np.searchsorted(pi, ci, side="left")]
    current_below = np.concatenate(([0.0], np.cumsum(cw)))[np.searchsorted(ci, pi, side="left")]
    greater = float(np.dot(cw, previous_below))
    less = float(np.dot(pw, current_below))
    total = float(cw.sum()) * float(pw.sum())
    # P(>) + P(=)/2 written as 1/2 + (P(>) - P(<))/2: for identical sketches the two
    # dot products are bit-identical, so the result is exactly 0.5 whatever the weights.
    probability = 0.5 + 0.5 * (greater - less) / total
    return min(1.0, max(0.0, probability))
