"""Vectorize speed of the auto preset beside seed, on generated codes and on Loghub Linux lines.

Not a pytest test (no test_ prefix). The Linux file (``../shared/data/loghub`` beside the repository, or
``SEQMON_DATA_DIR``) is repeated to the row count, which flatters: live logs carry more distinct tokens.

    python tests/bench/bench_vectorize.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from monitor.generate import SeedLikeGenerator
    from monitor.train import settings_for
    from monitor.vectorize import Vectorizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    data_dir = Path(os.environ.get("SEQMON_DATA_DIR") or ROOT.parent / "shared" / "data")
    linux = (data_dir / "loghub" / "Linux_2k.log").read_text(errors="replace").splitlines()
    inputs = {
        "codes": SeedLikeGenerator(0).normal(args.rows),
        "Linux lines": (linux * (args.rows // len(linux) + 1))[: args.rows],
    }
    for name, lines in inputs.items():
        for preset in ("seed", "auto"):
            vec, _, _ = settings_for(preset, lines[:20_000])
            vectorizer = Vectorizer.fit(lines[:20_000], vec)
            vectorizer.encode(lines[:1000])  # warm up
            started = time.perf_counter()
            vectorizer.encode(lines)
            rate = len(lines) / (time.perf_counter() - started)
            print(f"{name:>12} {preset:>5}: {vectorizer.n_features:>6,} input places, {rate:>11,.0f} rows/s", flush=True)


if __name__ == "__main__":
    main()
