"""``seqmon bench``: scoring speed of the batch path beside the straightforward Keras path, same model, same data.

The straightforward path is what the original design does: a Python loop that tokenizes and vectorizes record by
record, then ``model.predict`` (default batch of 32) and a numpy MSE. Beside both, the whole ``seqmon score`` process
(start, load, read, score, explain, write the CSV) on a generated file with about 3 % anomalies, once per ``--explain``
mode, the modes interleaved and repeated. Then whole ``seqmon train`` processes on small-vocabulary codes and on
large-vocabulary log-like text, with the ``auto`` preset and with the published ``original`` one: time and peak RSS.
It prints figures and asserts nothing on time.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from monitor.vectorize import OOV_INDEX, PAD_INDEX, Vectorizer


def naive_vectorize(vectorizer: Vectorizer, sequences: list[str]) -> np.ndarray:
    """Record-by-record reference implementation of ``Vectorizer.encode(...).to_dense()``."""
    s = vectorizer.settings
    index = {t: i + vectorizer.first_index for i, t in enumerate(vectorizer.vocabulary)}
    table = str.maketrans({c: s.split for c in s.filters})
    out = np.zeros((len(sequences), s.n_features), dtype=np.float32)
    for r, text in enumerate(sequences):
        if s.lower:
            text = text.lower()
        tokens = [t for t in text.translate(table).split(s.split) if t]
        ids = [index.get(t, OOV_INDEX if s.oov else None) for t in tokens]
        ids = [i for i in ids if i is not None]
        if s.max_length is not None:
            ids = ids[: s.max_length]
            if s.encoding != "counts":
                ids = ids + [PAD_INDEX] * (s.max_length - len(ids))
        for position, i in enumerate(ids):
            if s.encoding == "positional":
                out[r, position * s.vocab_size + i] = 1.0
            elif s.encoding == "counts":
                out[r, i] += 1.0
            else:
                out[r, i] = 1.0
        if s.encoding == "counts":
            out[r] = np.log1p(out[r])
    return out


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>12,.0f} rows/s  ({seconds:.2f} s for {n:,})"


#: ``seqmon score --explain`` modes measured by :func:`score_throughput`; ``anomalies`` is the default.
EXPLAIN_MODES = ("anomalies", "none", "all")


def score_input(path: Path, rows: int, seed: int, anomaly_rate: float = 0.03) -> int:
    """Write ``rows`` seed-like lines with about ``anomaly_rate`` anomalies of all kinds; returns the anomalies written."""
    from monitor.generate import SeedLikeGenerator  # noqa: PLC0415

    hours = -(-rows // 10_000)
    stream = SeedLikeGenerator(seed + 2).stream(0, hours, 10_000, anomaly_rate=anomaly_rate).iloc[:rows]
    path.write_text("\n".join(stream["sequence"]) + "\n", encoding="utf-8")
    return int(stream["label"].sum())


def score_throughput(bundle_path: str, input_path: Path, rows: int, repeats: int, workdir: Path) -> dict:
    """Whole-process ``seqmon score`` rows/s per ``--explain`` mode: median and range over ``repeats`` runs.

    Each run is a fresh ``python -m monitor.cli score`` process, timed from start to exit; the modes take turns, so
    a load change on the machine touches all of them alike.
    """
    seconds: dict[str, list[float]] = {mode: [] for mode in EXPLAIN_MODES}
    cpu_seconds: dict[str, list[float]] = {mode: [] for mode in EXPLAIN_MODES}
    flagged = {}
    for _ in range(repeats):
        for mode in EXPLAIN_MODES:
            out = workdir / f"scores-{mode}.csv"
            cmd = [sys.executable, "-m", "monitor.cli", "score", bundle_path, str(input_path), "-o", str(out), "--explain", mode]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            seconds[mode].append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_seconds[mode].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            flagged[mode] = done.stderr.strip().splitlines()[-1].split("; written to")[0]
    results = {}
    for mode in EXPLAIN_MODES:
        rates = sorted(rows / t for t in seconds[mode])
        cpu_rates = sorted(rows / t for t in cpu_seconds[mode])
        results[mode] = {
            "median": float(np.median(rates)), "min": rates[0], "max": rates[-1], "seconds": seconds[mode],
            "per_cpu_second_median": float(np.median(cpu_rates)), "per_cpu_second_min": cpu_rates[0],
            "per_cpu_second_max": cpu_rates[-1], "cpu_seconds": cpu_seconds[mode],
        }
    results["summary"] = flagged["anomalies"]
    return results


def run_bench(rows: int, naive_rows: int, bundle_path: str | None, seed: int, score_rows: int = 200_000,
              score_repeats: int = 3) -> dict:
    from monitor.bundle import load_bundle  # noqa: PLC0415
    from monitor.generate import SeedLikeGenerator  # noqa: PLC0415

    data = SeedLikeGenerator(seed + 1).normal(rows)
    tmp = None
    if bundle_path is None:
        tmp = tempfile.TemporaryDirectory(prefix="seqmon-bench-")
        bundle_path = str(Path(tmp.name) / "bundle")
        # Built in a child process so that this one never imports TensorFlow before its RSS is read.
        code = f"from monitor.bench import _untrained_bundle; _untrained_bundle({seed}, {bundle_path!r})"
        subprocess.run([sys.executable, "-c", code], check=True, stderr=subprocess.DEVNULL)
    bundle = load_bundle(bundle_path)
    v = bundle.vectorizer
    print(f"bundle: {bundle_path}; {v.n_features} input places, layers {[l.kernel.shape for l in bundle.scorer.layers]}")
    print(f"data: {rows:,} seed-like sequences, {np.mean([len(s) for s in data[:10000]]):.1f} characters on average")

    bundle.errors(data[:20_000])  # warm-up: first-call costs of Arrow and BLAS are not part of the rate
    t0 = time.perf_counter()
    encoded = v.encode(data)
    t1 = time.perf_counter()
    errors = bundle.scorer.errors(encoded)
    t2 = time.perf_counter()
    batch_errors = np.concatenate([bundle.errors(data[i : i + 50_000]) for i in range(0, rows, 50_000)])
    t3 = time.perf_counter()
    assert np.allclose(errors, batch_errors)
    results = {
        "rows": rows,
        "vectorize_rows_per_s": rows / (t1 - t0),
        "score_rows_per_s": rows / (t2 - t1),
        "vectorize_and_score_rows_per_s": rows / (t3 - t2),
    }
    print(f"batch path   vectorize           {_rate(rows, t1 - t0)}")
    print(f"batch path   score               {_rate(rows, t2 - t1)}")
    print(f"batch path   vectorize + score   {_rate(rows, t3 - t2)}  (batches of 50,000; repeats scored once)")
    # Worst case for the repeat-once shortcut: every sequence distinct (4 random vocabulary tokens).
    rng = np.random.default_rng(seed)
    vocabulary = np.array(v.vocabulary)
    distinct = [" ".join(r) for r in vocabulary[rng.integers(0, len(vocabulary), (rows, 4))].tolist()]
    t4 = time.perf_counter()
    for i in range(0, rows, 50_000):
        bundle.errors(distinct[i : i + 50_000])
    t5 = time.perf_counter()
    results["vectorize_and_score_distinct_rows_per_s"] = rows / (t5 - t4)
    print(f"batch path   vectorize + score   {_rate(rows, t5 - t4)}  (every sequence distinct)")
    rss_fast = _peak_rss_mib()
    results["peak_rss_mib_batch_path"] = rss_fast
    print(f"peak RSS after the batch path: {rss_fast:,.0f} MiB (TensorFlow not imported)")

    if score_rows:
        workdir = Path(tempfile.mkdtemp(prefix="seqmon-bench-score-"))
        input_path = workdir / "input.txt"
        n_abnormal = score_input(input_path, score_rows, seed)
        score = score_throughput(bundle_path, input_path, score_rows, score_repeats, workdir)
        results["score_process"] = {**score, "rows": score_rows, "abnormal_rows": n_abnormal}
        print(f"seqmon score input: {score_rows:,} generated lines, {n_abnormal:,} of them abnormal; {score['summary']}")
        print(f"seqmon score, whole process (start, load, read, score, explain, write CSV), {score_repeats} runs per mode:")
        for mode in EXPLAIN_MODES:
            r = score[mode]
            print(f"seqmon score --explain {mode:<9} {r['median']:>10,.0f} rows/s  ({r['min']:,.0f}-{r['max']:,.0f}); "
                  f"{r['per_cpu_second_median']:,.0f} rows per CPU second ({r['per_cpu_second_min']:,.0f}-"
                  f"{r['per_cpu_second_max']:,.0f})")
        for f in workdir.iterdir():
            f.unlink()
        workdir.rmdir()

    import keras  # noqa: PLC0415  (the straightforward path needs Keras; imported only now, after the RSS reading)

    model = keras.models.load_model(Path(bundle_path) / "model.keras", compile=False)
    sample = data[:naive_rows]
    t0 = time.perf_counter()
    dense = naive_vectorize(v, sample)
    t1 = time.perf_counter()
    recon = model.predict(dense, verbose=0)
    naive_errors = ((dense - recon) ** 2).mean(axis=1)
    t2 = time.perf_counter()
    diff = float(np.max(np.abs(naive_errors - errors[:naive_rows])))
    results.update({
        "naive_rows": naive_rows,
        "naive_vectorize_rows_per_s": naive_rows / (t1 - t0),
        "naive_predict_rows_per_s": naive_rows / (t2 - t1),
        "naive_vectorize_and_score_rows_per_s": naive_rows / (t2 - t0),
        "max_abs_error_difference": diff,
        "peak_rss_mib_with_tensorflow": _peak_rss_mib(),
    })
    results["speedup"] = results["vectorize_and_score_rows_per_s"] / results["naive_vectorize_and_score_rows_per_s"]
    print(f"Keras path   Python-loop vectorize {_rate(naive_rows, t1 - t0)}")
    print(f"Keras path   model.predict + MSE   {_rate(naive_rows, t2 - t1)}")
    print(f"Keras path   vectorize + score     {_rate(naive_rows, t2 - t0)}")
    print(f"speed-up of the batch path: {results['speedup']:.1f}x; largest error difference {diff:.2e}")
    if score_rows:
        keras_rate = results["naive_vectorize_and_score_rows_per_s"]
        process = results["score_process"]
        default, none = process["anomalies"]["median"], process["none"]["median"]
        cpu_ratio = process["anomalies"]["per_cpu_second_median"] / process["none"]["per_cpu_second_median"]
        results["score_default_vs_none"] = default / none
        results["score_default_vs_none_cpu"] = cpu_ratio
        results["score_default_vs_keras_path"] = default / keras_rate
        print(f"seqmon score with default explanations: {default / none:.0%} of --explain none ({cpu_ratio:.0%} per CPU "
              f"second), {default / keras_rate:.1f}x the Keras path's vectorize + score rate (medians of wall-clock rates)")
    if tmp is not None:
        tmp.cleanup()
    return results


def _untrained_bundle(seed: int, path: str) -> None:
    """A bundle of the seed preset's shape with initial weights: speed does not depend on training."""
    from monitor.bundle import save_bundle  # noqa: PLC0415
    from monitor.generate import SeedLikeGenerator  # noqa: PLC0415
    from monitor.model import build_autoencoder, export_layers  # noqa: PLC0415
    from monitor.score import ReconstructionScorer  # noqa: PLC0415
    from monitor.train import preset  # noqa: PLC0415

    train = SeedLikeGenerator(seed).normal(20_000)
    vec_settings, model_settings = preset("seed", seed=seed)
    vectorizer = Vectorizer.fit(train, vec_settings)
    import keras  # noqa: PLC0415

    keras.utils.set_random_seed(seed)
    model = build_autoencoder(vectorizer.n_features, model_settings)
    layers = export_layers(model)
    reference = ReconstructionScorer(layers).errors(vectorizer.encode(train[:2000]))
    save_bundle(path, vectorizer=vectorizer, layers=layers, reference_errors=reference, threshold_percentile=99.0, keras_model=model)


#: Training data of the training benchmark: ``small`` is ``seqmon generate``-style codes (about 760 tokens, 4 parts);
#: ``large`` is log-like lines of 5-60 words drawn with Zipf popularity from 50,000 words, a third of them with digits
#: (ids and counters give the shape channel work): ``auto`` gives it tens of thousands of input places.
TRAINING_DATA = ("small", "large")
#: Presets the training benchmark compares: the default, and the published reference (750 tokens x 4 places).
TRAINING_PRESETS = ("auto", "original")


def training_lines(data: str, n: int, seed: int = 0, vocabulary: int = 50_000) -> list[str]:
    """``n`` normal training lines of one of ``TRAINING_DATA``."""
    if data == "small":
        from monitor.generate import SeedLikeGenerator  # noqa: PLC0415

        return SeedLikeGenerator(seed).normal(n)
    if data != "large":
        raise ValueError(f"training data is one of {TRAINING_DATA}, not {data!r}")
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" if i % 3 else f"id{i}_{i % 97}" for i in range(vocabulary)])
    lengths = rng.integers(5, 61, n)
    tokens = words[np.minimum(rng.zipf(1.2, int(lengths.sum())), vocabulary) - 1]
    bounds = np.concatenate(([0], np.cumsum(lengths)))
    return [" ".join(tokens[bounds[i] : bounds[i + 1]]) for i in range(n)]


def train_process(input_path: Path, out: Path, preset_name: str, epochs: int, extra: Sequence[str] = ()) -> dict:
    """One whole ``seqmon train`` process (start, read, choose settings, vectorize, fit, reference errors, save) with
    a fixed number of epochs (0: the preset's own, with its early stopping): wall and CPU seconds, and the peak RSS
    of that process alone (``wait4``)."""
    fixed = ["--epochs", str(epochs), "--patience", "0"] if epochs else []  # 0: the preset's epochs, early stopping
    cmd = [sys.executable, "-m", "monitor.cli", "train", str(input_path), "--out", str(out), "--preset", preset_name,
           *fixed, "--quiet", *extra]
    started = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"seqmon train --preset {preset_name} failed ({child.returncode}): {stderr.strip()[-2000:]}")
    from monitor.bundle import load_bundle  # noqa: PLC0415

    bundle = load_bundle(out)
    metadata = bundle.metadata
    return {
        "preset": preset_name,
        "seconds": round(seconds, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "fit_seconds": metadata.get("training_seconds"),
        "epochs": metadata.get("epochs_run"),
        "distinct_rows": metadata.get("distinct_training_rows"),
        "tokens": len(bundle.vectorizer.vocabulary),
        "input_places": bundle.vectorizer.n_features,
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
    }


def training_bench(lines: int, epochs: int, data: Sequence[str] = TRAINING_DATA,
                   presets: Sequence[str] = TRAINING_PRESETS, seed: int = 0) -> list[dict]:
    """``seqmon train`` on ``lines`` lines of each kind of data, once per preset, each in its own process."""
    results = []
    with tempfile.TemporaryDirectory(prefix="seqmon-bench-train-") as tmp:
        for name in data:
            input_path = Path(tmp) / f"{name}.txt"
            input_path.write_text("\n".join(training_lines(name, lines, seed)) + "\n", encoding="utf-8")
            for preset_name in presets:
                run = train_process(input_path, Path(tmp) / f"{name}-{preset_name}", preset_name, epochs)
                run.update(data=name, lines=lines)
                results.append(run)
                print(
                    f"seqmon train {name:>5} data, --preset {preset_name:<8}: {lines:,} lines ({run['distinct_rows']:,} "
                    f"distinct), {run['tokens']:,} tokens kept, {run['input_places']:,} input places; "
                    f"{run['epochs']} epochs, {run['seconds']} s in all ({run['cpu_seconds']} CPU s, fit "
                    f"{run['fit_seconds']} s); peak RSS {run['peak_rss_mib']:,} MiB",
                    flush=True,
                )
    return results


def cmd_bench(args) -> int:
    results = {}
    if args.rows:
        results = run_bench(args.rows, args.naive_rows, args.bundle, args.seed, args.score_rows, args.score_repeats)
    if args.train_lines:
        each = f"{args.train_epochs} epochs each (early stopping off)" if args.train_epochs else "each preset's epochs"
        print(f"training: whole `seqmon train` processes, {each}, "
              f"{args.train_lines:,} lines per kind of data, presets {', '.join(TRAINING_PRESETS)}")
        data = tuple(args.train_data.split(",")) if args.train_data else TRAINING_DATA
        results["training"] = training_bench(args.train_lines, args.train_epochs, data=data, seed=args.seed)
    if args.json:
        print(json.dumps(results), file=sys.stdout)
    return 0


def register(sub) -> None:
    b = sub.add_parser("bench", help="measure vectorize + score, `seqmon score` and `seqmon train` beside the original path")
    b.add_argument("--rows", type=int, default=1_000_000,
                   help="sequences for the batch path; 0 skips the scoring figures (default %(default)s)")
    b.add_argument("--naive-rows", type=int, default=50_000, help="sequences for the slow Keras path (default %(default)s)")
    b.add_argument("--bundle", help="bundle to measure (default: an untrained bundle of the seed preset's shape)")
    b.add_argument("--score-rows", type=int, default=200_000,
                   help="lines (3 %% anomalies) for the whole-process `seqmon score` runs; 0 skips them (default %(default)s)")
    b.add_argument("--score-repeats", type=int, default=3, help="runs of `seqmon score` per --explain mode (default %(default)s)")
    b.add_argument("--train-lines", type=int, default=50_000,
                   help="lines of small-vocabulary codes and of large-vocabulary log-like text for the `seqmon train` "
                        "runs (each preset, each in its own process: time and peak RSS); 0 skips them (default %(default)s)")
    b.add_argument("--train-epochs", type=int, default=2,
                   help="epochs of each `seqmon train` run; 0: the preset's own, with early stopping (default %(default)s)")
    b.add_argument("--train-data", choices=(*TRAINING_DATA, ",".join(TRAINING_DATA)), default=None,
                   help="which training data to run: small, large or both (default: both)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true", help="also print the figures as one JSON object")
    b.set_defaults(func=cmd_bench)
