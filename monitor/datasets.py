"""Data for the quality harness: synthetic code worlds, Loghub message extraction and anomaly recipes. Pure, no I/O
beyond reading a log file, no TensorFlow.

**Code worlds** are written from another idea than :mod:`monitor.generate`: there, a handful of hand-written 4-part
templates; here, a world is *drawn* from a :class:`DataConfig`. It has ``formats`` formats (Zipf popular). A format is
a list of fields, and a field has its own shape (``word``, ``number``, ``hex`` or ``dotted``) and its own pool of
values (its cardinality; a few fields are constants, the rest share the ``vocab`` budget unevenly, and a field may
reuse the pool of an earlier field of the same shape, as real systems reuse small numbers or host names). Values are
drawn with Zipf popularity of exponent ``zipf`` (0 = uniform). With a fixed length every format has exactly that many
fields; with a length range a format has 1–4 head fields and a tail field repeated a per-line number of times (a list
of items), each format within its own sub-range of lengths.

**Anomaly recipes** (:data:`RECIPES`) turn a held-out normal line into an abnormal one; they work on the
whitespace-separated fields of any line, synthetic or real. ``intensity`` is the number of edits per line (1 = one
field changed). An edit is only kept if the line still differs from its source after a Keras-like canonical form
(lower case, every run of non-alphanumerics a separator) and is not a normal line (exact membership in a code world's
support, or in the set of all lines of a log file).

* ``foreign``: a whole line of another system (another code world of the same configuration; another Loghub system).
* ``unseen``: a word (letters only) replaced by a word never seen in training (any field if the line has no word).
* ``dropped``: a field removed (the line keeps at least one field).
* ``appended``: a field appended at the end: a token seen in training, so only the structure is new.
* ``reordered``: two fields of different value swapped: same tokens, new order.
* ``wrong_shape``: a field replaced by a *known* token of another shape (a number where a word was, a word where a
  number, hex or dotted value was); a constructed value when training has no token of the other shape.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from monitor.errors import ConfigError

SHAPES = ("word", "number", "hex", "dotted")
RECIPES = ("foreign", "unseen", "dropped", "appended", "reordered", "wrong_shape")

_CONSONANTS = "bcdfghklmnprstvz"
_VOWELS = "aeiou"
_HEX = "0123456789abcdef"
_CANON = re.compile(r"[^0-9a-z]+")


def canonical(line: str) -> tuple[str, ...]:
    """The tokens any Keras-like tokenizer sees: lower case, every run of non-alphanumerics a separator."""
    return tuple(t for t in _CANON.split(line.lower()) if t)


def shape_of(token: str) -> str:
    """``number`` (digits), ``hex`` (hex digits with a digit and a letter, or 0x…), ``dotted`` (parts joined by
    dots), ``word`` (letters only) or ``other``."""
    t = token.lower()
    if t.isdigit():
        return "number"
    if "." in t.strip(".") and all(p.isalnum() for p in t.strip(".").split(".")):
        return "dotted"
    if (t.startswith("0x") and len(t) > 2 and all(c in _HEX for c in t[2:])) or (
        all(c in _HEX for c in t) and any(c.isdigit() for c in t) and any(c.isalpha() for c in t)
    ):
        return "hex"
    if t.isalpha():
        return "word"
    return "other"


# ---------------------------------------------------------------------------------------------------- configurations


@dataclass(frozen=True)
class DataConfig:
    """One synthetic data configuration. ``length`` is (min, max) fields per line; equal bounds mean a fixed length.

    ``seed`` draws the world and every sample; it also decides the half: even seeds tune, odd seeds report.
    """

    name: str
    seed: int
    vocab: int
    length: tuple[int, int]
    shapes: tuple[str, ...]
    zipf: float
    formats: int
    n_train: int
    intensity: int = 1
    n_test_normal: int = 2000
    n_abnormal_per_kind: int = 300

    def __post_init__(self) -> None:
        lo, hi = self.length
        if not 1 <= lo <= hi:
            raise ConfigError(f"{self.name}: length must be 1 <= min <= max, got {self.length}")
        if not self.shapes or any(s not in SHAPES for s in self.shapes):
            raise ConfigError(f"{self.name}: shapes must be among {', '.join(SHAPES)}, got {self.shapes}")
        if self.vocab < 2 * self.formats or self.formats < 1 or self.intensity < 1 or self.zipf < 0:
            raise ConfigError(f"{self.name}: vocab >= 2 formats, formats >= 1, intensity >= 1 and zipf >= 0")

    @property
    def half(self) -> str:
        return half_of(self.seed)

    def params(self) -> dict:
        lo, hi = self.length
        return {
            "vocab": self.vocab,
            "length": f"{lo}" if lo == hi else f"{lo}-{hi}",
            "shapes": "+".join(self.shapes),
            "zipf": self.zipf,
            "formats": self.formats,
            "n_train": self.n_train,
            "intensity": self.intensity,
        }


def half_of(seed: int) -> str:
    """The fixed split of configurations: even seeds are the tuning half, odd seeds the reporting half."""
    return "tuning" if seed % 2 == 0 else "reporting"


# ---------------------------------------------------------------------------------------------------- code worlds


def _zipf_p(n: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """Popularity of ``n`` values: rank r has weight r**-s; ranks are assigned to values at random."""
    p = np.arange(1, n + 1, dtype=np.float64) ** -s
    p /= p.sum()
    return p[rng.permutation(n)]


def _word(rng: np.random.Generator, syllables: int) -> str:
    return "".join(_CONSONANTS[rng.integers(len(_CONSONANTS))] + _VOWELS[rng.integers(len(_VOWELS))] for _ in range(syllables))


def _value_maker(shape: str, rng: np.random.Generator, cardinality: int) -> Callable[[], str]:
    """A maker of random values of one field's style (each field has its own digits, prefix, parts…)."""
    if shape == "word":
        syl = int(rng.integers(1, 4)) + (1 if cardinality > 200 else 0)
        return lambda: _word(rng, syl + int(rng.integers(0, 2)))
    if shape == "number":
        digits = max(int(rng.integers(1, 7)), math.ceil(math.log10(2 * cardinality + 1)))
        lo = 0 if digits == 1 else 10 ** (digits - 1)
        return lambda: str(int(rng.integers(lo, 10**digits)))
    if shape == "hex":
        n = max(int(rng.integers(4, 13)), math.ceil(math.log(4 * cardinality + 1, 16)) + 1)
        prefix = "0x" if rng.random() < 0.5 else ""

        def make_hex() -> str:
            while True:
                h = "".join(_HEX[i] for i in rng.integers(16, size=n))
                if prefix or (any(c.isdigit() for c in h) and any(c.isalpha() for c in h)):
                    return prefix + h

        return make_hex
    # dotted: an IPv4-like address or a dotted name such as ``kavo.ne.12``
    if rng.random() < 0.4:
        net = [str(int(rng.integers(1, 256))), str(int(rng.integers(0, 256)))]
        return lambda: ".".join(net + [str(int(rng.integers(0, 256))), str(int(rng.integers(1, 255)))])
    parts = int(rng.integers(2, 5))
    stem = _word(rng, 2)
    return lambda: ".".join([stem] + [_word(rng, 1) if rng.random() < 0.5 else str(int(rng.integers(100))) for _ in range(parts - 1)])


def _new_values(shape: str, n: int, used: set[str], rng: np.random.Generator) -> list[str]:
    """``n`` values of one field style, none in ``used`` (which grows). A style whose space runs out (few digits,
    short words) is replaced by a roomier one, so a field may have two styles, as real fields sometimes do."""
    values: list[str] = []
    room = n
    while len(values) < n:
        make, misses = _value_maker(shape, rng, room), 0
        while len(values) < n and misses < 20 * n + 100:
            v = make()
            if v in used:
                misses += 1
                continue
            used.add(v)
            values.append(v)
        room *= 10
    return values


@dataclass
class _Field:
    shape: str
    values: list[str]
    p: np.ndarray
    value_set: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.value_set = frozenset(self.values)


@dataclass
class _Format:
    head: list[_Field]
    tail: _Field | None
    lengths: tuple[int, int]  # total fields per line, inclusive


class CodeWorld:
    """The normal traffic of one synthetic system, drawn from a :class:`DataConfig` and a world seed."""

    def __init__(self, config: DataConfig, world_seed: int | Sequence[int] | None = None):
        self.config = config
        rng = np.random.default_rng([0x5E9, config.seed] if world_seed is None else world_seed)
        lo, hi = config.length
        shapes = list(config.shapes)
        specs: list[tuple[list[str], str | None, tuple[int, int]]] = []
        for _ in range(config.formats):
            if lo == hi:
                head = lo
                specs.append(([shapes[i] for i in rng.integers(len(shapes), size=head)], None, (lo, lo)))
                continue
            a, b = sorted(int(x) for x in rng.integers(lo, hi + 1, size=2))
            head = int(rng.integers(1, min(4, a) + 1))
            tail = shapes[int(rng.integers(len(shapes)))] if b > head else None
            specs.append(([shapes[i] for i in rng.integers(len(shapes), size=head)], tail, (a, b)))
        # Cardinalities: about a fifth of head fields are constants; the rest share the vocabulary unevenly.
        slots = [(f, i) for f, (head, _, _) in enumerate(specs) for i in range(len(head))] + [
            (f, -1) for f, (_, tail, _) in enumerate(specs) if tail
        ]
        const = rng.random(len(slots)) < 0.2
        const[[i for i, (_, pos) in enumerate(slots) if pos == -1]] = False
        if const.all():
            const[0] = False
        budget = max(config.vocab - int(const.sum()), int((~const).sum()))
        share = rng.dirichlet(np.full(int((~const).sum()), 1.5))
        card = np.ones(len(slots), dtype=np.int64)
        card[~const] = np.maximum(1, np.round(share * budget)).astype(np.int64)
        used: set[str] = set()
        pools: dict[str, list[list[str]]] = {s: [] for s in SHAPES}
        fields: dict[tuple[int, int], _Field] = {}
        for k, (f, pos) in enumerate(slots):
            head, tail, _ = specs[f]
            shape = tail if pos == -1 else head[pos]
            c = int(card[k])
            if pools[shape] and c > 1 and rng.random() < 0.25:
                values = pools[shape][int(rng.integers(len(pools[shape])))]  # a reused pool (shared values)
            else:
                values = _new_values(shape, c, used, rng)
                pools[shape].append(values)
            fields[(f, pos)] = _Field(shape, values, _zipf_p(len(values), config.zipf, rng))
        self.formats = [
            _Format([fields[(f, i)] for i in range(len(head))], fields.get((f, -1)), lengths)
            for f, (head, _, lengths) in enumerate(specs)
        ]
        self.format_p = _zipf_p(config.formats, config.zipf, rng)
        self.tokens = frozenset(v for fm in self.formats for fl in [*fm.head, *([fm.tail] if fm.tail else [])] for v in fl.values)

    def sample(self, n: int, seed: int | Sequence[int]) -> list[str]:
        """``n`` normal lines, drawn with ``seed`` (numpy ``default_rng``), in random order."""
        rng = np.random.default_rng(seed)
        which = rng.choice(len(self.formats), size=n, p=self.format_p)
        out = np.empty(n, dtype=object)
        for f, fm in enumerate(self.formats):
            rows = np.flatnonzero(which == f)
            if not rows.size:
                continue
            cols = [np.asarray(fl.values, dtype=object)[rng.choice(len(fl.values), size=rows.size, p=fl.p)] for fl in fm.head]
            head = [" ".join(t) for t in zip(*cols)] if cols else [""] * rows.size
            if fm.tail is None:
                out[rows] = head
                continue
            a, b = fm.lengths
            reps = rng.integers(max(a - len(fm.head), 0), b - len(fm.head) + 1, size=rows.size)
            flat = np.asarray(fm.tail.values, dtype=object)[rng.choice(len(fm.tail.values), size=int(reps.sum()), p=fm.tail.p)]
            ends = np.cumsum(reps)
            out[rows] = [" ".join([h, *flat[e - r : e]]) if r else h for h, e, r in zip(head, ends.tolist(), reps.tolist())]
        return out.tolist()

    def is_normal(self, line: str) -> bool:
        """Whether some format can produce ``line`` exactly (the support of :meth:`sample`)."""
        toks = line.split(" ")
        n = len(toks)
        for fm in self.formats:
            a, b = fm.lengths
            h = len(fm.head)
            if not a <= n <= b or n < h:
                continue
            if all(t in fl.value_set for t, fl in zip(toks, fm.head)) and (
                n == h or (fm.tail is not None and all(t in fm.tail.value_set for t in toks[h:]))
            ):
                return True
        return False


@dataclass
class Dataset:
    """What one configuration evaluates: training lines, normal test lines and abnormal lines per kind."""

    train: list[str]
    normal: list[str]
    abnormal: dict[str, list[str]]
    info: dict = field(default_factory=dict)


def synthetic_dataset(config: DataConfig) -> Dataset:
    """Training, normal test and recipe lines for one synthetic configuration; the same config gives the same data."""
    world = CodeWorld(config)
    train = world.sample(config.n_train, [config.seed, 1])
    normal = world.sample(config.n_test_normal, [config.seed, 2])
    foreign_world = CodeWorld(config, world_seed=[0x5E9, config.seed, 7])
    foreign = [s for s in foreign_world.sample(4 * config.n_abnormal_per_kind, [config.seed, 3]) if not world.is_normal(s)]
    abnormal = make_abnormal(
        normal, train, foreign[: config.n_abnormal_per_kind], config.n_abnormal_per_kind, config.intensity,
        is_normal=world.is_normal, seed=[config.seed, 4],
    )
    return Dataset(train, normal, abnormal, {"world_tokens": len(world.tokens)})


# ---------------------------------------------------------------------------------------------------- real logs

_SYSLOG = r"\w{3}\s+\d+\s+\d\d:\d\d:\d\d\s+\S+\s+(?:(?P<process>[^\[:\s]+)(?:\[\d+\])?:\s+)?(?P<message>.*)"

#: How each Loghub system's header is cut off. The timestamp, host/node, PID, log id and the thread are dropped
#: (they vary per line without meaning a new kind of event); the process or component, the level where there is one,
#: and the whole message are kept, in that order, separated by single spaces. A syslog line without a ``process:``
#: tag keeps its whole message.
LOGHUB_HEADERS: dict[str, re.Pattern] = {
    # 134681 node-246 unix.hw state_change.unavailable 1077804742 1 Component State Change: …
    "HPC": re.compile(r"\S+\s+\S+\s+(?P<component>\S+)\s+(?P<state>\S+)\s+\d+\s+-?\d+\s+(?P<message>.*)"),
    # Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure; …
    "Linux": re.compile(_SYSLOG),
    # Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186
    "OpenSSH": re.compile(_SYSLOG),
    # 17/06/09 20:10:40 INFO executor.Executor: Running task 160.0 in stage 24.0 (TID 1155)
    "Spark": re.compile(r"\d\d/\d\d/\d\d\s+\d\d:\d\d:\d\d\s+(?P<level>\w+)\s+(?P<component>[^:\s]+):\s*(?P<message>.*)"),
    # - 1131566461 2005.11.09 dn228 Nov 9 12:01:01 dn228/dn228 crond(pam_unix)[2915]: session closed for user root
    "Thunderbird": re.compile(r"\S+\s+\d+\s+\d{4}\.\d\d\.\d\d\s+\S+\s+" + _SYSLOG),
    # 2015-07-29 17:41:44,747 - INFO  [QuorumPeer[myid=1]/0:0:…:2181:FastLeaderElection@774] - Notification time out: 3200
    "Zookeeper": re.compile(
        r"\S+\s+\S+\s+-\s+(?P<level>\w+)\s+\[.*:(?P<component>[^:\]\s]+)\]\s+-\s+(?P<message>.*)"
    ),
}
LOGHUB_SYSTEMS = tuple(LOGHUB_HEADERS)


def loghub_message(system: str, line: str) -> str | None:
    """The sequence of one log line: kept header fields and the message, whitespace-normalized; None if the header
    does not match (such lines are left out and counted)."""
    m = LOGHUB_HEADERS[system].fullmatch(line.strip())
    if m is None:
        return None
    return " ".join(" ".join(v for v in m.groupdict().values() if v).split()) or None


def read_loghub(path: str | Path, system: str) -> tuple[list[str], int]:
    """Messages of a Loghub ``<System>_2k.log`` file, in file order, and how many lines did not match the header."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    out = [loghub_message(system, s) for s in lines if s.strip()]
    return [m for m in out if m], sum(m is None for m in out)


def split_lines(lines: Sequence[str], train_share: float, seed: int | Sequence[int]) -> tuple[list[str], list[str]]:
    """A seeded (train, test) split of lines; each keeps the file order."""
    order = np.random.default_rng(seed).permutation(len(lines))
    cut = int(round(train_share * len(lines)))
    return [lines[i] for i in sorted(order[:cut])], [lines[i] for i in sorted(order[cut:])]


# ---------------------------------------------------------------------------------------------------- recipes


class _Vocab:
    """Training tokens grouped by shape, and a source of words never seen in training."""

    def __init__(self, train: Iterable[str], rng: np.random.Generator):
        tokens = sorted({t for s in train for t in s.split()})
        self.seen = set(tokens) | {c for t in tokens for c in canonical(t)}
        self.by_shape: dict[str, list[str]] = {}
        for t in tokens:
            self.by_shape.setdefault(shape_of(t), []).append(t)
        self.all = tokens
        self.rng = rng

    def unseen_word(self) -> str:
        while True:
            w = _word(self.rng, int(self.rng.integers(2, 5)))
            if w not in self.seen:
                return w

    def known(self) -> str:
        return self.all[int(self.rng.integers(len(self.all)))]

    def other_shape(self, token: str) -> str:
        """A known token of another shape than ``token`` (a word for a non-word; a number, else hex, for a word)."""
        s = shape_of(token)
        prefer = ["number", "hex", "dotted"] if s == "word" else ["word"]
        for p in prefer:
            if self.by_shape.get(p):
                pool = self.by_shape[p]
                return pool[int(self.rng.integers(len(pool)))]
        return str(int(self.rng.integers(10, 100000))) if s == "word" else self.unseen_word()


def _edit(kind: str, f: list[str], v: _Vocab, rng: np.random.Generator) -> list[str] | None:
    n = len(f)
    if kind == "unseen":
        words = [i for i, t in enumerate(f) if shape_of(t) == "word" and len(t) > 1]
        i = words[int(rng.integers(len(words)))] if words else int(rng.integers(n))
        return f[:i] + [v.unseen_word()] + f[i + 1 :]
    if kind == "dropped":
        if n < 2:
            return None
        i = int(rng.integers(n))
        return f[:i] + f[i + 1 :]
    if kind == "appended":
        return [*f, v.known()]
    if kind == "reordered":
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if canonical(f[i]) != canonical(f[j])]
        if not pairs:
            return None
        i, j = pairs[int(rng.integers(len(pairs)))]
        out = list(f)
        out[i], out[j] = out[j], out[i]
        return out
    if kind == "wrong_shape":
        i = int(rng.integers(n))
        return f[:i] + [v.other_shape(f[i])] + f[i + 1 :]
    raise ConfigError(f"unknown recipe {kind!r}; choose one of {', '.join(RECIPES)}")


def make_abnormal(
    normal: Sequence[str],
    train: Sequence[str],
    foreign: Sequence[str],
    n_per_kind: int,
    intensity: int,
    is_normal: Callable[[str], bool],
    seed: int | Sequence[int],
) -> dict[str, list[str]]:
    """``n_per_kind`` abnormal lines per recipe, each made from a random line of ``normal`` with ``intensity`` edits
    (``foreign`` lines are taken as given). Every line differs from its source in canonical form and is not normal."""
    rng = np.random.default_rng(seed)
    vocab = _Vocab(train, rng)
    out: dict[str, list[str]] = {"foreign": list(foreign[:n_per_kind])}
    for kind in RECIPES[1:]:
        lines: list[str] = []
        tries = 0
        while len(lines) < n_per_kind:
            tries += 1
            if tries > 200 * n_per_kind:
                raise RuntimeError(f"recipe {kind!r} finds no line it can change")
            src = normal[int(rng.integers(len(normal)))]
            fields: list[str] | None = src.split()
            for _ in range(intensity):
                fields = _edit(kind, fields, vocab, rng) if fields else None
            if not fields:
                continue
            cand = " ".join(fields)
            if canonical(cand) == canonical(src) or is_normal(cand):
                continue
            lines.append(cand)
        out[kind] = lines
    return out


def loghub_dataset(
    directory: str | Path,
    system: str,
    seed: int,
    train_share: float = 0.7,
    n_per_kind: int = 300,
    intensity: int = 1,
) -> Dataset:
    """A Loghub file as a data set: a seeded ``train_share`` of its messages trains, the rest are the normal test
    lines, and the recipes make the abnormal ones (``foreign``: messages of the other five systems, in turn)."""
    directory = Path(directory)
    lines, unmatched = read_loghub(directory / f"{system}_2k.log", system)
    train, normal = split_lines(lines, train_share, [seed, 1])
    own = {canonical(s) for s in lines}
    others = [read_loghub(directory / f"{o}_2k.log", o)[0] for o in LOGHUB_SYSTEMS if o != system]
    rng = np.random.default_rng([seed, 3])
    foreign: list[str] = []
    while len(foreign) < n_per_kind:
        pool = others[len(foreign) % len(others)]
        s = pool[int(rng.integers(len(pool)))]
        if canonical(s) not in own:
            foreign.append(s)
    abnormal = make_abnormal(
        normal, train, foreign, n_per_kind, intensity, is_normal=lambda s: canonical(s) in own, seed=[seed, 4]
    )
    return Dataset(train, normal, abnormal, {"lines": len(lines), "unmatched_header": unmatched})
