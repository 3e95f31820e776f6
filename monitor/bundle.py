"""The model bundle: everything scoring needs, saved together and validated when loaded.

A bundle is a directory::

    bundle.json            format version, settings, threshold, metadata, sha256 of every other file, and
                           content_sha256 over all of that (see _manifest_sha256)
    vocabulary.json        {"tokens": kept tokens in index order (index 0 padding and, with OOV on, 1 OOV come first),
                           "shapes": kept token shapes in index order (0 padding, 1 unknown shape come first)}
    rare_tokens.npz        with the vectorizer's ``rare`` on: the 64-bit hashes of the tokens seen in training too
                           rarely for a place of their own ("once", "twice_or_more", each sorted)
    weights.npz            the dense layers as numpy arrays: what the TensorFlow-free scorer loads
    reference_errors.npy   errors of held-out normal rows, sorted ascending: the scale of percentile ranks
    model.keras            the Keras model, for retraining and for checking the numpy scorer against Keras

Loading never imports TensorFlow and never unpickles; saving replaces the whole directory in one step.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitor.errors import BundleError, ConfigError
from monitor.score import DenseLayer, ReconstructionScorer, group_score, percentile_rank, top_per_row
from monitor.vectorize import OOV_INDEX, RARE_INDEX, RareTokens, Vectorizer, VectorizerSettings, _ranges, tokenize

FORMAT_VERSION = 4
#: Version 1 stored vocabulary.json as a plain list of tokens and had no token shapes; version 2 had no place weights
#: (its error is the plain mean squared error). Both load unchanged. Version 3 may weight the error by place, which an
#: older seqmon would silently ignore, hence the new number. Version 4 may tell rare tokens from never-seen ones
#: (rare_tokens.npz); versions 1-3 load unchanged (their vectorizers have it off).
READABLE_FORMAT_VERSIONS = (1, 2, 3, 4)
#: ``bundle.json``'s ``error``: how a row's error is computed from its squared errors per place.
ERROR_KINDS = {"mse": "mean squared error", "weighted_mse": "mean squared error weighted by place"}
log = logging.getLogger("seqmon")

FILES = ("vocabulary.json", "rare_tokens.npz", "weights.npz", "reference_errors.npy", "model.keras")


@dataclass(frozen=True)
class Explanations:
    """The unexpected places of a batch of rows, flattened like CSR: row ``i`` owns items ``indptr[i]:indptr[i+1]``.

    A row's items are its present places with the largest squared errors, largest first (see ``Bundle.explain``).
    """

    indptr: np.ndarray  # int64, n_rows + 1
    tokens: pa.Array  # string per item: the vocabulary token, <pad>, or the raw unknown token(s) of an OOV place
    positions: np.ndarray  # int64 per item: the position with the positional encoding, else -1
    contributions: np.ndarray  # float64 per item: squared error / vector width (a share of the row's error)
    columns: np.ndarray  # int64 input column per item
    unknown: pa.ListArray  # per row: the out-of-vocabulary tokens the encoding kept, in order (empty with OOV off)

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def top_tokens(self) -> np.ndarray:
        """Per row, its item tokens joined by one space (``""`` for none): the ``top_tokens`` column of ``seqmon score``."""
        lists = pa.ListArray.from_arrays(pa.array(self.indptr, pa.int64()).cast(pa.int32()), self.tokens)
        return pc.binary_join(lists, " ").to_numpy(zero_copy_only=False)

    def take(self, rows: np.ndarray) -> Explanations:
        """The explanations of ``rows`` (in that order, repeats allowed)."""
        rows = np.asarray(rows, dtype=np.int64)
        lengths = np.diff(self.indptr)[rows]
        items = _ranges(self.indptr[rows], lengths)
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        take = pa.array(items, pa.int64())
        return Explanations(
            indptr=indptr,
            tokens=self.tokens.take(take),
            positions=self.positions[items],
            contributions=self.contributions[items],
            columns=self.columns[items],
            unknown=self.unknown.take(pa.array(rows, pa.int64())),
        )

    def to_lists(self) -> list[list[dict]]:
        """Per row, the items as ``Bundle.explain`` gives them (``kind`` ``unexpected``). A Python loop: not for hot paths."""
        tokens, positions, contributions = self.tokens.to_pylist(), self.positions.tolist(), self.contributions.tolist()
        return [
            [
                {"token": tokens[k], "position": None if positions[k] < 0 else positions[k],
                 "contribution": contributions[k], "kind": "unexpected"}
                for k in range(self.indptr[i], self.indptr[i + 1])
            ]
            for i in range(self.n_rows)
        ]


def _offsets(rows: np.ndarray, n: int) -> np.ndarray:
    """CSR offsets of ``n`` rows from the (sorted) row of every item."""
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    return offsets


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
    _column_token_cache: tuple | None = field(default=None, init=False, repr=False, compare=False)

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
        """The input places that contributed most to one sequence's error, largest contribution first.

        Up to ``top`` places of each kind: ``unexpected``, the places the sequence holds, ranked by their squared error
        (poorly reconstructed parts), and ``missing``, the places it does not hold, ranked the same way (parts the
        model expected). The ``unexpected`` items are exactly what :meth:`explain_batch` returns for the sequence.

        Each item: ``token`` (for an out-of-vocabulary place, the raw unknown token: the one at that position with the
        positional encoding, otherwise the distinct unknown tokens of the sequence in order, space-separated),
        ``position`` (positional encoding only, else ``None``), ``contribution`` (the place's squared error divided by
        the vector width, so the contributions of all places add up to the error) and ``kind``. A sequence with no
        tokens has no explanation (its error is NaN).

        This is the one-row reference: it reconstructs the whole row (D places). For many rows use
        :meth:`explain_batch`.
        """
        encoded = self.vectorizer.encode([sequence])
        if encoded.token_counts[0] == 0 or top <= 0:
            return []
        contrib = self.scorer.contributions(encoded) / encoded.n_features
        present = np.zeros(encoded.n_features, dtype=bool)
        present[encoded.indices[encoded.indptr[0] : encoded.indptr[1]]] = True
        _, _, column_oov, column_special = self._column_table()
        items = []
        for kind, mask in (("unexpected", present), ("missing", ~present)):
            columns = np.flatnonzero(mask)
            ranked = columns[np.argsort(-contrib[columns], kind="stable")][:top]
            for col in ranked[contrib[ranked] > 0].tolist():
                token, position = self.vectorizer.token_of_column(col)
                if kind == "unexpected" and column_oov[col]:
                    label = self._unknown_label(sequence, int(column_oov[col]), int(column_special[col]), position)
                    token = label or token
                items.append({"token": token, "position": position, "contribution": float(contrib[col]), "kind": kind})
        items.sort(key=lambda item: -item["contribution"])  # stable: an unexpected place first on a tie
        return items

    def _unknown_label(self, sequence: str, oov_kind: int, special: int, position: int | None) -> str | None:
        """What an OOV or rare place of one sequence shows (see ``_OOV_AT_POSITION`` and the others); None if
        nothing. ``special``: the place's index, ``OOV_INDEX`` or ``RARE_INDEX``."""
        s = self.vectorizer.settings
        tokenized = tokenize([sequence], s)
        tokens = tokenized.values.to_pylist()
        ids = self.vectorizer.token_ids(tokenized).tolist()
        if oov_kind == _OOV_AT_POSITION:
            if position is None or position >= len(tokens):
                return None
            return tokens[position] if ids[position] == special else None
        limit = s.max_length if oov_kind == _OOV_KEPT and s.max_length is not None else len(tokens)
        kept = range(min(len(tokens), limit))
        return " ".join(dict.fromkeys(tokens[i] for i in kept if ids[i] == special)) or None

    def explain_batch(self, sequences: Sequence[str] | pa.Array, top: int = 3) -> Explanations:
        """The ``top`` unexpected places of every sequence of a batch: :meth:`explain`'s ``unexpected`` items, in batch.

        For each row, its present places ranked by squared error, largest first. The reconstruction is computed only at
        the places a row holds (``ReconstructionScorer.present_errors``: O(nnz·hidden) per row, never the D-wide row),
        ranked with one sort for the whole batch, and each distinct sequence of the batch is explained once.
        """
        arr = sequences if isinstance(sequences, pa.Array) else pa.array(sequences, pa.string())
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        distinct = pc.dictionary_encode(arr)
        explained = self._explain_distinct(distinct.dictionary, top)
        return explained.take(distinct.indices.to_numpy(zero_copy_only=False))

    def _explain_distinct(self, sequences: pa.Array, top: int) -> Explanations:
        v, s = self.vectorizer, self.vectorizer.settings
        encoded = v.encode(sequences)
        n, width = encoded.n_rows, encoded.n_features
        contributions = self.scorer.present_errors(encoded) / width
        # A row without tokens is all padding: it has no error (NaN) and so no explanation.
        contributions[np.repeat(encoded.token_counts == 0, np.diff(encoded.indptr))] = 0.0
        keep = top_per_row(encoded.indptr, contributions, max(top, 0))
        rows = np.repeat(np.arange(n), np.diff(encoded.indptr))[keep]
        columns = encoded.indices[keep].astype(np.int64)
        indptr = _offsets(rows, n)
        names, column_positions, column_oov, column_special = self._column_table()
        tokens = names.take(pa.array(columns))
        kind = column_oov[columns]
        special = column_special[columns]
        token_rows, token_positions, token_values, token_ids = self._special_tokens(sequences)

        def of_index(index: int):
            """Row, position and value of the tokens that light ``index``, and whether the encoding kept them
            (within ``max_length``; the bag keeps all)."""
            chosen = token_ids == index
            positions = token_positions[chosen]
            kept = positions < s.max_length if s.max_length is not None else np.ones(len(positions), dtype=bool)
            return token_rows[chosen], positions, token_values.filter(pa.array(chosen)), kept

        for index in (OOV_INDEX, RARE_INDEX):
            if not (special == index).any():
                continue
            u_rows, u_positions, u_values, u_kept = of_index(index)
            for oov_kind in (_OOV_AT_POSITION, _OOV_KEPT, _OOV_ALL):
                mask = (kind == oov_kind) & (special == index)
                if not mask.any():
                    continue
                if oov_kind == _OOV_AT_POSITION:
                    labels = _labels_at_position(
                        u_rows[u_kept], u_positions[u_kept], u_values.filter(pa.array(u_kept)), s.max_length or 1,
                        rows[mask], column_positions[columns[mask]],
                    )
                else:
                    select = u_kept if oov_kind == _OOV_KEPT else np.ones(len(u_rows), dtype=bool)
                    labels = _distinct_labels(n, u_rows[select], u_values.filter(pa.array(select)), rows[mask])
                tokens = pc.replace_with_mask(tokens, pa.array(mask), labels)
        u_rows, _, u_values, u_kept = of_index(OOV_INDEX)
        return Explanations(
            indptr=indptr,
            tokens=tokens,
            positions=column_positions[columns],
            contributions=contributions[keep],
            columns=columns,
            unknown=pa.ListArray.from_arrays(
                pa.array(_offsets(u_rows[u_kept], n), pa.int32()), u_values.filter(pa.array(u_kept))
            ),
        )

    def _column_table(self) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
        """Per input column, built once per bundle: its name (``<pad>``, ``<oov>``, ``<rare>``, a vocabulary token,
        ``<shape A9>``, ``<length 3>``), its position (-1 for none), which of the row's tokens an OOV or rare place
        stands for (``_OOV_AT_POSITION`` and the others, 0 for other places) and which index it is (``OOV_INDEX``,
        ``RARE_INDEX``, or 0)."""
        if self._column_token_cache is None:
            v, s = self.vectorizer, self.vectorizer.settings
            named = [v.token_of_column(c) for c in range(v.n_features)]
            names = pa.array([name for name, _ in named], pa.string())
            positions = np.array([-1 if p is None else p for _, p in named], dtype=np.int64)
            oov = np.zeros(v.n_features, dtype=np.int8)
            special = np.zeros(v.n_features, dtype=np.int8)
            channels = s.channels()
            start, width = channels["tokens"]
            columns = np.arange(start, start + width)
            positional = s.encoding == "positional"
            for index in [OOV_INDEX] * s.oov + [RARE_INDEX] * s.rare:
                at = columns[(columns % s.vocab_size if positional else columns) == index]
                oov[at] = _OOV_AT_POSITION if positional else _OOV_KEPT
                special[at] = index
                if "bag" in channels:
                    oov[channels["bag"][0] + index] = _OOV_ALL
                    special[channels["bag"][0] + index] = index
            self._column_token_cache = (names, positions, oov, special)
        return self._column_token_cache

    def _special_tokens(self, sequences: pa.Array) -> tuple[np.ndarray, np.ndarray, pa.Array, np.ndarray]:
        """Row, position, value and index (``OOV_INDEX`` or ``RARE_INDEX``) of every token without a place of its
        own. With OOV off unknown tokens are dropped: no place stands for them."""
        s = self.vectorizer.settings
        tokens = tokenize(sequences, s)
        ids = self.vectorizer.token_ids(tokens)
        chosen = np.flatnonzero((ids == OOV_INDEX) | (ids == RARE_INDEX)) if s.oov else np.zeros(0, dtype=np.int64)
        values = tokens.values.take(pa.array(chosen, pa.int64()))
        return tokens.rows[chosen], tokens.positions[chosen], values, ids[chosen]

    def describe(self) -> dict:
        """What ``seqmon inspect`` prints."""
        return {
            "path": str(self.path) if self.path else None,
            "format_version": FORMAT_VERSION,
            "error": ERROR_KINDS["mse" if self.scorer.place_weights is None else "weighted_mse"],
            "threshold": self.threshold,
            "threshold_percentile": self.threshold_percentile,
            "reference_errors": {
                "count": int(len(self.reference_errors)),
                "min": float(self.reference_errors[0]),
                "median": float(np.median(self.reference_errors)),
                "max": float(self.reference_errors[-1]),
            },
            "vocabulary": {
                "tokens": len(self.vectorizer.vocabulary),
                "first": self.vectorizer.vocabulary[:10],
                **({"rare_tokens": {"seen_once": len(self.vectorizer.rare.once),
                                    "seen_twice_or_more": len(self.vectorizer.rare.twice_or_more)}}
                   if self.vectorizer.settings.rare else {}),
            },
            "layers": [f"{l.kernel.shape[0]}→{l.kernel.shape[1]} {l.activation}" for l in self.scorer.layers],
            **self.metadata,
        }


#: What an out-of-vocabulary place of an explanation shows: the unknown token at its position (positional
#: encoding), the row's distinct unknown tokens within max_length (bag encodings), or all of them (the bag channel).
_OOV_AT_POSITION, _OOV_KEPT, _OOV_ALL = 1, 2, 3


def _labels_at_position(u_rows, u_positions, u_values: pa.Array, max_length: int, rows, positions) -> pa.Array:
    """The unknown token at each (row, position); unknown tokens come in row, then position order (sorted keys)."""
    keys = u_rows * max_length + u_positions
    return u_values.take(pa.array(np.searchsorted(keys, rows * max_length + positions)))


def _distinct_labels(n: int, u_rows, u_values: pa.Array, rows) -> pa.Array:
    """Each row's distinct unknown tokens in order of first appearance, space-joined, taken for ``rows``."""
    codes = pc.dictionary_encode(u_values).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    _, first = np.unique(u_rows * (int(codes.max(initial=0)) + 1) + codes, return_index=True)
    first.sort()
    distinct = pa.ListArray.from_arrays(pa.array(_offsets(u_rows[first], n), pa.int32()), u_values.take(pa.array(first)))
    return pc.binary_join(distinct, " ").take(pa.array(rows))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest_sha256(doc: dict) -> str:
    """The sha256 of everything a bundle holds: the manifest's settings, threshold, metadata and the checksum of every
    file it lists, in one canonical JSON form (the manifest's own ``content_sha256`` and ``content_hash`` left out)."""
    covered = {k: v for k, v in doc.items() if k != "content_sha256"}
    metadata = doc.get("metadata")
    if isinstance(metadata, dict):
        covered["metadata"] = {k: v for k, v in metadata.items() if k != "content_hash"}
    text = json.dumps(covered, sort_keys=True, ensure_ascii=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where that is unavailable."""
    try:
        import ctypes  # noqa: PLC0415

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    errno = ctypes.get_errno()
    if errno in (38, 22, 95):  # ENOSYS, EINVAL, EOPNOTSUPP: this kernel or file system cannot exchange
        return False
    raise OSError(errno, os.strerror(errno), str(a))


def replaceable(path: Path) -> bool:
    """A directory that ``save_bundle`` may replace: empty, or holding bundle files only (a bundle, maybe unfinished)."""
    if not path.is_dir():
        return False
    return all(entry.name in (*FILES, "bundle.json") for entry in path.iterdir())


def save_bundle(
    path: str | Path,
    *,
    vectorizer: Vectorizer,
    layers: Sequence[DenseLayer],
    reference_errors: np.ndarray,
    threshold_percentile: float,
    keras_model=None,
    metadata: dict | None = None,
    place_weights: np.ndarray | None = None,
) -> Path:
    """Write a bundle directory, replacing the bundle at ``path`` in one step.

    The files are written and synced in a hidden sibling directory, which then takes the place of ``path`` (an atomic
    exchange on Linux, otherwise two renames during which ``path`` is briefly absent), so a reader such as the
    daemon's reload sees the old bundle, no bundle, or the whole new one: never a mix or a half-written file. A
    directory at ``path`` holding anything but bundle files is refused rather than replaced. ``place_weights`` (one
    per input place) make the error the weighted mean squared error.
    """
    path = Path(path)
    if not 0 < threshold_percentile <= 100:
        raise ConfigError(f"threshold_percentile must be in (0, 100], got {threshold_percentile}")
    reference = np.sort(np.asarray(reference_errors, dtype=np.float64))
    if len(reference) == 0 or not np.all(np.isfinite(reference)):
        raise BundleError("reference errors must be a non-empty set of finite numbers")
    if path.exists() and not replaceable(path):
        raise BundleError(
            f"{path} exists and is not a bundle directory: choose another --out or remove it (seqmon replaces a bundle "
            "directory whole, and would delete the other files)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.writing-", dir=path.parent))
    try:
        _write_files(staging, vectorizer, layers, reference, threshold_percentile, keras_model, metadata, place_weights)
        if not path.exists():
            os.rename(staging, path)
        elif _exchange(staging, path):
            shutil.rmtree(staging)  # now the old bundle
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rename(path, old / "bundle")
            os.rename(staging, path)
            shutil.rmtree(old)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def _write_files(
    path: Path, vectorizer: Vectorizer, layers: Sequence[DenseLayer], reference: np.ndarray,
    threshold_percentile: float, keras_model, metadata: dict | None, place_weights: np.ndarray | None = None,
) -> None:
    threshold = float(np.percentile(reference, threshold_percentile))
    vocabulary = {"tokens": vectorizer.vocabulary, "shapes": vectorizer.shapes}
    _fsync_write(path / "vocabulary.json", json.dumps(vocabulary, ensure_ascii=False).encode())
    files = ["vocabulary.json"]
    if vectorizer.settings.rare:
        with open(path / "rare_tokens.npz", "wb") as f:
            np.savez(f, once=vectorizer.rare.once, twice_or_more=vectorizer.rare.twice_or_more)
            f.flush()
            os.fsync(f.fileno())
        files.append("rare_tokens.npz")
    arrays = {}
    for i, layer in enumerate(layers):
        arrays[f"kernel_{i}"] = np.asarray(layer.kernel, np.float32)
        arrays[f"bias_{i}"] = np.asarray(layer.bias, np.float32)
    if place_weights is not None:
        arrays["place_weights"] = np.asarray(place_weights, np.float64)
    with open(path / "weights.npz", "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    with open(path / "reference_errors.npy", "wb") as f:
        np.save(f, reference, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    files += ["weights.npz", "reference_errors.npy"]
    if keras_model is not None:
        keras_model.save(path / "model.keras")
        with open(path / "model.keras", "rb+") as f:
            os.fsync(f.fileno())
        files.append("model.keras")
    doc = {
        "format_version": FORMAT_VERSION,
        "vectorizer": vectorizer.settings.to_dict(),
        "activations": [layer.activation for layer in layers],
        "error": "mse" if place_weights is None else "weighted_mse",
        "threshold_percentile": threshold_percentile,
        "threshold": threshold,
        "files": {name: _sha256(path / name) for name in files},
        "metadata": dict(metadata or {}),
    }
    digest = _manifest_sha256(doc)
    doc["content_sha256"] = digest
    doc["metadata"]["content_hash"] = digest[:16]
    _fsync_write(path / "bundle.json", json.dumps(doc, indent=2, ensure_ascii=False).encode())
    _fsync_dir(path)


def _damaged(path: Path, what: str) -> BundleError:
    return BundleError(
        f"bundle {path} is damaged or was changed after training ({what}): retrain it (seqmon train) or restore it "
        "from a copy"
    )


def load_bundle(path: str | Path) -> Bundle:
    """Load and validate a bundle; any problem raises ``BundleError`` with one sentence naming it.

    Every file is read once, checked against its sha256 in ``bundle.json``, and parsed from the bytes that were
    checked, so a file replaced while loading cannot slip in unchecked. Nothing is unpickled: the arrays load with
    ``allow_pickle=False`` and the Keras model is not loaded at all (the scorer uses ``weights.npz``).
    """
    path = Path(path)
    for _attempt in range(3):
        # Held open while loading, the directory's inode cannot be reused, so "the path now names another directory"
        # is a sure sign that save_bundle swapped bundles under this load.
        try:
            held = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            return _load_once(path)  # missing or not a directory: _load_once says which
        try:
            return _load_once(path)
        except BundleError:
            # A load that straddled a swap read files of two bundles: read the new one rather than fail.
            if _identity(path) == _identity(held):
                raise
        finally:
            os.close(held)
    return _load_once(path)


def _identity(target: Path | int) -> tuple[int, int] | None:
    try:
        st = os.fstat(target) if isinstance(target, int) else target.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _load_once(path: Path) -> Bundle:
    if not path.exists():
        raise BundleError(f"bundle {path} does not exist")
    if not path.is_dir():
        raise BundleError(f"bundle {path} is not a directory (a bundle is the directory `seqmon train --out` writes)")
    manifest = path / "bundle.json"
    try:
        raw_manifest = manifest.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"bundle {path} has no bundle.json: it is not a bundle or its training did not finish") from None
    except OSError as e:
        raise BundleError(f"bundle {path}: cannot read bundle.json ({e.strerror})") from None
    try:
        doc = json.loads(raw_manifest.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise BundleError(f"bundle {path} has a damaged bundle.json ({e})") from None
    if not isinstance(doc, dict):
        raise BundleError(f"bundle {path} has a damaged bundle.json (not a JSON object)")
    version = doc.get("format_version")
    if version not in READABLE_FORMAT_VERSIONS:
        raise BundleError(
            f"bundle {path} has format version {version!r}; this seqmon reads versions "
            f"{', '.join(map(str, READABLE_FORMAT_VERSIONS))}: retrain it with this seqmon (seqmon train)"
        )
    listed = doc.get("files")
    if not isinstance(listed, dict) or not all(isinstance(v, str) for v in listed.values()):
        raise _damaged(path, "bundle.json lists no file checksums")
    for name in listed:
        if name not in FILES:
            raise _damaged(path, f"bundle.json lists an unknown file {name!r}")
    for name in ("vocabulary.json", "weights.npz", "reference_errors.npy"):
        if name not in listed:
            raise _damaged(path, f"bundle.json does not list {name}")
    if "content_sha256" in doc:
        if doc["content_sha256"] != _manifest_sha256(doc):
            raise _damaged(path, "bundle.json does not match its content hash")
    elif version >= 3:  # every seqmon that writes version 3 writes the hash: its absence is damage, not age
        raise _damaged(path, "bundle.json has no content hash")
    else:
        log.warning(
            "bundle %s was written by an older seqmon: its files are checked but its bundle.json is not covered by a "
            "content hash; retrain it to have everything checked", path,
        )
    data: dict[str, bytes] = {}
    for name, expected in listed.items():
        file = path / name
        try:
            if name == "model.keras":  # checked, never parsed: stream it rather than hold it
                actual = _sha256(file)
            else:
                data[name] = file.read_bytes()
                actual = hashlib.sha256(data[name]).hexdigest()
        except FileNotFoundError:
            raise _damaged(path, f"{name} is missing") from None
        except OSError as e:
            raise BundleError(f"bundle {path}: cannot read {name} ({e.strerror})") from None
        if actual != expected:
            raise _damaged(path, f"{name} does not match its checksum in bundle.json")
    try:
        settings = VectorizerSettings.from_dict(doc["vectorizer"])
        vocabulary = json.loads(data["vocabulary.json"].decode("utf-8"))
        if version == 1:
            vocabulary = {"tokens": vocabulary, "shapes": []}
        rare = None
        if settings.rare:
            if "rare_tokens.npz" not in data:
                raise ValueError("its vectorizer tells rare tokens apart but rare_tokens.npz is not listed")
            with np.load(io.BytesIO(data["rare_tokens.npz"]), allow_pickle=False) as r:
                rare = RareTokens(r["once"].astype(np.uint64), r["twice_or_more"].astype(np.uint64))
        vectorizer = Vectorizer(settings, vocabulary["tokens"], vocabulary["shapes"], rare)
        error = doc.get("error", "mse")
        if error not in ERROR_KINDS:
            raise ValueError(f"unknown error {error!r}")
        with np.load(io.BytesIO(data["weights.npz"]), allow_pickle=False) as w:
            activations = doc["activations"]
            layers = [DenseLayer(w[f"kernel_{i}"], w[f"bias_{i}"], act) for i, act in enumerate(activations)]
            place_weights = w["place_weights"] if error == "weighted_mse" else None
        reference = np.load(io.BytesIO(data["reference_errors.npy"]), allow_pickle=False)
        threshold = float(doc["threshold"])
        threshold_percentile = float(doc["threshold_percentile"])
        metadata = doc.get("metadata", {})
        if not isinstance(metadata, dict):
            raise TypeError("metadata is not an object")
    except (KeyError, ValueError, TypeError, IndexError, ConfigError, OSError, zipfile.BadZipFile) as e:
        raise BundleError(f"bundle {path} is inconsistent: {e}") from None
    if not layers:
        raise BundleError(f"bundle {path} is inconsistent: it has no layers")
    if layers[0].kernel.shape[0] != settings.n_features:
        raise BundleError(
            f"bundle {path} is inconsistent: the model takes {layers[0].kernel.shape[0]} inputs "
            f"but the vectorizer settings make {settings.n_features}"
        )
    try:
        scorer = ReconstructionScorer(layers, place_weights=place_weights)
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
        metadata=metadata,
        path=path,
    )
