"""The model bundle: everything scoring needs, saved together and validated when loaded.

A bundle is a directory::

    bundle.json            format version, settings, threshold, metadata, sha256 of every other file
    vocabulary.json        {"tokens": kept tokens in index order (index 0 padding and, with OOV on, 1 OOV come first),
                           "shapes": kept token shapes in index order (0 padding, 1 unknown shape come first)}
    weights.npz            the dense layers as numpy arrays: what the TensorFlow-free scorer loads
    reference_errors.npy   errors of held-out normal rows, sorted ascending: the scale of percentile ranks
    model.keras            the Keras model, for retraining and for checking the numpy scorer against Keras

Loading never imports TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitor.errors import BundleError, ConfigError
from monitor.score import DenseLayer, ReconstructionScorer, group_score, percentile_rank
from monitor.vectorize import Vectorizer, VectorizerSettings

FORMAT_VERSION = 2
#: Version 1 stored vocabulary.json as a plain list of tokens and had no token shapes; it loads unchanged.
READABLE_FORMAT_VERSIONS = (1, 2)
FILES = ("vocabulary.json", "weights.npz", "reference_errors.npy", "model.keras")


@dataclass
class Bundle:
    """A loaded, validated bundle and the scoring API the CLI and the daemon call."""

    vectorizer: Vectorizer
    scorer: ReconstructionScorer
    reference_errors: np.ndarray  # sorted ascending
    threshold: float
    threshold_percentile: float
    metadata: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def content_hash(self) -> str:
        return self.metadata.get("content_hash", "")

    def errors(self, sequences: Sequence[str]) -> np.ndarray:
        """Reconstruction error per sequence (float64). A sequence with no tokens gets NaN.

        Each distinct sequence of the batch is vectorized and scored once: live traffic repeats itself (that is what
        weights count), and one hash pass costs far less than scoring the repeats.
        """
        distinct = pc.dictionary_encode(pa.array(sequences, pa.string()))
        encoded = self.vectorizer.encode(distinct.dictionary)
        errors = self.scorer.errors(encoded)
        errors[encoded.token_counts == 0] = np.nan
        return errors[distinct.indices.to_numpy(zero_copy_only=False)]

    def percentile_rank(self, errors: np.ndarray) -> np.ndarray:
        """0–100 rank of each error among the reference errors (weak: share of reference errors ≤ the error)."""
        return percentile_rank(self.reference_errors, errors)

    def is_anomaly(self, errors: np.ndarray) -> np.ndarray:
        """Errors strictly above the bundle threshold. NaN is never an anomaly (it is an invalid record)."""
        return np.asarray(errors) > self.threshold

    @staticmethod
    def group_score(errors: np.ndarray, weights: np.ndarray | None = None) -> float:
        return group_score(errors, weights)

    def explain(self, sequence: str, top: int = 3) -> list[dict]:
        """The input places that contributed most to a sequence's error, largest first.

        Each item: ``token`` (the raw token for an out-of-vocabulary place), ``position`` (positional encoding only),
        ``contribution`` (its squared error divided by the vector width, so contributions add up to the error) and
        ``kind``: ``unexpected`` (present but poorly reconstructed) or ``missing`` (absent but expected).
        """
        encoded = self.vectorizer.encode([sequence])
        if encoded.token_counts[0] == 0:
            return []
        contrib = self.scorer.contributions(encoded) / encoded.n_features
        present = set(encoded.indices[encoded.indptr[0] : encoded.indptr[1]].tolist())
        unknown = self._unknown_tokens(sequence)
        out = []
        for col in np.argsort(-contrib, kind="stable")[:top]:
            if contrib[col] <= 0:
                break
            token, position = self.vectorizer.token_of_column(int(col))
            if token == "<oov>" and unknown:
                token = " ".join(unknown)
            out.append({
                "token": token,
                "position": position,
                "contribution": float(contrib[col]),
                "kind": "unexpected" if int(col) in present else "missing",
            })
        return out

    def _unknown_tokens(self, sequence: str) -> list[str]:
        from monitor.vectorize import tokenize  # noqa: PLC0415

        tokens = tokenize([sequence], self.vectorizer.settings).values.to_pylist()
        known = set(self.vectorizer.vocabulary)
        return [t for t in tokens if t not in known]

    def describe(self) -> dict:
        """What ``seqmon inspect`` prints."""
        return {
            "path": str(self.path) if self.path else None,
            "format_version": FORMAT_VERSION,
            "threshold": self.threshold,
            "threshold_percentile": self.threshold_percentile,
            "reference_errors": {
                "count": int(len(self.reference_errors)),
                "min": float(self.reference_errors[0]),
                "median": float(np.median(self.reference_errors)),
                "max": float(self.reference_errors[-1]),
            },
            "vocabulary": {"tokens": len(self.vectorizer.vocabulary), "first": self.vectorizer.vocabulary[:10]},
            "layers": [f"{l.kernel.shape[0]}→{l.kernel.shape[1]} {l.activation}" for l in self.scorer.layers],
            **self.metadata,
        }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_bundle(
    path: str | Path,
    *,
    vectorizer: Vectorizer,
    layers: Sequence[DenseLayer],
    reference_errors: np.ndarray,
    threshold_percentile: float,
    keras_model=None,
    metadata: dict | None = None,
) -> Path:
    """Write a bundle directory. ``bundle.json`` is written last, so a half-written bundle never loads."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    manifest = path / "bundle.json"
    if manifest.exists():
        manifest.unlink()
    if not 0 < threshold_percentile <= 100:
        raise ConfigError(f"threshold_percentile must be in (0, 100], got {threshold_percentile}")
    reference = np.sort(np.asarray(reference_errors, dtype=np.float64))
    if len(reference) == 0 or not np.all(np.isfinite(reference)):
        raise BundleError("reference errors must be a non-empty set of finite numbers")
    threshold = float(np.percentile(reference, threshold_percentile))
    vocabulary = {"tokens": vectorizer.vocabulary, "shapes": vectorizer.shapes}
    _fsync_write(path / "vocabulary.json", json.dumps(vocabulary, ensure_ascii=False).encode())
    arrays = {}
    for i, layer in enumerate(layers):
        arrays[f"kernel_{i}"] = np.asarray(layer.kernel, np.float32)
        arrays[f"bias_{i}"] = np.asarray(layer.bias, np.float32)
    with open(path / "weights.npz", "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    with open(path / "reference_errors.npy", "wb") as f:
        np.save(f, reference)
        f.flush()
        os.fsync(f.fileno())
    files = ["vocabulary.json", "weights.npz", "reference_errors.npy"]
    if keras_model is not None:
        keras_model.save(path / "model.keras")
        files.append("model.keras")
    hashes = {name: _sha256(path / name) for name in files}
    content_hash = hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()[:16]
    doc = {
        "format_version": FORMAT_VERSION,
        "vectorizer": vectorizer.settings.to_dict(),
        "activations": [layer.activation for layer in layers],
        "threshold_percentile": threshold_percentile,
        "threshold": threshold,
        "files": hashes,
        "metadata": {**(metadata or {}), "content_hash": content_hash},
    }
    _fsync_write(manifest, json.dumps(doc, indent=2, ensure_ascii=False).encode())
    return path


def load_bundle(path: str | Path) -> Bundle:
    """Load and validate a bundle; any problem raises ``BundleError`` with one sentence naming it."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"bundle {path} does not exist")
    if not path.is_dir():
        raise BundleError(f"bundle {path} is not a directory (a bundle is the directory `seqmon train --out` writes)")
    manifest = path / "bundle.json"
    if not manifest.exists():
        raise BundleError(f"bundle {path} has no bundle.json: it is not a bundle or its training did not finish")
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"bundle {path} has a damaged bundle.json ({e})") from None
    if not isinstance(doc, dict):
        raise BundleError(f"bundle {path} has a damaged bundle.json (not a JSON object)")
    version = doc.get("format_version")
    if version not in READABLE_FORMAT_VERSIONS:
        raise BundleError(
            f"bundle {path} has format version {version!r}; this seqmon reads versions "
            f"{', '.join(map(str, READABLE_FORMAT_VERSIONS))}: retrain it with this seqmon (seqmon train)"
        )
    for name, expected in doc.get("files", {}).items():
        file = path / name
        if not file.exists():
            raise BundleError(f"bundle {path} is missing {name}")
        if _sha256(file) != expected:
            raise BundleError(f"bundle {path} is damaged: {name} does not match the checksum in bundle.json")
    for name in ("vocabulary.json", "weights.npz", "reference_errors.npy"):
        if name not in doc.get("files", {}):
            raise BundleError(f"bundle {path} does not list {name} in bundle.json")
    try:
        settings = VectorizerSettings.from_dict(doc["vectorizer"])
        vocabulary = json.loads((path / "vocabulary.json").read_text(encoding="utf-8"))
        if version == 1:
            vocabulary = {"tokens": vocabulary, "shapes": []}
        vectorizer = Vectorizer(settings, vocabulary["tokens"], vocabulary["shapes"])
        with np.load(path / "weights.npz") as w:
            activations = doc["activations"]
            layers = [DenseLayer(w[f"kernel_{i}"], w[f"bias_{i}"], act) for i, act in enumerate(activations)]
        reference = np.load(path / "reference_errors.npy")
        threshold = float(doc["threshold"])
        threshold_percentile = float(doc["threshold_percentile"])
    except (KeyError, ValueError, TypeError, ConfigError, OSError) as e:
        raise BundleError(f"bundle {path} is inconsistent: {e}") from None
    if layers[0].kernel.shape[0] != settings.n_features:
        raise BundleError(
            f"bundle {path} is inconsistent: the model takes {layers[0].kernel.shape[0]} inputs "
            f"but the vectorizer settings make {settings.n_features}"
        )
    try:
        scorer = ReconstructionScorer(layers)
    except ValueError as e:
        raise BundleError(f"bundle {path} is inconsistent: {e}") from None
    if reference.ndim != 1 or len(reference) == 0 or not np.all(np.isfinite(reference)) or np.any(np.diff(reference) < 0):
        raise BundleError(f"bundle {path} is inconsistent: reference errors must be a sorted, finite, non-empty list")
    return Bundle(
        vectorizer=vectorizer,
        scorer=scorer,
        reference_errors=reference,
        threshold=threshold,
        threshold_percentile=threshold_percentile,
        metadata=doc.get("metadata", {}),
        path=path,
    )
