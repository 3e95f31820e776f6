"""Does one rule hold from 100 to 1,000,000 records per window? Synthetic errors, the real baseline and decision.

Normal windows draw errors from a lognormal with a 1 % heavy tail (background anomalies, like live traffic); an
incident window moves a share of its records far up (new anomalies). For each window size the script reports how often
normal windows were flagged (false tickets / pages, over windows x the four statistics) and the decision of incident
windows of 1 %, 2 %, 3 % and 5 %. Errors are synthetic, so this checks the statistics' scaling, not the model.

    python tests/quality/significance_scale.py [--windows 200]
"""

from __future__ import annotations

import argparse
import collections

import numpy as np

from monitor.baseline import Baseline
from monitor.window import ClosedWindow, WindowAggregate


def window(rng: np.random.Generator, n: int, share: float) -> WindowAggregate:
    errors = rng.lognormal(-8.0, 0.4, n)
    tail = rng.random(n) < 0.01
    errors[tail] *= rng.uniform(2.0, 6.0, tail.sum())
    moved = rng.random(n) < share
    errors[moved] = rng.lognormal(-6.0, 0.5, moved.sum())
    agg = WindowAggregate.empty()
    agg.add(errors, None, np.full(n, 50.0), np.zeros(n, bool))
    return agg


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=200, help="normal windows per size (fewer at 1,000,000)")
    args = parser.parse_args()
    print("records  normal windows: ok/ticket/page   incidents 1% / 2% / 3% / 5%   (decision each, 5 windows)")
    for n in (100, 1_000, 10_000, 100_000, 1_000_000):
        rng = np.random.default_rng(n)
        count = args.windows if n < 1_000_000 else max(20, args.windows // 10)
        baseline, previous, start = Baseline(), None, 0
        normal: collections.Counter = collections.Counter()
        for _ in range(count):
            closed = ClosedWindow("t", start, start + 1, window(rng, n, 0.0), previous)
            normal[baseline.assess(closed)["decision"]] += 1
            previous, start = closed.aggregate, start + 1
        incidents = []
        for share in (0.01, 0.02, 0.03, 0.05):
            got = collections.Counter()
            for _ in range(5):  # each against the same normal baseline; the previous window is normal too
                closed = ClosedWindow("t", start, start + 1, window(rng, n, share), previous)
                got[baseline.assess(closed)["decision"]] += 1
                start += 1
            incidents.append("/".join(f"{got[d]}{d[0]}" for d in ("page", "ticket", "ok") if got[d]))
        print(f"{n:>9,}  {normal['ok']:>4} / {normal['ticket']} / {normal['page']}  "
              f"(of {count})          {'   '.join(incidents)}")


if __name__ == "__main__":
    main()
