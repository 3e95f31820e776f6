"""Evaluation of the alerting itself: timed streams with known incidents through the daemon, hour by hour.

Each configuration is a stream of ``HOURS`` hourly windows of seed-like traffic (``monitor.generate``) with

- a daily volume curve (0.4x to 1.6x the configuration's mean records per hour),
- slow drift within the training distribution: the mix of the eight normal formats tilts steadily, every sequence
  stays normal (format weights change by a factor up to ``DRIFT`` between the first and the last hour),
- 1 % background anomalies of all kinds in every hour (as in ``seqmon generate``),
- one quiet hour (``QUIET_RECORDS`` records), one surge hour (``SURGE``x the hour's volume, normal mix) and one empty
  hour,
- single-hour incidents of 3 %, 5 %, 10 % and 30 % new anomalies of each of the five kinds, three hours apart, and one
  incident lasting three hours (5 %, all kinds).

The stream goes through :func:`monitor.demo.replay_daemon` (the daemon with a file source: the same decode, scoring,
windows, baseline and decision as ``seqmon run``). :func:`evaluate` returns one row per hour with its figures and the
decision, and :func:`check_targets` lists the targets each configuration misses.

Run from the repository root (trains a bundle once, ~1 minute; then ~20 s per configuration on 2 cores)::

    python tests/quality/alerting_eval.py --seeds 11 12 --out /tmp/alerting     # per-hour table and the targets
    python -m pytest tests/quality/test_alerting.py -s                           # the same, asserted
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from monitor.generate import KINDS, SeedLikeGenerator

HOUR_MS = 3_600_000
START_MS = 1_767_571_200_000  # 2026-01-05T00:00:00Z, a Monday
HOURS = 96
BACKGROUND = 0.01
RATES = (0.03, 0.05, 0.10, 0.30)
FIRST_INCIDENT = 8
INCIDENT_SPACING = 3
LONG_INCIDENT = (70, 71, 72)
LONG_RATE = 0.05
QUIET_HOUR, QUIET_RECORDS = 76, 300
SURGE_HOUR, SURGE = 80, 5
EMPTY_HOUR = 84
DRIFT = 3.0
TRAIN_SEED = 1000


@dataclass(frozen=True)
class Config:
    """One data configuration: mean records per hour, whether records carry (Zipf) weights, the random seed."""

    name: str
    records_per_hour: int
    weighted: bool
    seed: int


#: Configurations of the evaluation. Thresholds were chosen on seed 11 and are reported on seeds 12 and 13.
def configs(seed: int) -> list[Config]:
    return [
        Config(f"unit-20k-s{seed}", 20_000, False, seed),
        Config(f"weighted-40k-s{seed}", 40_000, True, seed),
        Config(f"unit-60k-s{seed}", 60_000, False, seed),
        Config(f"unit-2k-s{seed}", 2_000, False, seed),
    ]


@dataclass(frozen=True)
class Hour:
    """What the stream holds in one hour: ``label`` in normal / quiet / surge / empty / incident / after."""

    index: int
    label: str
    records: int
    rate: float = 0.0  # share of new anomalies
    kind: str = ""  # their kind; "" = all kinds


def plan(config: Config) -> list[Hour]:
    """The hour-by-hour plan of a configuration's stream."""
    incidents: dict[int, tuple[float, str]] = {}
    for i, (kind, rate) in enumerate((k, r) for k in KINDS for r in RATES):
        incidents[FIRST_INCIDENT + INCIDENT_SPACING * i] = (rate, kind)
    for h in LONG_INCIDENT:
        incidents[h] = (LONG_RATE, "")
    hours = []
    for h in range(HOURS):
        volume = int(round(config.records_per_hour * (1.0 + 0.6 * math.sin(2 * math.pi * (h - 8) / 24))))
        if h in incidents:
            rate, kind = incidents[h]
            hours.append(Hour(h, "incident", volume, rate, kind))
        elif h == QUIET_HOUR:
            hours.append(Hour(h, "quiet", QUIET_RECORDS))
        elif h == SURGE_HOUR:
            hours.append(Hour(h, "surge", SURGE * volume))
        elif h == EMPTY_HOUR:
            hours.append(Hour(h, "empty", 0))
        elif h - 1 in incidents:
            hours.append(Hour(h, "after", volume))
        else:
            hours.append(Hour(h, "normal", volume))
    return hours


def _normal(gen: SeedLikeGenerator, n: int, tilt: np.ndarray) -> list[str]:
    """``n`` normal sequences whose format mix is tilted by ``tilt`` (relative weights per format), by rejection."""
    accept = tilt / tilt.max()
    out: list[str] = []
    while len(out) < n:
        fmt, tokens = gen._sample(int((n - len(out)) * 1.5) + 16)
        keep = np.flatnonzero(gen._rng.random(fmt.size) < accept[fmt])
        out.extend(" ".join(tokens[i]) for i in keep[: n - len(out)])
    return out


def stream(config: Config) -> pd.DataFrame:
    """The stream of a configuration: ``timestamp_ms, sequence[, weight], hour, new_anomaly`` sorted by time."""
    gen = SeedLikeGenerator([config.seed, 7])
    rng = np.random.default_rng([config.seed, 8])
    signs = np.where(np.arange(8) % 2 == 0, 1.0, -1.0)
    frames = []
    for hour in plan(config):
        n = hour.records
        if n == 0:
            continue
        tilt = np.exp(signs * math.log(DRIFT) * hour.index / (HOURS - 1) / 2)
        n_new = int(round(hour.rate * n))
        n_background = int(rng.binomial(n - n_new, BACKGROUND))
        sequences = _normal(gen, n - n_new - n_background, tilt)
        for kind, count in zip(KINDS, rng.multinomial(n_background, [1 / len(KINDS)] * len(KINDS)), strict=True):
            sequences += gen.abnormal(int(count), kind) if count else []
        new_kinds = [hour.kind] if hour.kind else list(KINDS)
        for kind, count in zip(new_kinds, rng.multinomial(n_new, [1 / len(new_kinds)] * len(new_kinds)), strict=True):
            sequences += gen.abnormal(int(count), kind) if count else []
        frame = pd.DataFrame({
            "timestamp_ms": START_MS + hour.index * HOUR_MS + rng.integers(0, HOUR_MS, size=n),
            "sequence": sequences,
            "hour": hour.index,
            "new_anomaly": np.arange(n) >= n - n_new,
        })
        if config.weighted:
            frame["weight"] = np.minimum(rng.zipf(3.0, size=n), 100)
        frames.append(frame)
    return pd.concat(frames).sort_values("timestamp_ms", kind="stable").reset_index(drop=True)


def train(out: Path) -> Path:
    """A bundle of the ``seed`` preset trained on 30,000 normal sequences (the thresholds were chosen with it; ``seqmon
    demo`` now trains the default ``auto``), cached in ``out``."""
    from monitor.train import preset, train_bundle  # noqa: PLC0415

    bundle = out / "bundle"
    if not (bundle / "bundle.json").exists():
        vec, mod = preset("seed", epochs=30, seed=0)
        train_bundle(SeedLikeGenerator(TRAIN_SEED).normal(30_000), bundle, vec, mod, verbose=0, log=lambda m: None)
    return bundle


def evaluate(config: Config, bundle: Path, out: Path, overrides: tuple[str, ...] = (), report: bool = False) -> pd.DataFrame:
    """Replay the configuration's stream through the daemon; one row per planned hour with its figures."""
    from monitor.demo import replay_daemon  # noqa: PLC0415

    path = out / f"{config.name}.csv"
    if not path.exists():
        columns = ["timestamp_ms", "sequence"] + (["weight"] if config.weighted else [])
        stream(config)[columns].to_csv(path, index=False)
    daemon = replay_daemon(bundle, path, topic=config.name, settings_overrides=overrides)
    if report:
        from monitor.report import write_report  # noqa: PLC0415

        write_report(out / f"{config.name}.html", daemon.closed_windows, daemon.pipeline.bundle,
                     daemon.settings.deviation.deviation_settings(), path)
    figures = {(w.start_ms - START_MS) // HOUR_MS: w.figures() for w in daemon.closed_windows}
    rows = []
    for hour in plan(config):
        f = figures.get(hour.index, {})
        rows.append({
            "hour": hour.index,
            "label": hour.label,
            "new": f"{100 * hour.rate:g}% {hour.kind or 'all'}" if hour.rate else "",
            "records": f.get("count", 0),
            "anomaly_pct": 100 * f.get("anomaly_rate", math.nan),
            "abnormality": f.get("abnormality", math.nan),
            **{
                f"{short}_{c[0]}{suffix}": f.get(f"{stat}_{kind}_vs_{c}", math.nan)
                for c in ("previous", "baseline")
                for stat, short in (("ks", "ks"), ("tail", "tl"))
                for kind, suffix in (("shift", ""), ("surprise", "_s"))
            },
            "decision": f.get("decision", "missing"),
        })
    return pd.DataFrame(rows)


def check_targets(rows: pd.DataFrame) -> list[str]:
    """The targets this configuration's hours miss, one sentence each (empty: all met).

    Every incident hour with >= 5 % new anomalies pages; every hour of the three-hour incident pages; the hour after
    an incident does not page; no normal hour (quiet, surge, empty and drift included) pages; an incident hour of 3 %
    with >= 20,000 records at least tickets.
    """
    missed = []
    for r in rows.itertuples():
        rate = float(r.new.split("%")[0]) / 100 if r.new else 0.0
        if r.label == "incident" and rate >= 0.05 and r.decision != "page":
            missed.append(f"hour {r.hour} ({r.new}, {r.records} records) should page, got {r.decision}")
        elif r.label == "incident" and rate < 0.05 and r.records >= 20_000 and r.decision == "ok":
            missed.append(f"hour {r.hour} ({r.new}, {r.records} records) should at least ticket, got ok")
        elif r.label != "incident" and r.decision == "page":
            missed.append(f"{r.label} hour {r.hour} ({r.records} records) should not page")
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[12, 13])
    parser.add_argument("--out", type=Path, required=True, help="work directory: bundle, streams, reports")
    parser.add_argument("--set", action="append", default=[], help="deviation.KEY=VALUE, e.g. deviation.page_shift=4")
    parser.add_argument("--only", help="configuration names containing this")
    parser.add_argument("--report", action="store_true", help="also write an HTML report per configuration")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    bundle = train(args.out)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 500)
    failures = 0
    for seed in args.seeds:
        for config in configs(seed):
            if args.only and args.only not in config.name:
                continue
            rows = evaluate(config, bundle, args.out, tuple(args.set), report=args.report)
            print(f"\n== {config.name}")
            print(rows.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
            normal = rows[rows.label != "incident"]
            print(f"decisions of non-incident hours: {normal.decision.value_counts().to_dict()}")
            missed = check_targets(rows)
            failures += bool(missed)
            print("targets: " + ("all met" if not missed else "MISSED\n  " + "\n  ".join(missed)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
