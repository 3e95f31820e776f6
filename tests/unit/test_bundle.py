import hashlib
import json

import numpy as np
import pytest

from monitor.bundle import load_bundle, save_bundle
from monitor.errors import BundleError
from monitor.score import DenseLayer
from monitor.vectorize import Vectorizer, VectorizerSettings


def _signed(doc):
    """The manifest with its content hash made to match, as a careful forger (or a future seqmon) would write it."""
    from monitor.bundle import _manifest_sha256

    doc = {**doc, "content_sha256": _manifest_sha256(doc)}
    doc["metadata"] = {**doc["metadata"], "content_hash": doc["content_sha256"][:16]}
    return doc


def _layers(seed=0, width=8):
    rng = np.random.default_rng(seed)
    return [
        DenseLayer(rng.normal(size=(width, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32), "relu"),
        DenseLayer(rng.normal(size=(3, width)).astype(np.float32), rng.normal(size=width).astype(np.float32), "linear"),
    ]


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
    del doc["content_sha256"]  # version 1 predates the content hash
    doc["files"]["vocabulary.json"] = hashlib.sha256(vocabulary.read_bytes()).hexdigest()
    manifest.write_text(json.dumps(doc))
    after = load_bundle(bundle_dir)
    assert after.vectorizer.vocabulary == before.vectorizer.vocabulary
    np.testing.assert_array_equal(after.errors(sequences), before.errors(sequences))


def test_settings_that_do_not_fit_the_weights(bundle_dir):
    manifest = bundle_dir / "bundle.json"
    doc = json.loads(manifest.read_text())
    doc["vectorizer"]["encoding"] = "positional"
    manifest.write_text(json.dumps(_signed(doc)))
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
    assert json.loads((weighted_dir / "bundle.json").read_text())["format_version"] == 4
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
    manifest.write_text(json.dumps(_signed({**doc, "error": "weighted_mse"})))
    with pytest.raises(BundleError, match="inconsistent"):
        load_bundle(bundle_dir)
    manifest.write_text(json.dumps(_signed({**doc, "error": "median"})))
    with pytest.raises(BundleError, match="unknown error 'median'"):
        load_bundle(bundle_dir)


# --- bundles are checked data -------------------------------------------------------------------------------------


def _save(path, seed=0, threshold_percentile=99.0, **kwargs):
    vectorizer = Vectorizer(VectorizerSettings(vocab_size=8), ["df", "36", "fr", "gx567"])
    return save_bundle(path, vectorizer=vectorizer, layers=_layers(seed), reference_errors=np.linspace(0.01, 1, 100),
                       threshold_percentile=threshold_percentile, **kwargs)


def test_the_content_hash_covers_the_manifest_and_every_file(bundle_dir):
    doc = json.loads((bundle_dir / "bundle.json").read_text())
    assert set(doc["files"]) == {"vocabulary.json", "weights.npz", "reference_errors.npy"}
    assert len(doc["content_sha256"]) == 64 and doc["metadata"]["content_hash"] == doc["content_sha256"][:16]
    assert load_bundle(bundle_dir).content_hash == doc["content_sha256"][:16]
    other = _save(bundle_dir.parent / "other", seed=1)
    assert load_bundle(other).content_hash != load_bundle(bundle_dir).content_hash


@pytest.mark.parametrize("change", [
    lambda doc: doc.update(threshold=doc["threshold"] * 10),  # raise the threshold: fewer anomalies
    lambda doc: doc["metadata"].update(training_rows=1),
    lambda doc: doc["vectorizer"].update(lower=not doc["vectorizer"]["lower"]),
    lambda doc: doc.update(activations=["linear", "linear"]),
])
def test_a_tampered_manifest_is_refused(bundle_dir, change):
    manifest = bundle_dir / "bundle.json"
    doc = json.loads(manifest.read_text())
    change(doc)
    manifest.write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"is damaged or was changed after training \(bundle.json does not match its "
                                          r"content hash\): retrain it \(seqmon train\) or restore it"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize("name", ["vocabulary.json", "weights.npz", "reference_errors.npy"])
def test_a_truncated_file_is_refused_by_name(bundle_dir, name):
    path = bundle_dir / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BundleError, match=f"damaged or was changed after training \\({name} does not match its checksum"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize("name", ["vocabulary.json", "weights.npz", "reference_errors.npy"])
def test_a_missing_file_is_refused_by_name(bundle_dir, name):
    (bundle_dir / name).unlink()
    with pytest.raises(BundleError, match=f"\\({name} is missing\\)"):
        load_bundle(bundle_dir)


def test_a_file_swapped_for_another_bundles_is_refused(bundle_dir):
    other = _save(bundle_dir.parent / "other", seed=1)
    (bundle_dir / "weights.npz").write_bytes((other / "weights.npz").read_bytes())
    with pytest.raises(BundleError, match="weights.npz does not match its checksum"):
        load_bundle(bundle_dir)


def test_a_manifest_naming_files_outside_the_bundle_is_refused(bundle_dir):
    manifest = bundle_dir / "bundle.json"
    doc = json.loads(manifest.read_text())
    doc["files"]["../../etc/passwd"] = "0" * 64
    manifest.write_text(json.dumps(_signed(doc)))
    with pytest.raises(BundleError, match="lists an unknown file '../../etc/passwd'"):
        load_bundle(bundle_dir)


def test_loading_never_unpickles(bundle_dir):
    """An object array needs pickle to load; a re-signed bundle carrying one is refused, not executed."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.array([0.1, None, 0.3], dtype=object), allow_pickle=True)
    (bundle_dir / "reference_errors.npy").write_bytes(buffer.getvalue())
    manifest = bundle_dir / "bundle.json"
    doc = json.loads(manifest.read_text())
    doc["files"]["reference_errors.npy"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    manifest.write_text(json.dumps(_signed(doc)))
    with pytest.raises(BundleError, match="inconsistent: .*allow_pickle"):
        load_bundle(bundle_dir)


def test_a_bundle_of_an_older_seqmon_loads_with_a_warning(bundle_dir, caplog):
    """Bundles written before the content hash keep their file checksums (still checked) and their old hash label."""
    manifest = bundle_dir / "bundle.json"
    doc = json.loads(manifest.read_text())
    del doc["content_sha256"]
    manifest.write_text(json.dumps(doc))
    # Version 3 came with the hash, so a version 3 without one is damaged (a bit flipped in the key's name, say).
    with pytest.raises(BundleError, match="has no content hash"):
        load_bundle(bundle_dir)
    doc["format_version"], doc["error"] = 2, "mse"  # as version 2 wrote it (no place weights in this bundle)
    doc["metadata"]["content_hash"] = "0123456789abcdef"
    manifest.write_text(json.dumps(doc))
    with caplog.at_level("WARNING", logger="seqmon"):
        b = load_bundle(bundle_dir)
    assert b.content_hash == "0123456789abcdef"
    assert "written by an older seqmon" in caplog.text and "retrain it" in caplog.text
    (bundle_dir / "vocabulary.json").write_text("[]")
    with pytest.raises(BundleError, match="vocabulary.json does not match its checksum"):
        load_bundle(bundle_dir)


def test_saving_replaces_a_bundle_whole_and_leaves_no_staging_directory(tmp_path):
    first = load_bundle(_save(tmp_path / "b", seed=0))
    (tmp_path / "b" / "model.keras").write_bytes(b"left over from an earlier training")
    second = load_bundle(_save(tmp_path / "b", seed=1))
    assert second.content_hash != first.content_hash
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["bundle.json", "reference_errors.npy",
                                                                 "vocabulary.json", "weights.npz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_saving_refuses_to_replace_a_directory_that_is_not_a_bundle(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="exists and is not a bundle directory"):
        _save(tmp_path / "b")
    assert (tmp_path / "b" / "notes.txt").read_text() == "mine"


def test_an_interrupted_save_keeps_the_old_bundle(tmp_path, monkeypatch):
    import monitor.bundle as bundle_module

    path = _save(tmp_path / "b", seed=0)
    before = load_bundle(path).content_hash

    def die(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle_module.np, "savez", die)
    with pytest.raises(OSError, match="No space left"):
        _save(path, seed=1)
    assert load_bundle(path).content_hash == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_the_two_rename_fallback_replaces_the_bundle(tmp_path, monkeypatch):
    import monitor.bundle as bundle_module

    path = _save(tmp_path / "b", seed=0)
    monkeypatch.setattr(bundle_module, "_exchange", lambda a, b: False)
    after = load_bundle(_save(path, seed=1))
    assert after.content_hash == load_bundle(_save(tmp_path / "c", seed=1)).content_hash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "c"]


def test_train_refuses_an_out_directory_with_other_files_before_training(tmp_path, capsys):
    from monitor.cli import main

    source = tmp_path / "train.txt"
    source.write_text("DF 36 FR GX567\n" * 50)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    assert main(["train", str(source), "--out", str(tmp_path / "b"), "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("seqmon: error: --out") and "holds files other than a bundle's" in err
    assert [p.name for p in (tmp_path / "b").iterdir()] == ["notes.txt"]


def test_any_damage_to_any_file_is_refused_with_a_bundle_error(tmp_path_factory):
    """Hypothesis flips, cuts or extends bytes of any file, bundle.json included: the load raises BundleError (one
    sentence), never another exception, and never loads changed content."""
    import shutil

    from hypothesis import given, settings
    from hypothesis import strategies as st

    pristine = _save(tmp_path_factory.mktemp("pristine") / "b", seed=3)
    names = sorted(p.name for p in pristine.iterdir())

    @settings(max_examples=120, deadline=None)
    @given(st.sampled_from(names), st.sampled_from(["flip", "cut", "append", "empty"]), st.integers(0, 1 << 30),
           st.integers(1, 255))
    def damage(name, how, where, xor):
        work = tmp_path_factory.mktemp("damaged") / "b"
        shutil.copytree(pristine, work)
        data = bytearray((work / name).read_bytes())
        at = where % len(data)
        if how == "flip":
            data[at] ^= xor
        elif how == "cut":
            del data[at:]
        elif how == "append":
            data += bytes([xor])
        else:
            data = bytearray()
        (work / name).write_bytes(bytes(data))
        try:
            loaded = load_bundle(work)
        except BundleError as e:
            assert "\n" not in str(e) and str(work) in str(e)
            return
        # Only a change that leaves the manifest's content as it was (white space) may load, as the same bundle.
        assert name == "bundle.json"
        assert json.loads(bytes(data)) == json.loads((pristine / name).read_bytes())
        assert loaded.content_hash == load_bundle(pristine).content_hash

    damage()


def test_rare_tokens_round_trip_and_a_bundle_without_them_is_refused(tmp_path):
    settings = VectorizerSettings(vocab_size=8, max_length=4, encoding="positional", min_count=3, rare=True)
    train = ["df 36 fr gx567"] * 3 + ["df 37 fr gx1"] * 2 + ["df 38 de gx2"]
    vectorizer = Vectorizer.fit(train, settings)
    width = settings.n_features
    path = save_bundle(tmp_path / "b", vectorizer=vectorizer, layers=_layers(width=width),
                       reference_errors=np.linspace(0.01, 1, 100), threshold_percentile=99.0)
    doc = json.loads((path / "bundle.json").read_text())
    assert doc["format_version"] == 4 and "rare_tokens.npz" in doc["files"]
    b = load_bundle(path)
    np.testing.assert_array_equal(b.vectorizer.rare.once, vectorizer.rare.once)
    np.testing.assert_array_equal(b.vectorizer.rare.twice_or_more, vectorizer.rare.twice_or_more)
    assert b.describe()["vocabulary"]["rare_tokens"] == {"seen_once": 3, "seen_twice_or_more": 2}  # 38 de gx2; 37 gx1
    lines = ["df 37 fr gx567", "df 38 de gx2", "df 99 qq gx567"]
    np.testing.assert_array_equal(b.vectorizer.encode(lines).indices, vectorizer.encode(lines).indices)
    # A rare place is shown as the raw token it stands for, in one row and in batch.
    assert any(i["token"] == "37" for i in b.explain("df 37 fr gx567", top=20))
    batch = b.explain_batch(lines, top=20)
    assert "37" in batch.tokens.to_pylist()[batch.indptr[0] : batch.indptr[1]]
    assert batch.unknown.to_pylist() == [[], [], ["99", "qq"]]  # never-seen tokens only
    del doc["files"]["rare_tokens.npz"]
    (path / "bundle.json").write_text(json.dumps(_signed(doc)))
    with pytest.raises(BundleError, match="rare_tokens.npz is not listed"):
        load_bundle(path)
