"""decode_json parses a batch with orjson and falls back record by record: every record keeps the reason the former
one-json.loads-per-record decoder gave it, whichever path the batch takes."""

import json

import numpy as np

from monitor.decode import JsonFields, decode_json

FIELDS = JsonFields(sequence="seq", weight="w", timestamp="ts")


def test_a_clean_batch_and_the_same_records_beside_a_bad_one_decode_alike():
    good = [
        json.dumps({"seq": "DF 36", "w": 2, "ts": 1_700_000_000_000}).encode(),
        json.dumps({"seq": "AB", "w": 0.5}).encode(),
        json.dumps({"seq": "CD", "ts": "2026-01-01T00:00:00+01:00"}).encode(),
    ]
    clean = decode_json(good, FIELDS)
    mixed = decode_json(good + [b"{broken"], FIELDS)
    assert clean.reasons.tolist() == ["", "", ""] and mixed.reasons.tolist() == ["", "", "", "invalid_json"]
    for d in (clean, mixed):
        assert d.sequences[:3] == ["DF 36", "AB", "CD"]
        assert d.weights[:3].tolist() == [2.0, 0.5, 1.0]
        assert d.timestamps_ms[:3].tolist() == [1_700_000_000_000, -1, 1_767_222_000_000]


def test_what_only_pythons_json_reads_keeps_its_reason():
    values = [
        b'{"seq": "a", "w": NaN}',  # orjson refuses NaN; json reads it, and NaN is no weight
        b'{"seq": "a", "w": 1e999}',  # infinite
        b'{"seq": "a", "w": ' + b"9" * 400 + b"}",  # an integer beyond any float
        b'{"seq": "a", "ts": ' + b"9" * 30 + b"}",  # beyond int64 epoch ms
        b'{"seq": "a", "w": true}',
        b'{"seq": "\\ud800 lone surrogate"}',  # json reads it; orjson does not
        b"[" * 100_000 + b"]" * 100_000,  # deeper than json's recursion limit
        b'{"seq": "b", "w": 3}',
    ]
    d = decode_json(values, FIELDS, max_bytes=1_000_000)
    assert d.reasons.tolist() == [
        "invalid_weight", "invalid_weight", "invalid_weight", "invalid_timestamp", "invalid_weight", "", "invalid_json", "",
    ]
    assert d.sequences[5] == "\ud800 lone surrogate" and d.sequences[7] == "b" and d.weights[7] == 3.0
    assert all(s == "" for s, r in zip(d.sequences, d.reasons) if r)


def test_too_long_records_are_not_parsed_and_the_rest_are():
    values = [b'{"seq": "x"}', b'{"seq": "' + b"y" * 50 + b'"}', b"\xff\xfe", b'"just a string"', b"null"]
    d = decode_json(values, FIELDS, max_bytes=20)
    assert d.reasons.tolist() == ["", "too_long", "invalid_utf8", "missing_field", "missing_field"]
    assert d.sequences == ["x", "", "", "", ""]
    assert d.weights.tolist() == [1.0] * 5 and np.all(d.timestamps_ms == -1)


def test_only_the_named_fields_are_read():
    values = [json.dumps({"seq": "x", "w": "heavy", "ts": "never"}).encode()]
    d = decode_json(values, JsonFields(sequence="seq", weight=None, timestamp=None))
    assert d.reasons.tolist() == [""] and d.weights.tolist() == [1.0] and d.timestamps_ms.tolist() == [-1]
