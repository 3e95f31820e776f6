"""README.md stays true: every metric and every CLI command is documented."""

from pathlib import Path

from monitor.cli import build_parser
from monitor.export.metrics import METRICS_DOC

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_metric_is_in_the_readme():
    missing = [doc.name for doc in METRICS_DOC if f"`{doc.name}`" not in README]
    assert not missing


def test_every_command_is_in_the_readme():
    commands = build_parser()._subparsers._group_actions[0].choices
    missing = [name for name in commands if f"`seqmon {name}" not in README]
    assert not missing
