"""Quality harness: one training recipe measured on a matrix of data configurations and on real logs.

    python tests/quality/harness.py --preset seed --half reporting --json out/quality-seed.json
    python tests/quality/harness.py --preset seed --config words-tiny-1 --config loghub-Linux
    python tests/quality/harness.py --list

Every configuration has a seed, and the seed fixes its half: **even seeds are the tuning half, odd seeds the
reporting half** (:func:`monitor.datasets.half_of`). Develop on the tuning half; quote the reporting half. The
synthetic configurations come in pairs (seeds 2k and 2k+1) with the same parameters and different worlds, so both
halves cover every parameter; the real logs are split by system (one of each similar pair on each side).

The training recipe is :func:`fit_bundle` and nothing else: a change of preset is a change there or on the command line.
For each configuration the harness prints and stores the ROC-AUC of normal test lines against all abnormal lines
(``overall``: every recipe in equal numbers) and per recipe, PR-AUC beside them in the JSON, and the targets met.
Data: the HDFS and Loghub folders beside the repository (``../shared/data``), or ``SEQMON_DATA_DIR``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from monitor.datasets import (  # noqa: E402
    LOGHUB_SYSTEMS,
    SHAPES,
    DataConfig,
    Dataset,
    half_of,
    loghub_dataset,
    synthetic_dataset,
)
from monitor.evaluate import average_precision, roc_auc  # noqa: E402

#: What the project aims for on the reporting half (not asserted by the tests: these are the goals).
TARGETS = {"overall_min": 0.95, "kind_min": 0.90, "median": 0.97, "hdfs_logkeys": 0.98}

W, N, H, D = ("word",), ("number",), ("hex",), ("dotted",)

# name, vocab, length (min, max), shapes, zipf, formats, n_train, intensity. Each becomes two configurations, seeds
# 2k (tuning) and 2k+1 (reporting). Most are small; 50k and 500k training lines are one design point each (500k repeats
# itself a lot: under 10k distinct lines, as high-volume traffic does).
_DESIGN: tuple[tuple, ...] = (
    ("words-tiny", 50, (3, 3), W, 1.0, 2, 5_000, 1),
    ("codes-4", 500, (4, 4), W + N, 1.1, 5, 20_000, 1),
    ("hex-devices", 2_000, (6, 6), H + W, 0.8, 3, 10_000, 1),
    ("dotted-ids", 1_000, (5, 5), D + N, 1.2, 4, 10_000, 2),
    ("fixed-12", 5_000, (12, 12), SHAPES, 1.0, 8, 20_000, 1),
    ("short-var", 300, (1, 8), W + N, 1.5, 6, 5_000, 1),
    ("loglike-var", 3_000, (5, 30), SHAPES, 1.1, 12, 20_000, 1),
    ("long-var", 20_000, (10, 60), SHAPES, 0.9, 20, 50_000, 2),
    ("flat-popularity", 800, (4, 4), N + H, 0.3, 2, 5_000, 1),
    ("many-formats", 10_000, (2, 2), SHAPES, 1.0, 40, 20_000, 1),
    ("high-volume", 200, (3, 3), W + N, 1.3, 4, 500_000, 1),
    ("strong", 1_500, (2, 12), SHAPES, 1.0, 10, 5_000, 3),
)

SYNTHETIC: tuple[DataConfig, ...] = tuple(
    DataConfig(f"{name}-{seed}", seed, vocab, length, shapes, zipf, formats, n_train, intensity)
    for k, (name, vocab, length, shapes, zipf, formats, n_train, intensity) in enumerate(_DESIGN)
    for seed in (2 * k, 2 * k + 1)
)


@dataclass(frozen=True)
class RealConfig:
    """A real log file: ``system`` is ``HDFS`` or a Loghub system; ``seed`` fixes the half and the line split."""

    name: str
    seed: int
    system: str

    @property
    def half(self) -> str:
        return half_of(self.seed)

    def params(self) -> dict:
        if self.system == "HDFS":
            return {"data": "hdfs_train / hdfs_test_abnormal", "split": "rng(0) 80 % train (as test_hdfs.py)"}
        return {"data": f"{self.system}_2k.log", "split": f"rng([{self.seed}, 1]) 70 % train"}


# Similar systems sit on opposite sides: OpenSSH / Linux (sshd syslog), Spark / Zookeeper (Java services),
# HPC / Thunderbird (supercomputers). HDFS is in the reporting half: its figure is the regression check.
REAL: tuple[RealConfig, ...] = (
    RealConfig("hdfs", 25, "HDFS"),
    RealConfig("loghub-OpenSSH", 26, "OpenSSH"),
    RealConfig("loghub-Linux", 27, "Linux"),
    RealConfig("loghub-Spark", 28, "Spark"),
    RealConfig("loghub-Zookeeper", 29, "Zookeeper"),
    RealConfig("loghub-HPC", 30, "HPC"),
    RealConfig("loghub-Thunderbird", 31, "Thunderbird"),
)
assert sorted(c.system for c in REAL if c.system != "HDFS") == sorted(LOGHUB_SYSTEMS)

CONFIGS: tuple[DataConfig | RealConfig, ...] = SYNTHETIC + REAL


def data_dir() -> Path:
    """The shared data folder: ``SEQMON_DATA_DIR``, else ``shared/data`` beside the repository."""
    for c in (os.environ.get("SEQMON_DATA_DIR"), ROOT.parent / "shared" / "data"):
        if c and (Path(c) / "hdfs" / "hdfs_train").exists() and (Path(c) / "loghub").is_dir():
            return Path(c)
    raise FileNotFoundError("data not found: set SEQMON_DATA_DIR to the folder holding hdfs/ and loghub/")


def select(half: str = "all", names: Sequence[str] = ()) -> list[DataConfig | RealConfig]:
    """Configurations of one half (``tuning``, ``reporting`` or ``all``), or the named ones."""
    if names:
        by_name = {c.name: c for c in CONFIGS}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise SystemExit(f"unknown configuration {unknown[0]!r}; see --list")
        return [by_name[n] for n in names]
    return [c for c in CONFIGS if half == "all" or c.half == half]


def build_dataset(config: DataConfig | RealConfig) -> Dataset:
    if isinstance(config, DataConfig):
        return synthetic_dataset(config)
    if config.system == "HDFS":
        d = data_dir() / "hdfs"
        lines = (d / "hdfs_train").read_text().split("\n")
        abnormal = (d / "hdfs_test_abnormal").read_text().split("\n")
        order = np.random.default_rng(0).permutation(len(lines))
        cut = int(0.8 * len(lines))
        train = [lines[i] for i in sorted(order[:cut])]
        normal = [lines[i] for i in sorted(order[cut:])]
        return Dataset(train, normal, {"labeled": abnormal}, {"lines": len(lines)})
    return loghub_dataset(data_dir() / "loghub", config.system, config.seed)


# ---------------------------------------------------------------------------------------------------- the recipe


def fit_bundle(train_lines: Sequence[str], out_dir: str | Path, preset_name: str, **overrides):
    """THE training recipe: the preset's settings for these lines (``auto`` reads them off the lines; with
    ``overrides``), trained on ``train_lines``."""
    from monitor.train import settings_for, train_bundle  # noqa: PLC0415  (TensorFlow only when training)

    vec, mod, choices = settings_for(preset_name, train_lines, **overrides)
    return train_bundle(
        train_lines, out_dir, vec, mod, verbose=0, log=lambda m: None, preset_name=preset_name, choices=choices
    )


# ---------------------------------------------------------------------------------------------------- measuring


def _auc_pair(normal: np.ndarray, abnormal: np.ndarray) -> dict:
    return {"roc_auc": roc_auc(normal, abnormal), "pr_auc": average_precision(normal, abnormal)}


def measure(bundle, data: Dataset) -> dict:
    """ROC-AUC and PR-AUC overall and per kind. A line the bundle cannot score (no token: NaN error) is left out
    and counted; abnormal lines are the positive class."""
    normal = bundle.errors(data.normal)
    per_kind = {k: bundle.errors(v) for k, v in data.abnormal.items()}
    unscorable = int(np.isnan(normal).sum()) + sum(int(np.isnan(e).sum()) for e in per_kind.values())
    normal = normal[~np.isnan(normal)]
    per_kind = {k: e[~np.isnan(e)] for k, e in per_kind.items()}
    every = np.concatenate(list(per_kind.values()))
    return {
        "overall": _auc_pair(normal, every),
        "kinds": {k: _auc_pair(normal, e) for k, e in per_kind.items()},
        "unscorable": unscorable,
    }


def run_config(
    config: DataConfig | RealConfig,
    preset_name: str,
    workdir: Path,
    keep: bool = False,
    fit: Callable = fit_bundle,
    **overrides,
) -> dict:
    """Build the data, train with ``fit``, measure; one JSON-able result."""
    started = time.perf_counter()
    data = build_dataset(config)
    built = time.perf_counter()
    out = workdir / config.name
    bundle = fit(data.train, out, preset_name, **overrides)
    trained = time.perf_counter()
    result = {
        "name": config.name,
        "seed": config.seed,
        "half": config.half,
        "kind": "synthetic" if isinstance(config, DataConfig) else "real",
        "params": config.params(),
        "preset": preset_name,
        "overrides": overrides,
        "train_lines": len(data.train),
        "distinct_train_lines": len(set(data.train)),
        "normal_lines": len(data.normal),
        "abnormal_lines": {k: len(v) for k, v in data.abnormal.items()},
        "epochs_run": bundle.metadata.get("epochs_run"),
        "info": data.info,
        **measure(bundle, data),
        "seconds": {"data": round(built - started, 1), "train": round(trained - built, 1)},
    }
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return result


def summarize(results: Sequence[dict]) -> dict:
    """Minimum and median overall ROC-AUC, the lowest kind, and the targets met, over ``results``."""
    overall = [r["overall"]["roc_auc"] for r in results]
    kinds = [(v["roc_auc"], r["name"], k) for r in results for k, v in r["kinds"].items()]
    low = min(kinds) if kinds else (math.nan, "", "")
    return {
        "configurations": len(results),
        "overall_min": min(overall) if overall else math.nan,
        "overall_median": statistics.median(overall) if overall else math.nan,
        "kind_min": low[0],
        "kind_min_where": f"{low[1]} / {low[2]}",
        "meets_overall_target": sum(o >= TARGETS["overall_min"] for o in overall),
        "meets_kind_target": sum(all(v["roc_auc"] >= TARGETS["kind_min"] for v in r["kinds"].values()) for r in results),
    }


def _f(x: float) -> str:
    return "nan" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def markdown(results: Sequence[dict]) -> str:
    """A markdown table: configuration, half, its parameters, overall ROC-AUC (bold) and PR-AUC, ROC-AUC per kind."""
    kinds = list(dict.fromkeys(k for r in results for k in r["kinds"]))
    head = ["configuration", "half", "parameters", "train (distinct)", "overall", "PR-AUC", *kinds]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        p = r["params"]
        params = (
            f"vocab {p['vocab']}, len {p['length']}, {p['shapes']}, zipf {p['zipf']}, {p['formats']} formats, "
            f"intensity {p['intensity']}"
            if r["kind"] == "synthetic"
            else p["data"]
        )
        cells = [
            r["name"], r["half"], params, f"{r['train_lines']:,} ({r['distinct_train_lines']:,})",
            f"**{_f(r['overall']['roc_auc'])}**", _f(r["overall"]["pr_auc"]),
            *(_f(r["kinds"][k]["roc_auc"]) if k in r["kinds"] else "" for k in kinds),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def summary_lines(results: Sequence[dict]) -> str:
    lines = []
    for half in ("tuning", "reporting"):
        part = [r for r in results if r["half"] == half]
        if not part:
            continue
        s = summarize(part)
        lines.append(
            f"{half}: {s['configurations']} configurations; overall ROC-AUC min {_f(s['overall_min'])}, median "
            f"{_f(s['overall_median'])}; lowest kind {_f(s['kind_min'])} ({s['kind_min_where']}); overall ≥ "
            f"{TARGETS['overall_min']} in {s['meets_overall_target']}, every kind ≥ {TARGETS['kind_min']} in "
            f"{s['meets_kind_target']}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="seed", help="training preset passed to fit_bundle (default: seed)")
    p.add_argument("--half", choices=("tuning", "reporting", "all"), default="all")
    p.add_argument("--config", action="append", default=[], help="run only this configuration (repeatable)")
    p.add_argument("--json", type=Path, help="write the results here (JSON)")
    p.add_argument("--workdir", type=Path, help="where bundles are trained (default: a temporary directory)")
    p.add_argument("--keep-bundles", action="store_true")
    p.add_argument("--list", action="store_true", help="list the configurations and exit")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a training setting")
    p.add_argument("--report", type=Path, nargs="+", metavar="JSON", help="print the table of earlier results and exit")
    args = p.parse_args(argv)
    if args.report:
        results = [r for f in args.report for r in json.loads(f.read_text())["results"]]
        order = {c.name: i for i, c in enumerate(CONFIGS)}
        results.sort(key=lambda r: (r["half"] != "reporting", order.get(r["name"], len(order))))
        print(markdown(results) + "\n\n" + summary_lines(results))
        return 0
    configs = select(args.half, args.config)
    if args.list:
        for c in configs:
            print(f"{c.name:22} {c.half:9} seed {c.seed:2}  {json.dumps(c.params())}")
        return 0
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:  # numbers, true/false, lists (hidden=[128]); "none" for max_length; anything else stays a string
            overrides[key] = None if value.lower() == "none" else json.loads(value)
        except ValueError:
            overrides[key] = value
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="seqmon-quality-"))
    results = []
    for c in configs:
        r = run_config(c, args.preset, workdir, keep=args.keep_bundles, **overrides)
        results.append(r)
        kinds = " ".join(f"{k} {_f(v['roc_auc'])}" for k, v in r["kinds"].items())
        print(
            f"{c.name}: overall {_f(r['overall']['roc_auc'])} | {kinds} | {r['seconds']['train']} s, "
            f"{r['epochs_run']} epochs",
            file=sys.stderr,
            flush=True,
        )
        if args.json:  # written after every configuration, so a long run that is cut short keeps what it measured
            args.json.parent.mkdir(parents=True, exist_ok=True)
            doc = {"preset": args.preset, "overrides": overrides, "results": results, "summary": {
                h: summarize([r for r in results if r["half"] == h]) for h in ("tuning", "reporting")
                if any(r["half"] == h for r in results)}}
            args.json.write_text(json.dumps(doc, indent=1, default=float))
    print(markdown(results))
    print()
    print(summary_lines(results))
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
