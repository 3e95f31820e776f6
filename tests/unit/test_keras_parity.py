"""The numpy scorer is pinned to Keras' ``model.predict`` on the same weights."""

import numpy as np
import pytest

from monitor.model import ModelSettings, build_autoencoder, export_layers
from monitor.score import ReconstructionScorer
from monitor.vectorize import Vectorizer, VectorizerSettings

SEQUENCES = ["DF 36 FR GX567", "DK 40 DE AB123", "DF 36", "ZZ 99 QQ 11 extra", "df df df df", "x"] * 20


@pytest.mark.parametrize(
    "vec, mod",
    [
        (VectorizerSettings(encoding="positional"), ModelSettings(hidden=(32,), bottleneck=8)),
        (VectorizerSettings(encoding="counts", max_length=None), ModelSettings()),
        (VectorizerSettings(oov=False), ModelSettings(hidden=(), bottleneck=32, output_activation="relu")),
        (VectorizerSettings(), ModelSettings(hidden=(16,), bottleneck=4, activation="tanh", output_activation="sigmoid")),
    ],
)
def test_numpy_scorer_matches_model_predict(vec, mod):
    import keras

    keras.utils.set_random_seed(1)
    vectorizer = Vectorizer.fit(SEQUENCES[:3], vec)
    model = build_autoencoder(vectorizer.n_features, mod)
    # Random, non-trivial weights: a freshly built model's biases are all zero.
    rng = np.random.default_rng(2)
    model.set_weights([w + rng.normal(scale=0.1, size=w.shape) for w in model.get_weights()])
    encoded = vectorizer.encode(SEQUENCES)
    dense = encoded.to_dense()
    keras_errors = ((dense - model.predict(dense, verbose=0)) ** 2).mean(axis=1)
    ours = ReconstructionScorer(export_layers(model)).errors(encoded)
    np.testing.assert_allclose(ours, keras_errors, atol=1e-5, rtol=1e-4)
    assert np.ptp(ours) > 0


def test_every_training_path_trains_the_same_model():
    """The sparse path (first layer a gather, loss from the stored places) and the gram path (error from the output
    layer's Gram matrix, no row reconstructed) train the dense path's model up to float rounding."""
    from monitor.model import sparse_mse, train_autoencoder

    vectorizer = Vectorizer.fit(SEQUENCES, VectorizerSettings(encoding="positional", bag="counts", shapes=True,
                                                              length_signal=True, lower=False))
    encoded = vectorizer.encode(SEQUENCES)
    settings = ModelSettings(hidden=(16,), bottleneck=4, epochs=3, patience=0, batch_size=32)
    counts = (np.arange(encoded.n_rows) % 3 + 1).astype(np.float32)  # rows stand for 1-3 occurrences each
    models = [train_autoencoder(encoded, encoded, settings, verbose=0, path=p, train_weights=counts,
                                validation_weights=counts)[0] for p in ("sparse", "dense", "gram")]
    for other in models[1:]:
        for a, b in zip(models[0].get_weights(), other.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
    assert any(np.abs(w).max() > 0 for w in models[0].get_weights()[1::2])  # trained: biases moved from 0
    # The loss itself: the expanded formula on sparse targets equals the plain mean squared error.
    import tensorflow as tf

    dense = encoded.to_dense()
    y = models[0].predict(dense, verbose=0)
    rows = np.arange(encoded.n_rows)
    lengths = np.diff(encoded.indptr)
    indices = np.stack([np.repeat(rows, lengths), encoded.indices.astype(np.int64)], axis=1)
    x = tf.SparseTensor(indices, encoded.data, dense.shape)
    np.testing.assert_allclose(sparse_mse(encoded.n_features)(x, tf.constant(y)).numpy(),
                               ((dense - y) ** 2).mean(axis=1), rtol=1e-4, atol=1e-7)


def test_every_training_path_keeps_the_novelty_places_hidden_and_trains_the_same_model():
    """With hidden inputs (``hide_novelty``) the first layer's rows of the <oov> and <rare> places stay zero on every
    path, so the model predicts those places from the rest of the row; the three paths still agree."""
    from monitor.model import train_autoencoder

    train = SEQUENCES + ["DF 37 FR GX568", "DF 37 FR GX569", "DF 38 FR GX567"] * 2
    settings_v = VectorizerSettings(encoding="positional", bag="counts", shapes=True, length_signal=True, lower=False,
                                    min_count=3, rare=True)
    vectorizer = Vectorizer.fit(train, settings_v)
    encoded = vectorizer.encode(train, training=True)
    hidden = settings_v.novelty_columns()
    assert len(hidden) == 2 * 4 + 2  # <oov> and <rare> at each of 4 positions and in the bag
    lit = np.isin(encoded.indices, hidden)
    assert lit.any()  # the training rows do light them
    settings = ModelSettings(hidden=(16,), bottleneck=4, epochs=3, patience=0, batch_size=32, hide_novelty=True)
    models = [train_autoencoder(encoded, encoded, settings, verbose=0, path=p, hidden_inputs=hidden)[0]
              for p in ("sparse", "dense", "gram")]
    for model in models:
        kernel = model.get_weights()[0]
        assert np.all(kernel[hidden] == 0) and np.abs(np.delete(kernel, hidden, axis=0)).max() > 0
    for other in models[1:]:
        for a, b in zip(models[0].get_weights(), other.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
    # The places are still predicted: the output layer reconstructs them from context.
    out_kernel = models[0].get_weights()[-2]
    assert np.abs(out_kernel[:, hidden]).max() > 0
