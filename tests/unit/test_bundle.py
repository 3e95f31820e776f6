import hashlib
import json

import numpy as np
import pytest

from monitor.bundle import load_bundle, save_bundle
from monitor.errors import BundleError
from monitor.score import DenseLayer
from monitor.vectorize import Vectorizer, VectorizerSettings


@pytest.fixture
def bundle_dir(tmp_path):
    rng = np.random.default_rng(0)
    vectorizer = Vectorizer(VectorizerSettings(vocab_size=8), ["df", "36", "fr", "gx567"])
    layers = [
        DenseLayer(rng.normal(size=(8, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32), "relu"),
        DenseLayer(rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32), "linear"),
    ]
    reference = np.arange(1, 101, dtype=float)[::-1] / 100  # unsorted on purpose: saving sorts
    return save_bundle(tmp_path / "b", vectorizer=vectorizer, layers=layers, reference_errors=reference,
                       threshold_percentile=99.0, metadata={"training_rows": 7})


def test_round_trip_keeps_scores_threshold_and_metadata(bundle_dir):
    b = load_bundle(bundle_dir)
    assert b.vectorizer.vocabulary == ["df", "36", "fr", "gx567"]
    assert b.threshold == pytest.approx(np.percentile(np.arange(1, 101) / 100, 99))
    assert b.reference_errors[0] == 0.01 and b.reference_errors[-1] == 1.0
    assert b.metadata["training_rows"] == 7 and len(b.content_hash) == 16
    errors = b.errors(["df 36 fr gx567", "zz", ""])
    assert np.isfinite(errors[:2]).all() and np.isnan(errors[2])
    assert b.percentile_rank(np.array([0.5]))[0] == 50.0
    assert b.is_anomaly(np.array([0.5, 2.0, np.nan])).tolist() == [False, True, False]
    items = b.explain("df zz fr gx567", top=20)
    assert sum(i["contribution"] for i in items) == pytest.approx(b.errors(["df zz fr gx567"])[0], rel=1e-9)
    assert any(i["token"] == "zz" for i in items)  # the OOV place is shown as the raw unknown token


def test_missing_bundle(tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")


def test_damaged_file_is_named(bundle_dir):
    path = bundle_dir / "reference_errors.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="reference_errors.npy does not match"):
        load_bundle(bundle_dir)


def test_unfinished_bundle_without_manifest(bundle_dir):
    (bundle_dir / "bundle.json").unlink()
    with pytest.raises(BundleError, match="no bundle.json"):
        load_bundle(bundle_dir)


def test_other_format_version_and_bad_json(bundle_dir):
    manifest = bundle_dir / "bundle.json"
    doc = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**doc, "format_version": 99}))
    with pytest.raises(BundleError, match="format version 99"):
        load_bundle(bundle_dir)
    manifest.write_text("{not json")
    with pytest.raises(BundleError, match="damaged bundle.json"):
        load_bundle(bundle_dir)


def test_a_version_1_bundle_loads_and_scores_the_same(bundle_dir):
    """Version 1 kept vocabulary.json as a plain list and knew no token shapes."""
    before = load_bundle(bundle_dir)
    sequences = ["DF 36 FR GX567", "ZZ 99 QQ", "DF"]
    vocabulary = bundle_dir / "vocabulary.json"
    assert json.loads(vocabulary.read_text())["shapes"] == []
    vocabulary.write_text(json.dumps(json.loads(vocabulary.read_text())["tokens"]))
    manifest = bundle_dir / "bundle.json"
    doc = json.loads(manifest.read_text())
    doc["format_version"] = 1
    doc["files"]["vocabulary.json"] = hashlib.sha256(vocabulary.read_bytes()).hexdigest()
    manifest.write_text(json.dumps(doc))
    after = load_bundle(bundle_dir)
    assert after.vectorizer.vocabulary == before.vectorizer.vocabulary
    np.testing.assert_array_equal(after.errors(sequences), before.errors(sequences))


def test_settings_that_do_not_fit_the_weights(bundle_dir):
    manifest = bundle_dir / "bundle.json"
    doc = json.loads(manifest.read_text())
    doc["vectorizer"]["encoding"] = "positional"
    manifest.write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="inconsistent"):
        load_bundle(bundle_dir)


def test_place_weights_round_trip_and_change_the_error(bundle_dir, tmp_path):
    plain = load_bundle(bundle_dir)
    assert plain.scorer.place_weights is None and plain.describe()["error"] == "mean squared error"
    weights = np.linspace(1.0, 50.0, 8)
    weighted_dir = save_bundle(
        tmp_path / "weighted", vectorizer=plain.vectorizer, layers=plain.scorer.layers,
        reference_errors=plain.reference_errors, threshold_percentile=99.0, place_weights=weights,
    )
    assert json.loads((weighted_dir / "bundle.json").read_text())["format_version"] == 3
    weighted = load_bundle(weighted_dir)
    np.testing.assert_allclose(weighted.scorer.place_weights, weights)
    assert weighted.describe()["error"] == "mean squared error weighted by place"
    sequences = ["df 36 fr gx567", "zz 36"]
    squared = [weighted.scorer.contributions(weighted.vectorizer.encode([s])) for s in sequences]
    np.testing.assert_allclose(weighted.errors(sequences), [c.sum() / 8 for c in squared], rtol=1e-5)
    assert not np.allclose(weighted.errors(sequences), plain.errors(sequences))


def test_a_weighted_bundle_without_its_weights_is_refused(bundle_dir):
    manifest = bundle_dir / "bundle.json"
    doc = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**doc, "error": "weighted_mse"}))
    with pytest.raises(BundleError, match="inconsistent"):
        load_bundle(bundle_dir)
    manifest.write_text(json.dumps({**doc, "error": "median"}))
    with pytest.raises(BundleError, match="unknown error 'median'"):
        load_bundle(bundle_dir)
