"""Decode stage: raw record values (bytes) → sequence strings, with a reason for every record that cannot be used.

Bad records are data, not exceptions: each gets a reason code, the caller counts them by reason and goes on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
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
#: Largest record weight accepted. Weights count repeats; far larger ones would make a window's Σw² overflow to inf
#: and drown every other record of the window in rounding.
MAX_WEIGHT = 1e12
#: Event times are accepted from the epoch up to the end of year 9999 (UTC epoch ms): window arithmetic on int64
#: stays exact there, and no real clock is outside it.
MAX_EVENT_MS = 253_402_300_799_999


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
    """JSON object values. A record whose sequence field is missing or not a string gets ``missing_field``."""
    n = len(values)
    reasons = np.full(n, "", dtype=object)
    sequences = [""] * n
    weights = np.ones(n)
    stamps = np.full(n, -1, dtype=np.int64)
    for i, v in enumerate(values):
        if len(v) > max_bytes:
            reasons[i] = TOO_LONG
            continue
        try:
            doc = json.loads(v.decode("utf-8"))
        except UnicodeDecodeError:
            reasons[i] = INVALID_UTF8
            continue
        except (ValueError, RecursionError):  # RecursionError: arrays or objects nested ~1000 deep
            reasons[i] = INVALID_JSON
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get(fields.sequence), str):
            reasons[i] = MISSING_FIELD
            continue
        if not _encodable(doc[fields.sequence]):  # a lone surrogate escape ("\ud800") has no UTF-8 form
            reasons[i] = INVALID_UTF8
            continue
        if fields.weight and fields.weight in doc:
            w = parse_weight(doc[fields.weight])
            if w is None:
                reasons[i] = INVALID_WEIGHT
                continue
            weights[i] = w
        if fields.timestamp and fields.timestamp in doc:
            ts = parse_timestamp_ms(doc[fields.timestamp])
            if ts is None:
                reasons[i] = INVALID_TIMESTAMP
                continue
            stamps[i] = ts
        sequences[i] = doc[fields.sequence]
    return Decoded(sequences, reasons, weights, stamps)


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_weight(value) -> float | None:
    """A record weight from a JSON number: finite, > 0 and at most ``MAX_WEIGHT``; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        w = float(value)
    except OverflowError:  # an integer of hundreds of digits
        return None
    return w if 0 < w <= MAX_WEIGHT else None  # NaN fails both comparisons


def parse_timestamp_ms(value) -> int | None:
    """Epoch milliseconds from a number (ms) or an ISO 8601 string carrying a time zone, from 0 to ``MAX_EVENT_MS``;
    None for anything else (NaN, infinities, negative or huge numbers, strings without a zone)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_EVENT_MS else None
    if isinstance(value, float):
        return int(value) if 0 <= value <= MAX_EVENT_MS else None  # NaN fails the comparison
    if isinstance(value, str):
        from datetime import datetime  # noqa: PLC0415

        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                return None
            ms = int(parsed.timestamp() * 1000)
        except (ValueError, OverflowError):  # out of range once shifted by the zone, e.g. year 1 at +05:00
            return None
        return ms if 0 <= ms <= MAX_EVENT_MS else None
    return None
