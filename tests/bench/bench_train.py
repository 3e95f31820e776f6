"""Training time and peak memory for a small and a large vocabulary, for each training path (gram, sparse, dense).

`seqmon bench` measures whole `seqmon train` processes per preset; this script compares the training paths of
one preset's settings, timing the fit alone (wall and CPU seconds: CPU seconds stay comparable on a busy machine).

Not a pytest test (no test_ prefix). Each configuration trains in its own subprocess, so the peak RSS printed is that
training's alone:

    python tests/bench/bench_train.py                      # small (codes) and large (50,000-token log lines)
    python tests/bench/bench_train.py --lines 1000000 --only large --modes sparse
    python tests/bench/bench_train.py --only large --modes gram,sparse --batch-size 128   # the same batches

"small": ``seqmon generate``-style codes (about 760 tokens, 4 positions: ~3,800 input places).
"large": log-like lines of 5-60 words drawn with Zipf popularity from 50,000 words, a third of them carrying
numbers (so ids and counters give the shape channel work): the auto preset gives ~50,000+ input places.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def one(config: str, mode: str, lines: int, epochs: int, batch_size: int = 0) -> dict:
    """Train one configuration in this process; returns its figures."""
    from monitor.bench import training_lines
    from monitor.model import train_autoencoder
    from monitor.train import settings_for, split_rows
    from monitor.vectorize import Vectorizer

    started = time.perf_counter()
    sequences = training_lines(config, lines)
    made = time.perf_counter()
    vec, mod, _ = settings_for("auto", sequences, epochs=epochs, patience=0,
                               **({"batch_size": batch_size} if batch_size else {}))
    train_idx, held_idx = split_rows(len(sequences), mod.validation_split, mod.seed)
    train_rows = [sequences[i] for i in train_idx]
    vectorizer = Vectorizer.fit(train_rows, vec)
    fit_rows = sorted(set(train_rows))
    train_enc = vectorizer.encode(fit_rows)
    held_enc = vectorizer.encode(sorted({sequences[i] for i in held_idx}))
    encoded, cpu_before = time.perf_counter(), time.process_time()
    _, history = train_autoencoder(train_enc, held_enc, mod, verbose=0, path=mode)
    trained, cpu = time.perf_counter(), time.process_time() - cpu_before
    return {
        "config": config, "mode": mode, "lines": lines, "distinct_rows": len(fit_rows),
        "input_places": vectorizer.n_features, "epoch_rows": mod.epoch_rows, "epochs": len(history["loss"]),
        "make_s": round(made - started, 1), "settings_and_encode_s": round(encoded - made, 1),
        "train_s": round(trained - encoded, 1), "s_per_epoch": round((trained - encoded) / len(history["loss"]), 1),
        "train_cpu_s": round(cpu, 1), "cpu_s_per_epoch": round(cpu / len(history["loss"]), 1),
        "batch_size": mod.batch_size,
        "final_loss": history["loss"][-1],
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=200_000, help="training lines per configuration")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per training (early stopping off)")
    parser.add_argument("--only", choices=("small", "large"), help="one configuration")
    parser.add_argument("--modes", default="gram,sparse,dense", help="training paths, comma-separated")
    parser.add_argument("--batch-size", type=int, default=0, help="rows per batch (0: the auto preset's own)")
    parser.add_argument("--one", nargs=2, metavar=("CONFIG", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], args.lines, args.epochs, args.batch_size)))
        return
    for config in ([args.only] if args.only else ["small", "large"]):
        for mode in args.modes.split(","):
            run = subprocess.run(
                [sys.executable, __file__, "--one", config, mode, "--lines", str(args.lines), "--epochs", str(args.epochs),
                 "--batch-size", str(args.batch_size)],
                capture_output=True, text=True, check=False,
            )
            if run.returncode:
                print(f"{config} {mode}: failed\n{run.stderr[-2000:]}")
                continue
            f = json.loads(run.stdout.strip().splitlines()[-1])
            print(
                f"{config:>5} {mode:>6}: {f['lines']:,} lines ({f['distinct_rows']:,} distinct), "
                f"{f['input_places']:,} input places; settings + encoding {f['settings_and_encode_s']} s; "
                f"batches of {f['batch_size']}; {f['epochs']} epochs in {f['train_s']} s, {f['train_cpu_s']} CPU s "
                f"({f['s_per_epoch']} s/epoch, {f['cpu_s_per_epoch']} CPU s/epoch"
                f"{', at most ' + format(f['epoch_rows'], ',') + ' rows each' if f['epoch_rows'] else ''}); "
                f"peak RSS {f['peak_rss_mib']:,} MiB",
                flush=True,
            )


if __name__ == "__main__":
    main()
