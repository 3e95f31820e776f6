"""Atomic checkpoint files: round trip, replacement, numpy/NaN values and damaged or foreign files."""

import json
import math

import numpy as np
import pytest

from monitor.daemon.checkpoint import CHECKPOINT_NAME, read_checkpoint, write_checkpoint
from monitor.errors import StateError


def test_absent_checkpoint_is_none(tmp_path):
    assert read_checkpoint(tmp_path) is None
    assert read_checkpoint(tmp_path / "missing") is None


def test_round_trip_with_numpy_and_nan(tmp_path):
    state = {
        "written_at": 1_704_067_200.5,
        "offsets": {"orders": {"0": np.int64(42), "1": 7}},
        "mean": np.float64("nan"),
        "limit": np.float32(0.25),
        "flags": np.array([True, False]),
        "edges": np.array([1, 2, 3], dtype=np.int64),
        "big": float("inf"),
    }
    path = write_checkpoint(tmp_path / "state", state)
    assert path == tmp_path / "state" / CHECKPOINT_NAME
    got = read_checkpoint(tmp_path / "state")
    assert got["version"] == 1
    assert got["written_at"] == 1_704_067_200.5
    assert got["offsets"] == {"orders": {"0": 42, "1": 7}}
    assert math.isnan(got["mean"])
    assert got["limit"] == 0.25
    assert got["flags"] == [True, False]
    assert got["edges"] == [1, 2, 3]
    assert got["big"] == math.inf
    # Reading and writing back is accepted (the version key is already there).
    write_checkpoint(tmp_path / "state", got)


def test_replaces_existing_checkpoint_and_leaves_no_temp_file(tmp_path):
    write_checkpoint(tmp_path, {"written_at": 1.0, "n": 1})
    write_checkpoint(tmp_path, {"written_at": 2.0, "n": 2})
    assert read_checkpoint(tmp_path) == {"written_at": 2.0, "n": 2, "version": 1}
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]


def test_unserializable_state_keeps_old_checkpoint(tmp_path):
    write_checkpoint(tmp_path, {"written_at": 1.0, "n": 1})
    with pytest.raises(TypeError, match="object"):
        write_checkpoint(tmp_path, {"written_at": 2.0, "n": object()})
    assert read_checkpoint(tmp_path)["n"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]


def test_written_at_and_version_are_checked(tmp_path):
    with pytest.raises(ValueError, match="written_at"):
        write_checkpoint(tmp_path, {"n": 1})
    with pytest.raises(ValueError, match="version"):
        write_checkpoint(tmp_path, {"written_at": 1.0, "version": 2})
    assert read_checkpoint(tmp_path) is None


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"version": 1, "written_at": 1.0', "damaged"),  # truncated
        (b"\xff\xfe\x00", "cannot be read"),  # not UTF-8
        ("[1, 2]", "not a JSON object"),
        ('{"written_at": 1.0}', "version None"),
        ('{"version": 2, "written_at": 1.0}', "version 2"),
    ],
)
def test_damaged_or_foreign_checkpoint_raises_state_error(tmp_path, content, match):
    path = tmp_path / CHECKPOINT_NAME
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(StateError, match=match) as info:
        read_checkpoint(tmp_path)
    message = str(info.value)
    assert str(path) in message
    assert "move it aside" in message


def test_file_is_plain_json_with_version(tmp_path):
    path = write_checkpoint(tmp_path, {"written_at": 3.0})
    assert json.loads(path.read_text()) == {"written_at": 3.0, "version": 1}
