"""Tests of monitor.generate: determinism, the anomaly guarantees per kind, the stream and the files written."""

from __future__ import annotations

import collections
import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitor import generate as G
from monitor.errors import ConfigError
from monitor.generate import FORMATS, KINDS, MAX_TOKENS, SeedLikeGenerator, formats_of, is_normal, write_dataset

ROOT = Path(__file__).resolve().parents[2]
SHAPES = {"code": r"[A-Z]{2}", "country": r"[A-Z]{2}", "number": r"\d{2}", "id": r"[A-Z]{2}\d{3}"}
FMT = {f.name: f for f in FORMATS}


@pytest.fixture(scope="module")
def normal_sample() -> list[str]:
    return SeedLikeGenerator(123).normal(200_000)


@pytest.fixture(scope="module")
def normal_set(normal_sample: list[str]) -> frozenset[str]:
    return frozenset(normal_sample)


@pytest.fixture(scope="module")
def normal_tokens(normal_sample: list[str]) -> frozenset[str]:
    return frozenset(t for s in normal_sample for t in s.split(" "))


@pytest.fixture(scope="module")
def pairs() -> dict[str, list[tuple[list[str], list[str]]]]:
    g = SeedLikeGenerator(7)
    return {k: [(s.split(" "), a.split(" ")) for s, a in g.abnormal_pairs(3_000, k)] for k in KINDS}


def source_format(src: list[str]) -> G.Format:
    names = formats_of(src)
    assert len(names) == 1, (src, names)
    return FMT[names[0]]


# ------------------------------------------------------------------------------------------------------------ world


def test_world_shape() -> None:
    assert 6 <= len(FORMATS) <= 10
    lengths = collections.Counter(len(f.parts) for f in FORMATS)
    assert set(lengths) <= {3, 4} and 1 <= lengths[3] <= 3
    assert [f.prob for f in FORMATS] == sorted((f.prob for f in FORMATS), reverse=True)
    assert abs(sum(f.prob for f in FORMATS) - 1) < 1e-12
    # Every non-number token has one owner (format, position): that is what makes `foreign` foreign.
    owners = collections.defaultdict(set)
    for f in FORMATS:
        for i, p in enumerate(f.parts):
            assert abs(p.probs.sum() - 1) < 1e-9
            for v in p.values:
                assert re.fullmatch(SHAPES[p.kind], v), (p.kind, v)
                owners[v].add((f.name, i))
                assert not set(v) & set(G.RESERVED_LETTERS) and v not in G.RESERVED_NUMBERS
    shared = {v for v, o in owners.items() if len(o) > 1}
    assert shared and all(re.fullmatch(r"\d{2}", v) for v in shared)  # only a few numbers are shared
    assert len(shared) < 0.5 * sum(1 for v in owners if v.isdigit())
    assert 500 <= len(G.normal_vocabulary()) <= 800


def test_normal_sequences_follow_the_formats(normal_sample: list[str]) -> None:
    assert all(isinstance(s, str) for s in normal_sample[:100])
    assert all(is_normal(s) for s in normal_sample[:20_000])
    lengths = collections.Counter(len(s.split(" ")) for s in normal_sample)
    assert set(lengths) == {3, 4} and lengths[4] > lengths[3]
    share = collections.Counter(formats_of(s)[0] for s in normal_sample[:50_000])
    for f in FORMATS:  # Zipf popularity is what is sampled
        assert abs(share[f.name] / 50_000 - f.prob) < 0.01, (f.name, share[f.name])
    # A correlation: in "order" the number range is chosen by the code.
    ranges = {"DF": range(30, 40), "DK": range(40, 47), "DX": range(47, 53)}
    seen = 0
    for s in normal_sample[:20_000]:
        t = s.split(" ")
        if formats_of(t) == ("order",):
            assert int(t[1]) in ranges[t[0]]
            seen += 1
    assert seen > 5_000
    # ...and values inside a part are skewed (Zipf), not uniform.
    codes = collections.Counter(s.split(" ")[0] for s in normal_sample if s.startswith("D"))
    assert max(codes.values()) > 1.5 * min(codes.values())


def test_vocabulary_fits_750_nearly(normal_sample: list[str]) -> None:
    counts = collections.Counter(t.lower() for s in normal_sample[:50_000] for t in s.split(" "))
    ranked = sorted(counts.values(), reverse=True)
    assert 500 <= len(counts) <= 800
    assert sum(ranked[:748]) / sum(ranked) > 0.999


# ------------------------------------------------------------------------------------------------------ determinism


def test_same_seed_same_output_different_seed_different() -> None:
    a, b, c = SeedLikeGenerator(5), SeedLikeGenerator(5), SeedLikeGenerator(6)
    assert a.normal(2_000) == b.normal(2_000) != c.normal(2_000)
    for k in KINDS:
        assert a.abnormal(300, k) == b.abnormal(300, k) != c.abnormal(300, k)
    sa, sb, sc = (g.stream(0, 2, 500, abnormal_hours={1: 0.2}) for g in (a, b, c))
    pd.testing.assert_frame_equal(sa, sb)
    assert not sa.equals(sc)


def test_output_does_not_depend_on_hash_randomization() -> None:
    code = (
        "import hashlib; from monitor.generate import SeedLikeGenerator, KINDS; g = SeedLikeGenerator(3); "
        "out = g.normal(3000) + [a for k in KINDS for a in g.abnormal(200, k)] "
        "+ g.stream(0, 2, 300).to_csv().splitlines(); "
        "print(hashlib.sha256('\\n'.join(out).encode()).hexdigest())"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        run = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True
        )
        digests.add(run.stdout.strip())
    assert len(digests) == 1


# -------------------------------------------------------------------------------------------------------- anomalies


@pytest.mark.parametrize("kind", KINDS)
def test_every_anomaly_is_not_normal(kind, pairs, normal_set) -> None:
    for src, ano in pairs[kind]:
        s, a = " ".join(src), " ".join(ano)
        assert s in normal_set or is_normal(s)
        assert a != s
        assert a not in normal_set
        assert not is_normal(ano)
        # The vectorizer only sees the first MAX_TOKENS tokens: the anomaly must survive that cut.
        assert ano[:MAX_TOKENS] != src[:MAX_TOKENS] and not is_normal(ano[:MAX_TOKENS])


def test_abnormal_returns_the_anomalies_of_abnormal_pairs() -> None:
    assert SeedLikeGenerator(9).abnormal(50, "extra") == [
        a for _, a in SeedLikeGenerator(9).abnormal_pairs(50, "extra")
    ]


def test_unknown_replaces_one_token_by_a_never_seen_token_of_the_same_shape(pairs, normal_tokens) -> None:
    vocab = G.normal_vocabulary()
    for src, ano in pairs["unknown"]:
        assert len(ano) == len(src)
        diff = [i for i in range(len(src)) if src[i] != ano[i]]
        assert len(diff) == 1
        i = diff[0]
        kind = source_format(src).parts[i].kind
        assert re.fullmatch(SHAPES[kind], ano[i])
        assert ano[i] not in normal_tokens and ano[i] not in vocab
    positions = collections.Counter(
        next(i for i in range(len(src)) if src[i] != ano[i]) for src, ano in pairs["unknown"]
    )
    assert set(positions) == {0, 1, 2, 3}


def test_foreign_token_is_invalid_here_and_valid_in_another_format(pairs) -> None:
    kinds_match = 0
    for src, ano in pairs["foreign"]:
        assert len(ano) == len(src)
        diff = [i for i in range(len(src)) if src[i] != ano[i]]
        assert len(diff) == 1
        i, tok = diff[0], ano[diff[0]]
        f = source_format(src)
        assert tok not in f.parts[i].value_set
        donors = [p for g in FORMATS if g is not f for p in g.parts if tok in p.value_set]
        assert donors
        kinds_match += any(p.kind == f.parts[i].kind for p in donors)
    assert kinds_match == len(pairs["foreign"])  # every part kind exists in several formats


def test_missing_removes_one_token(pairs) -> None:
    positions = collections.Counter()
    for src, ano in pairs["missing"]:
        assert len(ano) == len(src) - 1
        removed = [i for i in range(len(src)) if src[:i] + src[i + 1 :] == ano]
        assert removed
        positions[removed[0]] += 1
    assert {0, 1, 2, 3} <= set(positions)


def test_extra_inserts_one_valid_token_inside_the_sequence(pairs) -> None:
    positions = collections.Counter()
    for src, ano in pairs["extra"]:
        assert len(ano) == len(src) + 1
        f = source_format(src)
        inserted = [i for i in range(len(ano)) if ano[:i] + ano[i + 1 :] == src]
        assert inserted
        # The token is valid in the same format, at some position other than where it was inserted.
        assert any(ano[i] in p.value_set and j != i for i in inserted for j, p in enumerate(f.parts))
        if len(src) == MAX_TOKENS:  # appending to a 4-part sequence would be cut off by the vectorizer
            assert min(inserted) < len(src)
        positions[min(inserted)] += 1
    assert {0, 1, 2, 3} <= set(positions)


def test_reordered_keeps_the_tokens_and_changes_the_order(pairs, normal_set) -> None:
    for src, ano in pairs["reordered"]:
        assert sorted(ano) == sorted(src) and ano != src
        assert " ".join(src) in normal_set or is_normal(src)
        assert sum(a != b for a, b in zip(src, ano, strict=True)) == 2


def test_abnormal_validates_arguments() -> None:
    g = SeedLikeGenerator(0)
    with pytest.raises(ConfigError, match="kind"):
        g.abnormal(3, "bogus")
    with pytest.raises(ConfigError, match="n must be"):
        g.abnormal(-1, "missing")
    assert g.abnormal(0, "missing") == [] and g.normal(0) == []


# ----------------------------------------------------------------------------------------------------------- stream


def test_stream_columns_order_and_labels() -> None:
    start = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    df = SeedLikeGenerator(11).stream(start, hours=6, records_per_hour=2_000, anomaly_rate=0.02)
    assert list(df.columns) == ["timestamp_ms", "sequence", "weight", "label", "kind"]
    assert len(df) == 12_000
    for col in ("timestamp_ms", "weight", "label"):
        assert df[col].dtype == np.int64
    assert pd.api.types.is_string_dtype(df["sequence"]) and pd.api.types.is_string_dtype(df["kind"])
    assert df["timestamp_ms"].is_monotonic_increasing
    assert df["timestamp_ms"].min() >= start and df["timestamp_ms"].max() < start + 6 * 3_600_000
    per_hour = ((df["timestamp_ms"] - start) // 3_600_000).value_counts()
    assert per_hour.to_dict() == {h: 2_000 for h in range(6)}
    assert (df["weight"] >= 1).all() and (df["weight"] == 1).mean() > 0.7 and df["weight"].max() > 1
    assert set(df["label"]) == {0, 1}
    assert ((df["label"] == 0) == (df["kind"] == "")).all()
    assert set(df.loc[df["label"] == 1, "kind"]) == set(KINDS)
    assert 0.01 < df["label"].mean() < 0.03
    normal_ok = df.loc[df["label"] == 0, "sequence"].map(is_normal)
    abnormal_ok = df.loc[df["label"] == 1, "sequence"].map(is_normal)
    assert normal_ok.all() and not abnormal_ok.any()


def test_abnormal_hours_raise_the_anomaly_share() -> None:
    df = SeedLikeGenerator(12).stream(0, hours=8, records_per_hour=3_000, anomaly_rate=0.01, abnormal_hours={5: 0.3})
    share = df.groupby(df["timestamp_ms"] // 3_600_000)["label"].mean()
    assert 0.25 < share[5] < 0.35
    assert (share.drop(5) < 0.025).all()


def test_stream_validates_arguments() -> None:
    g = SeedLikeGenerator(0)
    with pytest.raises(ConfigError, match="abnormal_hours"):
        g.stream(0, 3, 10, abnormal_hours={3: 0.5})
    with pytest.raises(ConfigError, match="abnormal_hours"):
        g.stream(0, 3, 10, abnormal_hours={1: 1.5})
    with pytest.raises(ConfigError, match="anomaly_rate"):
        g.stream(0, 3, 10, anomaly_rate=-0.1)
    assert g.stream(0, 0, 10).empty


# ------------------------------------------------------------------------------------------------------------ files


def _digests(paths: dict[str, Path]) -> dict[str, str]:
    return {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in paths.items()}


def test_write_dataset_files(tmp_path: Path) -> None:
    kw = {
        "seed": 4,
        "n_train": 3_000,
        "n_test_normal": 400,
        "n_test_abnormal_per_kind": 60,
        "hours": 3,
        "records_per_hour": 500,
        "abnormal_hours": {1: 0.3},
    }
    paths = write_dataset(tmp_path / "a" / "nested", **kw)
    expected = {"train.txt", "test_normal.txt", "test_abnormal.txt", "test.csv", "stream.csv"} | {
        f"test_abnormal_{k}.txt" for k in KINDS
    }
    assert set(paths) == expected
    assert all(p.is_file() and p.parent == tmp_path / "a" / "nested" for p in paths.values())
    for name, p in paths.items():
        raw = p.read_bytes()
        assert b"\r" not in raw and raw.endswith(b"\n"), name
        raw.decode("utf-8")
    lines = {n: p.read_text(encoding="utf-8").splitlines() for n, p in paths.items() if n.endswith(".txt")}
    assert len(lines["train.txt"]) == 3_000 and all(is_normal(s) for s in lines["train.txt"])
    assert len(lines["test_normal.txt"]) == 400 and all(is_normal(s) for s in lines["test_normal.txt"])
    for k in KINDS:
        assert len(lines[f"test_abnormal_{k}.txt"]) == 60
        assert not any(is_normal(s) for s in lines[f"test_abnormal_{k}.txt"])
    mixed = lines["test_abnormal.txt"]
    assert sorted(mixed) == sorted(s for k in KINDS for s in lines[f"test_abnormal_{k}.txt"])
    assert mixed != [s for k in KINDS for s in lines[f"test_abnormal_{k}.txt"]]  # shuffled, not concatenated

    test = pd.read_csv(paths["test.csv"], keep_default_na=False, dtype={"sequence": str, "kind": str})
    assert list(test.columns) == ["sequence", "label", "kind"]
    assert (test["label"] == 0).sum() == 400 and (test["label"] == 1).sum() == 300
    assert ((test["label"] == 0) == (test["kind"] == "")).all()
    assert test.loc[test["label"] == 1, "kind"].value_counts().to_dict() == {k: 60 for k in KINDS}

    stream = pd.read_csv(paths["stream.csv"], keep_default_na=False, dtype={"sequence": str, "kind": str})
    assert list(stream.columns) == ["timestamp_ms", "sequence", "weight", "label", "kind"]
    assert len(stream) == 1_500 and stream["timestamp_ms"].is_monotonic_increasing
    assert stream["timestamp_ms"].min() >= 1_767_225_600_000  # start defaults to 2026-01-01T00:00:00Z

    # Same seed: byte-identical; another seed: different; another n_train: the other files are unchanged.
    again = write_dataset(tmp_path / "b", **kw)
    assert _digests(again) == _digests(paths)
    other = write_dataset(tmp_path / "c", **{**kw, "seed": 5})
    assert all(_digests(other)[n] != d for n, d in _digests(paths).items())
    bigger = write_dataset(tmp_path / "d", **{**kw, "n_train": 3_500})
    changed = {n for n, d in _digests(bigger).items() if d != _digests(paths)[n]}
    assert changed == {"train.txt"}


def test_write_dataset_without_stream(tmp_path: Path) -> None:
    paths = write_dataset(tmp_path, seed=0, n_train=10, n_test_normal=5, n_test_abnormal_per_kind=2)
    assert "stream.csv" not in paths and not (tmp_path / "stream.csv").exists()
    with pytest.raises(ConfigError, match="start"):
        write_dataset(tmp_path, n_train=1, hours=1, records_per_hour=1, start="yesterday")


def test_start_time_parsing() -> None:
    assert G._epoch_ms("2026-01-01T00:00:00Z") == 1_767_225_600_000
    assert G._epoch_ms("2026-01-01T01:00:00+01:00") == 1_767_225_600_000
    assert G._epoch_ms("2026-01-01T00:00:00") == 1_767_225_600_000  # naive means UTC
    assert G._epoch_ms(42) == 42


# ------------------------------------------------------------------------------------------------------------ speed


def test_normal_250k_takes_a_few_seconds() -> None:
    t0 = time.perf_counter()
    out = SeedLikeGenerator(0).normal(250_000)
    elapsed = time.perf_counter() - t0
    assert len(out) == 250_000
    assert elapsed < 5.0, elapsed
