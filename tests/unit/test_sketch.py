"""ErrorSketch and prob_greater: hand-computed buckets, quantiles, ranks, ties, merging, accuracy."""

import json
import math

import numpy as np
import pytest

from monitor.errors import StateError
from monitor.sketch import ErrorSketch, prob_greater

# alpha = 0.2 gives gamma = 1.5: bucket i covers (1.5**(i-1), 1.5**i], representative 0.8 * 1.5**i.
COARSE = 0.2


def coarse(errors, weights=None):
    sketch = ErrorSketch(COARSE)
    sketch.add(np.asarray(errors, dtype=float), None if weights is None else np.asarray(weights, dtype=float))
    return sketch


def test_gamma_and_bucket_indices():
    sketch = ErrorSketch(COARSE)
    assert sketch.gamma == pytest.approx(1.5)
    # log(e)/log(1.5): 1.0 -> 0, 1.2 -> 0.45, 1.3 -> 0.65, 2.0 -> 1.71, 3.0 -> 2.71, 0.5 -> -1.71, 0.9 -> -0.26
    got = sketch.bucket_indices(np.array([1.0, 1.2, 1.3, 2.0, 3.0, 0.5, 0.9]))
    assert got.tolist() == [0, 1, 1, 2, 3, -1, 0]
    # Zero bucket for errors <= min_error, strictly below every real bucket.
    zero = sketch.bucket_indices(np.array([0.0, 1e-12, 1e-13]))
    assert zero.tolist() == [sketch.zero_index] * 3
    assert sketch.zero_index < int(sketch.bucket_indices(np.array([1.0000001e-12]))[0])


def test_representative_values():
    sketch = ErrorSketch(COARSE)
    reps = sketch.representative(np.array([0, 1, -1, 3, sketch.zero_index]))
    assert reps.tolist() == pytest.approx([0.8, 1.2, 0.8 / 1.5, 2.7, 0.0])


def test_quantile_hand_computed():
    # Buckets {0: 1, 1: 2, 3: 1}; cumulative weights [1, 3, 4].
    sketch = coarse([1.0, 1.2, 1.3, 3.0])
    assert sketch.total_weight == 4.0
    assert sketch.bucket_count == 3
    assert sketch.quantile(0.0) == pytest.approx(0.8)
    assert sketch.quantile(0.25) == pytest.approx(0.8)  # target weight 1 reached in bucket 0
    assert sketch.quantile(0.26) == pytest.approx(1.2)
    assert sketch.quantile(0.5) == pytest.approx(1.2)
    assert sketch.quantile(0.75) == pytest.approx(1.2)  # target 3 reached in bucket 1
    assert sketch.quantile(0.8) == pytest.approx(2.7)
    assert sketch.quantile(1.0) == pytest.approx(2.7)


def test_quantile_is_weighted():
    # Weight 3 on the smallest error: cumulative [3, 5, 6] over buckets 0, 1, 3.
    sketch = coarse([1.0, 1.2, 1.3, 3.0], [3.0, 1.0, 1.0, 1.0])
    assert sketch.total_weight == 6.0
    assert sketch.quantile(0.5) == pytest.approx(0.8)
    assert sketch.quantile(0.51) == pytest.approx(1.2)
    assert sketch.quantile(0.9) == pytest.approx(2.7)


def test_zero_bucket_quantile():
    sketch = coarse([0.0, 1e-13, 1.0])
    assert sketch.quantile(0.5) == 0.0
    assert sketch.quantile(1.0) == pytest.approx(0.8)


def test_rank_hand_computed():
    sketch = coarse([1.0, 1.2, 1.3, 3.0])
    assert sketch.rank(1.25) == 0.75  # the bucket holding 1.25 also holds 1.2 and 1.3 and counts in full
    assert sketch.rank(0.95) == 0.25
    assert sketch.rank(2.0) == 0.75  # bucket 2 is empty
    assert sketch.rank(100.0) == 1.0
    assert sketch.rank(math.inf) == 1.0
    assert sketch.rank(-1.0) == 0.0
    assert sketch.rank(0.0) == 0.0
    assert math.isnan(sketch.rank(math.nan))
    assert coarse([0.0, 1.0]).rank(0.0) == 0.5


def test_rank_of_quantile_reaches_q():
    sketch = coarse([1.0, 1.2, 1.3, 3.0], [3.0, 1.0, 1.0, 1.0])
    for q in (0.1, 0.5, 0.51, 0.9, 1.0):
        assert sketch.rank(sketch.quantile(q)) >= q


def test_empty_sketch():
    sketch = ErrorSketch()
    assert sketch.total_weight == 0.0
    assert sketch.is_empty
    assert math.isnan(sketch.quantile(0.5))
    assert math.isnan(sketch.rank(1.0))
    sketch.add(np.array([]), np.array([]))
    assert sketch.is_empty


@pytest.mark.parametrize(
    "errors, weights",
    [([-1.0], [1.0]), ([math.nan], [1.0]), ([math.inf], [1.0]), ([1.0], [0.0]), ([1.0], [-2.0]), ([1.0], [1.0, 2.0])],
)
def test_add_rejects_bad_values(errors, weights):
    with pytest.raises(ValueError):
        ErrorSketch().add(np.array(errors), np.array(weights))


def test_bad_parameters_and_q():
    with pytest.raises(ValueError):
        ErrorSketch(alpha=0.0)
    with pytest.raises(ValueError):
        ErrorSketch(alpha=1.0)
    with pytest.raises(ValueError):
        ErrorSketch(min_error=0.0)
    with pytest.raises(ValueError):
        coarse([1.0]).quantile(1.5)


def test_add_accumulates_across_batches():
    sketch = coarse([1.0, 3.0])
    sketch.add(np.array([1.2, 0.9]), np.array([2.0, 5.0]))
    index, weight = sketch.buckets()
    assert index.tolist() == [0, 1, 3]
    assert weight.tolist() == [6.0, 2.0, 1.0]


def test_merge_equals_adding_everything_and_leaves_inputs_alone():
    rng = np.random.default_rng(1)
    x1, x2 = rng.lognormal(size=500), rng.lognormal(0.5, 2.0, size=700)
    w1, w2 = rng.integers(1, 5, 500).astype(float), rng.integers(1, 5, 700).astype(float)
    a, b = ErrorSketch(), ErrorSketch()
    a.add(x1, w1)
    b.add(x2, w2)
    a_before, b_before = a.copy(), b.copy()
    whole = ErrorSketch()
    whole.add(np.concatenate([x1, x2]), np.concatenate([w1, w2]))
    # Integer weights make every sum exact, so equality is exact.
    assert a.merge(b) == whole
    assert b.merge(a) == whole
    assert a == a_before and b == b_before
    assert a.merge(ErrorSketch()) == a


def test_merge_incompatible():
    with pytest.raises(ValueError):
        ErrorSketch(0.001).merge(ErrorSketch(0.01))
    with pytest.raises(ValueError):
        ErrorSketch(0.001, 1e-12).merge(ErrorSketch(0.001, 1e-9))


def test_dict_round_trip_through_json():
    rng = np.random.default_rng(2)
    sketch = ErrorSketch(0.005)
    sketch.add(np.concatenate([rng.lognormal(size=1000), [0.0]]), rng.uniform(0.1, 3.0, 1001))
    restored = ErrorSketch.from_dict(json.loads(json.dumps(sketch.to_dict())))
    assert restored == sketch
    assert restored.quantile(0.37) == sketch.quantile(0.37)
    assert ErrorSketch.from_dict(ErrorSketch().to_dict()) == ErrorSketch()
    assert sketch != ErrorSketch(0.005)


@pytest.mark.parametrize(
    "data",
    [
        {"alpha": 0.01, "min_error": 1e-12, "index": [2, 1], "weight": [1.0, 1.0]},
        {"alpha": 0.01, "min_error": 1e-12, "index": [1, 2], "weight": [1.0]},
        {"alpha": 0.01, "min_error": 1e-12, "index": [1], "weight": [-1.0]},
        {"alpha": 0.01, "index": [1], "weight": [1.0]},
        {"alpha": 5.0, "min_error": 1e-12, "index": [], "weight": []},
    ],
)
def test_from_dict_rejects_malformed(data):
    with pytest.raises(StateError):
        ErrorSketch.from_dict(data)


# ---------------------------------------------------------------- prob_greater


def test_prob_greater_identical_is_exactly_half():
    rng = np.random.default_rng(3)
    errors, weights = rng.lognormal(size=2000), rng.uniform(0.01, 7.0, 2000)
    a, b = ErrorSketch(), ErrorSketch()
    a.add(errors, weights)
    b.add(errors[::-1], weights[::-1])
    assert prob_greater(a, a) == 0.5
    assert prob_greater(a, b) == 0.5


def test_prob_greater_disjoint():
    low, high = coarse([1.0, 1.2, 2.0]), coarse([5.0, 9.0])
    assert prob_greater(high, low) == 1.0
    assert prob_greater(low, high) == 0.0


def test_prob_greater_ties_count_half_two_vs_two():
    # current {1.0 (bucket 0), 3.0 (bucket 3)} vs previous {1.0 (bucket 0), 2.0 (bucket 2)}:
    # pairs (1,1) tie 1/2, (1,2) 0, (3,1) 1, (3,2) 1  ->  2.5 / 4
    assert prob_greater(coarse([1.0, 3.0]), coarse([1.0, 2.0])) == 0.625
    assert prob_greater(coarse([1.0, 2.0]), coarse([1.0, 3.0])) == 0.375
    # Weighted: current weights (1, 3), previous (2, 2): tie 1*2/2 + 0 + 3*2 + 3*2 = 13 of 4*4
    assert prob_greater(coarse([1.0, 3.0], [1.0, 3.0]), coarse([1.0, 2.0], [2.0, 2.0])) == 13 / 16
    # 1.2 and 1.3 share bucket 1 (within the sketch's resolution): a tie.
    assert prob_greater(coarse([1.3]), coarse([1.2])) == 0.5


def test_prob_greater_empty_and_incompatible():
    assert math.isnan(prob_greater(ErrorSketch(COARSE), ErrorSketch(COARSE)))
    assert math.isnan(prob_greater(ErrorSketch(COARSE), coarse([1.0])))
    assert math.isnan(prob_greater(coarse([1.0]), ErrorSketch(COARSE)))
    with pytest.raises(ValueError):
        prob_greater(ErrorSketch(0.01), ErrorSketch(0.02))


# ---------------------------------------------------------------- accuracy


def weighted_rank_weak(sorted_values, cumulative_weights, x):
    """Exact weighted share of samples <= x."""
    position = np.searchsorted(sorted_values, x, side="right")
    return np.where(position > 0, cumulative_weights[np.maximum(position - 1, 0)], 0.0) / cumulative_weights[-1]


def exact_prob_greater(x, wx, y, wy):
    """Exact weighted P(X > Y) + P(X == Y)/2 in O(n log n)."""
    order = np.argsort(y)
    ys, cy = y[order], np.concatenate([[0.0], np.cumsum(wy[order])])
    below = cy[np.searchsorted(ys, x, side="left")]
    at_or_below = cy[np.searchsorted(ys, x, side="right")]
    return float(np.sum(wx * (below + 0.5 * (at_or_below - below))) / (wx.sum() * wy.sum()))


def test_quantiles_have_accurate_weighted_rank():
    rng = np.random.default_rng(4)
    errors = rng.lognormal(mean=-2.0, sigma=1.5, size=100_000)
    weights = rng.uniform(0.1, 10.0, size=100_000)
    sketch = ErrorSketch()
    sketch.add(errors, weights)
    order = np.argsort(errors)
    sorted_errors, cumulative = errors[order], np.cumsum(weights[order])
    qs = np.round(np.arange(1, 100) / 100, 2)
    estimates = np.array([sketch.quantile(q) for q in qs])
    true_rank = weighted_rank_weak(sorted_errors, cumulative, estimates)
    assert np.max(np.abs(true_rank - qs)) <= 0.005
    # Relative accuracy: each estimate is within alpha of the exact weighted quantile.
    exact = sorted_errors[np.searchsorted(cumulative, qs * cumulative[-1])]
    assert np.max(np.abs(estimates / exact - 1.0)) <= sketch.alpha + 1e-12


def test_prob_greater_matches_exact_computation():
    rng = np.random.default_rng(5)
    x, wx = rng.lognormal(0.2, 1.0, 60_000), rng.uniform(0.1, 5.0, 60_000)
    y, wy = rng.lognormal(0.0, 1.2, 40_000), rng.uniform(0.1, 5.0, 40_000)
    a, b = ErrorSketch(), ErrorSketch()
    a.add(x, wx)
    b.add(y, wy)
    exact = exact_prob_greater(x, wx, y, wy)
    assert abs(prob_greater(a, b) - exact) <= 0.005
    assert abs(prob_greater(b, a) - (1.0 - exact)) <= 0.005
    assert 0.5 < exact < 0.6  # the comparison is not trivially 0.5 or 1
