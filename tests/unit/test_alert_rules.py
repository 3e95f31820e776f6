"""The Prometheus config and rules of deploy/prometheus/ pass promtool: syntax, rule files and the rule unit tests.

Needs `promtool` on PATH (Debian package `prometheus`, installed by `.ci/run`). Without it these tests fail, not skip:
the alert rules would otherwise ship untested.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROMETHEUS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))


def promtool(*args: str) -> None:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool is not installed: it comes with Debian's prometheus package, which .ci/run installs "
            "(apt-get install -y prometheus)",
            pytrace=False,
        )
    proc = subprocess.run([exe, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"promtool {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"


def test_both_rule_files_are_there():
    assert [p.name for p in RULE_FILES] == ["seqmon-alerts.yml", "seqmon-recording.yml"]


def test_prometheus_config_and_its_rule_files_are_valid():
    promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_rule_file_is_valid(rule_file):
    promtool("check", "rules", str(rule_file))


def test_rule_unit_tests_pass():
    promtool("test", "rules", str(PROMETHEUS_DIR / "tests" / "alerts_test.yml"))


def test_every_alert_is_tested_firing_and_not_firing():
    # Plain text scan (no YAML parser among the dependencies): each `- eval_time:` item of the test file names
    # an alert and either expects alerts (exp_labels) or none (exp_alerts: []).
    alerts = set()
    for rule_file in RULE_FILES:
        alerts |= set(re.findall(r"^\s*- alert:\s*(\w+)\s*$", rule_file.read_text(), flags=re.M))
    assert len(alerts) >= 7
    text = (PROMETHEUS_DIR / "tests" / "alerts_test.yml").read_text()
    firing, quiet = set(), set()
    for item in re.split(r"^\s*- eval_time:", text, flags=re.M)[1:]:
        name = re.search(r"^\s*alertname:\s*(\w+)", item, flags=re.M)
        if name is None:
            continue
        if re.search(r"^\s*exp_alerts:\s*\[\]\s*$", item, flags=re.M):
            quiet.add(name.group(1))
        elif "exp_labels:" in item:
            firing.add(name.group(1))
    assert alerts - firing == set(), "alerts without a firing test"
    assert alerts - quiet == set(), "alerts without a not-firing test"
    assert "promql_expr_test:" in text, "no test of a recording rule"
