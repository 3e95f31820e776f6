"""Cost of window state that travels with its partition: PartitionWindows.add against Windower.add on the same
records, the size of a partition's changelog record, and the time to encode, decode and merge.

Run from the repository root:  python tests/bench/bench_partials.py [--records N] [--batch N] [--partitions P]
Not a pytest test (no test_ prefix); prints figures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from monitor.partials import PartitionWindows, decode_record, encode_state, merge_due  # noqa: E402
from monitor.window import Windower, WindowSettings  # noqa: E402

H = 3_600_000
T0 = 1_704_067_200_000


def records(n: int, partitions: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One topic, 24 hours of event time in rough order (2 minutes of disorder), errors spread over ~4 decades."""
    rng = np.random.default_rng(seed)
    part = rng.integers(0, partitions, n).astype(np.int32)
    offsets = np.empty(n, dtype=np.int64)
    for p in range(partitions):
        mine = part == p
        offsets[mine] = np.arange(int(mine.sum()))
    return {
        "topics": np.full(n, "orders", dtype=object),
        "event_ms": T0 + np.sort(rng.integers(0, 24 * H, n)) + rng.integers(-120_000, 120_000, n),
        "errors": rng.lognormal(-7.0, 1.0, n),
        "weights": None,
        "percentiles": rng.uniform(0.0, 100.0, n),
        "is_anomaly": rng.random(n) < 0.01,
        "partitions": part,
        "offsets": offsets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2_000_000)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    settings = WindowSettings(size_ms=H, allowed_lateness_ms=300_000)
    data = records(args.records, args.partitions)
    batches = [{k: (None if v is None else v[i:i + args.batch]) for k, v in data.items()}
               for i in range(0, args.records, args.batch)]

    windower = Windower(settings)
    started = time.perf_counter()
    for b in batches:
        windower.add(**{k: v for k, v in b.items() if k != "offsets"})
    windower_s = time.perf_counter() - started

    partials = PartitionWindows(settings)
    started = time.perf_counter()
    for b in batches:
        partials.add(**b)
    partials_s = time.perf_counter() - started
    print(f"{args.records:,} records, batches of {args.batch:,}, {args.partitions} partitions, 24 h of event time")
    print(f"  Windower.add           {args.records / windower_s:12,.0f} records/s")
    print(f"  PartitionWindows.add   {args.records / partials_s:12,.0f} records/s")

    states = partials.states(now_ms=0)
    started = time.perf_counter()
    values = [encode_state(s, "sha256:x", settings) for s in states]
    encode_s = time.perf_counter() - started
    started = time.perf_counter()
    decoded = {s.partition: decode_record(v, "sha256:x", settings) for s, v in zip(states, values, strict=True)}
    decode_s = time.perf_counter() - started
    sizes = [len(v) for v in values]
    buckets = [sum(a.sketch.bucket_count for a in s.open.values()) for s in states]
    windows = [len(s.open) for s in states]
    print(f"  state record per partition: {min(sizes):,}-{max(sizes):,} bytes for {min(windows)}-{max(windows)} "
          f"open windows, {min(buckets):,}-{max(buckets):,} sketch buckets "
          f"({sum(sizes) / sum(buckets):.1f} bytes per bucket)")
    print(f"  encode {1000 * encode_s / len(values):.1f} ms, decode {1000 * decode_s / len(values):.1f} ms per record")
    for state in decoded.values():
        state.newest_ms += 2 * H  # every partition past its open windows: all of them close
    started = time.perf_counter()
    decision = merge_due("orders", decoded, range(args.partitions), None, settings)
    merge_s = time.perf_counter() - started
    print(f"  merging {args.partitions} partitions' partials into {len(decision.closed)} windows: "
          f"{1000 * merge_s:.1f} ms")


if __name__ == "__main__":
    main()
