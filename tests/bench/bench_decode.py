"""JSON decode speed: ``decode_json`` (orjson over the batch) against one ``json.loads`` per record, the decoder
before orjson, kept here as the yardstick. Plain UTF-8 decode is printed beside them for scale.

Not a pytest test (no test_ prefix).

    python tests/bench/bench_decode.py [--rows 200000] [--batch 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from monitor.decode import (  # noqa: E402
    INVALID_JSON,
    INVALID_TIMESTAMP,
    INVALID_UTF8,
    INVALID_WEIGHT,
    MISSING_FIELD,
    TOO_LONG,
    Decoded,
    JsonFields,
    decode_json,
    decode_plain,
    parse_timestamp_ms,
)


def per_record_json_loads(values, fields: JsonFields, max_bytes: int) -> Decoded:
    """The former ``decode_json``: one ``json.loads`` and a Python branch per record."""
    n = len(values)
    reasons = np.full(n, "", dtype=object)
    sequences = [""] * n
    weights = np.ones(n)
    stamps = np.full(n, -1, dtype=np.int64)
    for i, v in enumerate(values):
        if len(v) > max_bytes:
            reasons[i] = TOO_LONG
            continue
        try:
            doc = json.loads(v.decode("utf-8"))
        except UnicodeDecodeError:
            reasons[i] = INVALID_UTF8
            continue
        except ValueError:
            reasons[i] = INVALID_JSON
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get(fields.sequence), str):
            reasons[i] = MISSING_FIELD
            continue
        if fields.weight and fields.weight in doc:
            w = doc[fields.weight]
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w) or w <= 0:
                reasons[i] = INVALID_WEIGHT
                continue
            weights[i] = w
        if fields.timestamp and fields.timestamp in doc:
            ts = parse_timestamp_ms(doc[fields.timestamp])
            if ts is None:
                reasons[i] = INVALID_TIMESTAMP
                continue
            stamps[i] = ts
        sequences[i] = doc[fields.sequence]
    return Decoded(sequences, reasons, weights, stamps)


def rate(decode, values, batch: int) -> float:
    """Records per CPU second of this process: steadier than the wall clock on cores shared with other jobs."""
    started = time.process_time()
    for start in range(0, len(values), batch):
        decode(values[start:start + batch])
    return len(values) / (time.process_time() - started)


def medians(decoders: dict, values, batch: int, repeats: int) -> dict:
    """Median rate of each decoder over ``repeats`` runs, the decoders taking turns (load changes hit them alike)."""
    for decode in decoders.values():
        decode(values[:batch])  # warm up
    runs: dict = {name: [] for name in decoders}
    for _ in range(repeats):
        for name, decode in decoders.items():
            runs[name].append(rate(decode, values, batch))
    return {name: float(np.median(r)) for name, r in runs.items()}


def main() -> None:
    from monitor.generate import SeedLikeGenerator

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000, help="records per decode call (batch.max_records)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sequences = SeedLikeGenerator(0).normal(args.rows)
    rng = np.random.default_rng(0)
    stamps = 1_767_225_600_000 + np.sort(rng.integers(0, 3_600_000, args.rows))
    counts = rng.integers(1, 5, args.rows)
    fields = JsonFields(sequence="sequence", weight="weight", timestamp="timestamp_ms")
    inputs = {
        "sequence only": [json.dumps({"sequence": s}).encode() for s in sequences],
        "with weight and timestamp": [
            json.dumps({"sequence": s, "weight": int(c), "timestamp_ms": int(t)}).encode()
            for s, c, t in zip(sequences, counts.tolist(), stamps.tolist())
        ],
    }
    # Every 100th record refused: a batch with bad records takes the per-record fallback for those only.
    bad = list(inputs["with weight and timestamp"])
    bad[::100] = [b"{not json"] * len(bad[::100])
    inputs["1% invalid JSON"] = bad
    print(f"{args.rows:,} records, batches of {args.batch:,}, records per CPU second, median of {args.repeats} runs")
    plain = [s.encode() for s in sequences]
    plain_rate = medians({"plain": lambda v: decode_plain(v, 4096)}, plain, args.batch, args.repeats)["plain"]
    print(f"{'plain UTF-8 (decode_plain)':>28}: {plain_rate:>11,.0f} records/s")
    for name, values in inputs.items():
        got = medians({
            "before": lambda v: per_record_json_loads(v, fields, 4096),
            "after": lambda v: decode_json(v, fields, 4096),
        }, values, args.batch, args.repeats)
        before, after = got["before"], got["after"]
        same = per_record_json_loads(values, fields, 4096)
        new = decode_json(values, fields, 4096)
        assert new.reasons.tolist() == same.reasons.tolist() and new.sequences == same.sequences
        assert np.array_equal(new.weights[new.ok], same.weights[same.ok])
        assert np.array_equal(new.timestamps_ms, same.timestamps_ms)
        print(f"{name:>28}: json.loads per record {before:>11,.0f} records/s, decode_json {after:>11,.0f} records/s"
              f" ({after / before:.1f}x)", flush=True)


if __name__ == "__main__":
    main()
