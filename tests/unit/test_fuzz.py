"""Fuzzed input, nothing lost: whatever bytes arrive, every record ends in a window, late, or invalid with a reason,
and nothing raises.

Property-based (hypothesis) over the decoders and ``Pipeline.process`` with a small numpy-only bundle; each finding
of the fuzzing has its own regression test below. The long run through the real daemon and broker is
``tests/bench/fuzz_daemon.py``.
"""

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor.bundle import load_bundle, save_bundle
from monitor.decode import (
    MAX_EVENT_MS,
    MAX_WEIGHT,
    REASONS,
    JsonFields,
    decode_json,
    decode_plain,
    parse_timestamp_ms,
    parse_weight,
)
from monitor.pipeline import Pipeline, RecordBatch
from monitor.score import DenseLayer
from monitor.vectorize import Vectorizer, VectorizerSettings
from monitor.window import Windower, WindowSettings

FIELDS = JsonFields(sequence="sequence", weight="weight", timestamp="ts")
NOW_MS = 1_780_000_000_000  # a fixed wall clock, UTC epoch ms
HOUR_MS = 3_600_000
MAX_FUTURE_MS, MAX_PAST_MS = 300_000, 30 * 86_400_000  # the daemon's defaults
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- strategies --------------------------------------------------------------------------------------------------

words = st.sampled_from(["DF", "36", "FR", "GX567", "df", "zz", "\x00", "é", "💥", "", " ", "\t", "!!!", "\ufeff"])
sequence_text = st.lists(words, max_size=8).map(" ".join) | st.text(max_size=40)
huge_line = st.integers(4000, 70_000).map(lambda n: b"DF 36 " * (n // 6))
raw_values = st.one_of(
    sequence_text.map(lambda s: s.encode("utf-8", "surrogatepass")),  # surrogates give invalid UTF-8
    st.binary(max_size=64),
    st.binary(max_size=16).map(lambda b: b"DF \xff" + b + b"\x00"),
    huge_line,
    st.just(b""),
)
odd_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 10**400, -(10**400), 2**63, 2**63 - 1, MAX_EVENT_MS, MAX_EVENT_MS + 1, 1e300, 5e-324]),
)
timestamp_values = st.one_of(
    odd_numbers,
    st.integers(NOW_MS - 2 * MAX_PAST_MS, NOW_MS + 2 * MAX_FUTURE_MS),
    st.sampled_from(["2026-05-28T20:26:40Z", "2026-05-28T20:26:40", "0001-01-01T00:00:00+05:00",
                     "9999-12-31T23:59:59-23:59", "1969-12-31T23:59:59Z", "not a time", "", "\x00", "NaN"]),
    st.text(max_size=30),
    st.none(), st.booleans(), st.lists(st.integers(), max_size=2),
)
weight_values = st.one_of(odd_numbers, st.sampled_from([1, 2.5, 0, -3, MAX_WEIGHT, MAX_WEIGHT * 2, "1", "NaN"]),
                          st.none(), st.booleans(), st.text(max_size=5), st.dictionaries(st.text(max_size=3), st.integers()))
json_leaf = st.one_of(st.none(), st.booleans(), odd_numbers, st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@st.composite
def json_records(draw):
    doc = {}
    if draw(st.booleans()) or draw(st.booleans()):
        doc["sequence"] = draw(sequence_text | sequence_text | json_value)
    if draw(st.booleans()):
        doc["weight"] = draw(weight_values)
    if draw(st.booleans()):
        doc["ts"] = draw(timestamp_values | st.integers(NOW_MS - HOUR_MS, NOW_MS))
    extra = draw(st.dictionaries(st.text(max_size=8), json_value, max_size=3))
    doc = {**extra, **doc}
    text = json.dumps(doc, allow_nan=True, ensure_ascii=draw(st.booleans()))
    value = text.encode("utf-8", "surrogatepass")
    damage = draw(st.sampled_from(["none"] * 6 + ["truncate", "nul", "prefix"]))
    if damage == "truncate":
        value = value[: draw(st.integers(0, len(value)))]
    elif damage == "nul":
        at = draw(st.integers(0, len(value)))
        value = value[:at] + b"\x00" + value[at:]
    elif damage == "prefix":
        value = b"\xef\xbb\xbf" + value  # a byte-order mark
    return value


deep_json = st.integers(1, 5000).flatmap(
    lambda depth: st.sampled_from([b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth,
                                   b'{"sequence":"DF","x":' + b"[" * depth + b"]" * depth + b"}"])
)
json_values = st.one_of(json_records(), json_records(), json_records(), raw_values, deep_json)


# --- a small bundle without TensorFlow -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    rng = np.random.default_rng(0)
    vectorizer = Vectorizer(VectorizerSettings(vocab_size=8), ["df", "36", "fr", "gx567", "zz", "é"])
    layers = [
        DenseLayer(rng.normal(size=(8, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32), "relu"),
        DenseLayer(rng.normal(size=(3, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32), "linear"),
    ]
    path = tmp_path_factory.mktemp("fuzz") / "bundle"
    save_bundle(path, vectorizer=vectorizer, layers=layers, reference_errors=rng.uniform(0, 2, 200), threshold_percentile=99.0)
    return load_bundle(path)


def check_decoded(decoded, n):
    assert len(decoded.sequences) == n and len(decoded.reasons) == n
    assert len(decoded.weights) == n and len(decoded.timestamps_ms) == n
    assert set(decoded.reasons.tolist()) <= {"", *REASONS}
    good = decoded.ok
    for i in np.flatnonzero(good):
        decoded.sequences[i].encode("utf-8")  # every accepted sequence has a UTF-8 form (Arrow needs it)
    assert all(decoded.sequences[i] == "" for i in np.flatnonzero(~good))
    w = decoded.weights[good]
    assert np.all((w > 0) & (w <= MAX_WEIGHT))
    t = decoded.timestamps_ms[good]
    assert np.all((t == -1) | ((t >= 0) & (t <= MAX_EVENT_MS)))


# --- properties --------------------------------------------------------------------------------------------------


@FUZZ
@given(st.lists(raw_values, max_size=30), st.sampled_from([16, 4096, 1 << 20]))
def test_plain_decoding_gives_every_record_a_sequence_or_a_reason(values, max_bytes):
    decoded = decode_plain(values, max_bytes)
    check_decoded(decoded, len(values))
    for value, sequence, reason in zip(values, decoded.sequences, decoded.reasons):
        if len(value) > max_bytes:
            assert reason == "too_long"
        elif reason == "":
            assert sequence.encode("utf-8") == value


@FUZZ
@given(st.lists(json_values, max_size=30), st.sampled_from([64, 4096, 1 << 20]))
def test_json_decoding_gives_every_record_a_sequence_or_a_reason(values, max_bytes):
    check_decoded(decode_json(values, FIELDS, max_bytes), len(values))


@FUZZ
@given(timestamp_values)
def test_a_timestamp_is_epoch_ms_in_range_or_refused(value):
    ms = parse_timestamp_ms(value)
    assert ms is None or (isinstance(ms, int) and 0 <= ms <= MAX_EVENT_MS)


@FUZZ
@given(weight_values)
def test_a_weight_is_positive_finite_and_bounded_or_refused(value):
    w = parse_weight(value)
    assert w is None or (math.isfinite(w) and 0 < w <= MAX_WEIGHT)


@st.composite
def record_batches(draw, json_format):
    values = draw(st.lists(json_values if json_format else raw_values, min_size=0, max_size=40))
    n = len(values)
    near = st.integers(NOW_MS - MAX_PAST_MS - 2 * HOUR_MS, NOW_MS + MAX_FUTURE_MS + HOUR_MS)
    stamps = draw(st.lists(near | st.integers(-(2**63), 2**63 - 1) | st.sampled_from([-1, 0]), min_size=n, max_size=n))
    weights = None
    if not json_format and draw(st.booleans()):  # a file replay carries weights beside the values
        weights = np.array(draw(st.lists(st.floats(allow_nan=True, allow_infinity=True) | st.just(1.0), min_size=n, max_size=n)))
    return RecordBatch(
        values=values,
        timestamps_ms=np.array(stamps, dtype=np.int64),
        topics=np.array(draw(st.lists(st.sampled_from(["a", "b", "ü/ß"]), min_size=n, max_size=n)), dtype=object),
        weights=weights,
        partitions=np.array(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), dtype=np.int64),
        offsets=np.arange(n, dtype=np.int64),
    )


def _counted(windower, closed):
    return sum(w.aggregate.count for w in closed), sum(w.aggregate.count for w in windower.open_windows())


@pytest.mark.parametrize("json_format", [False, True], ids=["plain", "json"])
def test_every_record_ends_windowed_late_or_invalid(bundle, json_format):
    """consumed = windowed + late + invalid for every batch, and the windows hold exactly the windowed records."""

    @FUZZ
    @given(st.lists(record_batches(json_format), min_size=1, max_size=4), st.integers(0, 3 * HOUR_MS))
    def run(batches, clock_step_ms):
        decode = (lambda v: decode_json(v, FIELDS, 4096)) if json_format else (lambda v: decode_plain(v, 4096))
        windower = Windower(WindowSettings(size_ms=HOUR_MS, allowed_lateness_ms=60_000))
        pipeline = Pipeline(bundle, windower, decode)
        now = NOW_MS
        windowed_total, closed_total = 0, 0
        for batch in batches:
            result = pipeline.process(batch, max_event_ms=now + MAX_FUTURE_MS, now_ms=now, min_event_ms=now - MAX_PAST_MS)
            n = len(batch)
            invalid = result.reasons != ""
            assert len(result.reasons) == len(result.late) == len(result.errors) == n
            assert not (invalid & result.late).any()  # one outcome per record
            windowed = int((~invalid & ~result.late).sum())
            assert windowed + int(result.late.sum()) + int(invalid.sum()) == n
            assert sum(result.invalid_by_reason.values()) == int(invalid.sum())
            assert set(result.invalid_by_reason) <= set(REASONS)
            scored = ~invalid
            assert np.isfinite(result.errors[scored]).all() and (result.errors[scored] >= 0).all()
            assert np.isnan(result.errors[invalid & (result.reasons != "invalid_timestamp") & (result.reasons != "invalid_weight")]).all()
            windowed_total += windowed
            closed_total += sum(w.aggregate.count for w in result.closed)
            now += clock_step_ms
            closed_total += sum(w.aggregate.count for w in windower.close_due(now))
            # Nothing lost: the windows, closed and open, hold every windowed record exactly once.
            assert closed_total + sum(w.aggregate.count for w in windower.open_windows()) == windowed_total
        # Bounded state: open windows lie between the past and future bounds of the wall clock.
        span = (MAX_PAST_MS + MAX_FUTURE_MS + len(batches) * 3 * HOUR_MS) // HOUR_MS + 2
        for topic in windower.topics():
            assert sum(1 for w in windower.open_windows() if w.topic == topic) <= span
        snapshot = json.dumps(windower.snapshot(), allow_nan=False)  # the checkpoint stays strict JSON
        restored = Windower.from_snapshot(windower.settings, json.loads(snapshot))
        assert [w.aggregate.count for w in restored.open_windows()] == [w.aggregate.count for w in windower.open_windows()]

    run()


# --- regressions: one per finding of the fuzzing -----------------------------------------------------------------


def test_deeply_nested_json_is_invalid_json_not_a_crash():
    """json.loads raised RecursionError (not a ValueError) at ~1000 levels and stopped the daemon."""
    values = [b"[" * 5000 + b"]" * 5000, b'{"sequence":"DF 36","x":' + b"[" * 3000 + b"]" * 3000 + b"}"]
    assert decode_json(values, FIELDS, max_bytes=1 << 20).reasons.tolist() == ["invalid_json", "invalid_json"]


def test_a_lone_surrogate_escape_is_invalid_not_a_crash(bundle):
    """'\\ud800' is valid JSON syntax but no UTF-8: Arrow raised UnicodeEncodeError when the batch was scored."""
    values = [b'{"sequence":"DF \\ud800"}', b'{"sequence":"DF \\ud83d\\udca5"}']  # a lone half; a whole pair
    decoded = decode_json(values, FIELDS)
    assert decoded.reasons.tolist() == ["invalid_utf8", ""] and decoded.sequences[1] == "DF 💥"
    result = Pipeline(bundle, Windower(WindowSettings(size_ms=HOUR_MS)), lambda v: decode_json(v, FIELDS)).process(
        _batch(values, [NOW_MS, NOW_MS]))
    assert result.reasons.tolist() == ["invalid_utf8", ""]


@pytest.mark.parametrize("ts", ["1e300", "9" * 30, "-1", "1.5e19", '"0001-01-01T00:00:00+05:00"', '"1960-01-01T00:00:00Z"',
                                "NaN", "-Infinity", str(MAX_EVENT_MS + 1)])
def test_out_of_range_event_times_are_invalid_timestamp(ts):
    """Huge numbers raised OverflowError filling the int64 column; negative ISO times fell back to the Kafka time."""
    value = f'{{"sequence":"DF 36","ts":{ts}}}'.encode()
    assert decode_json([value], FIELDS).reasons.tolist() == ["invalid_timestamp"]


@pytest.mark.parametrize("w", ["9" * 400, "1e300", str(MAX_WEIGHT * 10), "NaN", "Infinity", "0", "-1", "true", '"2"'])
def test_unusable_weights_are_invalid_weight(w):
    """A 400-digit integer raised TypeError in np.isfinite; 1e300 made a window's Σw² inf and its figures NaN."""
    value = f'{{"sequence":"DF 36","weight":{w}}}'.encode()
    assert decode_json([value], FIELDS).reasons.tolist() == ["invalid_weight"]


def test_replayed_weights_that_are_not_usable_are_invalid_weight_not_a_crash(bundle):
    """Weights beside the values (a replayed file) went to the windower unchecked, which raised ValueError on NaN."""
    pipeline = Pipeline(bundle, Windower(WindowSettings(size_ms=HOUR_MS)))
    batch = _batch([b"DF 36"] * 5, [NOW_MS] * 5, weights=[1.0, np.nan, -1.0, np.inf, 2.0])
    result = pipeline.process(batch)
    assert result.reasons.tolist() == ["", "invalid_weight", "invalid_weight", "invalid_weight", ""]
    assert pipeline.windower.open_windows()[0].aggregate.weight == 3.0


def test_kafka_records_without_a_timestamp_are_invalid_timestamp(bundle):
    """Kafka gives -1 for a record without a timestamp: it opened a 1969 window."""
    pipeline = Pipeline(bundle, Windower(WindowSettings(size_ms=HOUR_MS)))
    result = pipeline.process(_batch([b"DF 36", b"DF 36"], [-1, NOW_MS]))
    assert result.reasons.tolist() == ["invalid_timestamp", ""]
    assert [w.start_ms for w in pipeline.windower.open_windows()] == [NOW_MS // HOUR_MS * HOUR_MS]


def test_a_record_from_1970_does_not_make_every_hour_since_a_window(bundle):
    """Without a bound in the past, one record at epoch 0 beside a current one made the windower close ~490,000
    count-0 hourly windows (minutes of work and a log line each)."""
    pipeline = Pipeline(bundle, Windower(WindowSettings(size_ms=HOUR_MS, allowed_lateness_ms=0)))
    result = pipeline.process(_batch([b"DF 36", b"DF 36"], [5, NOW_MS]), max_event_ms=NOW_MS + MAX_FUTURE_MS,
                              now_ms=NOW_MS, min_event_ms=NOW_MS - MAX_PAST_MS)
    assert result.reasons.tolist() == ["invalid_timestamp", ""]
    closed = pipeline.windower.close_due(NOW_MS + 2 * HOUR_MS)
    assert [w.aggregate.count for w in closed] == [1, 0]


def _batch(values, stamps, weights=None):
    n = len(values)
    return RecordBatch(values=values, timestamps_ms=np.array(stamps, dtype=np.int64), topics=np.full(n, "t", dtype=object),
                       weights=None if weights is None else np.array(weights, dtype=float),
                       partitions=np.zeros(n, dtype=np.int64), offsets=np.arange(n, dtype=np.int64))


def test_a_lag_query_that_times_out_does_not_stop_the_daemon(bundle, tmp_path, caplog):
    """Found by the long run (tests/bench/fuzz_daemon.py, 12 million records): under load the broker did not answer
    the watermark query within 5 s, librdkafka raised KafkaException(_TIMED_OUT) from ``lag()``, and the daemon died."""
    from prometheus_client import CollectorRegistry

    from monitor.config import load_settings
    from monitor.daemon.run import Daemon
    from monitor.source import FileSource

    class BusyBroker(FileSource):
        def lag(self):
            raise TimeoutError("Failed to get watermark offsets: Local: Timed out")

    stream = tmp_path / "stream.csv"
    stream.write_text("timestamp_ms,sequence\n" + "".join(f"{NOW_MS + i},DF 36 FR GX567\n" for i in range(50)))
    settings = load_settings(None, env={}, overrides=[
        f"model.bundle={bundle.path}", f"state.directory={tmp_path / 'state'}", "kafka.topics=replay",
        "window.max_future_seconds=3153600000", "window.max_past_seconds=0", "window.idle_close_interval_seconds=0",
        "model.watch_interval_seconds=0",
    ])
    daemon = Daemon(settings, registry=CollectorRegistry())
    daemon.start(source=BusyBroker(stream, batch_size=10), serve_metrics=False)
    with caplog.at_level("WARNING", logger="seqmon"):
        daemon.run()
    assert daemon.registry.get_sample_value("seqmon_records_consumed_total", {"topic": "replay"}) == 50
    assert [w.aggregate.count for w in daemon.closed_windows] == [50]
    assert "could not read partition lags" in caplog.text
