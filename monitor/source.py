"""Source stage: where records come from. Files here; the Kafka source lives beside it.

``read_sequences`` reads the offline inputs of ``seqmon train / score / evaluate``: a text file with one sequence per
line, or a CSV / Parquet table with the sequences in one column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monitor.decode import DEFAULT_MAX_BYTES, MISSING_FIELD, Decoded, decode_plain
from monitor.errors import ConfigError, InputError

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


def check_subscription(topics, pattern) -> None:
    """A Kafka source subscribes to a list of topics or to one pattern: exactly one of them, and not an empty list."""
    if (topics is None) == (pattern is None):
        raise ConfigError("a Kafka source needs either topics or a topic pattern, not both")
    if topics is not None and not topics:
        raise ConfigError("a Kafka source needs at least one topic")


class FileSource:
    """A finite source over a timestamped CSV (``timestamp_ms, sequence[, weight]``), with the ``KafkaSource``
    methods the daemon calls: one partition, offsets are row numbers, so a checkpoint resumes a replay.

    ``final``: the file's end is the end of the input, and the daemon closes every open window there; otherwise the
    input is only paused (the file may grow), and windows close by their watermark alone, so a later replay that
    resumes from the checkpoint can still fill the last window."""

    def __init__(self, path: str | Path, topic: str = "replay", batch_size: int = 50_000, final: bool = True):
        from monitor.pipeline import read_stream_csv  # noqa: PLC0415

        self.topic = topic
        self.path = Path(path)
        self.final = final
        self._batches = list(read_stream_csv(path, topic=topic, batch_size=batch_size))
        self._rows = sum(len(b) for b in self._batches)
        self._next = 0  # index of the next batch
        self._position = 0  # next row

    @property
    def finished(self) -> bool:
        return self._next >= len(self._batches)

    def poll(self, timeout_ms: int, max_records: int):
        import dataclasses  # noqa: PLC0415

        if self.finished:
            return None
        batch = self._batches[self._next]
        self._next += 1
        offsets = np.arange(self._position, self._position + len(batch), dtype=np.int64)
        self._position += len(batch)
        return dataclasses.replace(batch, partitions=np.zeros(len(batch), dtype=np.int32), offsets=offsets)

    def assignment(self) -> list[tuple[str, int]]:
        return [(self.topic, 0)]

    def seek(self, offsets: dict[tuple[str, int], int]) -> None:
        """Read on from row ``offsets[(topic, 0)]`` (a checkpoint's position): earlier rows are skipped, not re-read."""
        import dataclasses  # noqa: PLC0415

        unknown = sorted(k for k in offsets if k != (self.topic, 0))
        if unknown:
            raise ValueError(f"a file source has one partition, {self.topic}/0; cannot seek {unknown}")
        target = int(offsets.get((self.topic, 0), self._position))
        if not 0 <= target <= self._rows:
            raise InputError(
                f"{self.path}: the saved state resumes at row {target:,} but the file has {self._rows:,} rows; it is "
                "not the file (or a grown copy of the file) that state belongs to: use another state directory"
            )
        kept, start = [], 0
        for batch in self._batches:
            end = start + len(batch)
            if end > target:
                cut = max(0, target - start)
                kept.append(batch if cut == 0 else dataclasses.replace(
                    batch,
                    values=batch.values[cut:],
                    timestamps_ms=batch.timestamps_ms[cut:],
                    topics=batch.topics[cut:],
                    weights=None if batch.weights is None else batch.weights[cut:],
                ))
            start = end
        self._batches, self._next, self._position = kept, 0, target

    def commit(self, offsets) -> None:
        """Nothing to commit: the checkpoint in the state directory holds the position."""

    def lag(self) -> dict[tuple[str, int], int]:
        return {(self.topic, 0): self._rows - self._position}

    def close(self) -> None:
        self._batches = []
        self._next = 0
