import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import percentileofscore

from monitor.score import (
    PLACE_WEIGHT_PRIOR_ROWS,
    DenseLayer,
    ReconstructionScorer,
    group_score,
    percentile_rank,
    place_weights,
    top_per_row,
)
from monitor.vectorize import Encoded


def encoded_from_dense(rows):
    rows = np.asarray(rows, dtype=np.float32)
    nz = [np.flatnonzero(r) for r in rows]
    indptr = np.r_[0, np.cumsum([len(i) for i in nz])].astype(np.int64)
    indices = np.concatenate(nz).astype(np.int32) if nz else np.zeros(0, np.int32)
    data = np.concatenate([r[i] for r, i in zip(rows, nz)]).astype(np.float32)
    n = len(rows)
    return Encoded(indptr, indices, data, rows.shape[1], np.ones(n, np.int64), np.zeros(n, np.int64))


def constant_autoencoder(output, activation):
    """A two-layer autoencoder whose reconstruction is ``output`` whatever the input."""
    d = len(output)
    return ReconstructionScorer([DenseLayer(np.zeros((d, 1)), np.zeros(1), "linear"), DenseLayer(np.zeros((1, d)), np.asarray(output, float), activation)])


@pytest.mark.parametrize("activation", ["linear", "relu"])
def test_the_originals_mse_example(activation):
    # Inputs differing from the reconstruction in 0, 1 and 2 of 5 places.
    scorer = constant_autoencoder([1, 1, 0, 0, 0], activation)
    x = encoded_from_dense([[1, 1, 0, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    assert scorer.errors(x) == pytest.approx([0.0, 0.2, 0.4], abs=1e-12)


def test_fast_linear_path_equals_the_dense_reconstruction():
    rng = np.random.default_rng(0)
    d, k = 40, 6
    layers = [
        DenseLayer(rng.normal(size=(d, 8)), rng.normal(size=8), "relu"),
        DenseLayer(rng.normal(size=(8, k)), rng.normal(size=k), "relu"),
        DenseLayer(rng.normal(size=(k, d)), rng.normal(size=d), "linear"),
    ]
    scorer = ReconstructionScorer(layers, chunk_rows=7)
    x = (rng.random((50, d)) < 0.1).astype(np.float32)
    enc = encoded_from_dense(x)
    y = scorer.reconstruct(sp.csr_matrix(x.astype(float)))
    np.testing.assert_allclose(scorer.errors(enc), ((x - y) ** 2).mean(axis=1), rtol=1e-5)
    assert scorer.contributions(enc, 3).sum() / d == pytest.approx(scorer.errors(enc)[3], rel=1e-5)


@pytest.mark.parametrize("output", ["linear", "relu", "sigmoid"])
def test_present_errors_are_the_dense_squared_errors_at_the_stored_places(output):
    rng = np.random.default_rng(3)
    d = 30
    layers = [
        DenseLayer(rng.normal(size=(d, 8)), rng.normal(size=8), "relu"),
        DenseLayer(rng.normal(size=(8, d)), rng.normal(size=d), output),
    ]
    scorer = ReconstructionScorer(layers, chunk_rows=4)  # several chunks, one of them holding only empty rows
    x = (rng.random((11, d)) < 0.2) * rng.integers(1, 3, size=(11, d)).astype(np.float32)
    x[4:8] = 0.0
    enc = encoded_from_dense(x)
    y = scorer.reconstruct(sp.csr_matrix(x.astype(np.float32))).astype(np.float64)
    rows = np.repeat(np.arange(len(x)), np.diff(enc.indptr))
    expected = (x[rows, enc.indices] - y[rows, enc.indices]) ** 2
    assert len(expected) > 10 and np.ptp(expected) > 0
    np.testing.assert_allclose(scorer.present_errors(enc), expected, rtol=1e-5, atol=1e-6)


def _random_layers(rng, d, output):
    return [
        DenseLayer(rng.normal(size=(d, 8)), rng.normal(size=8), "relu"),
        DenseLayer(rng.normal(size=(8, 5)), rng.normal(size=5), "relu"),
        DenseLayer(rng.normal(size=(5, d)) * 0.3, rng.normal(size=d) * 0.3, output),
    ]


@pytest.mark.parametrize("output", ["linear", "sigmoid"])
def test_place_weights_are_the_inverse_mean_squared_residual_with_the_prior(output):
    rng = np.random.default_rng(5)
    d = 25
    scorer = ReconstructionScorer(_random_layers(rng, d, output), chunk_rows=6)
    x = (rng.random((40, d)) < 0.15) * rng.integers(1, 3, size=(40, d)).astype(np.float32)
    x[:, 3] = 0.0  # a place no training row holds
    counts = rng.integers(1, 5, 40).astype(float)
    y = scorer.reconstruct(sp.csr_matrix(x)).astype(np.float64)
    residual = (counts[:, None] * (x - y) ** 2).sum(axis=0)
    expected = (counts.sum() + PLACE_WEIGHT_PRIOR_ROWS) / (residual + PLACE_WEIGHT_PRIOR_ROWS)
    weights = place_weights(scorer, encoded_from_dense(x), counts)
    np.testing.assert_allclose(weights, expected, rtol=1e-5)
    assert np.ptp(weights) > 1.0  # the places really differ
    # Repeating a row is the same as counting it twice.
    doubled = np.repeat(x, counts.astype(int), axis=0)
    np.testing.assert_allclose(place_weights(scorer, encoded_from_dense(doubled)), weights, rtol=1e-5)
    # Novelty places weigh as a place never wrong in training, whatever their residuals; the others are unchanged.
    novelty = np.array([1, 2])
    pooled = place_weights(scorer, encoded_from_dense(x), counts, novelty=novelty)
    np.testing.assert_allclose(pooled[novelty], (counts.sum() + PLACE_WEIGHT_PRIOR_ROWS) / PLACE_WEIGHT_PRIOR_ROWS)
    np.testing.assert_allclose(np.delete(pooled, novelty), np.delete(weights, novelty), rtol=1e-12)
    assert np.all(pooled[novelty] > weights[novelty])


@pytest.mark.parametrize("output", ["linear", "relu"])
def test_weighted_errors_equal_the_dense_weighted_mean_on_every_path(output):
    rng = np.random.default_rng(9)
    d = 30
    layers = _random_layers(rng, d, output)
    w = rng.uniform(0.1, 500.0, d)
    scorer = ReconstructionScorer(layers, chunk_rows=7, place_weights=w)
    x = (rng.random((33, d)) < 0.2) * rng.integers(1, 3, size=(33, d)).astype(np.float32)
    enc = encoded_from_dense(x)
    y = scorer.reconstruct(sp.csr_matrix(x)).astype(np.float64)
    squared = (x - y) ** 2
    np.testing.assert_allclose(scorer.errors(enc), (squared * w).mean(axis=1), rtol=1e-4)
    rows = np.repeat(np.arange(len(x)), np.diff(enc.indptr))
    np.testing.assert_allclose(scorer.present_errors(enc), (squared * w)[rows, enc.indices], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(scorer.contributions(enc, 2), squared[2] * w, rtol=1e-5, atol=1e-3)
    plain = ReconstructionScorer(layers, chunk_rows=7)
    assert not np.allclose(plain.errors(enc), scorer.errors(enc))


@pytest.mark.parametrize("bad", [np.zeros(4), -np.ones(4), np.full(4, np.nan), np.ones(3)])
def test_place_weights_must_be_finite_positive_and_one_per_place(bad):
    layers = [DenseLayer(np.zeros((4, 2)), np.zeros(2), "linear"), DenseLayer(np.zeros((2, 4)), np.zeros(4), "linear")]
    with pytest.raises(ValueError, match="place weights"):
        ReconstructionScorer(layers, place_weights=bad)


def test_top_per_row_hand_computed():
    indptr = np.array([0, 3, 3, 7, 9])
    values = np.array([0.1, 0.5, 0.3, 2.0, 2.0, 0.0, 3.0, -1.0, 0.0])
    # Row 0: 0.5, 0.3 (0.1 cut); row 1 empty; row 2: 3.0, then the tie 2.0/2.0 in stored order; row 3: nothing > 0.
    assert top_per_row(indptr, values, 2).tolist() == [1, 2, 6, 3]
    assert top_per_row(indptr, values, 3).tolist() == [1, 2, 0, 6, 3, 4]
    assert top_per_row(indptr, values, 0).tolist() == []


def test_percentile_rank_is_scipys_weak_kind():
    rng = np.random.default_rng(1)
    reference = np.sort(rng.exponential(size=501).round(2))
    errors = np.r_[reference[:20], rng.exponential(size=50).round(2), -1.0, 99.0]
    expected = [percentileofscore(reference, e, kind="weak") for e in errors]
    np.testing.assert_allclose(percentile_rank(reference, errors), expected)
    assert percentile_rank(np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, np.nan])).tolist()[0] == 50.0
    assert np.isnan(percentile_rank(np.array([1.0]), np.array([np.nan]))[0])


def test_group_score_is_the_weighted_mean():
    assert group_score(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 2.0])) == pytest.approx(2.25)
    assert group_score(np.array([1.0, np.nan, 3.0])) == pytest.approx(2.0)
    assert np.isnan(group_score(np.array([])))
    with pytest.raises(ValueError):
        group_score(np.array([1.0]), np.array([-1.0]))
