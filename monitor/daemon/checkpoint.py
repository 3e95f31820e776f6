"""Atomic JSON checkpoints of the monitor's state.

``<state_dir>/checkpoint.json`` is only ever replaced whole: the new state is
written to a temporary file in the same directory, flushed and fsynced, renamed
over the old file with ``os.replace`` and the directory is fsynced, so after a
crash the file holds either the old or the new state, never a mix.

The file is a JSON object with ``"version": 1`` and the caller's keys,
including ``"written_at"`` (Unix seconds, supplied by the caller; nothing here
reads a clock).  numpy scalars and arrays are stored as plain numbers and lists;
NaN and infinities are kept (as the non-standard JSON tokens ``NaN``/``Infinity``
that Python's json module reads back).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from monitor.errors import StateError

__all__ = ["CHECKPOINT_NAME", "CHECKPOINT_VERSION", "read_checkpoint", "write_checkpoint"]

CHECKPOINT_NAME = "checkpoint.json"
CHECKPOINT_VERSION = 1


def _to_json(value: Any) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"checkpoint value of type {type(value).__name__} is not JSON-serializable")


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; directories cannot be opened on Windows.
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(state_dir: Path, state: dict[str, Any]) -> Path:
    """Atomically replace ``state_dir/checkpoint.json`` with ``state``.

    Parameters
    ----------
    state_dir : Path
        Directory of the checkpoint; created if missing.
    state : dict
        JSON-able state (numpy scalars/arrays allowed) with a ``"written_at"``
        key, Unix seconds.  ``"version"`` is added.

    Returns
    -------
    Path
        The checkpoint file.

    Raises
    ------
    ValueError
        If ``written_at`` is missing or ``state`` carries another version.
    TypeError
        If a value cannot be stored as JSON (nothing is written then).
    """
    if "written_at" not in state:
        raise ValueError("checkpoint state needs a 'written_at' key (Unix seconds)")
    if state.get("version", CHECKPOINT_VERSION) != CHECKPOINT_VERSION:
        raise ValueError(f"checkpoint state has version {state['version']!r}, this code writes {CHECKPOINT_VERSION}")
    # Serialize first so an unserializable state leaves no temporary file behind.
    text = json.dumps({**state, "version": CHECKPOINT_VERSION}, default=_to_json, allow_nan=True)

    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    target = state_dir / CHECKPOINT_NAME
    # Same directory as the target: os.replace is only atomic within one file system.
    fd, tmp_name = tempfile.mkstemp(dir=state_dir, prefix=f".{CHECKPOINT_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(state_dir)
    return target


def read_checkpoint(state_dir: Path) -> dict[str, Any] | None:
    """The state last written to ``state_dir``, or None if there is no checkpoint.

    Raises
    ------
    StateError
        If the checkpoint cannot be read, is not valid JSON or has another version.
    """
    path = Path(state_dir) / CHECKPOINT_NAME
    advice = "move it aside to start with fresh state"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise StateError(f"checkpoint {path} cannot be read ({exc}); fix it or {advice}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StateError(f"checkpoint {path} is damaged ({exc}); {advice}") from exc
    if not isinstance(data, dict):
        raise StateError(f"checkpoint {path} is damaged (not a JSON object); {advice}")
    if data.get("version") != CHECKPOINT_VERSION:
        raise StateError(
            f"checkpoint {path} has version {data.get('version')!r}, this version of seqmon reads "
            f"{CHECKPOINT_VERSION}; {advice}"
        )
    return data
