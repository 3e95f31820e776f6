"""The ``seqmon`` command. Each subcommand is a thin shell over the pipeline modules.

User errors (``MonitorError``) print one sentence to stderr and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from monitor import __version__
from monitor.decode import DEFAULT_MAX_BYTES, EMPTY
from monitor.errors import InputError, MonitorError

SCORE_CHUNK = 200_000


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _max_length(value: str) -> int | None:
    if value.lower() in ("none", "all", "0"):
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"max length must be a positive integer or 'none', got {value!r}") from None


def _widths(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"hidden must be comma-separated layer widths like '64' or '128,64', got {value!r}") from None


def _bundle_scores(bundle, decoded) -> np.ndarray:
    """Errors for every decoded record, NaN where the record is bad or has no tokens; marks those ``empty``."""
    errors = np.full(len(decoded.sequences), np.nan)
    ok = np.flatnonzero(decoded.ok)
    total = len(ok)
    for start in range(0, total, SCORE_CHUNK):
        rows = ok[start : start + SCORE_CHUNK]
        errors[rows] = bundle.errors([decoded.sequences[i] for i in rows])
        if total > SCORE_CHUNK:
            _err(f"scored {min(start + SCORE_CHUNK, total):,} / {total:,}")
    no_tokens = decoded.ok & np.isnan(errors)
    decoded.reasons[no_tokens] = EMPTY
    return errors


def _csv_floats(values: np.ndarray) -> np.ndarray:
    """The text ``DataFrame.to_csv`` writes for float64 values (shortest repr, ``""`` for NaN), as an object array.

    Formatted once per distinct value (by bit pattern, so ``-0.0`` and NaN stay themselves): traffic repeats itself,
    and pandas' own float formatting was the largest single cost of ``seqmon score``.
    """
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.int64)
    distinct, inverse = np.unique(bits, return_inverse=True)
    floats = distinct.view(np.float64)
    text = np.where(np.isnan(floats), "", floats.astype(str)).astype(object)
    return text[inverse.reshape(-1)]


def _reasons_summary(reasons: np.ndarray) -> str:
    counts = Counter(r for r in reasons.tolist() if r)
    return ", ".join(f"{n:,} {r}" for r, n in sorted(counts.items())) or "none"


# --- train -----------------------------------------------------------------------------------------------------------


def cmd_train(args) -> int:
    from monitor.source import read_sequences  # noqa: PLC0415
    from monitor.train import (  # noqa: PLC0415
        MIN_TRAINING_ROWS,
        PRESET_NAMES,
        auto_tokenizer,
        preset,
        settings_for,
        train_bundle,
    )

    overrides = {
        k: v
        for k, v in {
            "vocab_size": args.vocab_size,
            "encoding": args.encoding,
            "oov": args.oov,
            "lower": args.lower,
            "filters": args.filters,
            "split": args.split,
            "hidden": args.hidden,
            "bottleneck": args.bottleneck,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "patience": args.patience,
            "validation_split": args.validation_split,
            "seed": args.seed,
            "weighted_error": args.weighted_error,
        }.items()
        if v is not None
    }
    if hasattr(args, "max_length"):
        overrides["max_length"] = args.max_length
    if args.preset not in PRESET_NAMES:
        raise InputError(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESET_NAMES)}")
    # Checked now, before the data is read; auto's settings come from the data below.
    if args.preset == "auto":
        tokenizing = {k: v for k, v in overrides.items() if k in ("lower", "filters", "split")}
        vec = dataclasses.replace(auto_tokenizer(), **tokenizing)
    else:
        vec = preset(args.preset, **overrides)[0]
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; a bundle is a directory")
    from monitor.bundle import replaceable  # noqa: PLC0415

    if out.is_dir() and not replaceable(out):  # found before training, not after
        raise InputError(f"--out {out} holds files other than a bundle's; training replaces the directory whole: "
                         "choose another --out or empty it")
    decoded = read_sequences(args.input, args.column, args.max_bytes)
    from monitor.vectorize import tokenize  # noqa: PLC0415

    decoded.reasons[decoded.ok & (tokenize(decoded.sequences, vec).counts == 0)] = EMPTY
    bad = np.flatnonzero(~decoded.ok)
    if len(bad) and not args.skip_invalid:
        first = int(bad[0])
        raise InputError(
            f"{args.input}: {len(bad):,} record(s) cannot be used ({_reasons_summary(decoded.reasons)}); "
            f"the first is record {first + 1} ({decoded.reasons[first]}). Fix them or pass --skip-invalid"
        )
    sequences = [decoded.sequences[i] for i in np.flatnonzero(decoded.ok)]
    if len(bad):
        _err(f"skipping {len(bad):,} record(s): {_reasons_summary(decoded.reasons)}")
    if not sequences:
        raise InputError(f"{args.input} holds no usable sequences: nothing to train on")
    if len(sequences) < MIN_TRAINING_ROWS:  # before auto prints its choices: a user error is one line
        raise InputError(f"training needs at least {MIN_TRAINING_ROWS} sequences, got {len(sequences)}")
    vec, mod, choices = settings_for(args.preset, sequences, **overrides)
    if choices:
        _err("preset auto chose, from the training data:\n" + "\n".join(f"  - {c}" for c in choices))
    train_bundle(
        sequences,
        args.out,
        vec,
        mod,
        choices=choices,
        threshold_percentile=args.threshold_percentile,
        # A progress bar on a terminal; in a log file or a pipe, one line per epoch (no redraws, no escape codes).
        verbose=0 if args.quiet else (1 if sys.stdout.isatty() else 2),
        log=_err,
        preset_name=args.preset,
    )
    return 0


# --- score -----------------------------------------------------------------------------------------------------------


def cmd_score(args) -> int:
    import pandas as pd  # noqa: PLC0415

    from monitor.bundle import load_bundle  # noqa: PLC0415
    from monitor.source import read_sequences  # noqa: PLC0415

    bundle = load_bundle(args.bundle)
    parent = Path(args.output).resolve().parent
    if not parent.is_dir():
        raise InputError(f"cannot write {args.output}: folder {parent} does not exist")
    decoded = read_sequences(args.input, args.column, args.max_bytes)
    errors = _bundle_scores(bundle, decoded)
    percentiles = bundle.percentile_rank(errors)
    anomalies = bundle.is_anomaly(errors)
    top = np.full(len(errors), "", dtype=object)
    explain_rows = {
        "all": np.flatnonzero(~np.isnan(errors)),
        "anomalies": np.flatnonzero(anomalies),
        "none": np.zeros(0, dtype=np.int64),
    }[args.explain]
    for start in range(0, len(explain_rows), SCORE_CHUNK):
        rows = explain_rows[start : start + SCORE_CHUNK]
        top[rows] = bundle.explain_batch([decoded.sequences[i] for i in rows], top=args.top).top_tokens()
    frame = pd.DataFrame({
        "sequence": decoded.sequences,
        "error": _csv_floats(errors),
        "percentile": _csv_floats(percentiles),
        "is_anomaly": np.where(np.isnan(errors), "", anomalies.astype(int).astype(str)),
        "top_tokens": top,
        "reason": decoded.reasons,
    })
    # Full precision, so that a reader comparing error with the threshold agrees with is_anomaly.
    frame.to_csv(args.output, index=False)
    scored = int((~np.isnan(errors)).sum())
    _err(
        f"{len(errors):,} records: {scored:,} scored, {int(anomalies.sum()):,} above the threshold "
        f"{bundle.threshold:.6g}; not scored: {_reasons_summary(decoded.reasons)}; "
        f"weighted mean error {bundle.group_score(errors):.6g}; written to {args.output}"
    )
    return 0


# --- evaluate --------------------------------------------------------------------------------------------------------


def cmd_evaluate(args) -> int:
    from monitor.bundle import load_bundle  # noqa: PLC0415
    from monitor.evaluate import evaluate  # noqa: PLC0415
    from monitor.source import read_sequences  # noqa: PLC0415

    bundle = load_bundle(args.bundle)
    errs = {}
    for label, path in (("normal", args.normal), ("abnormal", args.abnormal)):
        decoded = read_sequences(path, args.column, args.max_bytes)
        errs[label] = _bundle_scores(bundle, decoded)
        skipped = int(np.isnan(errs[label]).sum())
        if skipped:
            _err(f"{path}: {skipped:,} record(s) not scored ({_reasons_summary(decoded.reasons)})")
    if np.all(np.isnan(errs["normal"])) or np.all(np.isnan(errs["abnormal"])):
        raise InputError("evaluation needs at least one scorable normal and one scorable abnormal sequence")
    result = evaluate(errs["normal"], errs["abnormal"], bundle.threshold)
    result["threshold_percentile"] = bundle.threshold_percentile
    if args.json:
        print(json.dumps(result))
    else:
        for key in ("normal", "abnormal", "roc_auc", "pr_auc", "threshold", "threshold_percentile", "precision",
                    "recall", "f1", "false_positive_rate"):
            value = result[key]
            print(f"{key:<22}{value:.4f}" if isinstance(value, float) and key not in ("threshold",) else f"{key:<22}{value}")
    return 0


# --- generate, inspect -----------------------------------------------------------------------------------------------


def cmd_generate(args) -> int:
    from monitor.generate import write_dataset  # noqa: PLC0415

    abnormal_hours = {}
    for item in args.abnormal_hour or []:
        hour, _, rate = item.partition("=")
        try:
            abnormal_hours[int(hour)] = float(rate or 0.3)
        except ValueError:
            raise InputError(f"--abnormal-hour takes HOUR=RATE like 5=0.3, got {item!r}") from None
    paths = write_dataset(
        args.outdir,
        seed=args.seed,
        n_train=args.train,
        n_test_normal=args.test_normal,
        n_test_abnormal_per_kind=args.test_abnormal,
        hours=args.hours,
        records_per_hour=args.records_per_hour,
        abnormal_hours=abnormal_hours or None,
    )
    for name, path in paths.items():
        _err(f"{name}: {path}")
    return 0


def cmd_inspect(args) -> int:
    from monitor.bundle import load_bundle  # noqa: PLC0415

    if args.config is None and not args.set:
        if args.bundle is None:
            raise InputError("seqmon inspect needs a BUNDLE, or --config / --set to show the daemon's settings")
        print(json.dumps(load_bundle(args.bundle).describe(), indent=2, ensure_ascii=False, default=str))
        return 0
    from monitor.config import load_settings  # noqa: PLC0415

    # What `seqmon run` with the same file, environment and --set would run with; secrets as "***".
    out: dict = {"settings": load_settings(args.config, overrides=list(args.set or [])).to_dict(redact=True)}
    if args.bundle is not None:
        out["bundle"] = load_bundle(args.bundle).describe()
    print(json.dumps(out, indent=2, ensure_ascii=False, default=str))
    return 0


# --- parser ----------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="seqmon", description="Streaming anomaly monitor for short string sequences.")
    p.add_argument("--version", action="version", version=f"seqmon {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def input_options(sp):
        sp.add_argument("--column", help="column holding the sequences (CSV or Parquet input)")
        sp.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="longest record accepted, in bytes (default %(default)s)")

    t = sub.add_parser("train", help="train a bundle on normal sequences")
    t.add_argument("input", help="text file (one sequence per line), or CSV / Parquet with --column")
    t.add_argument("--out", required=True, help="bundle directory to write")
    t.add_argument(
        "--preset", default="auto",
        help="auto (default: encoding and sizes read off the training data), seed (short codes), logkeys (log-key "
        "sessions) or original (the published reference: 750 tokens x 4 places)",
    )
    input_options(t)
    t.add_argument("--vocab-size", type=int)
    t.add_argument("--max-length", type=_max_length, default=argparse.SUPPRESS, help="tokens kept per sequence, or 'none' for all")
    t.add_argument("--encoding", choices=("multi_hot", "positional", "counts"))
    t.add_argument("--oov", action=argparse.BooleanOptionalAction, default=None, help="reserve an index for unknown tokens")
    t.add_argument("--lower", action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--filters", help="characters turned into separators (default: Keras' punctuation set)")
    t.add_argument("--split", help="token separator (default: one space)")
    t.add_argument("--hidden", type=_widths, help="encoder hidden widths, e.g. 64 or 128,64")
    t.add_argument("--bottleneck", type=int)
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--learning-rate", type=float)
    t.add_argument("--patience", type=int, help="early-stopping patience in epochs (0: off)")
    t.add_argument("--validation-split", type=float, help="share held out for early stopping and reference errors")
    t.add_argument("--seed", type=int)
    t.add_argument("--weighted-error", action=argparse.BooleanOptionalAction, default=None,
                   help="weight each place's squared error by how reliably training reconstructed it (auto: on)")
    t.add_argument("--threshold-percentile", type=float, default=99.0, help="anomaly threshold as a percentile of reference errors")
    t.add_argument("--skip-invalid", action="store_true", help="skip unusable records instead of failing")
    t.add_argument("--quiet", action="store_true", help="no Keras progress bar")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("score", help="score every sequence of a file")
    s.add_argument("bundle")
    s.add_argument("input")
    s.add_argument("-o", "--output", required=True, help="CSV to write")
    s.add_argument("--explain", choices=("anomalies", "all", "none"), default="anomalies", help="which rows get top_tokens (default: anomalies)")
    s.add_argument("--top", type=int, default=3, help="most poorly reconstructed tokens of a row listed in top_tokens")
    input_options(s)
    s.set_defaults(func=cmd_score)

    e = sub.add_parser("evaluate", help="detection quality on labeled files")
    e.add_argument("bundle")
    e.add_argument("--normal", required=True)
    e.add_argument("--abnormal", required=True)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    input_options(e)
    e.set_defaults(func=cmd_evaluate)

    g = sub.add_parser("generate", help="write seed-like data with labeled anomalies")
    g.add_argument("outdir")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--train", type=int, default=50_000, help="normal training sequences")
    g.add_argument("--test-normal", type=int, default=5_000)
    g.add_argument("--test-abnormal", type=int, default=1_000, help="abnormal test sequences per kind")
    g.add_argument("--hours", type=int, default=0, help="also write stream.csv with timestamps over this many hours")
    g.add_argument("--records-per-hour", type=int, default=10_000)
    g.add_argument("--abnormal-hour", action="append", metavar="HOUR=RATE", help="raise the anomaly rate of one hour")
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser("inspect", help="what is in a bundle, and the settings `seqmon run` would use (secrets hidden)")
    i.add_argument("bundle", nargs="?")
    i.add_argument("--config", help="TOML settings file: print the effective settings (file, SEQMON_* variables, --set)")
    i.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one setting (repeatable)")
    i.set_defaults(func=cmd_inspect)

    # Commands that live in their own modules; registering them imports no heavy library.
    from monitor import bench, demo  # noqa: PLC0415
    from monitor.daemon import run  # noqa: PLC0415
    from monitor.export import health  # noqa: PLC0415

    bench.register(sub)
    demo.register(sub)
    run.register(sub)
    health.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MonitorError as e:
        _err(f"seqmon: error: {e}")
        return 2
    except KeyboardInterrupt:
        _err("seqmon: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
