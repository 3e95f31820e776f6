"""The auto preset: settings read off the training data, each with its reason. No training here."""

import numpy as np
import pytest

from monitor.errors import ConfigError, InputError
from monitor.train import AUTO_MAX_LENGTH, AUTO_POSITIONAL_PLACES, auto_settings, preset, settings_for
from monitor.vectorize import Vectorizer


def codes(n, seed=0):
    """Short codes of three formats: two letters, a number, a letter-digit id."""
    rng = np.random.default_rng(seed)
    heads = ["DF", "QX", "MB"]
    return [f"{heads[i % 3]} {rng.integers(10, 60)} {['FR', 'DE', 'IT'][rng.integers(3)]} GX{rng.integers(100, 999)}"
            for i in range(n)]


def test_short_codes_get_positional_tokens_shapes_and_a_length_place():
    lines = codes(5_000)
    vec, mod, reasons = auto_settings(lines)
    assert vec.max_length == 4 and vec.encoding == "positional" and vec.bag == "counts"
    assert vec.shapes and vec.length_signal and not vec.lower and vec.min_count == 3 and vec.rare
    fitted = Vectorizer.fit(lines, vec)
    # Every token seen three times or more has a place; the vocabulary fills vocab_size exactly.
    assert len(fitted.vocabulary) == vec.vocab_size - 3
    assert {"DF", "QX", "MB", "FR"} <= set(fitted.vocabulary)
    assert set(fitted.shapes) == {"A", "9", "A9"} and vec.shape_vocab_size == 5
    assert len(reasons) >= 5 and any("max_length 4" in r for r in reasons) and any("A9" in r for r in reasons)
    assert mod.epochs > 0
    # auto weights the error by place; the named presets keep the published plain mean squared error.
    assert mod.weighted_error and any(r.startswith("error: ") for r in reasons)
    assert not any(preset(name)[1].weighted_error for name in ("seed", "logkeys", "original"))


def test_one_off_values_stay_out_of_the_vocabulary():
    rng = np.random.default_rng(1)
    lines = [f"session {i} opened for user{rng.integers(0, 5)} from 10.0.{rng.integers(0, 255)}.{i % 250}"
             for i in range(3_000)]
    vec, _, reasons = auto_settings(lines)
    fitted = Vectorizer.fit(lines, vec)
    assert "session" in fitted.vocabulary and "user3" in fitted.vocabulary
    assert not any(t.isdigit() and int(t) >= 1000 for t in fitted.vocabulary)  # session numbers seen once each
    assert "9.9.9.9" in fitted.shapes and "a9" in fitted.shapes
    assert any("one rare place" in r for r in reasons)
    # The session numbers, each seen once, are new to the training row that holds them and rare live.
    assert len(fitted.rare.once) >= 2_000


def test_long_lines_with_many_tokens_go_into_a_bag_and_lengths_are_capped():
    rng = np.random.default_rng(2)
    words = [f"w{i}" for i in range(4_000)]
    lines = [" ".join(rng.choice(words, size=rng.integers(5, 120))) for _ in range(4_000)]
    vec, _, reasons = auto_settings(lines)
    assert vec.max_length == AUTO_MAX_LENGTH
    assert vec.vocab_size * vec.max_length > AUTO_POSITIONAL_PLACES
    assert vec.encoding == "multi_hot" and vec.bag == "none" and vec.shapes
    assert any("capped" in r for r in reasons)


def test_settings_for_applies_overrides_and_says_so():
    vec, mod, reasons = settings_for("auto", codes(500), epochs=3, max_length=6)
    assert (vec.max_length, mod.epochs) == (6, 3)
    assert "set by hand" in reasons[-1]
    vec, mod, reasons = settings_for("seed", codes(500), epochs=3)
    assert reasons == [] and mod.epochs == 3 and vec.encoding == "positional"
    with pytest.raises(ConfigError, match="unknown training setting"):
        settings_for("auto", codes(500), bogus=1)
    with pytest.raises(ConfigError, match="read off the training data"):
        preset("auto")
    with pytest.raises(InputError, match="no tokens"):
        auto_settings(["", "   "])


def test_many_distinct_rows_get_sampled_epochs():
    from monitor.train import AUTO_EPOCH_ROWS

    lines = [f"job {i} done in {i % 50} ms" for i in range(AUTO_EPOCH_ROWS + 10)]
    _, mod, reasons = auto_settings(lines)
    assert mod.epoch_rows == AUTO_EPOCH_ROWS and any("sampled afresh" in r for r in reasons)
    # Rows through training are capped: 30 epochs of 50,000, and any("at most 30 epochs") says so.
    assert mod.epochs == 30 and any(r.startswith("at most 30 epochs") for r in reasons)
    _, mod, reasons = auto_settings(lines[:1000])
    assert mod.epoch_rows == 0 and mod.epochs == 100 and not any(r.startswith("at most") for r in reasons)
    _, mod, _ = auto_settings(lines[:30_000])  # 30,000 distinct rows: 50 epochs make 1.5 million
    assert mod.epoch_rows == 0 and mod.epochs == 50


def test_wide_inputs_train_in_larger_batches_while_an_epoch_keeps_its_steps():
    from monitor.model import SPARSE_FROM_FEATURES
    from monitor.train import AUTO_BATCH, AUTO_MIN_STEPS

    narrow = auto_settings(codes(20_000))[1]
    assert narrow.batch_size == AUTO_BATCH
    # 24,000 words seen three times each, three per line: about 24,000 token places, wide.
    rng = np.random.default_rng(0)
    words = np.repeat([f"w{i}" for i in range(24_000)], 3)
    rng.shuffle(words)
    lines = [" ".join(words[i : i + 3]) for i in range(0, len(words) - 2, 3)]
    vec, mod, reasons = auto_settings(lines)
    assert vec.n_features >= SPARSE_FROM_FEATURES
    assert mod.batch_size > AUTO_BATCH and len(set(lines)) // mod.batch_size >= AUTO_MIN_STEPS
    assert len(set(lines)) // (2 * mod.batch_size) < AUTO_MIN_STEPS  # the largest batch that keeps the steps
    assert any(f"batches of {mod.batch_size} rows" in r for r in reasons)
