"""Throughput of Windower.add: 5 million records, batches of 10,000, 3 topics, 24 hours of event time.

Run from the repository root:  python tests/bench/bench_window.py [--records N] [--batch N]
Not a pytest test (no test_ prefix); prints records/s and the JSON snapshot size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from monitor.window import Windower, WindowSettings  # noqa: E402

HOUR_MS = 3_600_000
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def make_records(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Records in rough event-time order over 24 h with up to 2 min of disorder (within the 5 min lateness)."""
    rng = np.random.default_rng(seed)
    base = START_MS + np.sort(rng.integers(0, 24 * HOUR_MS, n))
    return {
        "topics": np.array(["orders", "payments", "clickstream"])[rng.integers(0, 3, n)],
        "event_ms": base + rng.integers(-120_000, 120_000, n),
        "errors": rng.lognormal(-2.0, 1.0, n),
        "weights": rng.uniform(0.5, 2.0, n),
        "percentiles": rng.uniform(0.0, 100.0, n),
        "is_anomaly": rng.random(n) < 0.01,
        "partitions": rng.integers(0, 4, n).astype(np.int32),  # 4 partitions per topic, each with its watermark
    }


def measure(records: dict[str, np.ndarray], batch: int, topics: np.ndarray) -> tuple[float, int, int, int, Windower]:
    windower = Windower(WindowSettings())
    n = topics.size
    closed_count = late_count = 0
    began = time.perf_counter()
    for i in range(0, n, batch):
        j = i + batch
        closed, late = windower.add(
            topics[i:j],
            records["event_ms"][i:j],
            records["errors"][i:j],
            records["weights"][i:j],
            records["percentiles"][i:j],
            records["is_anomaly"][i:j],
            partitions=records["partitions"][i:j],
            now_ms=0,
        )
        closed_count += len(closed)
        late_count += int(late.sum())
    elapsed = time.perf_counter() - began
    return elapsed, closed_count, late_count, n, windower


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=5_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()

    records = make_records(args.records)
    for label, topics in (("str topics", records["topics"]), ("object topics", records["topics"].astype(object))):
        elapsed, closed, late, n, windower = measure(records, args.batch, topics)
        print(
            f"{label:>14}: {n:,} records in {elapsed:.2f} s = {n / elapsed:,.0f} records/s "
            f"({elapsed / (n / args.batch) * 1e3:.2f} ms per batch of {args.batch:,}); "
            f"closed windows {closed}, late records {late}"
        )
    snapshot = json.dumps(windower.snapshot())
    print(f"snapshot: {len(snapshot.encode()):,} bytes, open windows {len(windower.open_windows())}")


if __name__ == "__main__":
    main()
