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

    ``epoch_rows`` (0: all) caps the rows of an epoch at a fresh random sample of that many, so training time stops
    growing with the data once it exceeds the cap (early stopping still watches the whole validation set).

    ``hide_novelty`` keeps the first layer blind to the places that say "a token without a place of its own is
    here" (``<oov>``, ``<rare>``: ``VectorizerSettings.novelty_columns``): their kernel rows stay zero, so the model
    predicts them from the rest of the row instead of copying them through. An autoencoder copies any input common
    enough to earn room in its bottleneck, so a copied ``<oov>`` place reconstructs well and a never-seen token costs
    almost nothing. With the positional encoding the model still sees *that* a position holds such a token (no token
    place of that position is lit), but not whether it is new or was seen rarely: it predicts which from context, so a
    new value where this context's values recur is loud, and one where they are always new (ids) is mild.

    ``weighted_error`` scores with place weights (``monitor.score.place_weights``, read off the training rows after
    the fit) instead of the plain mean squared error: an error where the model is always right counts more than one
    where normal traffic is noisy. Off in the named presets, which keep the published method; on in ``auto``.
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
    epoch_rows: int = 0
    weighted_error: bool = False
    hide_novelty: bool = False

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
        if not isinstance(self.epoch_rows, int) or self.epoch_rows < 0:
            raise ConfigError(f"epoch_rows must be 0 (all) or a positive number of rows, got {self.epoch_rows!r}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d



def _keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: PLC0415  (heavy import kept where it is used)

    return keras


def _blind_rows(n_features: int, columns: np.ndarray | None):
    """A kernel constraint that holds the first layer's rows of ``columns`` at zero (None: no constraint)."""
    if columns is None or len(columns) == 0:
        return None
    keras = _keras()
    mask = np.ones((n_features, 1), dtype=np.float32)
    mask[columns] = 0.0

    class BlindRows(keras.constraints.Constraint):
        def __call__(self, kernel):
            return kernel * mask

    return BlindRows()


def _blind(layer, constraint) -> None:
    """Apply ``constraint`` to a built layer's kernel now (Keras applies it after every step, not before the first)."""
    if constraint is not None:
        layer.kernel.assign(constraint(layer.kernel))


def build_autoencoder(n_features: int, settings: ModelSettings, sparse: bool = False,
                      hidden_inputs: np.ndarray | None = None):
    """A Keras Sequential dense autoencoder for rows of ``n_features`` places.

    With ``sparse`` the model takes ``tf.SparseTensor`` rows (its first layer is then a sum of the weight rows of each
    row's few stored places) and is compiled with :func:`sparse_mse`, whose targets are the same sparse rows: no dense
    input or target matrix is ever built. Training uses that form; the bundle keeps the plain one (same weights).
    ``hidden_inputs``: columns the first layer is kept blind to while training (``ModelSettings.hide_novelty``)."""
    keras = _keras()
    layers = [keras.Input(shape=(n_features,), sparse=sparse)]
    constraint = _blind_rows(n_features, hidden_inputs)
    widths = [*settings.hidden, settings.bottleneck]
    regularizer = keras.regularizers.L1(settings.l1_activity) if settings.l1_activity else None
    for k, units in enumerate(widths):
        layers.append(keras.layers.Dense(
            units, activation=settings.activation, kernel_constraint=constraint if k == 0 else None,
            activity_regularizer=regularizer if k == len(widths) - 1 else None,
        ))
    for units in reversed(settings.hidden):
        layers.append(keras.layers.Dense(units, activation=settings.activation))
    layers.append(keras.layers.Dense(n_features, activation=settings.output_activation))
    model = keras.Sequential(layers, name="seqmon_autoencoder")
    _blind(model.layers[0], constraint)
    loss = sparse_mse(n_features) if sparse else "mse"
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss=loss)
    return model


def sparse_mse(n_features: int):
    """Per-row mean squared error between sparse target rows ``x`` and dense reconstructions ``y``, expanded as
    ``(|y|² − 2 x·y + |x|²) / D`` so that ``x·y`` is a gather at ``x``'s stored places (the scorer's formula)."""
    import tensorflow as tf  # noqa: PLC0415

    def loss(x, y):
        rows = tf.shape(y)[0]
        at = tf.gather_nd(y, x.indices)
        row_of = x.indices[:, 0]
        xy = tf.math.unsorted_segment_sum(at * x.values, row_of, rows)
        xx = tf.math.unsorted_segment_sum(tf.square(x.values), row_of, rows)
        return (tf.reduce_sum(tf.square(y), axis=1) - 2.0 * xy + xx) / float(n_features)

    return loss


def _gram_autoencoder(n_features: int, settings: ModelSettings, hidden_inputs: np.ndarray | None = None):
    """The autoencoder for wide inputs, trained without ever reconstructing a row in full.

    It takes sparse rows ``x`` and returns each row's mean squared error, not its reconstruction: with a linear
    output ``y = hW + b`` (``W`` is k×D, ``h`` the last hidden layer),
    ``|y|² = h G hᵀ + 2 h·(Wb) + |b|²`` with ``G = W Wᵀ`` (k×k), and ``x·y`` is a gather of ``W``'s columns at
    ``x``'s stored places, so a batch costs ``O(k²D + B·k² + nnz·k)`` instead of ``O(B·k·D)`` forward and backward
    and no B×D tensor is ever built; the loss (and so the trained model) is the same up to float rounding. Compiled
    with a loss that passes each row's error through, so Keras' sample weights, early stopping and history work as on
    the other paths. ``layer_weights()`` gives the weights in the published model's order.
    """
    keras = _keras()
    import tensorflow as tf  # noqa: PLC0415

    class GramAutoencoder(keras.Model):
        def __init__(self):
            super().__init__(name="seqmon_autoencoder_gram")
            widths = [*settings.hidden, settings.bottleneck, *reversed(settings.hidden)]
            constraint = _blind_rows(n_features, hidden_inputs)
            self.body = [keras.layers.Dense(u, activation=settings.activation,
                                            kernel_constraint=constraint if k == 0 else None)
                         for k, u in enumerate(widths)]
            self.out = keras.layers.Dense(n_features)
            width = n_features
            for layer in self.body:
                layer.build((None, width))
                width = layer.units
            self.out.build((None, width))
            _blind(self.body[0], constraint)

        def call(self, x):
            h = x
            for layer in self.body:
                h = layer(h)
            kernel, bias = self.out.kernel, self.out.bias
            gram = tf.matmul(kernel, kernel, transpose_b=True)
            yy = (tf.reduce_sum(tf.matmul(h, gram) * h, axis=1) + 2.0 * tf.linalg.matvec(h, tf.linalg.matvec(kernel, bias))
                  + tf.reduce_sum(tf.square(bias)))
            # x·y = h·(x Wᵀ) + x·b: sparse products, so only the stored places' columns of W are read.
            xw = tf.sparse.sparse_dense_matmul(x, kernel, adjoint_b=True)
            xb = tf.sparse.sparse_dense_matmul(x, bias[:, None])[:, 0]
            xy = tf.reduce_sum(h * xw, axis=1) + xb
            xx = tf.math.unsorted_segment_sum(tf.square(x.values), x.indices[:, 0], tf.shape(h)[0])
            return (yy - 2.0 * xy + xx) / float(n_features)

        def layer_weights(self):
            return [np.asarray(w) for layer in [*self.body, self.out] for w in (layer.kernel, layer.bias)]

    model = GramAutoencoder()
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss=lambda _, error: error)
    return model


def _sparse_rows(encoded: Encoded, rows: np.ndarray):
    """Some rows of a CSR batch as a ``tf.SparseTensor`` (indices in row-major order, as TensorFlow wants them)."""
    import tensorflow as tf  # noqa: PLC0415

    from monitor.vectorize import _ranges  # noqa: PLC0415

    lengths = encoded.indptr[rows + 1] - encoded.indptr[rows]
    take = _ranges(encoded.indptr[rows], lengths)
    out_rows = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    indices = np.stack([out_rows, encoded.indices[take].astype(np.int64)], axis=1)
    return tf.SparseTensor(indices, encoded.data[take].astype(np.float32), (len(rows), encoded.n_features))


def _batches(encoded: Encoded, batch_size: int, seed: int, shuffle: bool, weights: np.ndarray | None = None,
             max_rows: int | None = None, sparse: bool = True, errors_out: bool = False):
    """A Keras PyDataset that makes one batch at a time (input and target are the same rows, sparse or dense; with
    ``errors_out``, for a model that returns each row's error, the target is unused zeros), so training memory does
    not grow with the data. With ``max_rows``, an epoch visits a fresh random sample of that many
    rows: epochs stay short however much data there is, and over epochs every row is seen."""
    keras = _keras()

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = np.arange(encoded.n_rows)
            self.on_epoch_end()

        def __len__(self):
            n = encoded.n_rows if max_rows is None else min(encoded.n_rows, max_rows)
            return math.ceil(n / batch_size)

        def __getitem__(self, i):
            rows = np.sort(self.order[i * batch_size : (i + 1) * batch_size])
            x = _sparse_rows(encoded, rows) if sparse else encoded.to_dense(rows)
            y = np.zeros(len(rows), np.float32) if errors_out else x
            return (x, y) if weights is None else (x, y, weights[rows])

        def on_epoch_end(self):
            if shuffle:
                self.rng.shuffle(self.order)

    return Batches()


#: How a model is trained (``tests/bench/bench_train.py`` measures them): ``dense`` batches with Keras' MSE;
#: ``sparse`` batches: the first layer a gather of weight rows, the loss computed from the stored places, so no dense
#: input or target matrix is built (the output layer is still computed in full); ``gram``: sparse batches and the
#: error from the output layer's Gram matrix (``_gram_autoencoder``), so no row is reconstructed in full either
#: (linear output only).
TRAINING_PATHS = ("dense", "sparse", "gram")
#: Input width from which ``gram`` (or ``sparse``, for a non-linear output) replaces ``dense``; below it, dense
#: batches are faster.
SPARSE_FROM_FEATURES = 20_000


def train_autoencoder(
    train: Encoded,
    validation: Encoded,
    settings: ModelSettings,
    verbose: int = 1,
    train_weights: np.ndarray | None = None,
    validation_weights: np.ndarray | None = None,
    path: str | None = None,
    hidden_inputs: np.ndarray | None = None,
):
    """Train on normal rows; early stopping on the validation loss restores the best weights.

    ``path`` is one of ``TRAINING_PATHS``; None chooses by width (``SPARSE_FROM_FEATURES``). Both give the same model
    up to float rounding (``tests/unit/test_keras_parity.py``).

    Deterministic for a given ``settings.seed`` (Keras seeds and TensorFlow's deterministic ops).
    Rows may carry weights (how often a distinct row occurred), so repeated rows are trained once per epoch.
    ``hidden_inputs``: columns whose first-layer rows stay zero (``ModelSettings.hide_novelty``); the published model
    has the same zero rows and no constraint.
    Returns ``(model, history_dict)``.
    """
    keras = _keras()
    import tensorflow as tf  # noqa: PLC0415

    keras.utils.set_random_seed(settings.seed)
    tf.config.experimental.enable_op_determinism()
    linear = settings.output_activation == "linear" and not settings.l1_activity
    if path is None:
        path = ("gram" if linear else "sparse") if train.n_features >= SPARSE_FROM_FEATURES else "dense"
    if path not in TRAINING_PATHS:
        raise ConfigError(f"training path must be one of {', '.join(TRAINING_PATHS)}, got {path!r}")
    if path == "gram" and not linear:
        raise ConfigError("the gram training path needs a linear output layer without an activity penalty")
    sparse = path != "dense"
    model = _gram_autoencoder(train.n_features, settings, hidden_inputs) if path == "gram" else build_autoencoder(
        train.n_features, settings, sparse=sparse, hidden_inputs=hidden_inputs)
    callbacks = []
    if settings.patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience, restore_best_weights=True))
    history = model.fit(
        _batches(train, settings.batch_size, settings.seed, shuffle=True, weights=train_weights,
                 max_rows=settings.epoch_rows or None, sparse=sparse, errors_out=path == "gram"),
        validation_data=_batches(validation, 4096, settings.seed, shuffle=False, weights=validation_weights,
                                 sparse=sparse, errors_out=path == "gram"),
        epochs=settings.epochs,
        callbacks=callbacks,
        verbose=verbose,
    )
    # The bundle keeps a plain dense-input model: loadable without custom objects, and what the parity tests pin.
    published = build_autoencoder(train.n_features, settings)
    published.set_weights(model.layer_weights() if path == "gram" else model.get_weights())
    return published, {k: [float(v) for v in vals] for k, vals in history.history.items()}


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
