"""``seqmon demo`` and ``seqmon replay``: the whole pipeline on an embedded default, no Kafka needed.

The demo generates seed-like traffic, trains a bundle on its normal part, replays a timestamped stream through the
same pipeline and window code the daemon uses, and prints the hourly report.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from monitor.errors import ConfigError


def _replay(bundle_path: str | Path, stream: str | Path, window_size_s: int, lateness_s: int, topic: str) -> list:
    from monitor.bundle import load_bundle  # noqa: PLC0415
    from monitor.pipeline import REPORT_HEADER, Pipeline, format_window, read_stream_csv  # noqa: PLC0415
    from monitor.window import Windower, WindowSettings  # noqa: PLC0415

    settings = WindowSettings(size_ms=window_size_s * 1000, allowed_lateness_ms=lateness_s * 1000)
    pipeline = Pipeline(load_bundle(bundle_path), Windower(settings))
    print(REPORT_HEADER)
    closed, records, invalid, late, last_ms = [], 0, 0, 0, None
    for batch in read_stream_csv(stream, topic=topic):
        result = pipeline.process(batch)
        records += len(batch)
        invalid += sum(result.invalid_by_reason.values())
        late += int(result.late.sum())
        last_ms = int(batch.timestamps_ms.max()) if last_ms is None else max(last_ms, int(batch.timestamps_ms.max()))
        for window in result.closed:
            print(format_window(window), flush=True)
        closed.extend(result.closed)
    if last_ms is not None:
        # End of file: close what is still open as an idle stream would be closed by the wall clock.
        for window in pipeline.windower.close_due(last_ms + settings.size_ms + settings.allowed_lateness_ms):
            print(format_window(window), flush=True)
            closed.append(window)
    print(f"{records:,} records replayed: {invalid:,} invalid, {late:,} late, {len(closed)} windows closed", file=sys.stderr)
    return closed


def cmd_replay(args) -> int:
    _replay(args.bundle, args.input, args.window_size, args.allowed_lateness, args.topic)
    return 0


def cmd_demo(args) -> int:
    from monitor.generate import write_dataset  # noqa: PLC0415
    from monitor.train import preset, train_bundle  # noqa: PLC0415

    if args.hours < 2:
        raise ConfigError("--hours must be at least 2: each hour is compared with the one before")
    if not 0 <= args.abnormal_hour < args.hours:
        raise ConfigError(f"--abnormal-hour must be between 0 and {args.hours - 1}")
    workdir = Path(args.workdir)
    started = time.perf_counter()
    print(f"1/3 generating seed-like traffic in {workdir} (hour {args.abnormal_hour} carries 30% anomalies)", file=sys.stderr)
    paths = write_dataset(
        workdir,
        seed=args.seed,
        n_train=args.train,
        n_test_normal=1000,
        n_test_abnormal_per_kind=200,
        hours=args.hours,
        records_per_hour=args.records_per_hour,
        abnormal_hours={args.abnormal_hour: 0.3},
    )
    print("2/3 training a bundle on the normal traffic", file=sys.stderr)
    vec, mod = preset("seed", epochs=args.epochs, seed=args.seed)
    sequences = Path(paths["train.txt"]).read_text(encoding="utf-8").splitlines()
    train_bundle(sequences, workdir / "bundle", vec, mod, verbose=0, log=lambda m: print("    " + m, file=sys.stderr), preset_name="seed")
    print("3/3 replaying the timestamped stream through hourly windows\n", file=sys.stderr)
    _replay(workdir / "bundle", paths["stream.csv"], 3600, 300, "demo")
    print(
        f"\ndone in {time.perf_counter() - started:.0f} s. 'abnormality' is the chance (0-100) that a record of this hour "
        "has a larger error than one of the previous hour: 50 means alike.",
        file=sys.stderr,
    )
    return 0


def register(sub) -> None:
    d = sub.add_parser("demo", help="generate traffic, train, replay it through hourly windows, print the report")
    d.add_argument("--workdir", default="seqmon-demo", help="where data and the bundle go (default %(default)s)")
    d.add_argument("--hours", type=int, default=6)
    d.add_argument("--records-per-hour", type=int, default=20_000)
    d.add_argument("--abnormal-hour", type=int, default=4, help="the hour that carries many anomalies")
    d.add_argument("--train", type=int, default=30_000, help="normal training sequences")
    d.add_argument("--epochs", type=int, default=30)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("replay", help="replay a timestamped CSV (timestamp_ms, sequence[, weight]) through windows")
    r.add_argument("bundle")
    r.add_argument("input")
    r.add_argument("--window-size", type=int, default=3600, help="window length in seconds (default %(default)s)")
    r.add_argument("--allowed-lateness", type=int, default=300, help="seconds (default %(default)s)")
    r.add_argument("--topic", default="replay", help="topic label of the replayed records")
    r.set_defaults(func=cmd_replay)
