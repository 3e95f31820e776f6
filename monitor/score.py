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

    def __init__(self, layers: Sequence[DenseLayer], chunk_rows: int = 8192):
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
        self._kernel_t64: np.ndarray | None = None
        self.linear_output = out.activation == "linear"
        if self.linear_output:
            kernel64 = out.kernel.astype(np.float64)
            self._gram = (kernel64 @ kernel64.T).astype(np.float32)
            self._kernel_bias = (kernel64 @ out.bias.astype(np.float64)).astype(np.float32)
            self._bias_sq = float(out.bias.astype(np.float64) @ out.bias.astype(np.float64))
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
        rows = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
        x_sq = np.bincount(rows, weights=x.data.astype(np.float64) ** 2, minlength=x.shape[0])
        if not self.linear_output:
            y = self.reconstruct(x).astype(np.float64)
            dense = x.toarray().astype(np.float64)
            return ((dense - y) ** 2).sum(axis=1) / d
        out = self.layers[-1]
        h = self.hidden(x)
        y_sq = np.einsum("ij,ij->i", h @ self._gram, h).astype(np.float64) + 2.0 * (h @ self._kernel_bias) + self._bias_sq
        x_dot_y = np.einsum("ij,ij->i", np.asarray(x @ self._kernel_t), h).astype(np.float64) + (x @ out.bias)
        # Rounding can leave a tiny negative where the reconstruction is near perfect; an error is never below 0.
        return np.maximum((x_sq - 2.0 * x_dot_y + y_sq) / d, 0.0)

    def present_errors(self, encoded: Encoded) -> np.ndarray:
        """Squared error ``(x - y)²`` of every stored place, aligned with ``encoded.indices`` (float64, nnz values).

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
        return out

    def contributions(self, encoded: Encoded, row: int = 0) -> np.ndarray:
        """Squared error per input place for one row (dense, length D): what ``explain`` ranks."""
        x = sp.csr_matrix((encoded.data, encoded.indices, encoded.indptr), shape=(encoded.n_rows, self.n_features))[row]
        y = self.reconstruct(x)[0].astype(np.float64)
        return (x.toarray()[0].astype(np.float64) - y) ** 2


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
