"""`seqmon inspect --config`: the settings `seqmon run` would use, with every secret hidden."""

from __future__ import annotations

import json

from monitor.cli import main

PASSWORD = "pa55-in-env-9d1c"


def test_inspect_shows_the_effective_settings_without_the_password(tmp_path, capsys, monkeypatch):
    config = tmp_path / "seqmon.toml"
    config.write_text(
        '[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-512"\n'
        'sasl_plain_username = "seqmon"\nsasl_plain_password = "pa55-in-file-2b7e"\n'
    )
    monkeypatch.setenv("SEQMON_KAFKA_SASL_PLAIN_PASSWORD", PASSWORD)  # the environment wins over the file
    assert main(["inspect", "--config", str(config), "--set", "metrics.port=9200"]) == 0
    out, err = capsys.readouterr()
    settings = json.loads(out)["settings"]
    assert settings["kafka"]["sasl_plain_password"] == "***"
    assert settings["kafka"]["sasl_plain_username"] == "seqmon"
    assert settings["metrics"] == {"host": "127.0.0.1", "port": 9200, "web_config_file": ""}
    assert PASSWORD not in out + err and "pa55-in-file-2b7e" not in out + err


def test_inspect_without_a_bundle_or_settings_says_what_it_needs(capsys, monkeypatch):
    assert main(["inspect"]) == 2
    assert "needs a BUNDLE, or --config / --set" in capsys.readouterr().err
