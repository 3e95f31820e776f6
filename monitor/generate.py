"""Deterministic generator of seed-like data: short structured sequences with labeled anomalies.

Operators' systems emit short sequences such as ``DF 36 FR GX567`` that follow unwritten format rules. This module
stands in for that data so the autoencoder can be trained and evaluated on something with the same shape:

* A fixed set of :data:`FORMATS` (templates) of 3 or 4 parts each. A part is a fixed *code* (``DF``), a 2-digit
  *number* (``36``), a 2-letter *country* (``FR``) or an *id* of 2 letters and 3 digits (``GX567``).
* Popularity is Zipf-like at both levels: formats have Zipf frequencies, and so do the values inside every part.
* Parts are correlated: in some formats a part's allowed values depend on an earlier (or later) *parent* part, e.g.
  the number range depends on the code and the id pool depends on the country, so a sequence is not a product of
  independent columns and a model has to learn combinations, not only token frequencies.
* Codes, countries and ids belong to exactly one (format, position); numbers are mostly disjoint between formats,
  with a few deliberate overlaps (real systems reuse small numbers). So a token seen in another format is foreign.
* The world (formats, pools, popularity) is a module constant built from a fixed seed; the generator's ``seed`` only
  drives *sampling*. Training data from seed 0 and test data from seed 1 therefore come from the same distribution.

Anomalies (:data:`KINDS`) are made from a normal source sequence and are guaranteed to be anomalous: the result
differs from its source, no format can produce it (:func:`is_normal` is an exact membership test of the normal
generator's support), and the same holds for the first :data:`MAX_TOKENS` tokens, which is all the vectorizer sees.

Everything is deterministic from the seed (``numpy.random.default_rng``); no set or dict iteration order that
depends on hash randomization reaches the output.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from monitor.errors import ConfigError

#: Anomaly kinds, in the order used wherever kinds are iterated (stream assignment, files).
KINDS = ("foreign", "unknown", "missing", "extra", "reordered")

#: Tokens the detector looks at: the vectorizer cuts every sequence at the end to this many tokens. An anomaly is
#: only accepted if it is still visible in this prefix (an extra token appended to a 4-part sequence would not be).
MAX_TOKENS = 4

#: Letters never used by a normal token. ``unknown`` anomalies are built from them, so they are unseen by construction.
RESERVED_LETTERS = "JQVWYZ"
#: Letters normal ids draw their second letter from (the first letter is per format, keeping pools disjoint).
NORMAL_LETTERS = "ABCDEFGHIKLMNOPRSTUX"
#: 2-digit numbers no format uses (normal numbers are 10..89); ``unknown`` numbers come from here.
RESERVED_NUMBERS = tuple(f"{i:02d}" for i in (*range(10), *range(90, 100)))

PART_KINDS = ("code", "number", "country", "id")

# The world is fixed: changing this changes every data set, so don't.
_WORLD_SEED = 20260101
# Zipf exponent of format popularity (rank r has weight r**-s).
_FORMAT_ZIPF = 1.0
# Zipf exponent of the per-record weight (how often a sequence occurred): P(1) ~ 0.83 with a = 3.
_WEIGHT_ZIPF = 3.0
_WEIGHT_MAX = 100
# Mutation attempts on one source before taking a fresh source (some sources admit few anomalies of a kind).
_ATTEMPTS = 20
_HOUR_MS = 3_600_000


# --------------------------------------------------------------------------------------------------------------------
# World specification: declarative, readable; compiled once into Part/Format objects below.


@dataclass(frozen=True)
class _Fixed:
    """A part whose values are listed; ``parent`` maps parent value -> allowed values (None: all, independent)."""

    kind: str
    values: tuple[str, ...] = ()
    parent: int | None = None
    by_parent: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    zipf: float = 1.0


@dataclass(frozen=True)
class _Numbers:
    """2-digit numbers from an inclusive range, or from a range chosen by the parent part's value."""

    lo_hi: tuple[int, int] | None = None
    parent: int | None = None
    by_parent: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    zipf: float = 0.8


@dataclass(frozen=True)
class _Ids:
    """A pool of ``size`` ids whose first letter is one of ``first``; split into slices per parent value if any."""

    first: str
    size: int
    parent: int | None = None
    zipf: float = 1.2


def _codes(*values: str, zipf: float = 1.0) -> _Fixed:
    return _Fixed("code", values, zipf=zipf)


def _countries(*values: str, zipf: float = 1.0) -> _Fixed:
    return _Fixed("country", values, zipf=zipf)


_Spec = _Fixed | _Numbers | _Ids

# Order = popularity rank (first is most frequent). Comments give an example sequence.
_SPECS: tuple[tuple[str, tuple[_Spec, ...]], ...] = (
    # DF 36 FR GX567 - order code: the number range depends on the code, the id pool on the country.
    (
        "order",
        (
            _codes("DF", "DK", "DX"),
            _Numbers(parent=0, by_parent={"DF": (30, 39), "DK": (40, 46), "DX": (47, 52)}),
            _countries("FR", "DE", "IT", "ES", "NL", "BE", "AT", "PL"),
            _Ids(first="GH", size=200, parent=2),
        ),
    ),
    # SP US KB204 66 - shipment: id pool by country, number range by code (the parent comes first, not adjacent).
    (
        "shipment",
        (
            _codes("SH", "SP", "SR", "SX"),
            _countries("US", "CA", "MX", "BR", "AR", "CL"),
            _Ids(first="KL", size=140, parent=1),
            _Numbers(parent=0, by_parent={"SH": (60, 64), "SP": (65, 68), "SR": (69, 71), "SX": (72, 72)}),
        ),
    ),
    # MC TA310 IN 14 - device: the device id pool depends on the model code; number independent.
    (
        "device",
        (
            _codes("MB", "MC", "MK"),
            _Ids(first="TU", size=110, parent=0),
            _countries("IN", "CN", "KR", "SG", "HK", "TH"),
            _Numbers(lo_hi=(10, 17)),
        ),
    ),
    # TK 23 RS118 - ticket, 3 parts: number range and id pool both depend on the ticket code.
    (
        "ticket",
        (
            _codes("TK", "TC"),
            _Numbers(parent=0, by_parent={"TK": (20, 25), "TC": (26, 29)}),
            _Ids(first="RS", size=70, parent=0),
        ),
    ),
    # RT GB LT 84 - route: the destination set depends on the origin; destinations are their own vocabulary.
    (
        "route",
        (
            _codes("RT", "RL", "RX"),
            _countries("GB", "IE", "FI", "NO", "SE"),
            _Fixed(
                "country",
                parent=1,
                by_parent={
                    "GB": ("EE", "LT", "LU", "IS"),
                    "IE": ("IS", "HR", "SI", "EE"),
                    "FI": ("EE", "LU", "RO", "HU"),
                    "NO": ("IS", "LT", "BG", "SK"),
                    "SE": ("LT", "LU", "SK", "HR", "SI"),
                },
            ),
            _Numbers(lo_hi=(80, 89)),
        ),
    ),
    # 55 77 BX - batch, 3 parts starting with numbers (independent parts); 60..62 overlap shipment's numbers.
    (
        "batch",
        (
            _Numbers(lo_hi=(53, 62)),
            _Numbers(lo_hi=(73, 79)),
            _codes("BX", "BP", "BK"),
        ),
    ),
    # AC TR 47 OK - account: the status code depends on the account type; 44..49 overlap order's DK/DX numbers.
    (
        "account",
        (
            _codes("AC", "AM", "AX"),
            _countries("MA", "EG", "TR", "GR"),
            _Numbers(lo_hi=(44, 49)),
            _Fixed("code", parent=0, by_parent={"AC": ("OK", "PD"), "AM": ("OK", "NA", "HL"), "AX": ("PD", "HL")}),
        ),
    ),
    # MN512 LO 18 AU - sensor: the id comes first; number range by level code, overlapping device and route numbers.
    (
        "sensor",
        (
            _Ids(first="MN", size=90),
            _codes("HI", "LO", "MD"),
            _Numbers(parent=1, by_parent={"HI": (86, 89), "LO": (18, 19), "MD": (15, 17)}),
            _countries("AU", "CH", "PT", "IL", "PH"),
        ),
    ),
)


# --------------------------------------------------------------------------------------------------------------------
# Compiled world.


@dataclass(frozen=True, eq=False)
class Part:
    """One position of a format.

    ``values`` lists every value the part can take (fixed order). ``probs`` is the *marginal* probability of each
    value (used when the part is independent, and to draw a "typical" token of this part for ``foreign``/``extra``).
    A dependent part (``parent`` is the index of another part of the same format, itself independent) is sampled from
    ``choices[parent_value_index] = (indices into values, probabilities)``; ``allowed[parent_token]`` is the set used
    by the membership test.
    """

    kind: str
    values: tuple[str, ...]
    probs: np.ndarray
    parent: int | None
    choices: tuple[tuple[np.ndarray, np.ndarray], ...]
    allowed: Mapping[str, frozenset[str]]
    value_set: frozenset[str]
    cdf: np.ndarray
    values_arr: np.ndarray

    def accepts(self, token: str, tokens: Sequence[str]) -> bool:
        """Whether ``token`` may stand at this part given the other ``tokens`` of the same sequence."""
        if self.parent is None:
            return token in self.value_set
        return token in self.allowed.get(tokens[self.parent], frozenset())


@dataclass(frozen=True, eq=False)
class Format:
    """A template: ``name``, its ``parts`` and its popularity ``prob`` among formats."""

    name: str
    parts: tuple[Part, ...]
    prob: float

    def accepts(self, tokens: Sequence[str]) -> bool:
        """Exact test: can the normal generator produce ``tokens`` from this format?"""
        return len(tokens) == len(self.parts) and all(
            p.accepts(t, tokens) for p, t in zip(self.parts, tokens, strict=True)
        )


def _zipf(k: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf probabilities over ``k`` values with ranks shuffled, so the listed first value is not always the top."""
    ranks = rng.permutation(k) + 1.0
    w = ranks**-s
    return w / w.sum()


def _make_ids(first: str, size: int, rng: np.random.Generator) -> list[str]:
    """``size`` distinct ids: a letter of ``first``, a normal letter, 3 digits (order of first draw)."""
    out: dict[str, None] = {}
    while len(out) < size:
        a = first[int(rng.integers(len(first)))]
        b = NORMAL_LETTERS[int(rng.integers(len(NORMAL_LETTERS)))]
        out.setdefault(f"{a}{b}{int(rng.integers(1000)):03d}")
    return list(out)


def _numbers(lo_hi: tuple[int, int]) -> tuple[str, ...]:
    return tuple(f"{i:02d}" for i in range(lo_hi[0], lo_hi[1] + 1))


def _compile_part(spec: _Spec, roots: Mapping[int, Part], rng: np.random.Generator) -> Part:
    """Build a Part; ``roots`` holds the already compiled independent parts of the format (possible parents)."""
    parent = spec.parent
    # Values per parent value (or a single group for an independent part).
    if isinstance(spec, _Fixed):
        kind = spec.kind
        groups = [spec.values] if parent is None else [tuple(spec.by_parent[v]) for v in roots[parent].values]
    elif isinstance(spec, _Numbers):
        kind = "number"
        groups = (
            [_numbers(spec.lo_hi)] if parent is None else [_numbers(spec.by_parent[v]) for v in roots[parent].values]
        )
    elif isinstance(spec, _Ids):
        kind = "id"
        n_groups = 1 if parent is None else len(roots[parent].values)
        pool = _make_ids(spec.first, spec.size, rng)
        groups = [tuple(g) for g in np.array_split(np.array(pool, dtype=object), n_groups)]
    else:  # pragma: no cover - spec table is static
        raise TypeError(spec)
    zipf_s = spec.zipf
    values = tuple(dict.fromkeys(v for g in groups for v in g))  # union, first-appearance order
    index = {v: i for i, v in enumerate(values)}
    group_probs = [_zipf(len(g), zipf_s, rng) for g in groups]
    parent_probs = np.ones(1) if parent is None else roots[parent].probs
    probs = np.zeros(len(values))
    choices = []
    for g, gp, pp in zip(groups, group_probs, parent_probs, strict=True):
        idx = np.array([index[v] for v in g], dtype=np.intp)
        np.add.at(probs, idx, pp * gp)
        choices.append((idx, gp))
    allowed = {} if parent is None else {pv: frozenset(g) for pv, g in zip(roots[parent].values, groups, strict=True)}
    cdf = np.cumsum(probs)
    cdf /= cdf[-1]
    return Part(
        kind, values, probs, parent, tuple(choices), allowed, frozenset(values), cdf, np.array(values, dtype=object)
    )


def _compile_world() -> tuple[Format, ...]:
    rng = np.random.default_rng(_WORLD_SEED)
    ranks = np.arange(1, len(_SPECS) + 1, dtype=float) ** -_FORMAT_ZIPF
    fprobs = ranks / ranks.sum()
    formats = []
    for (name, specs), fp in zip(_SPECS, fprobs, strict=True):
        roots: dict[int, Part] = {}
        for i, s in enumerate(specs):  # independent parts first: they are the parents
            if s.parent is None:
                roots[i] = _compile_part(s, roots, rng)
        parts = [roots[i] if i in roots else _compile_part(s, roots, rng) for i, s in enumerate(specs)]
        formats.append(Format(name, tuple(parts), float(fp)))
    return tuple(formats)


#: The fixed set of templates, most popular first.
FORMATS: tuple[Format, ...] = _compile_world()
_FORMAT_PROBS = np.array([f.prob for f in FORMATS])
_BY_LENGTH: dict[int, tuple[Format, ...]] = {
    n: tuple(f for f in FORMATS if len(f.parts) == n) for n in sorted({len(f.parts) for f in FORMATS})
}
# For `foreign`: per (format, position), the parts of OTHER formats with the same kind (all parts if none has it).
_DONORS: tuple[tuple[tuple[Part, ...], ...], ...] = tuple(
    tuple(
        tuple(q for g in FORMATS if g is not f for q in g.parts if q.kind == p.kind)
        or tuple(q for g in FORMATS if g is not f for q in g.parts)
        for p in f.parts
    )
    for f in FORMATS
)


def _check_world() -> None:
    """Invariants the anomaly guarantees rely on; cheap, run once at import."""
    assert all(3 <= len(f.parts) <= MAX_TOKENS for f in FORMATS)
    owner: dict[str, tuple[str, int]] = {}
    for f in FORMATS:
        for i, p in enumerate(f.parts):
            assert p.parent is None or f.parts[p.parent].parent is None, "parent chains are depth 1"
            for v in p.values:
                assert not set(v) & set(RESERVED_LETTERS) and v not in RESERVED_NUMBERS, v
                if p.kind != "number":  # numbers may overlap on purpose; every other token has one owner
                    assert owner.setdefault(v, (f.name, i)) == (f.name, i), (v, owner[v], f.name, i)


_check_world()


def normal_vocabulary() -> frozenset[str]:
    """Every token a normal sequence can contain."""
    return frozenset(v for f in FORMATS for p in f.parts for v in p.values)


def formats_of(sequence: str | Sequence[str]) -> tuple[str, ...]:
    """Names of the formats that can produce ``sequence`` (a string split on single spaces, or tokens).

    Exact: respects every correlation, so ``formats_of(s) == ()`` means no normal sequence equals ``s``.
    """
    tokens = sequence.split(" ") if isinstance(sequence, str) else tuple(sequence)
    return tuple(f.name for f in _BY_LENGTH.get(len(tokens), ()) if f.accepts(tokens))


def is_normal(sequence: str | Sequence[str]) -> bool:
    """Whether the normal generator can produce ``sequence`` (with non-zero probability)."""
    return bool(formats_of(sequence))


def _visible_anomaly(src: tuple[str, ...], cand: tuple[str, ...]) -> bool:
    """Accept ``cand`` only if it and the prefix the vectorizer keeps are both different from src and not normal."""
    view = cand[:MAX_TOKENS]
    return cand != src and view != src[:MAX_TOKENS] and not is_normal(cand) and not is_normal(view)


# --------------------------------------------------------------------------------------------------------------------
# Generator.


class SeedLikeGenerator:
    """Samples normal sequences, labeled anomalies and timestamped streams; deterministic from ``seed``.

    ``seed`` is anything ``numpy.random.default_rng`` accepts as entropy (an int, or a sequence of ints to derive
    independent streams, as :func:`write_dataset` does). Each call consumes the generator's random stream, so the
    same sequence of calls on the same seed gives the same results.
    """

    def __init__(self, seed: int | Sequence[int]) -> None:
        self._rng = np.random.default_rng(seed)

    # ---------------------------------------------------------------------------------------------------- normal
    def _sample(self, n: int) -> tuple[np.ndarray, list[tuple[str, ...]]]:
        """``n`` normal sequences as (format index per row, token tuples); vectorized per format and part."""
        rng = self._rng
        fmt = rng.choice(len(FORMATS), size=n, p=_FORMAT_PROBS)
        out: list[tuple[str, ...]] = [()] * n
        for fi, f in enumerate(FORMATS):  # fixed order keeps the random stream deterministic
            rows = np.flatnonzero(fmt == fi)
            m = rows.size
            if m == 0:
                continue
            idx: list[np.ndarray | None] = [None] * len(f.parts)
            for order_pass in (True, False):  # parents (independent parts) first, then dependent ones
                for i, p in enumerate(f.parts):
                    if (p.parent is None) != order_pass:
                        continue
                    if p.parent is None:
                        idx[i] = rng.choice(len(p.values), size=m, p=p.probs)
                        continue
                    col = np.empty(m, dtype=np.intp)
                    pidx = idx[p.parent]
                    for pv, (cidx, cprobs) in enumerate(p.choices):
                        sel = np.flatnonzero(pidx == pv)
                        if sel.size:
                            col[sel] = cidx[rng.choice(len(cidx), size=sel.size, p=cprobs)]
                    idx[i] = col
            cols = [p.values_arr[ix] for p, ix in zip(f.parts, idx, strict=True)]
            for r, toks in zip(rows.tolist(), zip(*cols, strict=True), strict=True):
                out[r] = toks
        return fmt, out

    def normal(self, n: int) -> list[str]:
        """``n`` normal sequences (tokens joined by single spaces), formats and values Zipf-distributed."""
        _check_count("n", n)
        return [" ".join(t) for t in self._sample(n)[1]]

    # -------------------------------------------------------------------------------------------------- abnormal
    def _draw(self, part: Part) -> str:
        """One value of ``part`` from its marginal distribution (a typical token of that part)."""
        i = int(np.searchsorted(part.cdf, self._rng.random(), side="right"))
        return part.values[min(i, len(part.values) - 1)]

    def _foreign(self, f: int, src: tuple[str, ...]) -> tuple[str, ...] | None:
        # One part takes a token of the same kind from another format; it must not be valid at this position here
        # (numbers overlap between some formats, so the draw can be rejected).
        pos = int(self._rng.integers(len(src)))
        donors = _DONORS[f][pos]
        tok = self._draw(donors[int(self._rng.integers(len(donors)))])
        if tok in FORMATS[f].parts[pos].value_set:
            return None
        return src[:pos] + (tok,) + src[pos + 1 :]

    def _unknown(self, f: int, src: tuple[str, ...]) -> tuple[str, ...]:
        # Same shape as the replaced part, built from reserved letters/numbers that no normal token uses.
        rng = self._rng
        pos = int(rng.integers(len(src)))
        kind = FORMATS[f].parts[pos].kind
        if kind == "number":
            tok = RESERVED_NUMBERS[int(rng.integers(len(RESERVED_NUMBERS)))]
        else:
            a, b = (RESERVED_LETTERS[int(k)] for k in rng.integers(len(RESERVED_LETTERS), size=2))
            tok = f"{a}{b}{int(rng.integers(1000)):03d}" if kind == "id" else f"{a}{b}"
        return src[:pos] + (tok,) + src[pos + 1 :]

    def _missing(self, f: int, src: tuple[str, ...]) -> tuple[str, ...]:
        pos = int(self._rng.integers(len(src)))
        return src[:pos] + src[pos + 1 :]

    def _extra(self, f: int, src: tuple[str, ...]) -> tuple[str, ...]:
        # Insert before any token or at the end; the end is rejected for 4-part sources by the visibility check
        # (the vectorizer would cut it off), so inserts land inside the sequence. The token is valid in this format
        # but comes from another position than the one it lands on.
        rng = self._rng
        n = len(src)
        ins = int(rng.integers(n + 1))
        others = [j for j in range(n) if j != ins]
        j = others[int(rng.integers(len(others)))]
        return src[:ins] + (self._draw(FORMATS[f].parts[j]),) + src[ins:]

    def _reordered(self, f: int, src: tuple[str, ...]) -> tuple[str, ...] | None:
        # Swap two parts of different value: the bag of tokens is unchanged, only positions move.
        pairs = [(i, j) for i in range(len(src)) for j in range(i + 1, len(src)) if src[i] != src[j]]
        if not pairs:
            return None
        i, j = pairs[int(self._rng.integers(len(pairs)))]
        out = list(src)
        out[i], out[j] = out[j], out[i]
        return tuple(out)

    _MUTATORS: ClassVar[Mapping[str, Callable[..., tuple[str, ...] | None]]] = {
        "foreign": _foreign,
        "unknown": _unknown,
        "missing": _missing,
        "extra": _extra,
        "reordered": _reordered,
    }

    def abnormal_pairs(self, n: int, kind: str) -> list[tuple[str, str]]:
        """``n`` (source, anomaly) pairs of ``kind``: the normal sequence each anomaly was made from, and the anomaly.

        Every anomaly differs from its source, no format can produce it, and both hold for its first
        :data:`MAX_TOKENS` tokens too. A source that yields no acceptable anomaly within a few attempts is replaced by
        a fresh normal source.
        """
        _check_count("n", n)
        if kind not in self._MUTATORS:
            raise ConfigError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        mutate = self._MUTATORS[kind]
        fmt, sources = self._sample(n)
        out: list[tuple[str, str]] = []
        for fi, src in zip(fmt.tolist(), sources, strict=True):
            for _resample in range(1000):
                for _ in range(_ATTEMPTS):
                    cand = mutate(self, fi, src)
                    if cand is not None and _visible_anomaly(src, cand):
                        break
                else:
                    f1, s1 = self._sample(1)
                    fi, src = int(f1[0]), s1[0]
                    continue
                break
            else:  # pragma: no cover - would mean the world admits no anomaly of this kind
                raise RuntimeError(f"cannot make a {kind!r} anomaly")
            out.append((" ".join(src), " ".join(cand)))
        return out

    def abnormal(self, n: int, kind: str) -> list[str]:
        """``n`` anomalies of ``kind`` (one of :data:`KINDS`); see :meth:`abnormal_pairs` for the guarantees.

        * ``foreign``: one part replaced by a token of the same part kind from another format, invalid at that
          position of this format.
        * ``unknown``: one part replaced by a never-seen token of the same shape (reserved letters or numbers).
        * ``missing``: one part removed (any position): one token fewer.
        * ``extra``: a valid token of the same format, taken from another position, inserted inside the sequence
          (or appended to a 3-part sequence): one token more.
        * ``reordered``: two parts of different value swapped: same multiset of tokens, different order.
        """
        return [a for _, a in self.abnormal_pairs(n, kind)]

    # ---------------------------------------------------------------------------------------------------- stream
    def stream(
        self,
        start_ms: int,
        hours: int,
        records_per_hour: int,
        anomaly_rate: float = 0.01,
        abnormal_hours: Mapping[int, float] | None = None,
    ) -> pd.DataFrame:
        """A timestamped stream of ``hours * records_per_hour`` records starting at ``start_ms`` (UTC epoch ms).

        Each hour has exactly ``records_per_hour`` records with timestamps uniform in ``[start, start + 1 h)`` of
        that hour; rows are sorted by timestamp (stable). Each record is abnormal with probability ``anomaly_rate``,
        or ``abnormal_hours[h]`` for hour index ``h`` (0-based) when given; abnormal kinds are uniform over
        :data:`KINDS`. ``weight`` is how often the sequence occurred: Zipf(3) integers capped at 100, mostly 1.

        Columns: ``timestamp_ms`` int64, ``sequence`` str, ``weight`` int64 (>= 1), ``label`` int64 (0 normal,
        1 abnormal), ``kind`` str ("" for normal).
        """
        _check_count("hours", hours)
        _check_count("records_per_hour", records_per_hour)
        _check_rate("anomaly_rate", anomaly_rate)
        rates = np.full(hours, float(anomaly_rate))
        for h, r in sorted((abnormal_hours or {}).items()):
            if not isinstance(h, (int, np.integer)) or not 0 <= h < hours:
                raise ConfigError(f"abnormal_hours keys must be hour indexes in [0, {hours}), got {h!r}")
            _check_rate(f"abnormal_hours[{h}]", r)
            rates[h] = float(r)
        rng = self._rng
        total = hours * records_per_hour
        hour = np.repeat(np.arange(hours, dtype=np.int64), records_per_hour)
        ts = int(start_ms) + hour * _HOUR_MS + rng.integers(0, _HOUR_MS, size=total, dtype=np.int64)
        label = (rng.random(total) < rates[hour]).astype(np.int64)
        ab_rows = np.flatnonzero(label)
        ab_kind = rng.integers(len(KINDS), size=ab_rows.size)
        weight = np.minimum(rng.zipf(_WEIGHT_ZIPF, size=total), _WEIGHT_MAX).astype(np.int64)

        seq = np.empty(total, dtype=object)
        kind_col = np.full(total, "", dtype=object)
        seq[np.flatnonzero(label == 0)] = self.normal(total - ab_rows.size)
        for k, name in enumerate(KINDS):
            rows = ab_rows[ab_kind == k]
            if rows.size:
                seq[rows] = self.abnormal(rows.size, name)
                kind_col[rows] = name
        order = np.argsort(ts, kind="stable")
        return pd.DataFrame(
            {
                "timestamp_ms": ts[order],
                "sequence": seq[order],
                "weight": weight[order],
                "label": label[order],
                "kind": kind_col[order],
            }
        )


def _check_count(name: str, value: object) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"{name} must be a non-negative integer, got {value!r}")


def _check_rate(name: str, value: object) -> None:
    if not isinstance(value, (int, float, np.floating, np.integer)) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{name} must be a rate in [0, 1], got {value!r}")


def _epoch_ms(start: str | int) -> int:
    """UTC epoch milliseconds from an ISO 8601 string (``Z`` or an offset; naive means UTC) or an int (ms)."""
    if isinstance(start, (int, np.integer)) and not isinstance(start, bool):
        return int(start)
    text = str(start)
    if text[-1:] in ("Z", "z"):  # Python 3.10's fromisoformat rejects the Z suffix
        text = text[:-1] + "+00:00"
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"start must be an ISO 8601 time such as 2026-01-01T00:00:00Z, got {start!r}") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return (t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


# Independent random streams per artifact: changing one size (say n_train) leaves the other files unchanged.
_SALT = {"train": 1, "test_normal": 2, "test_abnormal": 3, "test_mix": 4, "stream": 5}


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(f"{s}\n" for s in lines)


def write_dataset(
    outdir: str | Path,
    seed: int = 0,
    n_train: int = 50_000,
    n_test_normal: int = 5_000,
    n_test_abnormal_per_kind: int = 1_000,
    hours: int = 0,
    records_per_hour: int = 10_000,
    start: str | int = "2026-01-01T00:00:00Z",
    abnormal_hours: Mapping[int, float] | None = None,
    anomaly_rate: float = 0.01,
) -> dict[str, Path]:
    """Write a data set to ``outdir`` (created if needed) and return ``{file name: path}`` of the files written.

    * ``train.txt``: ``n_train`` normal sequences, one per line (UTF-8, LF).
    * ``test_normal.txt``: ``n_test_normal`` normal sequences (an independent draw; may repeat training sequences,
      as real traffic does).
    * ``test_abnormal_<kind>.txt``: ``n_test_abnormal_per_kind`` anomalies of each kind.
    * ``test_abnormal.txt``: all of those, shuffled together.
    * ``test.csv``: ``sequence,label,kind`` for the normal and abnormal test sequences, shuffled; ``kind`` is empty
      for normal rows (read it with ``keep_default_na=False`` to get "" rather than NaN).
    * ``stream.csv`` (only if ``hours > 0``): ``timestamp_ms,sequence,weight,label,kind`` from
      :meth:`SeedLikeGenerator.stream` starting at ``start`` (ISO 8601, naive means UTC; or epoch ms).

    Same arguments give byte-identical files. Each artifact has its own random stream derived from ``seed``.
    """
    for name, value in (
        ("n_train", n_train),
        ("n_test_normal", n_test_normal),
        ("n_test_abnormal_per_kind", n_test_abnormal_per_kind),
        ("hours", hours),
        ("records_per_hour", records_per_hour),
    ):
        _check_count(name, value)
    start_ms = _epoch_ms(start)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    def gen(artifact: str) -> SeedLikeGenerator:
        return SeedLikeGenerator([int(seed), _SALT[artifact]])

    paths["train.txt"] = out / "train.txt"
    _write_lines(paths["train.txt"], gen("train").normal(n_train))
    test_normal = gen("test_normal").normal(n_test_normal)
    paths["test_normal.txt"] = out / "test_normal.txt"
    _write_lines(paths["test_normal.txt"], test_normal)

    g = gen("test_abnormal")
    by_kind = {k: g.abnormal(n_test_abnormal_per_kind, k) for k in KINDS}
    for k in KINDS:
        paths[f"test_abnormal_{k}.txt"] = out / f"test_abnormal_{k}.txt"
        _write_lines(paths[f"test_abnormal_{k}.txt"], by_kind[k])
    ab_seq = [s for k in KINDS for s in by_kind[k]]
    ab_kind = [k for k in KINDS for _ in by_kind[k]]
    mix = np.random.default_rng([int(seed), _SALT["test_mix"]])
    perm = mix.permutation(len(ab_seq))
    paths["test_abnormal.txt"] = out / "test_abnormal.txt"
    _write_lines(paths["test_abnormal.txt"], [ab_seq[i] for i in perm])

    test = pd.DataFrame(
        {
            "sequence": test_normal + ab_seq,
            "label": np.r_[np.zeros(len(test_normal), np.int64), np.ones(len(ab_seq), np.int64)],
            "kind": [""] * len(test_normal) + ab_kind,
        }
    )
    test = test.iloc[mix.permutation(len(test))].reset_index(drop=True)
    paths["test.csv"] = out / "test.csv"
    test.to_csv(paths["test.csv"], index=False, lineterminator="\n", encoding="utf-8")

    if hours > 0:
        df = gen("stream").stream(start_ms, hours, records_per_hour, anomaly_rate, abnormal_hours)
        paths["stream.csv"] = out / "stream.csv"
        df.to_csv(paths["stream.csv"], index=False, lineterminator="\n", encoding="utf-8")
    return paths
