"""Security settings reach kafka-python intact, and secrets appear nowhere else."""

from __future__ import annotations

import json
import logging

from stream_al.cli import main as cli_main
from stream_al.config import Settings
from stream_al.kafka_io import client_config

PASSWORD = "pw-7f3a-not-for-logs"


def secure_settings(**extra):
    return Settings(
        classes=["legit", "fraud"],
        kafka={
            "bootstrap_servers": "b1:9093,b2:9093", "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "engine", "sasl_password": PASSWORD, "ssl_cafile": "/etc/kafka/ca.pem",
            "ssl_certfile": "/etc/kafka/client.pem", "ssl_keyfile": "/etc/kafka/client.key", "ssl_password": PASSWORD,
        },
        snapshots={"key": PASSWORD},
        **extra,
    )


def test_sasl_and_ssl_settings_are_passed_to_kafka_python():
    config = client_config(secure_settings().kafka)
    assert config["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert config["security_protocol"] == "SASL_SSL" and config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_username"] == "engine" and config["sasl_plain_password"] == PASSWORD
    assert config["ssl_cafile"] == "/etc/kafka/ca.pem" and config["ssl_certfile"] == "/etc/kafka/client.pem"
    assert config["ssl_keyfile"] == "/etc/kafka/client.key" and config["ssl_password"] == PASSWORD
    assert config["ssl_check_hostname"] is True


def test_plaintext_passes_no_security_settings():
    config = client_config(Settings(classes=["a", "b"]).kafka)
    assert config["security_protocol"] == "PLAINTEXT"
    assert not any(key.startswith(("sasl_", "ssl_")) for key in config)


def test_secrets_never_appear_in_repr_dumps_logs_or_cli_output(capsys, caplog, monkeypatch):
    settings = secure_settings()
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert PASSWORD not in json.dumps(settings.redacted(), default=str)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("stream_al").info("settings: %s", settings)
    assert PASSWORD not in caplog.text
    monkeypatch.setenv("STREAM_AL_CLASSES", '["legit", "fraud"]')
    monkeypatch.setenv("STREAM_AL_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STREAM_AL_KAFKA__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("STREAM_AL_KAFKA__SASL_USERNAME", "engine")
    monkeypatch.setenv("STREAM_AL_KAFKA__SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("STREAM_AL_SNAPSHOTS__KEY", PASSWORD)
    assert cli_main(["config"]) == 0
    out = capsys.readouterr().out
    assert PASSWORD not in out and '"sasl_username": "engine"' in out and "**********" in out


def test_metrics_endpoint_binds_to_localhost_by_default():
    assert Settings(classes=["a", "b"]).metrics.host == "127.0.0.1"
