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


def test_training_lines_are_deterministic_and_of_the_stated_shape():
    from monitor.bench import training_lines

    large = training_lines("large", 300, seed=1)
    assert len(large) == 300 and large == training_lines("large", 300, seed=1)
    assert all(5 <= len(line.split()) <= 60 for line in large)
    assert len({t for line in large for t in line.split()}) > 1_000  # a large vocabulary even in a few lines
    assert len(training_lines("small", 300)) == 300


def test_training_bench_runs_a_whole_seqmon_train_process_and_reads_its_bundle():
    from monitor.bench import training_bench

    (run,) = training_bench(2_000, epochs=1, data=("small",), presets=("auto",))
    assert run["epochs"] == 1 and run["lines"] == 2_000 and run["preset"] == "auto"
    assert 0 < run["tokens"] < run["input_places"]  # auto adds shape and length places to the tokens
    assert run["distinct_rows"] <= 2_000 and run["seconds"] >= run["fit_seconds"] > 0
    assert run["peak_rss_mib"] > 100  # the child's own peak: it imported TensorFlow, this process did not
