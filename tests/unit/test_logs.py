"""Log lines: JSON objects for log shippers, text otherwise."""

import json
import logging
import math

import numpy as np
import pytest

from monitor.config import load_settings
from monitor.daemon.logs import JsonFormatter, configure_logging
from monitor.errors import ConfigError


def record(msg, *args, exc_info=None, **extra):
    rec = logging.LogRecord("seqmon", logging.INFO, __file__, 1, msg, args, exc_info)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_lines_carry_time_level_logger_message_and_fields():
    rec = record("window closed %s", "t", fields={"window": {"count": np.int64(3), "mean_error": math.nan,
                                                            "p99": np.float32(0.5), "start": object.__name__}})
    rec.created = 1_767_225_600.25  # 2026-01-01T00:00:00.250Z
    doc = json.loads(JsonFormatter().format(rec))
    assert doc == {
        "time": "2026-01-01T00:00:00.250+00:00", "level": "INFO", "logger": "seqmon", "message": "window closed t",
        "window": {"count": 3, "mean_error": None, "p99": 0.5, "start": "object"},
    }


def test_json_lines_hold_the_traceback_and_never_a_newline():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys

        line = JsonFormatter().format(record("failed", exc_info=sys.exc_info()))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["message"] == "failed" and "ValueError: bad" in doc["exception"]


def test_configure_logging_and_the_setting(capsys):
    configure_logging("INFO", "json")
    logging.getLogger("seqmon").info("hello %d", 1)
    err = capsys.readouterr().err.strip().splitlines()
    assert json.loads(err[-1])["message"] == "hello 1"
    configure_logging("INFO", "text")
    logging.getLogger("seqmon").info("plain")
    assert capsys.readouterr().err.strip().endswith("INFO seqmon plain")
    assert load_settings(None, env={}, overrides=["log.format=json"]).log.format == "json"
    with pytest.raises(ConfigError, match="log.format"):
        load_settings(None, env={}, overrides=["log.format=xml"])
