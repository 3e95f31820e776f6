"""``seqmon demo`` and ``seqmon replay``: the whole pipeline on an embedded default, no Kafka needed.

The demo generates seed-like traffic, trains a bundle on its normal part, replays a timestamped stream through the
same pipeline and window code the daemon uses, and prints the hourly report.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from monitor.errors import ConfigError


def replay_daemon(
    bundle_path,
    stream,
    window_size_s: int = 3600,
    lateness_s: int = 300,
    topic: str = "replay",
    metrics_port: int | None = None,
    settings_overrides: tuple[str, ...] = (),
    state_dir: str | Path | None = None,
):
    """Run the daemon (:class:`monitor.daemon.run.Daemon`) over a timestamped CSV to its end; it holds the closed windows,
    assessed, in ``closed_windows``, and its registry.  State goes to ``state_dir`` when given: a later replay of the
    same (grown) file with the same state resumes after the rows already counted, with the windows still open then;
    otherwise to a temporary directory, and the replay is one-shot."""
    import contextlib  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from monitor.config import load_settings  # noqa: PLC0415
    from monitor.daemon.run import Daemon  # noqa: PLC0415
    from monitor.source import FileSource  # noqa: PLC0415

    source = FileSource(stream, topic=topic, final=state_dir is None)
    with contextlib.ExitStack() as stack:
        if state_dir is None:
            state = stack.enter_context(tempfile.TemporaryDirectory(prefix="seqmon-replay-"))
        else:
            state = str(state_dir)
        settings = load_settings(None, env={}, overrides=[
            f"model.bundle={bundle_path}", f"state.directory={state}", f"window.size_seconds={window_size_s}",
            f"window.allowed_lateness_seconds={lateness_s}", "window.idle_close_interval_seconds=0",
            "window.max_future_seconds=3153600000", "window.max_past_seconds=0", "model.watch_interval_seconds=0", "state.checkpoint_interval_seconds=3600",
            f"metrics.port={metrics_port or 9108}", f"kafka.topics={topic}", *settings_overrides,
        ])
        daemon = Daemon(settings, registry=CollectorRegistry())
        daemon.start(source=source, serve_metrics=metrics_port is not None)
        daemon.run()
    return daemon


def _replay(
    bundle_path,
    stream,
    window_size_s: int,
    lateness_s: int,
    topic: str,
    metrics_port: int | None = None,
    output: str = "table",
    report: str | None = None,
    settings_overrides: tuple[str, ...] = (),
    state_dir: str | None = None,
) -> list:
    """Replay a timestamped CSV through the daemon itself, with a file as its source, and print each closed window
    (a table, or one JSON object per line with ``output="jsonl"``); write the HTML report if ``report`` is a path."""
    import json  # noqa: PLC0415

    from prometheus_client import generate_latest  # noqa: PLC0415

    from monitor.pipeline import REPORT_HEADER, format_window, window_record  # noqa: PLC0415

    daemon = replay_daemon(
        bundle_path, stream, window_size_s, lateness_s, topic, metrics_port, settings_overrides, state_dir=state_dir
    )
    settings = daemon.settings
    if output == "jsonl":
        for window in daemon.closed_windows:
            print(json.dumps(window_record(window), allow_nan=False))
    else:
        print(REPORT_HEADER)
        for window in daemon.closed_windows:
            print(format_window(window))
    if report is not None:
        from monitor.report import write_report  # noqa: PLC0415

        write_report(report, daemon.closed_windows, daemon.pipeline.bundle, settings.deviation.deviation_settings(), stream)
        print(f"report written to {report}", file=sys.stderr)
    reg = daemon.registry
    consumed = reg.get_sample_value("seqmon_records_consumed_total", {"topic": topic}) or 0
    late = reg.get_sample_value("seqmon_records_late_total", {"topic": topic}) or 0
    invalid = sum(
        s.value for m in reg.collect() if m.name == "seqmon_records_invalid" for s in m.samples if s.name.endswith("_total")
    )
    print(f"{consumed:,.0f} records replayed: {invalid:,.0f} invalid, {late:,.0f} late, {len(daemon.closed_windows)} windows closed", file=sys.stderr)
    exported = [line for line in generate_latest(reg).decode().splitlines() if line.startswith(("seqmon_window_shift", "seqmon_window_severity", "seqmon_window_mean_error{"))]
    print("\nwhat Prometheus scrapes for the last window (seqmon run serves the same registry):\n  " + "\n  ".join(exported), file=sys.stderr)
    return daemon.closed_windows


def cmd_replay(args) -> int:
    _replay(
        args.bundle, args.input, args.window_size, args.allowed_lateness, args.topic, args.metrics_port,
        output=args.output, report=args.report, settings_overrides=tuple(args.set or ()), state_dir=args.state_dir,
    )
    return 0


def cmd_demo(args) -> int:
    from monitor.generate import write_dataset  # noqa: PLC0415
    from monitor.train import settings_for, train_bundle  # noqa: PLC0415

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
    sequences = Path(paths["train.txt"]).read_text(encoding="utf-8").splitlines()
    vec, mod, choices = settings_for("auto", sequences, epochs=args.epochs, seed=args.seed)
    print("    preset auto chose, from the training data:\n" + "\n".join(f"      - {c}" for c in choices), file=sys.stderr)
    train_bundle(
        sequences, workdir / "bundle", vec, mod, verbose=0, log=lambda m: print("    " + m, file=sys.stderr),
        preset_name="auto", choices=choices,
    )
    print("3/3 replaying the timestamped stream through hourly windows\n", file=sys.stderr)
    report = workdir / "report.html"
    _replay(workdir / "bundle", paths["stream.csv"], 3600, 300, "demo", args.metrics_port, report=str(report))
    print(
        f"\ndone in {time.perf_counter() - started:.0f} s. 'shift' is at least the percentage of an hour's records that "
        "moved to higher errors, against the previous hour and against a baseline of recent normal hours; 'surprise' "
        "is -log10 of the chance of such a shift in unchanged traffic; 'decision' pages or tickets when both are "
        f"large. The hourly report with its chart: {report}",
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
    d.add_argument("--metrics-port", type=int, help="also serve the metrics on 127.0.0.1:PORT while replaying")
    d.set_defaults(func=cmd_demo)

    r = sub.add_parser("replay", help="replay a timestamped CSV (timestamp_ms, sequence[, weight]) through windows")
    r.add_argument("bundle")
    r.add_argument("input")
    r.add_argument("--window-size", type=int, default=3600, help="window length in seconds (default %(default)s)")
    r.add_argument("--allowed-lateness", type=int, default=300, help="seconds (default %(default)s)")
    r.add_argument("--topic", default="replay", help="topic label of the replayed records")
    r.add_argument("--metrics-port", type=int, help="also serve the metrics on 127.0.0.1:PORT while replaying")
    r.add_argument("--output", choices=("table", "jsonl"), default="table", help="table (default) or one JSON object per window")
    r.add_argument("--report", metavar="FILE.html", help="also write a self-contained HTML page with the hourly chart")
    r.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a setting, e.g. deviation.page_shift=5")
    r.add_argument(
        "--state-dir", metavar="DIR",
        help="keep the windows and the file position here: replaying the same file again (grown since) resumes after "
        "the rows already counted instead of counting them twice; the last window stays open until later rows close "
        "it (default: a temporary directory, one-shot, every window closed at the end)",
    )
    r.set_defaults(func=cmd_replay)
