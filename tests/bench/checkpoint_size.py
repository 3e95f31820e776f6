"""How big the daemon's checkpoint gets, and what bounds it.

Runs generated traffic of ``--topics`` topics through the real pipeline (decode, score with a bundle, windows, the
deviation baseline) for ``--hours`` hourly windows, writes the checkpoint the daemon would write, and prints its size
split by part: the baseline of each topic (its ``deviation.baseline_windows`` last normal windows), the open and last
closed windows, and the offsets. It then fills one topic's open windows up to the bound ``window.max_past_seconds``
sets, the worst case of a backlog read far behind. Prints figures; asserts nothing.

    python tests/bench/checkpoint_size.py --bundle BUNDLE --topics 10 --hours 30
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from monitor.baseline import Baseline  # noqa: E402
from monitor.bundle import load_bundle  # noqa: E402
from monitor.daemon.checkpoint import write_checkpoint  # noqa: E402
from monitor.deviation import DeviationSettings  # noqa: E402
from monitor.generate import SeedLikeGenerator  # noqa: E402
from monitor.pipeline import Pipeline, RecordBatch  # noqa: E402
from monitor.window import Windower, WindowSettings  # noqa: E402

HOUR_MS = 3_600_000


def kib(value) -> str:
    return f"{len(json.dumps(value, allow_nan=True)) / 1024:,.1f} KiB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", help="a trained bundle (default: an untrained one of the seed preset's shape)")
    p.add_argument("--topics", type=int, default=10)
    p.add_argument("--hours", type=int, default=30)
    p.add_argument("--records-per-hour", type=int, default=20_000)
    p.add_argument("--max-past-hours", type=int, default=30 * 24, help="window.max_past_seconds / 3600")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="seqmon-checkpoint-size-"))
    bundle_path = args.bundle
    if bundle_path is None:
        bundle_path = str(work / "bundle")
        code = f"from monitor.bench import _untrained_bundle; _untrained_bundle(0, {bundle_path!r})"
        subprocess.run([sys.executable, "-c", code], check=True, stderr=subprocess.DEVNULL, cwd=REPO)
    bundle = load_bundle(bundle_path)
    deviation = DeviationSettings()
    windower = Windower(WindowSettings(size_ms=HOUR_MS, allowed_lateness_ms=0))
    baseline = Baseline(deviation, bundle.content_hash)
    pipeline = Pipeline(bundle, windower)
    start = int(time.time() * 1000) // HOUR_MS * HOUR_MS - args.hours * HOUR_MS
    frame = SeedLikeGenerator(1).stream(start, args.hours, args.records_per_hour, anomaly_rate=0.01)
    values = [s.encode() for s in frame["sequence"]]
    stamps = frame["timestamp_ms"].to_numpy(np.int64)
    for t in range(args.topics):
        batch = RecordBatch(values=values, timestamps_ms=stamps, topics=np.full(len(values), f"topic-{t}", dtype=object),
                            partitions=np.arange(len(values)) % 4)
        for window in pipeline.process(batch).closed:
            baseline.assess(window)
    offsets = {f"topic-{t}/{p}": 10**9 for t in range(args.topics) for p in range(4)}
    state = {"written_at": time.time(), "windower": windower.snapshot(), "offsets": offsets,
             "bundle": bundle.content_hash, "baseline": baseline.snapshot()}
    path = write_checkpoint(work / "state", state)
    topic = state["windower"]["topics"]["topic-0"]
    window_sizes = [len(json.dumps(agg)) for _, agg in topic["open"]]
    if topic["last_closed"]:
        window_sizes.append(len(json.dumps(topic["last_closed"])))
    buckets = [len(agg["sketch"]["index"]) for _, agg in topic["open"]]
    print(f"bundle {bundle_path}; {args.topics} topics x {args.hours} hours x {args.records_per_hour:,} records")
    print(f"checkpoint: {path.stat().st_size / 1024:,.1f} KiB = {path.stat().st_size / 1024 / args.topics:,.1f} KiB per topic")
    print(f"  baseline: {kib(state['baseline'])} ({baseline.windows('topic-0')} windows per topic, "
          f"deviation.baseline_windows = {deviation.baseline_windows})")
    print(f"  windows: {kib(state['windower'])} ({len(topic['open'])} open + 1 last closed per topic, "
          f"{np.mean(window_sizes) / 1024:,.1f} KiB per window of {args.records_per_hour:,} records, "
          f"{np.mean(buckets):,.0f} sketch buckets)")
    print(f"  offsets: {kib(offsets)} ({len(offsets)} partitions)")

    # Worst case: a backlog read with one partition far behind keeps every hour back to max_past open.
    behind = Windower(WindowSettings(size_ms=HOUR_MS, allowed_lateness_ms=0))
    now = start + args.hours * HOUR_MS
    reps = max(1, args.records_per_hour // 20)
    spread = np.repeat(now - np.arange(args.max_past_hours + 1) * HOUR_MS, reps)  # partition 1: every hour
    stamps = np.append(spread, spread.min())  # partition 0 is still at the oldest hour: nothing may close
    parts = np.append(np.ones(len(spread), dtype=np.int64), 0)
    errors = np.nan_to_num(np.resize(bundle.errors(frame["sequence"].iloc[:20_000].tolist()), len(stamps)))
    behind.add(np.full(len(stamps), "backlog", dtype=object), stamps, errors, None, bundle.percentile_rank(errors),
               bundle.is_anomaly(errors), partitions=parts)
    open_state = behind.snapshot()["topics"]["backlog"]
    shutil.rmtree(work, ignore_errors=True)
    print(f"worst case, one topic with every hour of max_past ({args.max_past_hours} h) open, {reps:,} records each: "
          f"{len(open_state['open'])} open windows, {kib(open_state)}")


if __name__ == "__main__":
    main()
