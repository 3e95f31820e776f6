"""Source stage: where records come from. Files here; the Kafka source lives beside it.

``read_sequences`` reads the offline inputs of ``seqmon train / score / evaluate``: a text file with one sequence per
line, or a CSV / Parquet table with the sequences in one column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monitor.decode import DEFAULT_MAX_BYTES, MISSING_FIELD, Decoded, decode_plain
from monitor.errors import InputError

TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def read_lines(path: Path) -> list[bytes]:
    """Lines of a text file as bytes, without their LF or CRLF ending; a final newline does not add a line."""
    data = path.read_bytes()
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def read_sequences(path: str | Path, column: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> Decoded:
    """Every record of an input file, decoded, in file order; bad records carry a reason instead of failing."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if path.is_dir():
        raise InputError(f"input {path} is a directory, not a file")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        if column is not None:
            raise InputError(f"--column applies to CSV and Parquet input; {path} is read as text, one sequence per line")
        return decode_plain(read_lines(path), max_bytes)
    import pandas as pd  # noqa: PLC0415

    if column is None:
        raise InputError(f"{path} is a table: name the column that holds the sequences with --column")
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=lambda c: c == column)
            header = pd.read_csv(path, nrows=0).columns
        else:
            frame = pd.read_parquet(path, columns=None)
            header = frame.columns
    except (ValueError, OSError) as e:
        raise InputError(f"cannot read {path}: {e}") from None
    if column not in header:
        raise InputError(f"{path} has no column {column!r}; its columns are: {', '.join(map(str, header))}")
    values = frame[column].tolist()
    missing = np.array([not isinstance(v, str) for v in values])
    decoded = decode_plain([v.encode("utf-8") if isinstance(v, str) else b"" for v in values], max_bytes)
    decoded.reasons[missing] = MISSING_FIELD
    return decoded
