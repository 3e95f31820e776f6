"""Train a small model on generated data: injected anomalies must outscore normal traffic by a margin,
and a replayed stream must show its abnormal hour."""

import numpy as np
import pytest

from monitor.evaluate import roc_auc
from monitor.generate import KINDS, SeedLikeGenerator
from monitor.pipeline import Pipeline, RecordBatch
from monitor.train import preset, train_bundle
from monitor.window import Windower, WindowSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    gen = SeedLikeGenerator(11)
    vec, mod = preset("seed", epochs=25)
    return train_bundle(gen.normal(20_000), tmp_path_factory.mktemp("b") / "bundle", vec, mod, verbose=0, log=lambda m: None)


def test_every_kind_of_anomaly_outscores_normal_traffic(bundle):
    gen = SeedLikeGenerator(12)
    normal = bundle.errors(gen.normal(3000))
    for kind in KINDS:
        abnormal = bundle.errors(gen.abnormal(300, kind))
        assert roc_auc(normal, abnormal) > 0.85, kind
        assert np.median(abnormal) > 2 * np.median(normal), kind


def test_replayed_stream_flags_its_abnormal_hour(bundle):
    frame = SeedLikeGenerator(13).stream(0, hours=4, records_per_hour=3000, anomaly_rate=0.01, abnormal_hours={2: 0.3})
    windower = Windower(WindowSettings(size_ms=3_600_000, allowed_lateness_ms=0))
    pipeline = Pipeline(bundle, windower)
    batch = RecordBatch(
        values=[s.encode() for s in frame["sequence"]],
        timestamps_ms=frame["timestamp_ms"].to_numpy(),
        topics=np.full(len(frame), "t", dtype=object),
        weights=frame["weight"].to_numpy(dtype=float),
    )
    result = pipeline.process(batch)
    closed = result.closed + windower.close_all()  # the stream has ended
    assert [w.start_ms for w in closed] == [0, 3_600_000, 7_200_000, 10_800_000]
    figures = [w.figures() for w in closed]
    assert [f["count"] for f in figures] == [3000] * 4
    # The weighted mean error of hour 2 is the original's rating, computed here independently.
    hour2 = (frame["timestamp_ms"] >= 7_200_000) & (frame["timestamp_ms"] < 10_800_000)
    w = frame["weight"].to_numpy(dtype=float)[hour2.to_numpy()]
    e = result.errors[hour2.to_numpy()]
    assert figures[2]["mean_error"] == pytest.approx((w * e).sum() / w.sum(), rel=1e-9)
    assert figures[2]["abnormality"] > 55 > figures[1]["abnormality"] > 45
    assert figures[3]["abnormality"] < 45
    assert figures[2]["anomaly_rate"] > 3 * figures[1]["anomaly_rate"]


def test_seqmon_replay_runs_the_daemon_over_a_file(bundle, tmp_path, capsys):
    from monitor.cli import main

    frame = SeedLikeGenerator(14).stream(0, hours=3, records_per_hour=2000, anomaly_rate=0.01, abnormal_hours={1: 0.4})
    frame.loc[5, "sequence"] = "!!!"  # no tokens: invalid, not scored
    path = tmp_path / "stream.csv"
    frame[["timestamp_ms", "sequence", "weight"]].to_csv(path, index=False)
    assert main(["replay", str(bundle.path), str(path), "--topic", "t"]) == 0
    out, err = capsys.readouterr()
    rows = [line.split() for line in out.splitlines() if line.startswith("1970-01-01")]
    assert [r[1] for r in rows] == ["00:00Z", "01:00Z", "02:00Z"]
    assert [int(r[3].replace(",", "")) for r in rows] == [1999, 2000, 2000]
    assert float(rows[1][7]) > 55 > float(rows[2][7])
    assert "6,000 records replayed: 1 invalid, 0 late, 3 windows closed" in err


def test_bundle_reload_keeps_the_old_bundle_when_the_new_one_is_broken(bundle, tmp_path):
    import os
    import shutil

    from prometheus_client import CollectorRegistry

    from monitor.config import load_settings
    from monitor.daemon.run import Daemon

    path = tmp_path / "bundle"
    shutil.copytree(bundle.path, path)
    settings = load_settings(None, env={}, overrides=[f"model.bundle={path}", f"state.directory={tmp_path / 'state'}"])
    daemon = Daemon(settings, registry=CollectorRegistry())
    reg = daemon.registry
    old = daemon.pipeline.bundle
    (path / "weights.npz").write_bytes(b"broken")
    assert daemon.reload_bundle() is False
    assert daemon.pipeline.bundle is old
    assert reg.get_sample_value("seqmon_bundle_reloads_total", {"result": "failure"}) == 1
    shutil.copy(bundle.path / "weights.npz", path / "weights.npz")
    daemon._watch_bundle()  # bundle.json did not change: the watch job asks for nothing
    assert not daemon._reload.is_set()
    os.utime(path / "bundle.json", ns=(1, 1))
    daemon._watch_bundle()
    assert daemon._reload.is_set()
    assert daemon.reload_bundle() is True
    assert daemon.pipeline.bundle is not old
    assert reg.get_sample_value("seqmon_bundle_reloads_total", {"result": "success"}) == 1
    assert reg.get_sample_value("seqmon_bundle_info", {"content_hash": old.content_hash, "created_at": old.metadata["created_at"], "path": str(path)}) == 1


def test_seqmon_demo_runs_end_to_end(tmp_path, capsys):
    """The README's first command, small: generate, train with the default preset, replay, report."""
    from monitor.cli import main

    work = tmp_path / "demo"
    rc = main(["demo", "--workdir", str(work), "--hours", "3", "--records-per-hour", "2000", "--train", "3000",
               "--epochs", "3", "--abnormal-hour", "2"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "preset auto chose" in err and "max_length 4" in err
    rows = [line for line in out.splitlines() if line.startswith("20")]
    assert len(rows) == 3 and all(" demo " in row for row in rows)
    assert "6,000 records replayed: 0 invalid, 0 late, 3 windows closed" in err
    assert (work / "report.html").stat().st_size > 1000 and (work / "bundle" / "bundle.json").exists()
