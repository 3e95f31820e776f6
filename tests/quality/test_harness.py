"""The quality harness itself: its matrix, its split, its data and recipes, and one short run end to end.

The figures the harness measures are in README (Quality → The quality matrix); these tests check that what it measures
is sound, not that the targets are met.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter

import pytest

from monitor.datasets import (
    LOGHUB_SYSTEMS,
    RECIPES,
    SHAPES,
    CodeWorld,
    DataConfig,
    canonical,
    loghub_message,
    make_abnormal,
    read_loghub,
    shape_of,
    synthetic_dataset,
)
from tests.quality import harness as H

#: The reporting half, pinned: moving a configuration between halves must be a visible, reviewed change.
REPORTING = [
    "words-tiny-1", "codes-4-3", "hex-devices-5", "dotted-ids-7", "fixed-12-9", "short-var-11", "loglike-var-13",
    "long-var-15", "flat-popularity-17", "many-formats-19", "high-volume-21", "strong-23",
    "hdfs", "loghub-Linux", "loghub-Zookeeper", "loghub-Thunderbird",
]


def test_the_split_is_fixed_disjoint_and_by_seed_parity():
    tuning, reporting = H.select("tuning"), H.select("reporting")
    assert [c.name for c in reporting] == REPORTING
    assert {c.name for c in tuning}.isdisjoint(c.name for c in reporting)
    assert len(tuning) + len(reporting) == len(H.CONFIGS) == len({c.name for c in H.CONFIGS}) == len({c.seed for c in H.CONFIGS})
    assert all(c.seed % 2 == 0 for c in tuning) and all(c.seed % 2 == 1 for c in reporting)
    # Every synthetic design point is in both halves (same parameters, another world); real systems on both sides.
    for half in (tuning, reporting):
        assert len([c for c in half if isinstance(c, DataConfig)]) == len(H._DESIGN)
        assert len([c for c in half if isinstance(c, H.RealConfig)]) >= 3


def test_the_matrix_spans_the_ranges_the_issue_asks_for():
    syn = H.SYNTHETIC
    assert len(syn) >= 20
    assert min(c.vocab for c in syn) == 50 and max(c.vocab for c in syn) == 20_000
    fixed = [c.length[0] for c in syn if c.length[0] == c.length[1]]
    variable = [c.length for c in syn if c.length[0] < c.length[1]]
    assert min(fixed) == 2 and max(fixed) == 12
    assert min(lo for lo, _ in variable) == 1 and max(hi for _, hi in variable) == 60
    assert {s for c in syn for s in c.shapes} == set(SHAPES)
    assert min(c.n_train for c in syn) == 5_000 and max(c.n_train for c in syn) == 500_000
    assert {c.intensity for c in syn} == {1, 2, 3}
    assert len({c.zipf for c in syn}) >= 4 and len({c.formats for c in syn}) >= 6
    assert {c.system for c in H.REAL} == {"HDFS", *LOGHUB_SYSTEMS}


def _small(name: str, **changes) -> DataConfig:
    c = next(c for c in H.SYNTHETIC if c.name == name)
    return dataclasses.replace(c, **{"n_train": 2_000, "n_test_normal": 400, "n_abnormal_per_kind": 60, **changes})


def test_a_code_world_is_deterministic_and_samples_only_its_own_lines():
    config = _small("loglike-var-13")
    a, b = synthetic_dataset(config), synthetic_dataset(config)
    assert (a.train, a.normal, a.abnormal) == (b.train, b.normal, b.abnormal)
    other = synthetic_dataset(dataclasses.replace(config, seed=config.seed + 2))
    assert set(a.train).isdisjoint(other.train)
    world = CodeWorld(config)
    assert all(world.is_normal(s) for s in a.train + a.normal)
    lengths = [len(s.split()) for s in a.train]
    assert config.length[0] <= min(lengths) < max(lengths) <= config.length[1]
    assert {shape_of(t) for s in a.train for t in s.split()} <= set(SHAPES)
    for kind, lines in a.abnormal.items():
        assert len(lines) == config.n_abnormal_per_kind, kind
        assert not any(world.is_normal(s) for s in lines), kind


def test_zipf_skew_makes_popularity_uneven():
    skewed = Counter(synthetic_dataset(_small("short-var-11")).train)
    flat = Counter(synthetic_dataset(_small("flat-popularity-17")).train)
    assert skewed.most_common(1)[0][1] > 10 * flat.most_common(1)[0][1]


def test_each_recipe_makes_the_change_it_names():
    train = ["alpha 12 beta 0x3f gamma", "delta 345 epsilon 0x7a zeta", "alpha 99 beta 0x3f zeta"]
    source = "alpha 12 beta 0x3f gamma"
    known = {t for s in train for t in s.split()}
    out = make_abnormal([source], train, ["totally other line"], 40, 1, is_normal=lambda s: s in train, seed=0)
    assert set(out) == set(RECIPES) and out["foreign"] == ["totally other line"]
    src = source.split()
    for kind, lines in out.items():
        if kind == "foreign":
            continue
        for line in lines:
            f = line.split()
            assert line not in train and canonical(line) != canonical(source), (kind, line)
            changed = [i for i, (a, b) in enumerate(zip(f, src)) if a != b]
            if kind == "dropped":
                assert len(f) == 4 and any(f == src[:i] + src[i + 1 :] for i in range(5))
            elif kind == "appended":
                assert f[:5] == src and len(f) == 6 and f[5] in known
            elif kind == "reordered":
                assert sorted(f) == sorted(src) and len(changed) == 2
            elif kind == "unseen":
                assert len(f) == 5 and len(changed) == 1
                new = f[changed[0]]
                assert new not in known and shape_of(new) == "word" and shape_of(src[changed[0]]) == "word"
            elif kind == "wrong_shape":
                assert len(f) == 5 and len(changed) == 1
                new, old = f[changed[0]], src[changed[0]]
                assert new in known and shape_of(new) != shape_of(old)


def test_intensity_is_the_number_of_edits():
    train = ["a1 b2 c3 d4 e5 f6 g7 h8"]
    out = make_abnormal(train, train, [], 30, 3, is_normal=lambda s: s in train, seed=1)
    assert all(len(s.split()) == 5 for s in out["dropped"])
    assert all(len(s.split()) == 11 for s in out["appended"])


def test_loghub_headers_are_cut_as_documented():
    d = H.data_dir() / "loghub"
    for system in LOGHUB_SYSTEMS:
        lines, unmatched = read_loghub(d / f"{system}_2k.log", system)
        assert unmatched == 0 and len(lines) == 2000, system
    examples = {
        "HPC": ("134681 node-246 unix.hw state_change.unavailable 1077804742 1 Component State Change: x",
                "unix.hw state_change.unavailable Component State Change: x"),
        "Linux": ("Jun 14 15:16:02 combo sshd(pam_unix)[19937]: check pass; user unknown",
                  "sshd(pam_unix) check pass; user unknown"),
        "OpenSSH": ("Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186",
                    "sshd Invalid user webmaster from 173.234.31.186"),
        "Spark": ("17/06/09 20:10:40 INFO spark.SecurityManager: Changing view acls to: yarn,curi",
                  "INFO spark.SecurityManager Changing view acls to: yarn,curi"),
        "Thunderbird": ("- 1131566461 2005.11.09 dn228 Nov 9 12:01:01 dn228/dn228 crond(pam_unix)[2915]: session closed",
                        "crond(pam_unix) session closed"),
        "Zookeeper": ("2015-07-29 17:41:44,747 - INFO  [QuorumPeer[myid=1]/0:0:0:0:0:0:0:0:2181:FastLeaderElection@774]"
                      " - Notification time out: 3200", "INFO FastLeaderElection@774 Notification time out: 3200"),
    }
    for system, (line, expected) in examples.items():
        assert loghub_message(system, line) == expected, system


def test_loghub_recipe_lines_are_new_and_foreign_lines_come_from_other_systems():
    config = next(c for c in H.REAL if c.system == "Zookeeper")
    data = H.build_dataset(config)
    own = {canonical(s) for s in data.train + data.normal}
    assert len(data.train) == 1400 and len(data.normal) == 600
    for kind, lines in data.abnormal.items():
        assert len(lines) == 300 and not any(canonical(s) in own for s in lines), kind
    d = H.data_dir() / "loghub"
    source = {m: o for o in LOGHUB_SYSTEMS if o != "Zookeeper" for m in read_loghub(d / f"{o}_2k.log", o)[0]}
    systems = Counter(source[s] for s in data.abnormal["foreign"])  # KeyError: a line from no other system
    assert sorted(systems) == sorted(set(LOGHUB_SYSTEMS) - {"Zookeeper"}) and min(systems.values()) == 60


@pytest.mark.slow
def test_the_harness_runs_end_to_end(tmp_path, capsys):
    """Two small configurations and one Loghub file through fit_bundle with the default preset (few epochs)."""
    configs = [_small("words-tiny-1"), _small("short-var-11"), next(c for c in H.REAL if c.system == "Linux")]
    results = [H.run_config(c, "seed", tmp_path, epochs=5) for c in configs]
    for r in results:
        assert set(r["kinds"]) == set(RECIPES), r["name"]
        for v in [r["overall"], *r["kinds"].values()]:
            assert math.isfinite(v["roc_auc"]) and 0.0 <= v["roc_auc"] <= 1.0
            assert math.isfinite(v["pr_auc"]) and 0.0 < v["pr_auc"] <= 1.0
        assert r["epochs_run"] <= 5 and r["preset"] == "seed" and r["overrides"] == {"epochs": 5}
        assert not (tmp_path / r["name"]).exists()  # bundles are removed unless kept
    # Lines of five other systems are told apart from Linux's own: a scrambled pipeline would sit near 0.5.
    assert results[2]["kinds"]["foreign"]["roc_auc"] >= 0.8
    json.dumps(results)
    table = H.markdown(results)
    assert all(f"| {c.name} |" in table for c in configs)
    assert "reporting: 3 configurations" in H.summary_lines(results)


def test_the_command_line_lists_and_selects_configurations(capsys):
    assert H.main(["--list", "--half", "reporting"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == REPORTING
    assert [c.name for c in H.select(names=["hdfs", "strong-22"])] == ["hdfs", "strong-22"]
    with pytest.raises(SystemExit):
        H.select(names=["no-such-configuration"])
