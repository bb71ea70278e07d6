"""The shipped config, compose file and examples stay true to the code."""

from __future__ import annotations

from pathlib import Path

import yaml

from stream_al.cli import build_parser
from stream_al.config import Settings
from stream_al.messages import EventParser

ROOT = Path(__file__).resolve().parents[2]


def test_every_shipped_config_loads():
    configs = sorted((ROOT / "config").glob("*.yaml")) + sorted((ROOT / "examples").glob("*.yaml"))
    assert len(configs) >= 3
    for path in configs:
        Settings.load(path)


def test_own_event_shape_example_maps_its_documented_event():
    settings = Settings.load(ROOT / "examples" / "own-event-shape.yaml")
    raw = b'{"txn": {"uuid": "a1", "created": "2026-11-21T10:00:00Z"}, "amount": 12.5, "mcc": "5411", "card": {"age_days": 40}}'
    event = EventParser(settings.input).parse(raw, "events", 0, 0)
    assert event.id == "a1" and event.ts == 1795255200.0
    assert event.features == {"amount": 12.5, "mcc=5411": 1.0, "card.age_days": 40.0}


def test_compose_services_run_real_commands_with_real_configs():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "topics", "engine", "traffic"} <= services.keys()
    assert services["kafka"]["image"].startswith("apache/kafka:")
    parser = build_parser()
    for name, service in services.items():
        if "build" not in service:
            continue
        args = parser.parse_args(service["command"])
        config = args.config.replace("/app/", "")
        settings = Settings.load(ROOT / config)
        assert settings.kafka.bootstrap_servers == "kafka:9092", name
    engine = Settings.load(ROOT / "config" / "compose.yaml")
    assert services["engine"]["ports"] == [f"{engine.metrics.port}:{engine.metrics.port}"]
    assert engine.metrics.host == "0.0.0.0"  # Prometheus scrapes it from another container
    assert "/app/state" in services["engine"]["volumes"][0] and str(engine.snapshots.dir).startswith("/app/state")
