"""Decode stage: raw record values (bytes) → sequence strings, with a reason for every record that cannot be used.

Bad records are data, not exceptions: each gets a reason code, the caller counts them by reason and goes on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

#: Why a record could not be scored. The values are metric label values and dead-letter header values.
EMPTY = "empty"  # no tokens once tokenized (blank line, only punctuation)
INVALID_UTF8 = "invalid_utf8"
TOO_LONG = "too_long"
INVALID_JSON = "invalid_json"
MISSING_FIELD = "missing_field"
INVALID_WEIGHT = "invalid_weight"
INVALID_TIMESTAMP = "invalid_timestamp"
REASONS = (EMPTY, INVALID_UTF8, TOO_LONG, INVALID_JSON, MISSING_FIELD, INVALID_WEIGHT, INVALID_TIMESTAMP)

DEFAULT_MAX_BYTES = 4096


@dataclass(frozen=True)
class Decoded:
    """One decoded batch: ``sequences[i]`` is ``""`` where ``reasons[i]`` is not ``""``."""

    sequences: list[str]
    reasons: np.ndarray  # object array of reason strings, "" for a good record
    weights: np.ndarray  # float64, 1.0 unless the record carried a weight
    timestamps_ms: np.ndarray  # int64 event time from the record, -1 when it carried none

    @property
    def ok(self) -> np.ndarray:
        return self.reasons == ""


def decode_plain(values: Sequence[bytes], max_bytes: int = DEFAULT_MAX_BYTES) -> Decoded:
    """Plain UTF-8 values: the whole value is the sequence.

    The batch is validated in one Arrow cast; only a batch that holds invalid UTF-8 is decoded record by record.
    """
    n = len(values)
    reasons = np.full(n, "", dtype=object)
    raw = pa.array(values, pa.binary())
    too_long = pc.binary_length(raw).to_numpy(zero_copy_only=False) > max_bytes
    reasons[too_long] = TOO_LONG
    try:
        sequences = raw.cast(pa.string()).to_pylist()
    except pa.ArrowInvalid:
        sequences = []
        for i, v in enumerate(values):
            try:
                sequences.append(v.decode("utf-8"))
            except UnicodeDecodeError:
                sequences.append("")
                if not too_long[i]:
                    reasons[i] = INVALID_UTF8
    if too_long.any():
        for i in np.flatnonzero(too_long):
            sequences[i] = ""
    return Decoded(sequences, reasons, np.ones(n), np.full(n, -1, dtype=np.int64))


@dataclass(frozen=True)
class JsonFields:
    """Field names of JSON records; ``weight`` and ``timestamp`` are optional (None: not read)."""

    sequence: str = "sequence"
    weight: str | None = "weight"
    timestamp: str | None = None  # epoch milliseconds, or an ISO 8601 string with a zone


def decode_json(values: Sequence[bytes], fields: JsonFields, max_bytes: int = DEFAULT_MAX_BYTES) -> Decoded:
    """JSON object values. A record whose sequence field is missing or not a string gets ``missing_field``.

    The batch is parsed by orjson in one pass; only a batch holding a record orjson refuses is parsed record by
    record, and such a record is given to ``json.loads`` before it is called invalid, so that what Python's json
    reads (``NaN``, integers beyond 64 bits) gets the same reason as it always did.
    """
    n = len(values)
    reasons = np.full(n, "", dtype=object)
    too_long = np.fromiter(map(len, values), dtype=np.int64, count=n) > max_bytes
    reasons[too_long] = TOO_LONG
    docs: list = [None] * n
    parsed = _parse_all(values) if not too_long.any() else None
    if parsed is not None:
        docs = parsed
    else:
        loads = orjson.loads
        for i in np.flatnonzero(~too_long).tolist():
            try:
                docs[i] = loads(values[i])
            except orjson.JSONDecodeError:
                docs[i], reasons[i] = _parse_refused(values[i])
    ok = reasons == ""

    key = fields.sequence
    if set(map(type, docs)) == {dict}:
        sequences = [d.get(key) for d in docs]
    else:
        sequences = [d.get(key) if d.__class__ is dict else None for d in docs]
    missing = ok & ~np.fromiter(map(isinstance, sequences, repeat(str)), dtype=bool, count=n)
    reasons[missing] = MISSING_FIELD
    ok &= ~missing
    weights = np.ones(n)
    if fields.weight:
        weights = _weights(docs, ok, fields.weight)
        refused = ok & ~(np.isfinite(weights) & (weights > 0))
        reasons[refused] = INVALID_WEIGHT
        ok &= ~refused
        weights[~ok] = 1.0
    stamps = np.full(n, -1, dtype=np.int64)
    if fields.timestamp:
        refused = _timestamps(docs, ok, fields.timestamp, stamps)
        reasons[refused] = INVALID_TIMESTAMP
        ok &= ~refused
    if not ok.all():
        sequences = [s if good else "" for s, good in zip(sequences, ok.tolist())]
    return Decoded(sequences, reasons, weights, stamps)


def _timestamps(docs: list, ok: np.ndarray, field: str, out: np.ndarray) -> np.ndarray:
    """Fill ``out`` with the event time (epoch ms) of every ``ok`` document that carries ``field``; returns where it
    carries one that is not a time."""
    rows = np.flatnonzero(ok)
    raw = [docs[i].get(field, _ABSENT) for i in rows.tolist()]
    refused = np.zeros(len(docs), dtype=bool)
    if set(map(type, raw)) == {int}:  # the usual batch: every record carries epoch ms
        try:
            values = np.array(raw, dtype=np.int64)
        except OverflowError:
            pass
        else:
            refused[rows[values < 0]] = True
            out[rows[values >= 0]] = values[values >= 0]
            return refused
    for i, value in zip(rows.tolist(), raw):
        if value is _ABSENT:
            continue
        ts = parse_timestamp_ms(value)
        if ts is None or ts >= _MAX_INT64:
            refused[i] = True
        else:
            out[i] = ts
    return refused


def _weights(docs: list, ok: np.ndarray, field: str) -> np.ndarray:
    """The weight field of every ``ok`` document as float64 (1 when absent); NaN where it is not an int or a float
    (a bool is not a weight) or an int too large for a float."""
    raw = [d.get(field, 1.0) if good else 1.0 for d, good in zip(docs, ok.tolist())]
    if set(map(type, raw)) <= {int, float}:
        try:
            return np.array(raw, dtype=np.float64)
        except OverflowError:
            pass
    return np.array(
        [x if x.__class__ is float or (x.__class__ is int and -_MAX_WEIGHT < x < _MAX_WEIGHT) else np.nan for x in raw],
        dtype=np.float64,
    )


_ABSENT = object()
_MAX_INT64 = 2**63
_MAX_WEIGHT = 2**1023  # larger integers have no float64


def _parse_all(values: Sequence[bytes]) -> list | None:
    """Every value parsed by orjson, or None when one of them is refused."""
    try:
        return list(map(orjson.loads, values))
    except orjson.JSONDecodeError:
        return None


def _parse_refused(value: bytes) -> tuple[object, str]:
    """A value orjson refused, read by Python's json: (document, "") or (None, reason)."""
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return None, INVALID_UTF8
    try:
        return json.loads(text), ""
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the interpreter's stack
        return None, INVALID_JSON


def parse_timestamp_ms(value) -> int | None:
    """Epoch milliseconds from an integer (ms) or an ISO 8601 string carrying a time zone; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and np.isfinite(value) and value >= 0:
        return int(value)
    if isinstance(value, str):
        from datetime import datetime  # noqa: PLC0415

        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            return None
        return int(parsed.timestamp() * 1000)
    return None
