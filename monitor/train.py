"""Training: from normal sequences to a saved bundle. Orchestrates vectorize → model → score → bundle."""

from __future__ import annotations

import dataclasses
import platform
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from monitor import __version__
from monitor.bundle import Bundle, load_bundle, save_bundle
from monitor.errors import ConfigError, InputError
from monitor.model import SPARSE_FROM_FEATURES, ModelSettings
from monitor.vectorize import Vectorizer, VectorizerSettings

MIN_TRAINING_ROWS = 20

#: Named starting points. ``auto`` (the default) is read off the training data by :func:`auto_settings`; ``seed`` is
#: the original method made robust for short codes; ``logkeys`` suits long log-key sessions (HDFS); ``original``
#: reproduces the original design, weaknesses included, for comparison.
PRESET_NAMES = ("auto", "seed", "logkeys", "original")
PRESETS: dict[str, tuple[VectorizerSettings, ModelSettings]] = {
    "seed": (
        VectorizerSettings(encoding="positional"),
        ModelSettings(hidden=(128,), bottleneck=32, learning_rate=3e-3, batch_size=128, epochs=100, patience=6),
    ),
    "logkeys": (VectorizerSettings(max_length=None, encoding="counts"), ModelSettings(epochs=200, patience=10)),
    "original": (
        VectorizerSettings(oov=False, encoding="multi_hot"),
        ModelSettings(
            hidden=(), bottleneck=32, activation="relu", output_activation="relu", l1_activity=1e-4,
            learning_rate=1e-2, epochs=3, patience=0, distinct_rows=False,
        ),
    ),
}


# --- auto: the encoding read off the training data -------------------------------------------------------------------

#: Brackets, quotes, commas and semicolons separate tokens; ``. : / = - _`` stay inside them, so ``core.7156``,
#: ``rhost=10.0.0.1`` and ``/var/log`` are one token each, with a telling shape.
AUTO_FILTERS = "\"'()[]{}<>,;\t\n"
#: Most token positions per sequence (the 99th percentile of training lengths is used, up to this).
AUTO_MAX_LENGTH = 64
#: Most tokens kept (memory: the output layer has one place per token, or per token and position).
AUTO_MAX_VOCAB = 50_000
#: Tokens x positions up to which every position has its own token places (order-sensitive); past it the tokens of
#: a sequence go into one multi-hot bag and their order is carried by the shapes.
AUTO_POSITIONAL_PLACES = 60_000
#: A token must be seen this often in training to get a place of its own. Rarer ones light a "rare" place, and
#: never-seen ones the out-of-vocabulary place; training rows are encoded leave one out (a token seen once is new to
#: the row that holds it), so the model learns how often each place meets a new value, as live traffic will.
AUTO_MIN_COUNT = 3
AUTO_MAX_SHAPES = 254
#: Past this many distinct training rows, an epoch trains on a fresh random sample of this many: training time then
#: stops growing with the data (tests/bench/bench_train.py measures an epoch).
AUTO_EPOCH_ROWS = 50_000
#: At most this many rows pass through training (epochs x rows per epoch; and at most 100 epochs): early stopping
#: rarely fires on a validation loss that keeps creeping down, and quality is flat long before (README: 25 against
#: 100 epochs on the tuning half). Data of up to 15,000 distinct rows keep their 100 epochs; more data gets fewer, and
#: past 50,000 distinct rows training time stays at 30 epochs of 50,000 rows, whatever the data.
AUTO_MAX_ROWS_SEEN = 1_500_000
AUTO_MAX_EPOCHS = 100
#: Rows per batch, and the most for wide inputs. A training step costs O(places x hidden width) whatever the batch
#: (the output layer's Gram matrix, Adam's update of the first and last layers), so from
#: ``monitor.model.SPARSE_FROM_FEATURES`` input places the batch grows (doubling, up to ``AUTO_WIDE_BATCH``) as long
#: as an epoch keeps at least ``AUTO_MIN_STEPS`` steps.
AUTO_BATCH = 128
AUTO_WIDE_BATCH = 1024
AUTO_MIN_STEPS = 32


def auto_tokenizer() -> VectorizerSettings:
    """How ``auto`` splits sequences into tokens (case kept, punctuation inside tokens kept)."""
    return VectorizerSettings(lower=False, filters=AUTO_FILTERS, max_length=None, encoding="multi_hot")


def auto_settings(sequences: Sequence[str]) -> tuple[VectorizerSettings, ModelSettings, list[str]]:
    """The ``auto`` preset: vectorizer and model settings read off the training sequences, and why each was chosen.

    Returns ``(vectorizer settings, model settings, reasons)``, one reason per choice, for ``seqmon train`` to print
    and the bundle to keep.
    """
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415

    from monitor.vectorize import _frequent, token_shapes, tokenize  # noqa: PLC0415

    base = auto_tokenizer()
    tokens = tokenize(list(sequences), base)
    if len(tokens.values) == 0:
        raise InputError("the training data holds no tokens: every line is empty after tokenizing")
    lengths = tokens.counts
    q99 = int(np.ceil(np.quantile(lengths, 0.99)))
    max_length = int(min(max(q99, 1), AUTO_MAX_LENGTH))
    longer = float(np.mean(lengths > max_length))
    reasons = [
        f"tokens: split on spaces and {AUTO_FILTERS.strip()!r}, case kept; lengths {int(lengths.min())}-"
        f"{int(lengths.max())} (median {float(np.median(lengths)):g})",
        f"max_length {max_length}: 99 % of training sequences have at most {q99} tokens"
        + (f" (capped at {AUTO_MAX_LENGTH})" if q99 > AUTO_MAX_LENGTH else "")
        + f"; {100 * longer:.2g} % are longer, and a length place counts every missing or extra token",
    ]
    distinct = len(pc.unique(tokens.values))
    kept = _frequent(tokens.values, AUTO_MIN_COUNT, AUTO_MAX_VOCAB)
    in_vocabulary = pc.is_in(tokens.values, value_set=pa.array(kept, pa.string())).to_numpy(zero_copy_only=False)
    rare_share = 1.0 - float(np.mean(in_vocabulary))
    reasons.append(
        f"vocabulary {len(kept):,} tokens: of {distinct:,} distinct, those seen at least {AUTO_MIN_COUNT} times"
        + (f" (capped at {AUTO_MAX_VOCAB:,})" if len(kept) == AUTO_MAX_VOCAB else "")
        + f"; {100 * rare_share:.2g} % of token occurrences are rarer: one rare place stands for those seen in "
        "training, the out-of-vocabulary place for new ones, and training rows count a token seen once as new, so "
        "the model learns where new values are normal"
    )
    vocab_size = max(len(kept), 1) + 3  # a vocabulary of no token still needs a (never lit) place
    if vocab_size * max_length <= AUTO_POSITIONAL_PLACES:
        encoding, bag = "positional", "counts"
        reasons.append(
            f"encoding positional: {vocab_size:,} token places x {max_length} positions fit "
            f"{AUTO_POSITIONAL_PLACES:,}, so order counts; plus counts of all tokens, however far past max_length"
        )
    else:
        encoding, bag = "multi_hot", "none"
        reasons.append(
            f"encoding multi_hot: {vocab_size:,} token places x {max_length} positions exceed "
            f"{AUTO_POSITIONAL_PLACES:,}, so tokens go into one bag; the shapes keep their order"
        )
    shapes = _frequent(token_shapes(tokens.values), AUTO_MIN_COUNT, AUTO_MAX_SHAPES)
    reasons.append(
        f"shapes: {len(shapes)} token shapes ({', '.join(shapes[:8])}{', ...' if len(shapes) > 8 else ''}) per "
        "position, so a new value of a known kind of field is mild and a new kind of token is loud"
    )
    vec = dataclasses.replace(
        base, vocab_size=vocab_size, max_length=max_length, encoding=encoding, min_count=AUTO_MIN_COUNT, bag=bag,
        shapes=True, shape_vocab_size=len(shapes) + 2, length_signal=True, rare=True,
    )
    distinct_rows = len(set(sequences))
    epoch_rows = AUTO_EPOCH_ROWS if distinct_rows > AUTO_EPOCH_ROWS else 0
    rows_per_epoch = max(1, min(distinct_rows, AUTO_EPOCH_ROWS))
    epochs = int(min(AUTO_MAX_EPOCHS, -(-AUTO_MAX_ROWS_SEEN // rows_per_epoch)))
    batch = AUTO_BATCH
    if vec.n_features >= SPARSE_FROM_FEATURES:
        while batch < AUTO_WIDE_BATCH and rows_per_epoch // (2 * batch) >= AUTO_MIN_STEPS:
            batch *= 2
    mod = ModelSettings(
        hidden=(128,), bottleneck=32, learning_rate=3e-3, batch_size=batch, epochs=epochs, patience=6,
        epoch_rows=epoch_rows, weighted_error=True, hide_novelty=True,
    )
    reasons.append(f"input: {vec.describe()}")
    if batch > AUTO_BATCH:
        reasons.append(
            f"batches of {batch} rows: with {vec.n_features:,} input places a training step costs about the same for "
            f"{AUTO_BATCH} rows as for {batch}, and an epoch keeps {rows_per_epoch // batch} steps"
        )
    reasons.append(
        "error: each place's squared error weighted by the inverse of its mean squared error on the training rows, so "
        "a miss where the model is always right is loud and one where normal traffic varies is mild; a rare or new "
        "token weighs as a place never wrong in training, since each such value was seen at most twice"
    )
    reasons.append(
        "novelty: the model sees where a token has no place of its own but not whether it is new or seen rarely, and "
        "predicts which from the rest of the row, so a new value where this context's values recur is loud and one "
        "where values are always new (ids) is mild"
    )
    if epoch_rows:
        reasons.append(
            f"epochs of {epoch_rows:,} rows sampled afresh from the {distinct_rows:,} distinct ones, so training time "
            "does not grow with the data"
        )
    if epochs < AUTO_MAX_EPOCHS:
        reasons.append(
            f"at most {epochs} epochs (early stopping may end sooner): {AUTO_MAX_ROWS_SEEN:,} rows through training "
            "are enough, and more only cost time"
        )
    return vec, mod, reasons


def preset(name: str, **overrides) -> tuple[VectorizerSettings, ModelSettings]:
    """A preset's settings with some keys replaced; an unknown preset or key raises ConfigError naming it.

    ``auto`` depends on the data: use :func:`settings_for` (or :func:`auto_settings`)."""
    if name == "auto":
        raise ConfigError("the auto preset is read off the training data: call settings_for(name, sequences)")
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    vec, mod = PRESETS[name]
    return _replace(vec, mod, overrides)


def settings_for(
    name: str, sequences: Sequence[str], **overrides
) -> tuple[VectorizerSettings, ModelSettings, list[str]]:
    """Settings of preset ``name`` for these training sequences, with some keys replaced, and the reasons of an
    ``auto`` choice (empty for the named presets)."""
    if name == "auto":
        vec, mod, reasons = auto_settings(sequences)
        vec, mod = _replace(vec, mod, overrides)
        if overrides:
            reasons.append(f"set by hand: {', '.join(f'{k}={v!r}' for k, v in sorted(overrides.items()))}")
        return vec, mod, reasons
    vec, mod = preset(name, **overrides)
    return vec, mod, []


def _replace(vec: VectorizerSettings, mod: ModelSettings, overrides: dict) -> tuple[VectorizerSettings, ModelSettings]:
    vec_keys = {f.name for f in dataclasses.fields(VectorizerSettings)}
    mod_keys = {f.name for f in dataclasses.fields(ModelSettings)}
    unknown = sorted(k for k in overrides if k not in vec_keys | mod_keys)
    if unknown:
        raise ConfigError(f"unknown training setting {unknown[0]!r}")
    vec = dataclasses.replace(vec, **{k: v for k, v in overrides.items() if k in vec_keys})
    mod = dataclasses.replace(mod, **{k: v for k, v in overrides.items() if k in mod_keys})
    return vec, mod


def split_rows(n: int, validation_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic (train, held-out) row indices; the held-out rows give the reference errors."""
    order = np.random.default_rng(seed).permutation(n)
    held = max(1, int(round(n * validation_split)))
    return np.sort(order[held:]), np.sort(order[:held])


def train_bundle(
    sequences: Sequence[str],
    out: str | Path,
    vectorizer_settings: VectorizerSettings,
    model_settings: ModelSettings,
    threshold_percentile: float = 99.0,
    verbose: int = 1,
    log: Callable[[str], None] = print,
    preset_name: str | None = None,
    choices: Sequence[str] = (),
) -> Bundle:
    """Train on normal sequences and write a bundle to ``out``; returns the loaded bundle. ``choices`` (why each
    setting was chosen, from :func:`auto_settings`) are kept in the bundle's metadata."""
    from monitor.model import export_layers, tensorflow_version, train_autoencoder  # noqa: PLC0415

    if not 0 < threshold_percentile <= 100:
        raise ConfigError(f"threshold_percentile must be in (0, 100], got {threshold_percentile}")
    if len(sequences) < MIN_TRAINING_ROWS:
        raise InputError(f"training needs at least {MIN_TRAINING_ROWS} sequences, got {len(sequences)}")
    started = time.perf_counter()
    train_idx, held_idx = split_rows(len(sequences), model_settings.validation_split, model_settings.seed)
    train_rows = [sequences[i] for i in train_idx]
    held_rows = [sequences[i] for i in held_idx]
    # The vocabulary comes from the training rows only, so held-out rows meet unknown tokens as live traffic does.
    vectorizer = Vectorizer.fit(train_rows, vectorizer_settings)
    fit_rows = sorted(set(train_rows)) if model_settings.distinct_rows else train_rows
    # Leave one out: a token seen once in training is, to the row holding it, as new as an unknown one live.
    train_enc = vectorizer.encode(fit_rows, training=True)
    held_enc = vectorizer.encode(sorted(set(held_rows)) if model_settings.distinct_rows else held_rows)
    log(
        f"training on {len(train_rows):,} sequences ({len(fit_rows):,} distinct), "
        f"{len(held_rows):,} held out for reference errors; "
        f"{len(vectorizer.vocabulary):,} tokens kept, {vectorizer.n_features:,} input places"
    )
    hidden_inputs = vectorizer_settings.novelty_columns() if model_settings.hide_novelty else None
    model, history = train_autoencoder(train_enc, held_enc, model_settings, verbose=verbose, hidden_inputs=hidden_inputs)
    layers = export_layers(model)
    from monitor.score import ReconstructionScorer, place_weights  # noqa: PLC0415

    weights = None
    if model_settings.weighted_error:
        # Residuals over the training rows as they occurred: a frequent row weighs as often as it was seen.
        occurrences = Counter(train_rows)
        counts = np.array([occurrences[r] for r in fit_rows], dtype=np.float64) if model_settings.distinct_rows else None
        weights = place_weights(ReconstructionScorer(layers), train_enc, counts,
                                novelty=vectorizer_settings.novelty_columns() if vectorizer_settings.rare else None)
    # Reference errors are over every held-out occurrence: percentile ranks describe traffic as it arrives.
    reference = ReconstructionScorer(layers, place_weights=weights).errors(vectorizer.encode(held_rows))
    metadata = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seqmon_version": __version__,
        "tensorflow_version": tensorflow_version(),
        "python_version": platform.python_version(),
        "preset": preset_name,
        "choices": list(choices),
        "training_rows": len(train_rows),
        "distinct_training_rows": len(fit_rows),
        "reference_rows": len(held_rows),
        "model": model_settings.to_dict(),
        "epochs_run": len(history.get("loss", [])),
        "final_loss": history["loss"][-1] if history.get("loss") else None,
        "best_val_loss": min(history["val_loss"]) if history.get("val_loss") else None,
        "training_seconds": round(time.perf_counter() - started, 1),
    }
    save_bundle(
        out,
        vectorizer=vectorizer,
        layers=layers,
        reference_errors=reference,
        threshold_percentile=threshold_percentile,
        keras_model=model,
        metadata=metadata,
        place_weights=weights,
    )
    bundle = load_bundle(out)
    log(
        f"bundle written to {out}: threshold {bundle.threshold:.6g} (p{threshold_percentile:g} of "
        f"{len(reference):,} reference errors), {metadata['epochs_run']} epochs in {metadata['training_seconds']} s"
    )
    return bundle
