"""``seqmon replay``: the table, ``--output jsonl`` and ``--report FILE.html`` loaded in a real headless browser."""

import json
import re
import shutil
import subprocess
from datetime import UTC, datetime

import pytest

from monitor.cli import main
from monitor.generate import SeedLikeGenerator

pytestmark = pytest.mark.slow

START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOURS, INCIDENT_HOUR = 6, 4


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    frame = SeedLikeGenerator(5).stream(START_MS, HOURS, 3000, abnormal_hours={INCIDENT_HOUR: 0.3})
    path = tmp_path_factory.mktemp("replay") / "stream.csv"
    frame[["timestamp_ms", "sequence", "weight"]].to_csv(path, index=False)
    return path


def replay(capsys, *argv):
    capsys.readouterr()
    rc = main(["replay", *map(str, argv)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out, err


def test_jsonl_has_one_object_per_window_with_the_decision(bundle_path, stream, capsys):
    out, _ = replay(capsys, bundle_path, stream, "--output", "jsonl")
    objects = [json.loads(line) for line in out.splitlines()]
    assert len(objects) == HOURS
    for hour, o in enumerate(objects):
        assert o["window_start"] == datetime.fromtimestamp(START_MS / 1000 + 3600 * hour, UTC).isoformat().replace(
            "+00:00", "Z"
        )
        assert o["topic"] == "replay" and o["records"] == 3000
        for key in ("mean_error", "p99", "anomaly_rate", "abnormality", "mean_error_percentile_in_previous",
                    "ks_shift_vs_previous", "tail_shift_vs_baseline", "shift", "surprise", "decision"):
            assert key in o, key
    assert [o["deviating"] for o in objects] == [h == INCIDENT_HOUR for h in range(HOURS)]
    assert objects[0]["shift"] is None  # nothing to compare the first hour with: null, not NaN
    assert objects[INCIDENT_HOUR]["decision"] == "page" and objects[INCIDENT_HOUR]["shift"] > 10


def test_table_is_the_default(bundle_path, stream, capsys):
    out, _ = replay(capsys, bundle_path, stream)
    lines = out.splitlines()
    assert lines[0].startswith("window start (UTC)") and "decision" in lines[0]
    assert len(lines) == 1 + HOURS
    assert lines[1 + INCIDENT_HOUR].endswith("page")
    assert not any(line.endswith("page") for i, line in enumerate(lines[1:]) if i != INCIDENT_HOUR)


def test_html_report_renders_in_a_headless_browser(bundle_path, stream, tmp_path, capsys):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is needed for this test (Debian: apt-get install chromium)"
    report = tmp_path / "report.html"
    _, err = replay(capsys, bundle_path, stream, "--report", report)
    assert f"report written to {report}" in err
    page = report.read_text(encoding="utf-8")
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # self-contained
    assert "<h3>2026-01-01 04:00Z replay: page" in page and "<code>" in page  # top tokens of the flagged hour
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom",
         report.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    svg = re.search(r"<svg id=\"chart\"[^>]*>", dom.stdout)
    assert svg, dom.stdout[:2000]
    assert 'data-rendered="6"' in svg.group(0)  # the script ran over every window
    width = int(re.search(r'data-shift-width="(\d+)"', svg.group(0)).group(1))
    assert width > 500  # the shift line was laid out across the chart (5 of 6 hours have a shift)
    assert dom.stdout.count('class="flag flag-page"') == 1  # the incident hour is shaded
    assert dom.stdout.count('class="threshold-page"') == 1


def test_a_kept_state_directory_resumes_instead_of_counting_again(bundle_path, stream, tmp_path, capsys):
    """The file grows between two replays with --state-dir: the second counts only the new rows, the windows of both
    runs are those of one replay of the whole file, and a third run over the unchanged file adds nothing."""
    lines = stream.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    cut = len(rows) * 5 // 12  # in the middle of hour 2: its window must stay open across the runs
    growing = tmp_path / "growing.csv"
    state = tmp_path / "state"
    whole = [json.loads(line) for line in replay(capsys, bundle_path, stream, "--output", "jsonl")[0].splitlines()]

    growing.write_text("\n".join([header, *rows[:cut]]) + "\n")
    out, err = replay(capsys, bundle_path, growing, "--output", "jsonl", "--state-dir", state)
    first = [json.loads(line) for line in out.splitlines()]
    assert f"{cut:,} records replayed" in err and "0 late" in err
    assert [o["window_start"] for o in first] == [o["window_start"] for o in whole[:2]]  # hour 2 stays open

    growing.write_text("\n".join([header, *rows]) + "\n")
    out, err = replay(capsys, bundle_path, growing, "--output", "jsonl", "--state-dir", state)
    second = [json.loads(line) for line in out.splitlines()]
    assert f"{len(rows) - cut:,} records replayed" in err and "0 late" in err
    # The last hour closes only when the input ends; with a kept state the file may still grow, so it stays open.
    assert [o["window_start"] for o in first + second] == [o["window_start"] for o in whole[:HOURS - 1]]
    for got, want in zip(first + second, whole, strict=False):
        assert got["records"] == want["records"]
        assert got["mean_error"] == pytest.approx(want["mean_error"], rel=1e-6)
        assert got["deviating"] == want["deviating"]

    out, err = replay(capsys, bundle_path, growing, "--output", "jsonl", "--state-dir", state)
    assert out == "" and "0 records replayed" in err


def test_a_state_directory_of_a_longer_file_is_refused(bundle_path, stream, tmp_path, capsys):
    state = tmp_path / "state"
    replay(capsys, bundle_path, stream, "--state-dir", state)
    short = tmp_path / "short.csv"
    short.write_text("\n".join(stream.read_text().splitlines()[:100]) + "\n")
    capsys.readouterr()
    assert main(["replay", str(bundle_path), str(short), "--state-dir", str(state)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resumes at row 18,000" in err[0] and "use another state directory" in err[0], err
