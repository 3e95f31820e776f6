"""Quality on real data: HDFS log-key sessions, with the split the README describes.

The data lives beside the repository (``../shared/data/hdfs`` or ``SEQMON_HDFS_DIR``); it is not copied into the repo.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from monitor.evaluate import evaluate
from monitor.train import preset, train_bundle

pytestmark = pytest.mark.slow


def hdfs_dir() -> Path:
    here = Path(__file__).resolve().parents[2]
    candidates = [os.environ.get("SEQMON_HDFS_DIR"), here.parent / "shared" / "data" / "hdfs"]
    for c in candidates:
        if c and (Path(c) / "hdfs_train").exists():
            return Path(c)
    raise FileNotFoundError("HDFS data not found: set SEQMON_HDFS_DIR to the folder holding hdfs_train")


def split():
    d = hdfs_dir()
    train = (d / "hdfs_train").read_text().split("\n")
    abnormal = (d / "hdfs_test_abnormal").read_text().split("\n")
    order = np.random.default_rng(0).permutation(len(train))
    cut = int(0.8 * len(train))
    return [train[i] for i in sorted(order[:cut])], [train[i] for i in sorted(order[cut:])], abnormal


def test_logkeys_preset_meets_the_targets_on_hdfs(tmp_path):
    train, normal, abnormal = split()
    assert (len(train), len(normal), len(abnormal)) == (3884, 971, 16838)
    vec, mod = preset("logkeys")
    bundle = train_bundle(train, tmp_path / "bundle", vec, mod, verbose=0, log=lambda m: None)
    result = evaluate(bundle.errors(normal), bundle.errors(abnormal), bundle.threshold)
    assert result["roc_auc"] >= 0.98, result
    assert result["f1"] >= 0.95, result


def test_the_default_auto_preset_holds_on_hdfs(tmp_path):
    """No preset chosen by hand: auto reads the sessions and must still separate them (measured 0.995)."""
    from monitor.train import settings_for

    train, normal, abnormal = split()
    vec, mod, choices = settings_for("auto", train)
    assert vec.encoding == "positional" and vec.length_signal and choices
    bundle = train_bundle(train, tmp_path / "bundle", vec, mod, verbose=0, log=lambda m: None)
    result = evaluate(bundle.errors(normal), bundle.errors(abnormal), bundle.threshold)
    assert result["roc_auc"] >= 0.98, result
