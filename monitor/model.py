"""The autoencoder: building and training it with Keras. The only module that imports TensorFlow.

Scoring does not need this module: ``export_layers`` hands the trained weights to ``monitor.score``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

import numpy as np

from monitor.errors import ConfigError
from monitor.score import ACTIVATIONS, DenseLayer
from monitor.vectorize import Encoded


@dataclass(frozen=True)
class ModelSettings:
    """Shape and training of the dense autoencoder.

    The encoder is ``hidden`` then ``bottleneck``; the decoder mirrors ``hidden`` and ends in a layer as wide as the
    input. A linear output trained on mean squared error reconstructs multi-hot rows without the original's collapse
    (its relu output with an L1 activity penalty learned little more than token frequencies) and lets the scorer use
    the fast expanded error formula.

    ``distinct_rows`` trains on each distinct sequence once per epoch instead of on every occurrence: epochs get as
    many times shorter as the traffic repeats itself, and rare normal formats weigh as much as frequent ones, which
    lowers the tail of normal errors that sets the threshold (measured in README).
    """

    hidden: tuple[int, ...] = (64,)
    bottleneck: int = 16
    activation: str = "relu"
    output_activation: str = "linear"
    l1_activity: float = 0.0
    learning_rate: float = 1e-3
    batch_size: int = 256
    epochs: int = 40
    patience: int = 4
    validation_split: float = 0.1
    seed: int = 0
    distinct_rows: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        if any((not isinstance(u, int)) or u < 1 for u in self.hidden) or self.bottleneck < 1:
            raise ConfigError("hidden and bottleneck must be positive layer widths")
        for key in ("activation", "output_activation"):
            if getattr(self, key) not in ACTIVATIONS:
                raise ConfigError(f"{key} must be one of {', '.join(ACTIVATIONS)}, got {getattr(self, key)!r}")
        if self.learning_rate <= 0 or self.batch_size < 1 or self.epochs < 1 or self.patience < 0:
            raise ConfigError("learning_rate, batch_size and epochs must be positive and patience not negative")
        if not 0.0 < self.validation_split < 0.5:
            raise ConfigError(f"validation_split must be between 0 and 0.5, got {self.validation_split}")
        if self.l1_activity < 0:
            raise ConfigError("l1_activity must not be negative")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d



def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: PLC0415  (heavy import kept where it is used)

    return keras


def build_autoencoder(n_features: int, settings: ModelSettings):
    """A Keras Sequential dense autoencoder for rows of ``n_features`` places."""
    keras = _keras()
    layers = [keras.Input(shape=(n_features,))]
    for units in settings.hidden:
        layers.append(keras.layers.Dense(units, activation=settings.activation))
    regularizer = keras.regularizers.L1(settings.l1_activity) if settings.l1_activity else None
    layers.append(keras.layers.Dense(settings.bottleneck, activation=settings.activation, activity_regularizer=regularizer))
    for units in reversed(settings.hidden):
        layers.append(keras.layers.Dense(units, activation=settings.activation))
    layers.append(keras.layers.Dense(n_features, activation=settings.output_activation))
    model = keras.Sequential(layers, name="seqmon_autoencoder")
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss="mse")
    return model


def _batches(encoded: Encoded, batch_size: int, seed: int, shuffle: bool, weights: np.ndarray | None = None):
    """A Keras PyDataset that densifies one batch at a time, so training memory does not grow with the data."""
    keras = _keras()

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = np.arange(encoded.n_rows)
            self.on_epoch_end()

        def __len__(self):
            return math.ceil(encoded.n_rows / batch_size)

        def __getitem__(self, i):
            rows = self.order[i * batch_size : (i + 1) * batch_size]
            x = encoded.to_dense(rows)
            return (x, x) if weights is None else (x, x, weights[rows])

        def on_epoch_end(self):
            if shuffle:
                self.rng.shuffle(self.order)

    return Batches()


def train_autoencoder(
    train: Encoded,
    validation: Encoded,
    settings: ModelSettings,
    verbose: int = 1,
    train_weights: np.ndarray | None = None,
    validation_weights: np.ndarray | None = None,
):
    """Train on normal rows; early stopping on the validation loss restores the best weights.

    Deterministic for a given ``settings.seed`` (Keras seeds and TensorFlow's deterministic ops).
    Rows may carry weights (how often a distinct row occurred), so repeated rows are trained once per epoch.
    Returns ``(model, history_dict)``.
    """
    keras = _keras()
    import tensorflow as tf  # noqa: PLC0415

    keras.utils.set_random_seed(settings.seed)
    tf.config.experimental.enable_op_determinism()
    model = build_autoencoder(train.n_features, settings)
    callbacks = []
    if settings.patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience, restore_best_weights=True))
    history = model.fit(
        _batches(train, settings.batch_size, settings.seed, shuffle=True, weights=train_weights),
        validation_data=_batches(validation, 4096, settings.seed, shuffle=False, weights=validation_weights),
        epochs=settings.epochs,
        callbacks=callbacks,
        verbose=verbose,
    )
    return model, {k: [float(v) for v in vals] for k, vals in history.history.items()}


def export_layers(model) -> list[DenseLayer]:
    """The trained Dense layers as numpy arrays, for the TensorFlow-free scorer."""
    out = []
    for layer in model.layers:
        kernel, bias = (np.asarray(w) for w in layer.get_weights())
        out.append(DenseLayer(kernel=kernel, bias=bias, activation=layer.get_config()["activation"]))
    return out


def tensorflow_version() -> str:
    import tensorflow as tf  # noqa: PLC0415

    return tf.__version__
