"""Score stage: reconstruction errors, percentile ranks, group scores and explanations. Pure numpy, no TensorFlow.

The autoencoder is a stack of dense layers exported from Keras as ``(kernel, bias, activation)``. Scoring never
builds the dense input matrix nor, when the output layer is linear, the dense reconstruction:

* the first layer of a sparse input is ``X @ W`` over the few stored values of each row (a sum of weight rows);
* with a linear output ``y = h @ Wo + bo`` the per-row mean squared error expands to
  ``(|x|² - 2 x·y + |y|²) / D`` where ``|y|² = h (Wo Woᵀ) hᵀ + 2 h·(Wo bo) + |bo|²`` and ``x·y = (X @ Woᵀ)·h + X @ bo``,
  so a row costs O(k² + nnz·k) for a last hidden width k instead of O(D·k) for D input places.

Explanations need the squared error of the places a row holds only (``present_errors``): the reconstruction there is
the last hidden layer times a gather of the output kernel's columns, O(nnz·k) per row, for any output activation.

Other output activations fall back to the dense reconstruction, chunk by chunk. ``tests/unit/test_keras_parity.py``
pins both paths to ``model.predict``.

**Place weights.** A bundle may weight each place's squared error by the inverse of how badly the model reconstructed
that place on its training rows (:func:`place_weights`): a place the model always gets right (a constant field, a
token that never appears in a position) counts a lot when it is wrong, and a place that is noisy in normal traffic
(a field of many rare values) counts little. The error is then ``Σ w_d (x_d - y_d)² / D``; the expansion above holds
with ``Wo diag(w) Woᵀ`` for the Gram matrix, so scoring costs the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from monitor.vectorize import Encoded

ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0, out=x),
    "tanh": np.tanh,
    "sigmoid": lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
}


@dataclass(frozen=True)
class DenseLayer:
    kernel: np.ndarray  # (inputs, units)
    bias: np.ndarray  # (units,)
    activation: str


class ReconstructionScorer:
    """Per-row reconstruction error of an autoencoder given as dense layers.

    The layers run in float32 (twice the matmul speed of float64); the three terms of the expanded error are summed in
    float64. They are of the same order as the error times D, so float32 keeps about 1e-7 of relative precision
    (``tests/unit/test_keras_parity.py`` checks 1e-5 against Keras).
    """

    def __init__(self, layers: Sequence[DenseLayer], chunk_rows: int = 8192, place_weights: np.ndarray | None = None):
        if len(layers) < 2:
            raise ValueError("an autoencoder needs at least two dense layers")
        for layer in layers:
            if layer.activation not in ACTIVATIONS:
                raise ValueError(f"unsupported activation {layer.activation!r}")
        self.layers = [DenseLayer(np.asarray(l.kernel, np.float32), np.asarray(l.bias, np.float32), l.activation) for l in layers]
        self.n_features = self.layers[0].kernel.shape[0]
        out = self.layers[-1]
        if out.kernel.shape[1] != self.n_features:
            raise ValueError(f"output width {out.kernel.shape[1]} differs from input width {self.n_features}")
        self.chunk_rows = chunk_rows
        self.place_weights = None
        if place_weights is not None:
            weights = np.asarray(place_weights, dtype=np.float64)
            if weights.shape != (self.n_features,) or not np.all(np.isfinite(weights)) or np.any(weights <= 0):
                raise ValueError(f"place weights must be {self.n_features} finite positive numbers")
            self.place_weights = weights
        self._kernel_t64: np.ndarray | None = None
        self.linear_output = out.activation == "linear"
        if self.linear_output:
            kernel64 = out.kernel.astype(np.float64)
            bias64 = out.bias.astype(np.float64)
            w = np.ones(self.n_features) if self.place_weights is None else self.place_weights
            self._gram = ((kernel64 * w) @ kernel64.T).astype(np.float32)
            self._kernel_bias = (kernel64 @ (w * bias64)).astype(np.float32)
            self._bias_sq = float(bias64 @ (w * bias64))
            self._kernel_t = np.ascontiguousarray(out.kernel.T)

    def errors(self, encoded: Encoded) -> np.ndarray:
        """Mean squared error per row between the input vector and its reconstruction (float64, ≥ 0)."""
        if encoded.n_features != self.n_features:
            raise ValueError(f"encoded width {encoded.n_features} differs from the model's {self.n_features}")
        x = sp.csr_matrix((encoded.data, encoded.indices, encoded.indptr), shape=(encoded.n_rows, self.n_features))
        out = np.empty(encoded.n_rows, dtype=np.float64)
        for start in range(0, encoded.n_rows, self.chunk_rows):
            stop = min(start + self.chunk_rows, encoded.n_rows)
            out[start:stop] = self._errors_chunk(x[start:stop])
        return out

    def hidden(self, x: sp.csr_matrix) -> np.ndarray:
        """Activations of the last hidden layer (the input of the output layer)."""
        first = self.layers[0]
        h = ACTIVATIONS[first.activation](np.asarray(x @ first.kernel) + first.bias)
        for layer in self.layers[1:-1]:
            h = ACTIVATIONS[layer.activation](h @ layer.kernel + layer.bias)
        return h

    def reconstruct(self, x: sp.csr_matrix) -> np.ndarray:
        out = self.layers[-1]
        return ACTIVATIONS[out.activation](self.hidden(x) @ out.kernel + out.bias)

    def _errors_chunk(self, x: sp.csr_matrix) -> np.ndarray:
        d = self.n_features
        w = self.place_weights
        rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
        if not self.linear_output:
            y = self.reconstruct(x).astype(np.float64)
            squared = (x.toarray().astype(np.float64) - y) ** 2
            return (squared if w is None else squared * w).sum(axis=1) / d
        # x·(w∘y) = (x∘w)·y: weighting the stored values keeps the gather form.
        xw = x if w is None else sp.csr_matrix((x.data * w[x.indices], x.indices, x.indptr), shape=x.shape)
        x_sq = np.bincount(rows, weights=x.data.astype(np.float64) * xw.data.astype(np.float64), minlength=x.shape[0])
        out = self.layers[-1]
        h = self.hidden(x)
        y_sq = np.einsum("ij,ij->i", h @ self._gram, h).astype(np.float64) + 2.0 * (h @ self._kernel_bias) + self._bias_sq
        x_dot_y = np.einsum("ij,ij->i", np.asarray(xw @ self._kernel_t), h).astype(np.float64) + (xw @ out.bias)
        # Rounding can leave a tiny negative where the reconstruction is near perfect; an error is never below 0.
        return np.maximum((x_sq - 2.0 * x_dot_y + y_sq) / d, 0.0)

    def present_errors(self, encoded: Encoded) -> np.ndarray:
        """Squared error ``(x - y)²`` of every stored place, times its place weight if the scorer has them, aligned
        with ``encoded.indices`` (float64, nnz values).

        The reconstruction is needed only at the places a row holds: ``y = act(h · Wo[:, col] + bo[col])``, a gather of
        the output kernel's columns (O(nnz·k) for a last hidden width k) instead of the dense O(D·k) reconstruction.
        The dot products run in float64 on the float32 hidden layer, so they match the dense path to float32 precision.
        """
        if encoded.n_features != self.n_features:
            raise ValueError(f"encoded width {encoded.n_features} differs from the model's {self.n_features}")
        x = sp.csr_matrix((encoded.data, encoded.indices, encoded.indptr), shape=(encoded.n_rows, self.n_features))
        out_layer = self.layers[-1]
        if self._kernel_t64 is None:  # (D, k) float64, once: gathers then need no conversion
            self._kernel_t64 = np.ascontiguousarray(out_layer.kernel.T, dtype=np.float64)
        kernel_t = self._kernel_t64
        activation = ACTIVATIONS[out_layer.activation]
        out = np.empty(len(encoded.indices), dtype=np.float64)
        for start in range(0, encoded.n_rows, self.chunk_rows):
            stop = min(start + self.chunk_rows, encoded.n_rows)
            lo, hi = int(encoded.indptr[start]), int(encoded.indptr[stop])
            if hi == lo:
                continue
            h = self.hidden(x[start:stop]).astype(np.float64)
            rows = np.repeat(np.arange(stop - start), np.diff(encoded.indptr[start : stop + 1]))
            # The gathered (values × k) blocks are bounded, however many places the rows hold (long count rows).
            for a in range(lo, hi, self.chunk_rows * 4):
                b = min(a + self.chunk_rows * 4, hi)
                cols = encoded.indices[a:b]
                y = np.einsum("ij,ij->i", h[rows[a - lo : b - lo]], kernel_t[cols])
                y = activation(y + out_layer.bias[cols])
                out[a:b] = (encoded.data[a:b].astype(np.float64) - y) ** 2
                if self.place_weights is not None:
                    out[a:b] *= self.place_weights[cols]
        return out

    def contributions(self, encoded: Encoded, row: int = 0) -> np.ndarray:
        """Squared error per input place for one row (dense, length D; weighted like the error): what ``explain``
        ranks."""
        x = sp.csr_matrix((encoded.data, encoded.indices, encoded.indptr), shape=(encoded.n_rows, self.n_features))[row]
        y = self.reconstruct(x)[0].astype(np.float64)
        squared = (x.toarray()[0].astype(np.float64) - y) ** 2
        return squared if self.place_weights is None else squared * self.place_weights


#: The place weights' prior, in rows: as if every place had once been reconstructed entirely wrong (squared error 1).
#: A place never wrong over N training rows then weighs N + 1 instead of infinity, and a place seen in few rows keeps
#: a weight near 1 whatever its few residuals were.
PLACE_WEIGHT_PRIOR_ROWS = 1.0


def place_weights(
    scorer: ReconstructionScorer, encoded: Encoded, counts: np.ndarray | None = None,
    novelty: np.ndarray | None = None,
) -> np.ndarray:
    """Each place's inverse mean squared residual over training rows: ``(N + p) / (Σ m (x - y)² + p)`` for rows
    occurring ``m`` times (``counts``; N = Σ m) and the prior ``p`` = :data:`PLACE_WEIGHT_PRIOR_ROWS`.

    ``novelty`` places (``<oov>``, ``<rare>``: ``VectorizerSettings.novelty_columns``) weigh ``(N + p) / p``, as a
    place never wrong in training. Such a place pools every value seen fewer than ``min_count`` times, so its
    residual says how often *some* rare or new value occurs there; the value at hand is one of many, seen at most
    once or twice in N rows (Good-Turing: each about 1/N), rarer than any token with a place of its own. Weighted by
    the pool, a never-seen value counted less than a known value seen three times (README, Quality).

    With a linear output the sum over every row of ``y_d²`` is ``w_dᵀ (Hᵀ diag(m) H) w_d + 2 b_d (mᵀH)·w_d + N b_d²``
    (``w_d`` the output kernel's column d), and the stored places add ``m (x² - 2 x y)``: O(nnz·k + D·k²), no dense
    reconstruction. Other activations reconstruct chunk by chunk.
    """
    if scorer.place_weights is not None:
        raise ValueError("place weights are computed with an unweighted scorer")
    d = scorer.n_features
    counts = np.ones(encoded.n_rows) if counts is None else np.asarray(counts, dtype=np.float64)
    if counts.shape != (encoded.n_rows,):
        raise ValueError(f"counts must have one entry per row ({encoded.n_rows})")
    x = sp.csr_matrix((encoded.data, encoded.indices, encoded.indptr), shape=(encoded.n_rows, d))
    out = scorer.layers[-1]
    kernel = out.kernel.astype(np.float64)
    bias = out.bias.astype(np.float64)
    total = np.zeros(d)
    gram = np.zeros((kernel.shape[0], kernel.shape[0]))
    hidden_sum = np.zeros(kernel.shape[0])
    for start in range(0, encoded.n_rows, scorer.chunk_rows):
        stop = min(start + scorer.chunk_rows, encoded.n_rows)
        chunk, m = x[start:stop], counts[start:stop]
        if not scorer.linear_output:
            total += (m[:, None] * (chunk.toarray().astype(np.float64) - scorer.reconstruct(chunk)) ** 2).sum(axis=0)
            continue
        h = scorer.hidden(chunk).astype(np.float64)
        gram += (h * m[:, None]).T @ h
        hidden_sum += m @ h
        rows = np.repeat(np.arange(stop - start), np.diff(chunk.indptr))
        cols = chunk.indices
        y = np.einsum("ij,ji->i", h[rows], kernel[:, cols]) + bias[cols]
        v = chunk.data.astype(np.float64)
        total += np.bincount(cols, weights=m[rows] * (v * v - 2.0 * v * y), minlength=d)
    n = float(counts.sum())
    if scorer.linear_output:
        total += ((gram @ kernel) * kernel).sum(axis=0) + 2.0 * bias * (hidden_sum @ kernel) + n * bias * bias
    # The expansion can leave a rounding-sized negative where a place is reconstructed perfectly.
    total = np.maximum(total, 0.0)
    if novelty is not None and len(novelty):
        total[novelty] = 0.0
    return (n + PLACE_WEIGHT_PRIOR_ROWS) / (total + PLACE_WEIGHT_PRIOR_ROWS)


def top_per_row(indptr: np.ndarray, values: np.ndarray, top: int) -> np.ndarray:
    """Positions (into ``values``) of the ``top`` largest positive values of every CSR row, row by row, largest first.

    Ties keep the stored order (the column order of an encoded row), as a stable sort of one row does; values ≤ 0
    are never kept. Cost: one sort of the ``nnz`` values, no Python loop per row.
    """
    n_rows = len(indptr) - 1
    rows = np.repeat(np.arange(n_rows), np.diff(indptr))
    order = np.lexsort((-values, rows))  # by row, then largest first; lexsort is stable
    rank = np.arange(len(order)) - indptr[rows[order]]
    return order[(rank < top) & (values[order] > 0)]


def percentile_rank(sorted_reference: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """Percentile rank (0–100) of each error among the reference errors, ``kind="weak"``.

    The share of reference errors ≤ the error, as ``scipy.stats.percentileofscore(reference, e, kind="weak")``.
    ``sorted_reference`` must be sorted ascending. NaN errors give NaN.
    """
    errors = np.asarray(errors, dtype=np.float64)
    ranks = np.searchsorted(sorted_reference, errors, side="right") * (100.0 / len(sorted_reference))
    return np.where(np.isnan(errors), np.nan, ranks)


def group_score(errors: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Weighted mean error of a group, ``Σ w·e / Σ w`` (the original's hourly rating). NaN for an empty group.

    Records with a NaN error (unscorable) are left out, weights included.
    """
    errors = np.asarray(errors, dtype=np.float64)
    weights = np.ones_like(errors) if weights is None else np.asarray(weights, dtype=np.float64)
    if errors.shape != weights.shape:
        raise ValueError(f"errors and weights differ in shape: {errors.shape} vs {weights.shape}")
    if np.any(weights < 0):
        raise ValueError("weights must not be negative")
    ok = ~np.isnan(errors)
    total = weights[ok].sum()
    return float((weights[ok] * errors[ok]).sum() / total) if total > 0 else float("nan")
