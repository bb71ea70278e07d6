"""Drift on a real broker: alerts on the drift topic and in the metrics, a boost, and a background
model swapped in through the label log, so a replay of the log holds the very same model."""

from __future__ import annotations

import random
import time
import urllib.request

import orjson
import pytest

from stream_al.kafka_io import RecordProducer
from stream_al.messages import ModelControl, parse_label_log

from stream_al.rebuild import rebuild

from .engine_helpers import (
    Analyst, EngineThread, engine_from_label_log, engine_from_snapshot, engine_settings, produce_events, read_all, wait_for,
)

pytestmark = pytest.mark.integration

PROBES = [{"x": x / 4, "y": y / 4} for x in range(5) for y in range(5)]


def produce_shifted(settings, start: int, count: int) -> dict[str, str]:
    """Events from a corner the first wave never showed (an upstream change): fraud when x > 0.9."""
    rng = random.Random(start)
    producer = RecordProducer(settings.kafka)
    truth = {}
    for i in range(start, start + count):
        x, y = 0.8 + 0.2 * rng.random(), 0.8 + 0.2 * rng.random()
        event = {"id": f"ev-{i}", "ts": time.time(), "features": {"x": x, "y": y}}
        truth[event["id"]] = "fraud" if x > 0.9 else "legit"
        producer.send(settings.topics.events, orjson.dumps(event))
    producer.flush()
    producer.close()
    return truth


def test_a_drift_is_published_boosts_the_budget_and_swaps_the_model_through_the_label_log(kafka_bootstrap, topic_prefix, tmp_path):
    settings = engine_settings(
        kafka_bootstrap, topic_prefix, tmp_path,
        budget={"fraction": 0.1, "boost": {"allowance": "1000 per hour", "max_extra_fraction": 0.1, "hard_cap_fraction": 0.3}},
        drift={"warmup_events": 1000, "block_events": 20, "calibration_blocks": 10,
               "background_model": True, "background_min_labels": 15},
    )
    truth = produce_events(settings, 0, 1000)
    with EngineThread(settings) as engine, Analyst(settings, truth) as analyst:
        runner = engine.runner
        # The model learns the first wave (the detectors wait: drift.warmup_events), then the
        # detectors calibrate on a second wave of the same kind, then the events change.
        # All of the first wave's answers, whatever the sampler spent of its 100 (a fixed count here
        # was flaky: the budget is a bound, and a run can ask 99).
        counters = runner.engine.counters
        wait_for(lambda: counters.events >= 1000 and counters.labels_applied >= counters.requests >= 80, 60, "first wave not learned")
        truth.update(produce_events(settings, 1000, 600, seed=1))
        wait_for(lambda: runner.engine.counters.events >= 1600, 60, "second wave not scored")
        assert runner.engine.counters.model_swaps == 0
        truth.update(produce_shifted(settings, 1600, 1500))
        wait_for(lambda: runner.engine.counters.events >= 3100, 60, "third wave not scored")
        wait_for(lambda: runner.engine.counters.model_swaps >= 1, 60, "no model swap")
        wait_for(lambda: runner.engine.counters.labels_applied >= len(analyst.answered) > 0, 60, "labels not applied")
        url = f"http://127.0.0.1:{runner.health.port}/metrics"
        wait_for(lambda: "stream_al_model_swaps_total 0.0" not in urllib.request.urlopen(url).read().decode(), 10, "swap not in metrics")
        metrics = urllib.request.urlopen(url).read().decode()
        live = runner.engine

    alerts = [orjson.loads(r.value) for r in read_all(settings, settings.topics.drift)]
    drifts = [a for a in alerts if a["level"] == "drift"]
    assert drifts, alerts
    assert all(a["events"] > 1600 for a in drifts), "a drift before the change is a false alarm"
    assert {"signal", "statistic", "reference", "labels", "detected_at", "replica", "model_version"} <= drifts[0].keys()
    for signal in {a["signal"] for a in drifts}:
        assert f'stream_al_drift_detected_total{{signal="{signal}"}}' in metrics
    assert f"stream_al_model_swaps_total {float(live.counters.model_swaps)}" in metrics
    assert live.sampler.boosted > 0  # the boost paid for extra labels after the drift

    log = [parse_label_log(r.value) for r in read_all(settings, settings.topics.labels)]
    controls = [m for m in log if isinstance(m, ModelControl)]
    assert controls and controls[0].control in ("background_start", "model_swap")
    # The swap happened where the control record sits in the log: a replay of the log makes it too.
    replay = engine_from_label_log(settings)
    report = rebuild(settings, tmp_path / "rebuilt")  # `stream-al rebuild` replays the controls too
    rebuilt = engine_from_snapshot(settings, tmp_path / "rebuilt")
    assert report.labels_applied == live.counters.labels_applied
    for engine in (replay, rebuilt):
        assert engine.counters.model_swaps == live.counters.model_swaps
        assert engine.model_version == live.model_version
        for probe in PROBES:
            assert engine.model.predict_proba_one(probe)["fraud"] == pytest.approx(live.model.predict_proba_one(probe)["fraud"], abs=1e-9)
