"""The input of the whole-process ``seqmon score`` benchmark: the size and anomaly share it claims."""

from monitor.bench import score_input
from monitor.generate import is_normal


def test_score_input_has_the_rows_and_about_three_percent_anomalies(tmp_path):
    path = tmp_path / "input.txt"
    abnormal = score_input(path, 25_000, seed=0)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 25_000 and all(lines)
    assert 0.025 * 25_000 < abnormal < 0.035 * 25_000
    assert sum(not is_normal(line) for line in lines) == abnormal  # every labelled anomaly breaks the format
    again = tmp_path / "again.txt"
    assert score_input(again, 25_000, seed=0) == abnormal and again.read_bytes() == path.read_bytes()
