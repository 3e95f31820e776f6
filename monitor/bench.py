"""``seqmon bench``: scoring speed of the batch path beside the straightforward Keras path, same model, same data.

The straightforward path is what the original design does: a Python loop that tokenizes and vectorizes record by
record, then ``model.predict`` (default batch of 32) and a numpy MSE. It prints figures and asserts nothing on time.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
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


def run_bench(rows: int, naive_rows: int, bundle_path: str | None, seed: int) -> dict:
    from monitor.bundle import load_bundle  # noqa: PLC0415
    from monitor.generate import SeedLikeGenerator  # noqa: PLC0415

    data = SeedLikeGenerator(seed + 1).normal(rows)
    tmp = None
    if bundle_path is None:
        tmp = tempfile.TemporaryDirectory(prefix="seqmon-bench-")
        bundle_path = str(Path(tmp.name) / "bundle")
        # Built in a child process so that this one never imports TensorFlow before its RSS is read.
        import subprocess  # noqa: PLC0415

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


def cmd_bench(args) -> int:
    results = run_bench(args.rows, args.naive_rows, args.bundle, args.seed)
    if args.json:
        print(json.dumps(results), file=sys.stdout)
    return 0


def register(sub) -> None:
    b = sub.add_parser("bench", help="measure vectorize + score speed beside the straightforward Keras path")
    b.add_argument("--rows", type=int, default=1_000_000, help="sequences for the batch path (default %(default)s)")
    b.add_argument("--naive-rows", type=int, default=50_000, help="sequences for the slow Keras path (default %(default)s)")
    b.add_argument("--bundle", help="bundle to measure (default: an untrained bundle of the seed preset's shape)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", action="store_true", help="also print the figures as one JSON object")
    b.set_defaults(func=cmd_bench)
