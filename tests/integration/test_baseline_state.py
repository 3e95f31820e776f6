"""The baseline of normal windows survives a restart (checkpoint) and is reset when another bundle is loaded."""

import json

import pytest
from prometheus_client import CollectorRegistry

from monitor.config import load_settings
from monitor.daemon.checkpoint import read_checkpoint
from monitor.daemon.run import Daemon
from monitor.generate import SeedLikeGenerator
from monitor.source import FileSource
from monitor.train import preset, train_bundle

pytestmark = pytest.mark.slow

START_MS = 1_767_225_600_000
HOURS = 5


def settings_for(bundle, state):
    return load_settings(None, env={}, overrides=[
        f"model.bundle={bundle}", f"state.directory={state}", "window.idle_close_interval_seconds=0",
        "window.max_future_seconds=3153600000", "window.max_past_seconds=0", "model.watch_interval_seconds=0",
        "kafka.topics=replay",
    ])


def test_baseline_is_checkpointed_restored_and_reset_with_the_bundle(bundle_path, tmp_path):
    stream = tmp_path / "stream.csv"
    SeedLikeGenerator(8).stream(START_MS, HOURS, 1500)[["timestamp_ms", "sequence"]].to_csv(stream, index=False)
    state = tmp_path / "state"
    daemon = Daemon(settings_for(bundle_path, state), registry=CollectorRegistry())
    daemon.start(source=FileSource(stream), serve_metrics=False)
    daemon.run()
    assert [w.figures()["decision"] for w in daemon.closed_windows] == ["ok"] * HOURS
    assert daemon.baseline.windows("replay") == HOURS
    stored = read_checkpoint(state)["baseline"]
    assert stored["bundle"] == daemon.pipeline.bundle.content_hash and len(stored["topics"]["replay"]) == HOURS

    # A restart restores it before any record arrives.
    restarted = Daemon(settings_for(bundle_path, state), registry=CollectorRegistry())
    assert restarted.baseline.windows("replay") == HOURS
    assert restarted.baseline.reference("replay") == daemon.baseline.reference("replay")

    # Reloading the same bundle keeps it; another bundle (other errors, other scale) empties it.
    assert restarted.reload_bundle() and restarted.baseline.windows("replay") == HOURS
    other = tmp_path / "other-bundle"
    vec, mod = preset("seed", epochs=2)
    train_bundle(SeedLikeGenerator(9).normal(500), other, vec, mod, verbose=0, log=lambda m: None)
    restarted.bundle_path = other
    assert restarted.reload_bundle()
    assert restarted.baseline.windows("replay") == 0
    assert restarted.baseline.bundle == restarted.pipeline.bundle.content_hash

    # A checkpoint whose baseline was written under another bundle is not restored.
    path = state / "checkpoint.json"
    data = json.loads(path.read_text())
    data["baseline"]["bundle"] = "another"
    path.write_text(json.dumps(data))
    assert read_checkpoint(state)["baseline"]["bundle"] == "another"
    assert Daemon(settings_for(bundle_path, state), registry=CollectorRegistry()).baseline.windows("replay") == 0
