"""Vectorize stage: sequences of tokens → sparse rows of the autoencoder's input.

The original method: Keras-Tokenizer-like tokens (lower-cased, punctuation filtered, split on spaces), a vocabulary of
the most frequent tokens (index 0 is padding), every sequence cut or padded at the end to ``max_length`` tokens and
turned into a multi-hot vector of ``vocab_size`` places. Two measured weaknesses of the original are fixed by
settings that default on or are chosen by a preset:

* ``oov``: index 1 is reserved for tokens outside the vocabulary. The original dropped them, so an unknown token made a
  sequence look *shorter* (and so more normal) instead of raising its error.
* ``encoding="positional"``: one place per (position, token), so reordered parts change the vector.
* ``encoding="counts"``: ``log1p(count)`` per token over the whole sequence, for long log-key sessions.

Optional channels, after the token places, let a vectorizer fitted to the user's data see what fixed sizes hid:

* ``bag``: every token of the sequence, however long (``multi_hot`` or ``counts``), so parts past ``max_length`` count;
* ``shapes``: per position, the token's *shape* (``GX567`` → ``A9``, ``core.7156`` → ``a.9``, ``0x00000080`` → ``H``),
  so a new value of a known kind of field is mild while a new kind of token is loud;
* ``length_signal``: the token count, one-hot up to ``max_length`` and one place for "longer", so missing and appended
  parts register even where the token places are cut.

``min_count`` keeps only tokens seen that often in training: the tail of one-off values (ids, counters) is then
out-of-vocabulary in training too, and the model learns where such values are normal.

``rare`` (with ``min_count`` of 3 or more) tells a token *seen* in training, fewer than ``min_count`` times, from one
*never seen*: the first lights a ``<rare>`` place (index 2), the second ``<oov>``. Training rows are encoded leave one
out (``encode(..., training=True)``): a token seen once in training is, from the one row that holds it, never seen
elsewhere, so it lights ``<oov>`` there, and a token seen twice lights ``<rare>``. The share of ``<oov>`` per place in
training is then the Good-Turing estimate of how often live traffic brings a new value there, and a place where
training never met a new value makes a new value loud. The rare tokens are kept as 64-bit hashes (``token_hashes``),
at most ``RARE_MAX_TOKENS``.

Tokenizing and encoding run on whole batches with Arrow compute kernels and numpy; there is no Python loop per record.
Rows come out as CSR arrays (``indptr``, ``indices``, ``data``), which the scorer multiplies without densifying.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from monitor.errors import ConfigError, InputError

#: The punctuation ``tf.keras.preprocessing.text.Tokenizer`` filters by default.
KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'
PAD_INDEX = 0
OOV_INDEX = 1
#: With ``rare`` on: a token seen in training, but too rarely for a place of its own.
RARE_INDEX = 2
#: Most rare tokens a vectorizer keeps (8 bytes each); past it the most frequent are kept and the others count as
#: never seen, live as in training.
RARE_MAX_TOKENS = 4_000_000
ENCODINGS = ("multi_hot", "positional", "counts")
BAGS = ("none", "multi_hot", "counts")
#: Shapes longer than this are cut: a shape names a kind of token, not its length.
SHAPE_MAX_CHARS = 12


@dataclass(frozen=True)
class VectorizerSettings:
    """How a string becomes a vector. Defaults reproduce the original method, plus the OOV index.

    ``vocab_size`` counts every index, padding, OOV and rare included (as Keras' ``num_words`` does), so at most
    ``vocab_size - reserved`` tokens are kept.
    ``max_length=None`` keeps all tokens (only meaningful with ``encoding="counts"`` or ``"multi_hot"``).
    """

    vocab_size: int = 750
    max_length: int | None = 4
    lower: bool = True
    filters: str = KERAS_FILTERS
    split: str = " "
    oov: bool = True
    encoding: str = "multi_hot"
    min_count: int = 1
    bag: str = "none"
    shapes: bool = False
    shape_vocab_size: int = 64
    length_signal: bool = False
    rare: bool = False

    @property
    def reserved(self) -> int:
        """Indices before the first token: padding, then ``<oov>`` and ``<rare>`` when on."""
        return 1 + int(self.oov) + int(self.rare)

    def __post_init__(self) -> None:
        reserved = self.reserved
        if not isinstance(self.vocab_size, int) or self.vocab_size <= reserved:
            raise ConfigError(f"vocab_size must be an integer above {reserved}, got {self.vocab_size!r}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 1):
            raise ConfigError(f"max_length must be a positive integer or none, got {self.max_length!r}")
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"encoding must be one of {', '.join(ENCODINGS)}, got {self.encoding!r}")
        if self.encoding == "positional" and self.max_length is None:
            raise ConfigError("encoding 'positional' needs a max_length (one place per position and token)")
        if not self.split:
            raise ConfigError("split must be a non-empty string")
        if not isinstance(self.min_count, int) or self.min_count < 1:
            raise ConfigError(f"min_count must be a positive integer, got {self.min_count!r}")
        if self.bag not in BAGS:
            raise ConfigError(f"bag must be one of {', '.join(BAGS)}, got {self.bag!r}")
        if self.bag != "none" and self.encoding != "positional":
            raise ConfigError("bag adds a whole-sequence view to the positional encoding; the other encodings are bags")
        if (self.shapes or self.length_signal) and self.max_length is None:
            raise ConfigError("shapes and length_signal need a max_length (they have one place per position)")
        if not isinstance(self.shape_vocab_size, int) or self.shape_vocab_size < 3:
            raise ConfigError(f"shape_vocab_size must be an integer above 2, got {self.shape_vocab_size!r}")
        if self.rare and (not self.oov or self.min_count < 3):
            raise ConfigError(
                "rare needs oov on and a min_count of 3 or more (a token seen twice is the rare one of training)"
            )

    def channels(self) -> dict[str, tuple[int, int]]:
        """``(first column, width)`` of each channel that is on, in column order: ``tokens`` always, then ``bag``,
        ``shapes`` and ``length``."""
        out = {}
        start = 0
        width = self.vocab_size * self.max_length if self.encoding == "positional" else self.vocab_size
        out["tokens"] = (start, width)
        start += width
        if self.bag != "none":
            out["bag"] = (start, self.vocab_size)
            start += self.vocab_size
        if self.shapes:
            assert self.max_length is not None
            out["shapes"] = (start, self.shape_vocab_size * self.max_length)
            start += self.shape_vocab_size * self.max_length
        if self.length_signal:
            assert self.max_length is not None
            out["length"] = (start, self.max_length + 2)
        return out

    def novelty_columns(self) -> np.ndarray:
        """The columns that say "a token without a place of its own is here": ``<oov>`` and ``<rare>`` of the token
        places (at every position with the positional encoding) and of the bag. Empty with OOV off."""
        special = [OOV_INDEX] * self.oov + [RARE_INDEX] * self.rare
        if not special:
            return np.zeros(0, dtype=np.int64)
        channels = self.channels()
        steps = self.max_length if self.encoding == "positional" and self.max_length else 1
        cols = [channels["tokens"][0] + k * self.vocab_size + i for k in range(steps) for i in special]
        if "bag" in channels:
            cols += [channels["bag"][0] + i for i in special]
        return np.array(sorted(cols), dtype=np.int64)

    @property
    def n_features(self) -> int:
        """Width of the encoded vector."""
        start, width = list(self.channels().values())[-1]
        return start + width

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line: what a row of this encoding holds."""
        parts = [f"{self.encoding} tokens ({self.vocab_size:,} places"
                 + (f" x {self.max_length} positions)" if self.encoding == "positional" else ")")]
        if self.encoding != "positional" and self.max_length is not None:
            parts[0] += f" of the first {self.max_length} tokens"
        if self.bag != "none":
            parts.append(f"a {self.bag} bag of all tokens")
        if self.shapes:
            parts.append(f"token shapes ({self.shape_vocab_size} places x {self.max_length} positions)")
        if self.length_signal:
            parts.append(f"the length (0..{self.max_length}, or longer)")
        if self.rare:
            parts.append(f"tokens seen fewer than {self.min_count} times apart from never-seen ones")
        return ", ".join(parts) + f": {self.n_features:,} input places"

    @classmethod
    def from_dict(cls, data: dict) -> VectorizerSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown vectorizer setting {unknown[0]!r}")
        return cls(**data)


@dataclass(frozen=True)
class Tokens:
    """The tokens of a batch, flattened: token ``k`` belongs to row ``rows[k]`` at position ``positions[k]``."""

    values: pa.Array  # string tokens, flattened
    rows: np.ndarray  # int64
    positions: np.ndarray  # int64, 0-based position within its row
    counts: np.ndarray  # int64, tokens per row (before truncation)


def tokenize(sequences: Sequence[str] | pa.Array, settings: VectorizerSettings) -> Tokens:
    """Split a batch of strings into tokens the way Keras' ``text_to_word_sequence`` does.

    Lower-case (if set), replace every filter character by the split string, split, drop empty tokens.
    """
    arr = sequences if isinstance(sequences, pa.Array) else pa.array(sequences, pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    if settings.lower:
        arr = pc.utf8_lower(arr)
    filters = "".join(ch for ch in settings.filters if ch not in settings.split)
    if filters:
        # The regex pass is the slowest kernel; most records carry no punctuation, so only those that do pay for it.
        pattern = "[" + re.escape(filters) + "]"
        has = pc.match_substring_regex(arr, pattern)
        if pc.any(has).as_py():
            arr = pc.if_else(has, pc.replace_substring_regex(arr, pattern, settings.split), arr)
    parts = pc.split_pattern(arr, settings.split)
    offsets = parts.offsets.to_numpy()
    flat = parts.values.slice(offsets[0], offsets[-1] - offsets[0])
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    keep = pc.not_equal(pc.utf8_length(flat), 0)
    keep_np = keep.to_numpy(zero_copy_only=False)
    if not keep_np.all():
        flat = flat.filter(keep)
        rows = rows[keep_np]
    counts = np.bincount(rows, minlength=n).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    positions = np.arange(len(rows), dtype=np.int64) - starts[rows]
    return Tokens(values=flat, rows=rows, positions=positions, counts=counts)


def token_shapes(values: pa.Array) -> pa.Array:
    """The shape of each token: runs of upper-case letters become ``A``, of lower-case letters ``a``, of digits ``9``
    (other characters stay), cut to ``SHAPE_MAX_CHARS``; hex numbers (``0x…``, or 8+ hex digits with a letter and a
    digit) are ``H``. ``GX567`` → ``A9``, ``core.7156`` → ``a.9``, ``10.0.0.1`` → ``9.9.9.9``, ``/var/log`` → ``/a/a``."""
    if len(values) == 0:
        return pa.array([], pa.string())
    hexlike = pc.or_(
        pc.match_substring_regex(values, r"^0[xX][0-9a-fA-F]+$"),
        pc.and_(
            pc.match_substring_regex(values, r"^[0-9a-fA-F]{8,}$"),
            pc.and_(pc.match_substring_regex(values, "[a-fA-F]"), pc.match_substring_regex(values, "[0-9]")),
        ),
    )
    shapes = pc.replace_substring_regex(values, "[A-Z]+", "A")
    shapes = pc.replace_substring_regex(shapes, "[a-z]+", "a")
    shapes = pc.replace_substring_regex(shapes, "[0-9]+", "9")
    shapes = pc.utf8_slice_codeunits(shapes, 0, SHAPE_MAX_CHARS)
    return pc.if_else(hexlike, pa.scalar("H", pa.string()), shapes)


def _ranked(values: pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The distinct values (in order of first appearance), how often each occurs, and their indices most frequent
    first (ties: first appearance)."""
    encoded = pc.dictionary_encode(values)
    counts = np.bincount(encoded.indices.to_numpy(), minlength=len(encoded.dictionary))
    # dictionary_encode numbers values by first appearance, so a stable sort on -count breaks ties that way.
    return encoded.dictionary, counts, np.argsort(-counts, kind="stable")


def _frequent(values: pa.Array, min_count: int, room: int) -> list[str]:
    """The values seen at least ``min_count`` times, most frequent first (ties: first appearance), at most ``room``."""
    if len(values) == 0:
        return []
    distinct, counts, order = _ranked(values)
    return distinct.take(pa.array(order[counts[order] >= min_count][:room], pa.int64())).to_pylist()


_HASH_PRIME = np.uint64(0x100000001B3)


def token_hashes(values: pa.Array) -> np.ndarray:
    """A stable 64-bit hash of every string (a polynomial over its UTF-8 bytes, then the splitmix64 finalizer), in
    numpy over the Arrow buffers: the same on every platform and version, so a bundle's rare tokens stay valid."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.type != pa.string():
        values = values.cast(pa.string())
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    buffers = values.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int32)[values.offset : values.offset + n + 1].astype(np.int64)
    lengths = np.diff(offsets)
    if buffers[2] is None or offsets[-1] == offsets[0]:
        data = np.zeros(0, dtype=np.uint8)
    else:
        data = np.frombuffer(buffers[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    starts = offsets[:-1] - offsets[0]
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        # P**k mod 2**64 for every byte position: unsigned integer products wrap, as the hash wants.
        factors = np.full(int(lengths.max()) + 1, _HASH_PRIME, dtype=np.uint64)
        factors[0] = 1
        powers = np.cumprod(factors)
        if len(data):
            where = np.arange(len(data), dtype=np.int64) - np.repeat(starts, lengths)
            terms = (data.astype(np.uint64) + np.uint64(1)) * powers[where]
            filled = lengths > 0
            h[filled] = np.add.reduceat(terms, starts[filled])
        h ^= lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h


@dataclass(frozen=True)
class RareTokens:
    """Tokens seen in training too rarely for a place of their own, as sorted 64-bit hashes: ``once`` those seen
    exactly once, ``twice_or_more`` the others (which are rare in training rows too, see the module's ``rare``)."""

    once: np.ndarray  # uint64, sorted
    twice_or_more: np.ndarray  # uint64, sorted

    @classmethod
    def empty(cls) -> RareTokens:
        return cls(np.zeros(0, np.uint64), np.zeros(0, np.uint64))

    def __len__(self) -> int:
        return len(self.once) + len(self.twice_or_more)

    def lookup(self, values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Per value: (seen once, seen twice or more)."""
        h = token_hashes(values)
        return _member(self.once, h), _member(self.twice_or_more, h)


def _member(sorted_hashes: np.ndarray, h: np.ndarray) -> np.ndarray:
    if len(sorted_hashes) == 0:
        return np.zeros(len(h), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_hashes, h), len(sorted_hashes) - 1)
    return sorted_hashes[at] == h


@dataclass(frozen=True)
class Encoded:
    """A batch of encoded rows in CSR form, with what the vectorizer saw per row."""

    indptr: np.ndarray  # int64, n_rows + 1
    indices: np.ndarray  # int32 column per stored value
    data: np.ndarray  # float32 value per stored value
    n_features: int
    token_counts: np.ndarray  # int64 tokens per row before truncation
    oov_counts: np.ndarray  # int64 out-of-vocabulary tokens per row (among those kept)

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def to_dense(self, rows: slice | np.ndarray | None = None) -> np.ndarray:
        """Dense float32 matrix of some rows (for training and the Keras path; the scorer never needs it)."""
        select = np.arange(self.n_rows) if rows is None else np.arange(self.n_rows)[rows]
        out = np.zeros((len(select), self.n_features), dtype=np.float32)
        lengths = self.indptr[select + 1] - self.indptr[select]
        out_rows = np.repeat(np.arange(len(select)), lengths)
        take = _ranges(self.indptr[select], lengths)
        out[out_rows, self.indices[take]] = self.data[take]
        return out


#: Rows encoded at once by ``Vectorizer.encode`` (training encodes up to a million rows; the daemon's batches are
#: smaller): 100,000 long log lines take a few hundred MB of intermediates.
ENCODE_CHUNK_ROWS = 100_000


def concatenate(parts: Sequence[Encoded]) -> Encoded:
    """One batch of the rows of several, in order (all of one vectorizer)."""
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [len(p.indices) for p in parts[:-1]])
    return Encoded(
        indptr=np.concatenate([parts[0].indptr[:1]] + [p.indptr[1:] + o for p, o in zip(parts, offsets, strict=True)]),
        indices=np.concatenate([p.indices for p in parts]),
        data=np.concatenate([p.data for p in parts]),
        n_features=parts[0].n_features,
        token_counts=np.concatenate([p.token_counts for p in parts]),
        oov_counts=np.concatenate([p.oov_counts for p in parts]),
    )


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for every pair, without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shift = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return np.arange(total, dtype=np.int64) + shift


class Vectorizer:
    """A fitted vocabulary and the settings that turn strings into encoded rows."""

    def __init__(
        self, settings: VectorizerSettings, vocabulary: Sequence[str], shapes: Sequence[str] = (),
        rare: RareTokens | None = None,
    ):
        self.settings = settings
        self.first_index = settings.reserved
        if len(vocabulary) > settings.vocab_size - self.first_index:
            raise ConfigError(
                f"vocabulary has {len(vocabulary)} tokens but vocab_size {settings.vocab_size} "
                f"leaves room for {settings.vocab_size - self.first_index}"
            )
        if len(shapes) > settings.shape_vocab_size - 2:
            raise ConfigError(
                f"{len(shapes)} shapes but shape_vocab_size {settings.shape_vocab_size} leaves room for "
                f"{settings.shape_vocab_size - 2}"
            )
        self.vocabulary = list(vocabulary)
        self.shapes = list(shapes)
        self.rare = rare if rare is not None else RareTokens.empty()
        if len(self.rare) and not settings.rare:
            raise ConfigError("rare tokens given to a vectorizer whose settings have rare off")
        self._value_set = pa.array(self.vocabulary, pa.string())
        self._shape_set = pa.array(self.shapes, pa.string())

    @classmethod
    def fit(cls, sequences: Sequence[str] | pa.Array, settings: VectorizerSettings) -> Vectorizer:
        """Keep the most frequent tokens seen at least ``min_count`` times (and shapes, if on); ties keep the order
        of first appearance (as Keras' Tokenizer does)."""
        tokens = tokenize(sequences, settings)
        if len(tokens.values) == 0:
            raise InputError("the training data holds no tokens: every line is empty after tokenizing")
        distinct, counts, order = _ranked(tokens.values)
        kept = order[counts[order] >= settings.min_count][: settings.vocab_size - settings.reserved]
        vocabulary = distinct.take(pa.array(kept, pa.int64())).to_pylist()
        shapes = (
            _frequent(token_shapes(tokens.values), settings.min_count, settings.shape_vocab_size - 2)
            if settings.shapes else []
        )
        rare = None
        if settings.rare:
            # Every token without a place, most frequent first: past the cap the most frequent stay, and a dropped
            # one counts as never seen, live as in training.
            chosen = order[len(kept) :][:RARE_MAX_TOKENS]
            h = token_hashes(distinct.take(pa.array(chosen, pa.int64())))
            once = counts[chosen] == 1
            rare = RareTokens(np.sort(h[once]), np.sort(h[~once]))
        return cls(settings, vocabulary, shapes, rare)

    @property
    def n_features(self) -> int:
        return self.settings.n_features

    def token_ids(self, tokens: Tokens, training: bool = False) -> np.ndarray:
        """Index of every token: its vocabulary place, ``RARE_INDEX`` if seen in training too rarely for one (with
        ``rare`` on), ``OOV_INDEX`` if unknown, or -1 (dropped) with OOV off. ``training``: encode leave one out (a
        token seen once in training is unknown to the row that holds it)."""
        found = pc.index_in(tokens.values, value_set=self._value_set)
        ids = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        known = ids >= 0
        ids[known] += self.first_index
        if self.settings.oov:
            ids[~known] = OOV_INDEX
        if self.settings.rare and len(self.rare) and not known.all():
            unknown = np.flatnonzero(~known)
            once, more = self.rare.lookup(tokens.values.take(pa.array(unknown, pa.int64())))
            ids[unknown[more if training else once | more]] = RARE_INDEX
        return ids

    def encode(self, sequences: Sequence[str] | pa.Array, training: bool = False) -> Encoded:
        """Encode a batch. Rows with no tokens come out all-zero; callers decide whether that is an error.
        ``training``: these are the rows the vocabulary was fitted on (leave-one-out rare tokens, see ``rare``).

        A batch of more than ``ENCODE_CHUNK_ROWS`` rows is encoded in chunks of that many, so the intermediate arrays
        (tokens, ids, positions: several times the size of the result) stay bounded whatever the batch."""
        if len(sequences) > ENCODE_CHUNK_ROWS:
            return concatenate([self._encode(sequences[i : i + ENCODE_CHUNK_ROWS], training)
                                for i in range(0, len(sequences), ENCODE_CHUNK_ROWS)])
        return self._encode(sequences, training)

    def _encode(self, sequences: Sequence[str] | pa.Array, training: bool = False) -> Encoded:
        s = self.settings
        tokens = tokenize(sequences, s)
        n = len(tokens.counts)
        ids = all_ids = self.token_ids(tokens, training)
        rows, positions = tokens.rows, tokens.positions
        if not s.oov:
            # The original dropped unknown tokens before padding, so the later tokens move up a place.
            keep = ids >= 0
            ids, rows = ids[keep], rows[keep]
            kept = np.bincount(rows, minlength=n)
            starts = np.concatenate(([0], np.cumsum(kept)[:-1]))
            positions = np.arange(len(rows), dtype=np.int64) - starts[rows]
        if s.max_length is not None:
            keep = positions < s.max_length
            ids, rows, positions = ids[keep], rows[keep], positions[keep]
        oov_counts = np.bincount(rows[ids == OOV_INDEX], minlength=n).astype(np.int64) if s.oov else np.zeros(n, np.int64)

        if s.encoding != "counts" and s.max_length is not None:
            indptr, indices, data = _fixed_length_rows(rows, positions, ids, n, s)
        else:
            indptr, indices, data = _csr_sum(rows, ids, n, s.vocab_size)
            data = np.log1p(data) if s.encoding == "counts" else np.minimum(data, 1.0)
        if s.bag != "none" or s.shapes or s.length_signal:
            indptr, indices, data = self._with_channels(tokens, all_ids, indptr, indices, data)
        return Encoded(
            indptr=indptr,
            indices=indices.astype(np.int32),
            data=data.astype(np.float32),
            n_features=s.n_features,
            token_counts=tokens.counts,
            oov_counts=oov_counts,
        )

    def shape_ids(self, tokens: Tokens) -> np.ndarray:
        """Shape index of every token: its place among the fitted shapes (from 2), or 1 for an unknown shape.

        The shape regexes run once per distinct token of the batch (traffic repeats its tokens), then a gather."""
        distinct = pc.dictionary_encode(tokens.values)
        found = pc.index_in(token_shapes(distinct.dictionary), value_set=self._shape_set)
        per_distinct = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) + 2
        return per_distinct[distinct.indices.to_numpy(zero_copy_only=False)]

    def _with_channels(self, tokens: Tokens, ids: np.ndarray, indptr, indices, data):
        """The token places' CSR rows with the bag, shape and length places appended (columns stay sorted).
        ``ids``: :meth:`token_ids` of every token, however far past ``max_length``."""
        s = self.settings
        n = len(tokens.counts)
        channels = s.channels()
        rows = [np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))]
        cols = [np.asarray(indices, dtype=np.int64)]
        vals = [np.asarray(data, dtype=np.float64)]
        if s.bag != "none":
            b_indptr, b_cols, b_data = _csr_sum(tokens.rows, ids, n, s.vocab_size)
            rows.append(np.repeat(np.arange(n, dtype=np.int64), np.diff(b_indptr)))
            cols.append(b_cols + channels["bag"][0])
            vals.append(np.log1p(b_data) if s.bag == "counts" else np.minimum(b_data, 1.0))
        length = s.max_length
        if s.shapes:
            assert length is not None
            keep = tokens.positions < length
            grid = np.full((n, length), PAD_INDEX, dtype=np.int64)
            grid[tokens.rows[keep], tokens.positions[keep]] = self.shape_ids(tokens)[keep]
            grid += np.arange(length, dtype=np.int64) * s.shape_vocab_size + channels["shapes"][0]
            rows.append(np.repeat(np.arange(n, dtype=np.int64), length))
            cols.append(grid.ravel())
            vals.append(np.ones(n * length))
        if s.length_signal:
            assert length is not None
            rows.append(np.arange(n, dtype=np.int64))
            cols.append(np.minimum(tokens.counts, length + 1) + channels["length"][0])
            vals.append(np.ones(n))
        all_rows, all_cols, all_vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        # Channels lie in increasing column ranges, so a stable sort by row keeps each row's columns sorted.
        order = np.argsort(all_rows, kind="stable")
        out_indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(all_rows, minlength=n), out=out_indptr[1:])
        return out_indptr, all_cols[order], all_vals[order]

    def token_of_column(self, column: int) -> tuple[str, int | None]:
        """The token (and position, for positional places) that an input column stands for. Shape places read
        ``<shape A9>``, length places ``<length 3>`` (or ``<length >8>``), bag places the token itself."""
        s = self.settings
        channel, start = "tokens", 0
        for name, (first, width) in s.channels().items():
            if first <= column < first + width:
                channel, start = name, first
                break
        column -= start
        position = None
        if channel == "length":
            return (f"<length >{s.max_length}>" if column > (s.max_length or 0) else f"<length {column}>"), None
        if channel == "shapes":
            position, column = divmod(column, s.shape_vocab_size)
            if column == PAD_INDEX:
                return "<pad>", position
            if column == 1:
                return "<unknown shape>", position
            i = column - 2
            return (f"<shape {self.shapes[i]}>" if i < len(self.shapes) else "<unused>"), position
        if channel == "tokens" and s.encoding == "positional":
            position, column = divmod(column, s.vocab_size)
        if column == PAD_INDEX:
            return "<pad>", position
        if s.oov and column == OOV_INDEX:
            return "<oov>", position
        if s.rare and column == RARE_INDEX:
            return "<rare>", position
        i = column - self.first_index
        return (self.vocabulary[i] if i < len(self.vocabulary) else "<unused>"), position


def _fixed_length_rows(rows, positions, ids, n, s: VectorizerSettings):
    """CSR arrays for the multi-hot and positional encodings: every row has exactly ``max_length`` places.

    Places after the last token hold ``PAD_INDEX``, as the original's ``pad_sequences(padding="post")`` did; lighting
    index 0 then tells a short sequence from a long one.
    """
    length = s.max_length
    assert length is not None
    grid = np.full((n, length), PAD_INDEX, dtype=np.int64)
    grid[rows, positions] = ids
    if s.encoding == "positional":
        cols = grid + np.arange(length, dtype=np.int64) * s.vocab_size
        indptr = np.arange(0, n * length + 1, length, dtype=np.int64)
        return indptr, cols.ravel(), np.ones(n * length, dtype=np.float32)
    # Multi-hot: a token repeated in a sequence lights its place once.
    grid.sort(axis=1)
    keep = np.ones((n, length), dtype=bool)
    keep[:, 1:] = grid[:, 1:] != grid[:, :-1]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    indices = grid[keep]
    return indptr, indices, np.ones(len(indices), dtype=np.float32)


def _csr_sum(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int):
    """CSR arrays counting how often each column occurs in each row, columns sorted within a row."""
    key = rows * n_cols + cols
    uniq, counts = np.unique(key, return_counts=True)
    urows = uniq // n_cols
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(urows, minlength=n_rows), out=indptr[1:])
    return indptr, uniq % n_cols, counts.astype(np.float64)
