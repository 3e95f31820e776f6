"""Deviation statistics (monitor.deviation) and the baseline with its decision (monitor.baseline), hand-computed."""

import json
import math

import numpy as np
import pytest

from monitor.baseline import Baseline
from monitor.deviation import (
    DeviationSettings,
    compare_sketches,
    decide,
    effective_size,
    shift,
    surprise,
    tail_excess,
    tail_surprise,
)
from monitor.errors import ConfigError, StateError
from monitor.sketch import ErrorSketch
from monitor.window import ClosedWindow, WindowAggregate

H = 3_600_000


def sketch(errors, weights=None):
    s = ErrorSketch()
    s.add(np.asarray(errors, dtype=float), None if weights is None else np.asarray(weights, dtype=float))
    return s


def aggregate(errors, weights=None):
    errors = np.asarray(errors, dtype=float)
    agg = WindowAggregate.empty()
    agg.add(errors, None if weights is None else np.asarray(weights, float), np.full(errors.size, 50.0), errors > 5)
    return agg


# --- statistics -----------------------------------------------------------------------------------------------------


def test_shift_is_the_one_sided_ks_distance_in_percent():
    # F_ref at 4 is 1.0, F_cur at 4 is 0.75 (its 4th error moved to 10): D+ = 0.25.
    assert shift(sketch([1, 2, 3, 10]), sketch([1, 2, 3, 4])) == pytest.approx(25.0)
    # The other way round nothing moved up: D+ = 0 (the hour after an incident).
    assert shift(sketch([1, 2, 3, 4]), sketch([1, 2, 3, 10])) == 0.0
    assert shift(sketch([1, 2, 3]), sketch([1, 2, 3])) == 0.0
    assert shift(sketch([5, 6]), sketch([1, 2])) == pytest.approx(100.0)


def test_shift_weighs_records():
    # current: 1 (w 3), 10 (w 1); reference 1, 2: F_ref(2) = 1, F_cur(2) = 0.75.
    assert shift(sketch([1, 10], [3, 1]), sketch([1, 2])) == pytest.approx(25.0)


def test_shift_nan_when_empty_and_refuses_other_buckets():
    assert math.isnan(shift(ErrorSketch(), sketch([1.0])))
    assert math.isnan(shift(sketch([1.0]), ErrorSketch()))
    with pytest.raises(ValueError):
        shift(sketch([1.0]), ErrorSketch(alpha=0.01))


def test_effective_size_is_kish():
    assert effective_size(4.0, 6.0, 3) == pytest.approx(16 / 6)  # weights 1, 1, 2
    assert effective_size(3.0, 3.0, 3) == 3.0
    assert effective_size(3.0, 0.0, 3) == 3.0  # unknown sum of squares: the count
    assert effective_size(0.0, 0.0, 0) == 0.0


def test_surprise_is_the_asymptotic_one_sided_ks_bound():
    # m = 100 * 100 / 200 = 50; -log10 exp(-2 * 50 * 0.25^2) = 6.25 / ln 10.
    assert surprise(25.0, 100, 100) == pytest.approx(6.25 / math.log(10))
    assert surprise(0.0, 100, 100) == 0.0
    assert math.isnan(surprise(math.nan, 100, 100))
    assert math.isnan(surprise(10.0, 0, 100))
    # The same shift is far more surprising with 100x the records: the rule scales with volume.
    assert surprise(5.0, 10_000, 10_000) == pytest.approx(100 * surprise(5.0, 100, 100))


def test_tail_excess_counts_weight_above_the_reference_p99():
    reference = sketch(np.arange(1, 101))  # the p99 is 99; one error of 100 lies above it
    current = sketch(np.concatenate([np.arange(1, 91), np.full(10, 200.0)]))
    excess, current_share, reference_share = tail_excess(current, reference)
    assert (current_share, reference_share) == pytest.approx((0.10, 0.01))
    assert excess == pytest.approx(9.0)
    assert tail_excess(reference, current)[0] == 0.0  # fewer high errors: no excess
    assert all(math.isnan(v) for v in tail_excess(ErrorSketch(), reference))


def test_tail_surprise_is_a_one_sided_g_test():
    # 10 of 100 vs 1 of 100 in the tail; pooled 11/200; G = 8.97598; p = erfc(sqrt(G/2)) / 2 = 10^-2.86399.
    assert tail_surprise(0.10, 0.01, 100, 100) == pytest.approx(2.8639897580, rel=1e-9)
    assert tail_surprise(0.01, 0.10, 100, 100) == 0.0
    assert math.isnan(tail_surprise(math.nan, 0.01, 100, 100))
    # Far out (erfc would underflow) the asymptote continues the same curve.
    near, far = tail_surprise(0.30, 0.01, 2_000, 2_000), tail_surprise(0.30, 0.01, 200_000, 200_000)
    assert 100 < near < far and math.isfinite(far)


def test_compare_sketches_names_both_statistics():
    got = compare_sketches(sketch([1, 2, 3, 10]), 4, sketch([1, 2, 3, 4]), 4)
    assert set(got) == {"ks_shift", "ks_surprise", "tail_shift", "tail_surprise"}
    assert got["ks_shift"] == pytest.approx(25.0)
    assert got["ks_surprise"] == pytest.approx(2 * 2 * 0.0625 / math.log(10))


def test_decide_needs_size_and_significance():
    s = DeviationSettings(page_shift=3.0, page_surprise=6.0, ticket_shift=1.0, ticket_surprise=4.0)
    assert decide(3.0, 6.0, s) == "page"
    assert decide(2.9, 60.0, s) == "ticket"  # significant but small
    assert decide(50.0, 5.9, s) == "ticket"
    assert decide(50.0, 3.9, s) == "ok"  # large but could be chance (a quiet hour)
    assert decide(0.9, 100.0, s) == "ok"
    assert decide(math.nan, math.nan, s) == "ok"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"page_shift": -1.0},
        {"page_shift": 101.0},
        {"page_surprise": "6"},
        {"ticket_shift": 5.0, "page_shift": 3.0},
        {"ticket_surprise": 7.0, "page_surprise": 6.0},
        {"baseline_windows": -1},
        {"baseline_min_windows": 0},
        {"baseline_windows": True},
    ],
)
def test_settings_are_validated(kwargs):
    with pytest.raises(ConfigError):
        DeviationSettings(**kwargs)


# --- baseline and decision ------------------------------------------------------------------------------------------

NORMAL = np.linspace(1.0, 2.0, 1000)  # 1000 distinct normal errors
INCIDENT = np.concatenate([NORMAL[:900], np.full(100, 50.0)])  # 10 % moved far up


def windows(hours):
    """ClosedWindows of topic t chained as the Windower chains them: each holds the one before as previous."""
    out, previous = [], None
    for i, errors in enumerate(hours):
        agg = aggregate(errors) if len(errors) else WindowAggregate.empty()
        out.append(ClosedWindow("t", i * H, (i + 1) * H, agg, previous))
        previous = agg
    return out


def test_every_hour_of_a_long_incident_pages_and_the_hour_after_does_not():
    baseline = Baseline(DeviationSettings(baseline_min_windows=3), bundle="b1")
    hours = [NORMAL] * 4 + [INCIDENT] * 3 + [NORMAL] * 2
    figures = [baseline.assess(w) for w in windows(hours)]
    assert [f["decision"] for f in figures] == ["ok"] * 4 + ["page"] * 3 + ["ok"] * 2
    first, second = figures[4], figures[5]
    assert first["baseline_windows"] == 4 and first["decision_vs_previous"] == "page"
    # The second incident hour looks like the first: only the baseline still sees it.
    assert second["decision_vs_previous"] == "ok" and second["decision_vs_baseline"] == "page"
    assert second["compared_with"] == "baseline" and second["deviating"] is True
    assert second["ks_shift_vs_baseline"] == pytest.approx(10.0, abs=0.2)
    # The hour after: errors went down against the previous hour, which is no shift at all.
    assert figures[7]["ks_shift_vs_previous"] == 0.0 and figures[7]["deviating"] is False
    # Incident hours never entered the baseline: 4 normal + the 2 after.
    assert baseline.windows("t") == 6


def test_no_comparison_before_there_is_a_reference():
    baseline = Baseline(DeviationSettings(baseline_min_windows=2))
    first, second, third = (baseline.assess(w) for w in windows([NORMAL, NORMAL, NORMAL]))
    assert first["decision"] == "ok" and first["compared_with"] == "" and math.isnan(first["shift"])
    assert second["compared_with"] == "previous" and second["baseline_windows"] == 0
    assert third["baseline_windows"] == 2


def test_empty_windows_are_ok_and_stay_out_of_the_baseline():
    baseline = Baseline(DeviationSettings(baseline_min_windows=1))
    figures = [baseline.assess(w) for w in windows([NORMAL, [], NORMAL])]
    assert [f["decision"] for f in figures] == ["ok", "ok", "ok"]
    assert math.isnan(figures[1]["shift"])
    assert baseline.windows("t") == 2


def test_baseline_keeps_the_newest_windows_and_merges_them():
    baseline = Baseline(DeviationSettings(baseline_windows=2, baseline_min_windows=1))
    for w in windows([NORMAL, NORMAL * 1.01, NORMAL * 1.02]):
        baseline.assess(w)
    assert baseline.windows("t") == 2
    assert baseline.reference("t").count == 2000
    assert Baseline(DeviationSettings(baseline_windows=0)).reference("t") is None


def test_snapshot_round_trip_and_reset_with_the_bundle():
    baseline = Baseline(DeviationSettings(baseline_min_windows=1), bundle="b1")
    for w in windows([NORMAL, NORMAL]):
        baseline.assess(w)
    data = json.loads(json.dumps(baseline.snapshot()))
    restored = Baseline.from_snapshot(baseline.settings, data, "b1")
    assert restored.windows("t") == 2 and restored.reference("t") == baseline.reference("t")
    assert Baseline.from_snapshot(baseline.settings, data, "b2").windows("t") == 0  # another bundle's scale
    assert Baseline.from_snapshot(baseline.settings, None, "b1").windows("t") == 0
    smaller = DeviationSettings(baseline_windows=1, baseline_min_windows=1)
    assert Baseline.from_snapshot(smaller, data, "b1").windows("t") == 1
    baseline.reset("b2")
    assert baseline.windows("t") == 0 and baseline.bundle == "b2"
    with pytest.raises(StateError):
        Baseline.from_snapshot(baseline.settings, {"version": 99}, "b1")
    with pytest.raises(StateError):
        Baseline.from_snapshot(baseline.settings, {"version": 1, "bundle": "b1", "topics": {"t": [[0, {}]]}}, "b1")


def test_small_windows_need_a_larger_share_to_page():
    """Significance is sized by records: 5 % moved pages at 2,000 records, not at 40."""
    settings = DeviationSettings(baseline_min_windows=1)
    rng = np.random.default_rng(0)
    for n, expected in ((2000, "page"), (40, "ok")):
        normal = rng.uniform(1.0, 2.0, size=(3, n))
        incident = np.concatenate([rng.uniform(1.0, 2.0, n - n // 20), np.full(n // 20, 50.0)])
        baseline = Baseline(settings)
        got = [baseline.assess(w)["decision"] for w in windows([*normal, incident])]
        assert got[-1] == expected, (n, got)


def test_weights_lower_the_effective_size():
    agg = aggregate([1.0, 2.0, 3.0], [1.0, 1.0, 2.0])
    assert agg.effective_records() == pytest.approx(16 / 6)
    assert agg.figures()["effective_records"] == pytest.approx(16 / 6)
    assert WindowAggregate.from_dict(agg.to_dict()).weight_squared == 6.0
    legacy = agg.to_dict()
    del legacy["weight_squared"]
    assert WindowAggregate.from_dict(legacy).effective_records() == 3.0


def test_windower_keeps_the_sum_of_squared_weights():
    from monitor.window import Windower

    windower = Windower()
    stamps = [0, 1000, 2000, H + 5 * 60_000 + 1]
    closed, _ = windower.add(
        np.array(["t"] * 4, dtype=object), np.array(stamps), np.ones(4), np.array([1.0, 1.0, 2.0, 1.0]),
        np.full(4, 50.0), np.zeros(4, bool),
    )
    assert closed[0].aggregate.weight_squared == 6.0
    assert closed[0].figures()["effective_records"] == pytest.approx(16 / 6)
