"""Training: from normal sequences to a saved bundle. Orchestrates vectorize → model → score → bundle."""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from monitor import __version__
from monitor.bundle import Bundle, load_bundle, save_bundle
from monitor.errors import ConfigError, InputError
from monitor.model import ModelSettings
from monitor.vectorize import Vectorizer, VectorizerSettings

MIN_TRAINING_ROWS = 20

#: Named starting points. ``seed`` is the original method made robust; ``logkeys`` suits long log-key sessions
#: (HDFS); ``original`` reproduces the original design, weaknesses included, for comparison.
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


def preset(name: str, **overrides) -> tuple[VectorizerSettings, ModelSettings]:
    """A preset's settings with some keys replaced; an unknown preset or key raises ConfigError naming it."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    vec, mod = PRESETS[name]
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
) -> Bundle:
    """Train on normal sequences and write a bundle to ``out``; returns the loaded bundle."""
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
    train_enc = vectorizer.encode(fit_rows)
    held_enc = vectorizer.encode(sorted(set(held_rows)) if model_settings.distinct_rows else held_rows)
    log(
        f"training on {len(train_rows):,} sequences ({len(fit_rows):,} distinct), "
        f"{len(held_rows):,} held out for reference errors; "
        f"{len(vectorizer.vocabulary):,} tokens kept, {vectorizer.n_features:,} input places"
    )
    model, history = train_autoencoder(train_enc, held_enc, model_settings, verbose=verbose)
    layers = export_layers(model)
    from monitor.score import ReconstructionScorer  # noqa: PLC0415

    # Reference errors are over every held-out occurrence: percentile ranks describe traffic as it arrives.
    reference = ReconstructionScorer(layers).errors(vectorizer.encode(held_rows))
    metadata = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seqmon_version": __version__,
        "tensorflow_version": tensorflow_version(),
        "python_version": platform.python_version(),
        "preset": preset_name,
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
    )
    bundle = load_bundle(out)
    log(
        f"bundle written to {out}: threshold {bundle.threshold:.6g} (p{threshold_percentile:g} of "
        f"{len(reference):,} reference errors), {metadata['epochs_run']} epochs in {metadata['training_seconds']} s"
    )
    return bundle
