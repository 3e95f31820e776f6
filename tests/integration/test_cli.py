"""End-to-end tests of the ``seqmon`` command: generate → train → inspect / score / evaluate, and its error paths.

Every test calls ``monitor.cli.main([...])`` in-process except ``test_installed_console_script``, which runs the real
console script. One small data set and ONE small bundle (a few epochs) are made per module and shared by all tests.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from monitor.cli import main
from monitor.generate import KINDS

N_TRAIN, N_TEST_NORMAL, N_TEST_ABNORMAL = 3000, 500, 100
#: Enough for ROC-AUC ~0.8 on the generated anomalies (3 epochs gave ~0.70 with the seed preset); ~1 s per epoch.
EPOCHS = 8
SCORE_HEADER = ["sequence", "error", "percentile", "is_anomaly", "top_tokens", "reason"]

pytestmark = pytest.mark.slow


def run(capsys, *argv) -> tuple[int, str, str]:
    """``seqmon ARGV`` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()  # drop anything printed before
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc: int, out: str, err: str, *words: str) -> str:
    """Exit code 2, nothing on stdout, one ``seqmon: error: ...`` line on stderr holding every word."""
    assert rc == 2, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqmon: error: "), err
    message = lines[0]
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


def read_score_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames is not None and set(SCORE_HEADER) <= set(reader.fieldnames), reader.fieldnames
        return list(reader)


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# --- shared data and bundle ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    rc = main(
        [
            "generate",
            str(out),
            "--seed",
            "0",
            "--train",
            str(N_TRAIN),
            "--test-normal",
            str(N_TEST_NORMAL),
            "--test-abnormal",
            str(N_TEST_ABNORMAL),
        ]
    )
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def bundle(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "b"
    rc = main(["train", str(data / "train.txt"), "--out", str(out), "--epochs", str(EPOCHS), "--quiet"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def described(bundle) -> dict:
    """What ``seqmon inspect`` reports about the shared bundle (read once)."""
    from monitor.bundle import load_bundle

    return json.loads(json.dumps(load_bundle(bundle).describe(), default=str))


def copy_bundle(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(bundle, dst)
    return dst


# --- generate --------------------------------------------------------------------------------------------------------


def test_generate_writes_expected_files(data):
    expected = {"train.txt", "test_normal.txt", "test_abnormal.txt", "test.csv"} | {
        f"test_abnormal_{k}.txt" for k in KINDS
    }
    assert {p.name for p in data.iterdir()} == expected  # no stream.csv without --hours
    assert len(lines_of(data / "train.txt")) == N_TRAIN
    assert len(lines_of(data / "test_normal.txt")) == N_TEST_NORMAL
    for k in KINDS:
        assert len(lines_of(data / f"test_abnormal_{k}.txt")) == N_TEST_ABNORMAL
    assert len(lines_of(data / "test_abnormal.txt")) == N_TEST_ABNORMAL * len(KINDS)
    table = pd.read_csv(data / "test.csv", dtype=str, keep_default_na=False)
    assert list(table.columns) == ["sequence", "label", "kind"]
    assert len(table) == N_TEST_NORMAL + N_TEST_ABNORMAL * len(KINDS)
    assert all(line.strip() for line in lines_of(data / "train.txt"))


def test_generate_is_deterministic(tmp_path, capsys):
    small = ["--train", "300", "--test-normal", "20", "--test-abnormal", "4"]
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        rc, out, err = run(capsys, "generate", tmp_path / name, "--seed", seed, *small)
        assert rc == 0, err
        assert "train.txt" in err
    a, b, c = ((tmp_path / n / "train.txt").read_bytes() for n in "abc")
    assert len(a.splitlines()) == 300
    assert a == b
    assert a != c
    assert (tmp_path / "a" / "test.csv").read_bytes() == (tmp_path / "b" / "test.csv").read_bytes()


# --- train, inspect --------------------------------------------------------------------------------------------------


def test_train_writes_bundle_and_inspect_describes_it(bundle, capsys):
    assert {"bundle.json", "vocabulary.json", "weights.npz", "reference_errors.npy", "model.keras"} <= {
        p.name for p in bundle.iterdir()
    }
    rc, out, err = run(capsys, "inspect", bundle)
    assert rc == 0, err
    doc = json.loads(out)
    assert isinstance(doc["threshold"], float) and doc["threshold"] > 0
    assert doc["threshold_percentile"] == 99.0
    assert doc["format_version"] == 4 and doc["error"] == "mean squared error weighted by place"
    assert doc["vocabulary"]["tokens"] > 10
    assert set(doc["vocabulary"]["rare_tokens"]) == {"seen_once", "seen_twice_or_more"}
    assert doc["vocabulary"]["first"] and all(isinstance(t, str) for t in doc["vocabulary"]["first"])
    # A dense autoencoder: layers chain up, the decoder mirrors the encoder, the output is as wide as the input.
    shapes = [re.fullmatch(r"(\d+)→(\d+) (\w+)", layer) for layer in doc["layers"]]
    assert len(shapes) >= 2 and all(shapes), doc["layers"]
    widths = [int(shapes[0][1])] + [int(m[2]) for m in shapes]
    assert all(int(m[1]) == w for m, w in zip(shapes, widths, strict=False))
    assert widths == widths[::-1] and widths[0] > max(widths[1:-1])
    assert re.fullmatch(r"[0-9a-f]{16}", doc["content_hash"])
    assert doc["training_rows"] + doc["reference_rows"] == N_TRAIN
    assert doc["reference_errors"]["count"] == doc["reference_rows"]
    assert doc["reference_errors"]["min"] <= doc["threshold"] <= doc["reference_errors"]["max"]
    assert datetime.fromisoformat(doc["created_at"]).tzinfo is not None
    assert re.match(r"\d+\.\d+", doc["tensorflow_version"])
    assert doc["preset"] == "auto"
    assert any(c.startswith("max_length 4") for c in doc["choices"]), doc["choices"]
    assert doc["model"]["epochs"] == EPOCHS and 1 <= doc["epochs_run"] <= EPOCHS


# --- score -----------------------------------------------------------------------------------------------------------


def test_score_rows_reasons_and_anomalies(bundle, data, described, tmp_path, capsys):
    normal = lines_of(data / "test_normal.txt")[:40]
    abnormal = lines_of(data / "test_abnormal.txt")
    bad = {
        3: (b"", "empty"),
        10: (b"GX567 \xff\xfe DF", "invalid_utf8"),
        20: (b"AB123 " * 30, "too_long"),  # 180 bytes > --max-bytes 100
        30: (b" ,,, ;; () [] ", "empty"),  # only separators: no tokens
    }
    good = [s.encode() for s in normal + abnormal]
    records: list[bytes] = []
    for b in good:
        while len(records) in bad:
            records.append(bad[len(records)][0])
        records.append(b)
    src = tmp_path / "in.txt"
    src.write_bytes(b"\n".join(records) + b"\n")
    out_csv = tmp_path / "scores.csv"

    rc, out, err = run(capsys, "score", bundle, src, "-o", out_csv, "--max-bytes", "100")
    assert rc == 0, err
    assert "2 empty" in err and "1 invalid_utf8" in err and "1 too_long" in err
    rows = read_score_csv(out_csv)
    assert len(rows) == len(records)
    threshold = described["threshold"]
    n_anomalies = 0
    for i, (row, raw) in enumerate(zip(rows, records, strict=True)):
        if i in bad:
            assert row["reason"] == bad[i][1], (i, row)
            assert row["error"] == "" and row["percentile"] == "" and row["is_anomaly"] == "", row
            assert row["top_tokens"] == ""
            continue
        assert row["sequence"] == raw.decode(), (i, row)  # input order kept
        assert row["reason"] == ""
        error, pct = float(row["error"]), float(row["percentile"])
        assert math.isfinite(error) and error >= 0
        assert 0.0 <= pct <= 100.0
        assert row["is_anomaly"] in ("0", "1")
        # The CSV holds 9 significant digits; only a value that close to the threshold could round across it.
        if abs(error - threshold) > 1e-7 * threshold:
            assert row["is_anomaly"] == ("1" if error > threshold else "0"), (row, threshold)
        if row["is_anomaly"] == "1":
            n_anomalies += 1
            assert row["top_tokens"].strip(), row  # --explain anomalies is the default
        else:
            assert row["top_tokens"] == ""
    assert 0 < n_anomalies < len(good)
    assert f"{n_anomalies:,} above the threshold" in err


@pytest.mark.parametrize("explain, top", [("all", 3), ("all", 1), ("anomalies", 2), ("none", 3)])
def test_score_top_tokens_are_the_unexpected_places_of_explain(bundle, data, tmp_path, capsys, explain, top):
    from monitor.bundle import load_bundle

    loaded = load_bundle(bundle)
    sequences = lines_of(data / "test_normal.txt")[:60] + lines_of(data / "test_abnormal.txt")[::5]
    # An unknown token of a known shape in place of the first (the length and the shapes unchanged); punctuation.
    sequences += [" ".join(["ZZQ", *sequences[0].split()[1:]]), sequences[1] + " ..."]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(sequences + ["", *sequences[:5]]) + "\n", encoding="utf-8")
    out_csv = tmp_path / "scores.csv"
    rc, out, err = run(capsys, "score", bundle, src, "-o", out_csv, "--explain", explain, "--top", top)
    assert rc == 0, err
    rows = read_score_csv(out_csv)
    assert list(rows[0]) == SCORE_HEADER
    assert len(rows) == len(sequences) + 6
    explained = 0
    for row in rows:
        if row["reason"]:
            assert row["top_tokens"] == ""
            continue
        wanted = explain == "all" or (explain == "anomalies" and row["is_anomaly"] == "1")
        if not wanted:
            assert row["top_tokens"] == "", row
            continue
        reference = [i["token"] for i in loaded.explain(row["sequence"], top=top) if i["kind"] == "unexpected"]
        assert row["top_tokens"] == " ".join(reference), row
        assert 1 <= len(reference) <= top
        explained += 1
    assert explained >= {"all": len(sequences) + 5, "anomalies": 1, "none": 0}[explain]
    if explain == "all":
        # OOV places show the raw unknown tokens, never the <oov> placeholder.
        assert "ZZQ" in rows[len(sequences) - 2]["top_tokens"].split()
        assert not any("<oov>" in row["top_tokens"] for row in rows)


def test_score_csv_input_with_column(bundle, data, tmp_path, capsys):
    out_csv = tmp_path / "scores.csv"
    rc, out, err = run(capsys, "score", bundle, data / "test.csv", "--column", "sequence", "-o", out_csv)
    assert rc == 0, err
    table = pd.read_csv(data / "test.csv", dtype=str, keep_default_na=False)
    rows = read_score_csv(out_csv)
    assert [r["sequence"] for r in rows] == table["sequence"].tolist()
    assert all(r["reason"] == "" and r["error"] != "" for r in rows)


def test_score_parquet_input_with_column(bundle, data, tmp_path, capsys):
    seqs = lines_of(data / "test_normal.txt")[:30]
    frame = pd.DataFrame({"id": range(31), "seq": [*seqs[:15], None, *seqs[15:]]})
    src = tmp_path / "in.parquet"
    frame.to_parquet(src, index=False)
    out_csv = tmp_path / "scores.csv"
    rc, out, err = run(capsys, "score", bundle, src, "--column", "seq", "-o", out_csv)
    assert rc == 0, err
    rows = read_score_csv(out_csv)
    assert len(rows) == 31
    assert [r["sequence"] for r in rows[:15] + rows[16:]] == seqs
    assert rows[15]["reason"] == "missing_field" and rows[15]["error"] == ""
    assert all(r["reason"] == "" and 0 <= float(r["percentile"]) <= 100 for r in rows[:15] + rows[16:])


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_score_missing_column_names_the_columns(bundle, data, tmp_path, capsys, suffix):
    table = pd.read_csv(data / "test.csv", dtype=str, keep_default_na=False).head(5)
    src = tmp_path / f"in.{suffix}"
    if suffix == "csv":
        table.to_csv(src, index=False)
    else:
        table.to_parquet(src, index=False)
    rc, out, err = run(capsys, "score", bundle, src, "--column", "seq", "-o", tmp_path / "o.csv")
    assert_user_error(rc, out, err, "'seq'", "sequence, label, kind")
    assert not (tmp_path / "o.csv").exists()


# --- evaluate --------------------------------------------------------------------------------------------------------


def test_evaluate_json(bundle, data, described, capsys):
    rc, out, err = run(
        capsys,
        "evaluate",
        bundle,
        "--normal",
        data / "test_normal.txt",
        "--abnormal",
        data / "test_abnormal.txt",
        "--json",
    )
    assert rc == 0, err
    assert len(out.strip().splitlines()) == 1
    result = json.loads(out)
    for key in ("roc_auc", "pr_auc", "precision", "recall", "f1", "threshold"):
        assert isinstance(result[key], float), key
    for key in ("roc_auc", "pr_auc", "precision", "recall", "f1"):
        assert 0.0 <= result[key] <= 1.0, key
    assert result["threshold"] == described["threshold"]
    assert result["normal"] == N_TEST_NORMAL and result["abnormal"] == N_TEST_ABNORMAL * len(KINDS)
    assert result["roc_auc"] > 0.7, result  # generated anomalies are separable even by a few-epoch model


def test_evaluate_table(bundle, data, capsys):
    rc, out, err = run(
        capsys, "evaluate", bundle, "--normal", data / "test_normal.txt", "--abnormal", data / "test_abnormal.txt"
    )
    assert rc == 0, err
    names = {line.split()[0] for line in out.strip().splitlines()}
    assert {"roc_auc", "pr_auc", "precision", "recall", "f1", "threshold"} <= names
    roc = next(line for line in out.splitlines() if line.startswith("roc_auc"))
    assert 0.7 < float(roc.split()[1]) <= 1.0


# --- error paths: input ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["train", "score", "evaluate"])
def test_missing_input_file(bundle, tmp_path, capsys, command):
    missing = tmp_path / "nope.txt"
    argv = {
        "train": ["train", missing, "--out", tmp_path / "b"],
        "score": ["score", bundle, missing, "-o", tmp_path / "o.csv"],
        "evaluate": ["evaluate", bundle, "--normal", missing, "--abnormal", missing],
    }[command]
    rc, out, err = run(capsys, *argv)
    assert_user_error(rc, out, err, str(missing), "does not exist")


@pytest.mark.parametrize(
    "bad_line, reason",
    [
        (b"GX567 \xff DF", "invalid_utf8"),
        (b"AB123 " * 30, "too_long"),
        (b"", "empty"),
        (b" ,,, ;; () ", "empty"),  # only separators: no tokens
    ],
)
def test_train_refuses_unusable_record(data, tmp_path, capsys, bad_line, reason):
    lines = [s.encode() for s in lines_of(data / "train.txt")[:40]]
    lines.insert(2, bad_line)
    src = tmp_path / "train.txt"
    src.write_bytes(b"\n".join(lines) + b"\n")
    rc, out, err = run(capsys, "train", src, "--out", tmp_path / "b", "--max-bytes", "100", "--epochs", "1", "--quiet")
    assert_user_error(rc, out, err, "--skip-invalid", reason, "record 3")
    assert not (tmp_path / "b" / "bundle.json").exists()


def test_train_skip_invalid_trains_on_the_rest(data, tmp_path, capsys):
    good = [s.encode() for s in lines_of(data / "train.txt")[:60]]
    lines = [*good[:10], b"GX567 \xff DF", *good[10:30], b"AB123 " * 30, *good[30:]]
    src = tmp_path / "train.txt"
    src.write_bytes(b"\n".join(lines) + b"\n")
    out_dir = tmp_path / "b"
    rc, out, err = run(
        capsys, "train", src, "--out", out_dir, "--skip-invalid", "--max-bytes", "100", "--epochs", "1", "--quiet"
    )
    assert rc == 0, err
    assert "skipping 2 record(s)" in err and "invalid_utf8" in err and "too_long" in err
    rc, out, err = run(capsys, "inspect", out_dir)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["training_rows"] + doc["reference_rows"] == len(good)


def test_train_needs_twenty_sequences(data, tmp_path, capsys):
    src = tmp_path / "few.txt"
    src.write_text("\n".join(lines_of(data / "train.txt")[:19]) + "\n", encoding="utf-8")
    rc, out, err = run(capsys, "train", src, "--out", tmp_path / "b", "--quiet")
    assert_user_error(rc, out, err, "at least 20", "got 19")
    assert not (tmp_path / "b" / "bundle.json").exists()


def test_train_empty_file(tmp_path, capsys):
    src = tmp_path / "empty.txt"
    src.write_bytes(b"")
    rc, out, err = run(capsys, "train", src, "--out", tmp_path / "b", "--quiet")
    assert_user_error(rc, out, err, str(src), "no usable sequences")


def test_train_says_what_auto_chose_and_why(data, tmp_path, capsys):
    from monitor.bundle import load_bundle

    rc, out, err = run(capsys, "train", data / "train.txt", "--out", tmp_path / "b", "--epochs", "1", "--quiet")
    assert rc == 0, err
    chose = err.split("preset auto chose, from the training data:\n", 1)[1].splitlines()
    assert [line[:4] for line in chose[:6]] == ["  - "] * 6
    assert any("max_length 4: 99 % of training sequences" in line for line in chose)
    assert any(line.startswith("  - input: positional tokens") for line in chose)
    assert any(line.startswith("  - error: each place's squared error weighted") for line in chose)
    bundle = load_bundle(tmp_path / "b")
    assert bundle.scorer.place_weights is not None and bundle.scorer.place_weights.min() > 0
    # Places the training rows never held are the heaviest: the prior caps them at the number of rows + 1.
    assert bundle.scorer.place_weights.max() <= bundle.metadata["training_rows"] + 1
    rc, out, err = run(capsys, "train", data / "train.txt", "--out", tmp_path / "plain", "--epochs", "1", "--quiet",
                       "--no-weighted-error")
    assert rc == 0, err
    assert load_bundle(tmp_path / "plain").scorer.place_weights is None


def test_train_unknown_preset(data, tmp_path, capsys):
    rc, out, err = run(capsys, "train", data / "train.txt", "--out", tmp_path / "b", "--preset", "bogus")
    assert_user_error(rc, out, err, "unknown preset 'bogus'", "auto", "seed", "logkeys", "original")


def test_train_positional_needs_max_length(data, tmp_path, capsys):
    rc, out, err = run(
        capsys, "train", data / "train.txt", "--out", tmp_path / "b", "--max-length", "none", "--encoding", "positional"
    )
    assert_user_error(rc, out, err, "positional", "max_length")


# --- error paths: bundle ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["inspect", "score", "evaluate"])
def test_bundle_does_not_exist(data, tmp_path, capsys, command):
    missing = tmp_path / "no-bundle"
    argv = {
        "inspect": ["inspect", missing],
        "score": ["score", missing, data / "test_normal.txt", "-o", tmp_path / "o.csv"],
        "evaluate": [
            "evaluate",
            missing,
            "--normal",
            data / "test_normal.txt",
            "--abnormal",
            data / "test_abnormal.txt",
        ],
    }[command]
    rc, out, err = run(capsys, *argv)
    assert_user_error(rc, out, err, str(missing), "does not exist")


def test_bundle_with_modified_weights(bundle, data, tmp_path, capsys):
    damaged = copy_bundle(bundle, tmp_path)
    weights = damaged / "weights.npz"
    raw = bytearray(weights.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    weights.write_bytes(bytes(raw))
    rc, out, err = run(capsys, "score", damaged, data / "test_normal.txt", "-o", tmp_path / "o.csv")
    assert_user_error(rc, out, err, "damaged", "weights.npz")
    rc, out, err = run(capsys, "inspect", damaged)
    assert_user_error(rc, out, err, "damaged", "weights.npz")


def test_bundle_without_manifest(bundle, tmp_path, capsys):
    broken = copy_bundle(bundle, tmp_path)
    (broken / "bundle.json").unlink()
    rc, out, err = run(capsys, "inspect", broken)
    assert_user_error(rc, out, err, "no bundle.json")


def test_bundle_from_a_future_version(bundle, tmp_path, capsys):
    from monitor.bundle import _manifest_sha256

    def _signed(doc):  # as a future seqmon would write it: its content hash matches
        doc = {**doc, "content_sha256": _manifest_sha256(doc)}
        doc["metadata"] = {**doc["metadata"], "content_hash": doc["content_sha256"][:16]}
        return doc

    future = copy_bundle(bundle, tmp_path)
    manifest = future / "bundle.json"
    doc = json.loads(manifest.read_text(encoding="utf-8"))
    doc["format_version"] = 5
    manifest.write_text(json.dumps(_signed(doc)), encoding="utf-8")
    rc, out, err = run(capsys, "inspect", future)
    assert_user_error(rc, out, err, "format version 5", "reads versions 1, 2, 3, 4", "retrain")


# --- the installed command -------------------------------------------------------------------------------------------


def test_installed_console_script(bundle, tmp_path):
    script = Path(sys.executable).with_name("seqmon")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "monitor.cli"]

    ok = subprocess.run([*cmd, "inspect", str(bundle)], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["content_hash"]

    missing = tmp_path / "no-bundle"
    bad = subprocess.run(
        [*cmd, "score", str(missing), str(tmp_path / "in.txt"), "-o", str(tmp_path / "o.csv")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert "Traceback" not in bad.stderr
    lines = bad.stderr.splitlines()
    assert len(lines) == 1, bad.stderr
    assert lines[0].startswith("seqmon: error: ") and str(missing) in lines[0] and "does not exist" in lines[0]


def test_score_into_a_missing_folder_and_train_onto_a_file_are_user_errors(bundle, data, tmp_path, capsys):
    assert main(["score", str(bundle), str(data / "test_normal.txt"), "-o", str(tmp_path / "no" / "o.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["train", str(data / "train.txt"), "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_train_writes_one_line_per_epoch_into_a_pipe(data, tmp_path):
    """Not a terminal (a log file, a pipe): no progress-bar redraws or escape codes, one line per epoch."""
    run_ = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "train", str(data / "train.txt"), "--out", str(tmp_path / "b"),
         "--epochs", "2", "--patience", "0"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], check=False,
    )
    assert run_.returncode == 0, run_.stderr
    output = run_.stdout + run_.stderr
    assert not any(c in output for c in ("\r", "\x1b", "\x08")), repr(output[-500:])
    assert len([line for line in run_.stdout.splitlines() if line.startswith("Epoch ")]) == 2, run_.stdout
