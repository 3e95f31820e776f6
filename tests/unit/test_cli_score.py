"""``seqmon score`` writes its numbers exactly as ``DataFrame.to_csv`` writes float64 columns."""

import io

import numpy as np
import pandas as pd

from monitor.cli import _csv_floats


def test_csv_floats_are_the_text_pandas_writes():
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.exponential(size=2000) * 10.0 ** rng.integers(-12, 17, 2000),
        np.repeat(rng.random(50) / 1000, 40),  # repeats: formatted once, copied
        [np.nan, -0.0, 0.0, 1e-05, 0.0001, 1e16, 1e15, 18.0, 100.0, 50.0, 1 / 3, 5e-324, np.inf, -1.5, np.nan],
    ])
    rng.shuffle(values)
    reference = io.StringIO()
    pd.DataFrame({"error": values, "s": "x"}).to_csv(reference, index=False)
    ours = io.StringIO()
    pd.DataFrame({"error": _csv_floats(values), "s": "x"}).to_csv(ours, index=False)
    assert ours.getvalue() == reference.getvalue()
    text = _csv_floats(values)
    assert sorted(set(text[np.isnan(values)])) == [""] and "-0.0" in set(text) and "0.0" in set(text)
    assert _csv_floats(np.zeros(0)).tolist() == []
