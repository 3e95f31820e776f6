import json

import numpy as np

from monitor.decode import JsonFields, decode_json, decode_plain, parse_timestamp_ms


def test_plain_values_with_bad_ones():
    d = decode_plain([b"DF 36", b"\xff\xfe", b"x" * 11, b""], max_bytes=10)
    assert d.sequences == ["DF 36", "", "", ""]
    assert d.reasons.tolist() == ["", "invalid_utf8", "too_long", ""]  # an empty value is found empty once tokenized
    assert d.weights.tolist() == [1.0] * 4 and d.timestamps_ms.tolist() == [-1] * 4


def test_json_records_with_weight_and_event_time():
    values = [
        json.dumps({"seq": "DF 36", "w": 3, "ts": 1_700_000_000_000}).encode(),
        json.dumps({"seq": "AB 12", "ts": "2026-01-01T01:00:00Z"}).encode(),
        b"{not json",
        json.dumps({"other": "x"}).encode(),
        json.dumps({"seq": "DF", "w": -1}).encode(),
        json.dumps({"seq": "DF", "ts": "2026-01-01T01:00:00"}).encode(),  # no zone: ambiguous
        b"\xff",
        json.dumps(["DF 36"]).encode(),
    ]
    d = decode_json(values, JsonFields(sequence="seq", weight="w", timestamp="ts"))
    assert d.reasons.tolist() == [
        "", "", "invalid_json", "missing_field", "invalid_weight", "invalid_timestamp", "invalid_utf8", "missing_field",
    ]
    assert d.sequences[:2] == ["DF 36", "AB 12"]
    assert d.weights[:2].tolist() == [3.0, 1.0]
    assert d.timestamps_ms[:2].tolist() == [1_700_000_000_000, 1_767_229_200_000]
    assert np.all(d.timestamps_ms[2:] == -1)


def test_parse_timestamp_ms():
    assert parse_timestamp_ms(5) == 5
    assert parse_timestamp_ms("1970-01-01T00:00:01+00:00") == 1000
    assert parse_timestamp_ms(True) is None and parse_timestamp_ms(-1) is None and parse_timestamp_ms("x") is None
