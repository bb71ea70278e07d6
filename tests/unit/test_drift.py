"""Drift monitoring: detectors, alerts and levels, the label layers, snapshots, the engine's reactions,
and the simulator's drift report."""

from __future__ import annotations

import pickle
import random
from typing import Any

from stream_al.config import DriftSettings, Settings
from stream_al.drift import AUDIT_SIGNAL, DRIFT, LABEL_SIGNAL, STABLE, WARNING, Cusum, DriftMonitor
from stream_al.engine import Engine
from stream_al.messages import Event, LabelMessage
from stream_al.simulate import SimOptions, simulate
from stream_al.simulate.data import Stream
from stream_al.simulate.run import drift_report

LEGIT, FRAUD = {"x": 1.0}, {"x": -1.0}


def cusum(**kw: Any) -> Cusum:
    args = dict(threshold=10, warning=5, allowance=0.5, calibration=50, halflife=500, min_std=0.001)
    return Cusum(**{**args, **kw})


def test_cusum_fires_on_a_shift_and_not_on_stationary_noise():
    rng = random.Random(1)
    detector = cusum()
    quiet = [detector.update(rng.gauss(0.3, 0.02)) for _ in range(5000)]
    assert DRIFT not in quiet  # warnings may come and go on noise; a drift may not
    after = [detector.update(rng.gauss(0.36, 0.02)) for _ in range(50)]  # +3 sd
    assert DRIFT in after and after.index(DRIFT) < 20
    assert WARNING in after[: after.index(DRIFT)]  # a warning comes first


def test_cusum_dead_zone_and_one_sided():
    rng = random.Random(2)
    tolerant = cusum(tolerance=0.1)
    [tolerant.update(rng.gauss(0.3, 0.02)) for _ in range(200)]
    assert max(tolerant.update(rng.gauss(0.38, 0.02)) for _ in range(500)) == STABLE  # inside the dead zone
    assert DRIFT in [tolerant.update(rng.gauss(0.6, 0.02)) for _ in range(50)]
    up = cusum(side="up")
    [up.update(rng.gauss(0.3, 0.02)) for _ in range(200)]
    assert max(up.update(rng.gauss(0.2, 0.02)) for _ in range(500)) == STABLE  # a fall is not a rise
    assert DRIFT in [up.update(rng.gauss(0.4, 0.02)) for _ in range(50)]


def monitor(**kw: Any) -> DriftMonitor:
    base: dict[str, Any] = dict(warmup_events=0, calibration_blocks=10, label_warmup=10, label_calibration=30)
    return DriftMonitor(DriftSettings(**{**base, **kw}), positive_class="1")


def feed_events(m: DriftMonitor, n: int, p: float, rng: random.Random) -> bool:
    pending = False
    for _ in range(n):
        q = min(1.0, max(0.0, p + rng.gauss(0, 0.1)))
        pending = m.observe_event({"0": 1 - q, "1": q}, min(q, 1 - q), {}) or pending
    return pending


def test_stream_view_alerts_levels_and_states():
    rng = random.Random(3)
    m = monitor()
    assert not feed_events(m, 20_000, 0.2, rng) and not m.has_alerts
    assert set(m.states.values()) == {STABLE} and AUDIT_SIGNAL in m.states
    feed_events(m, 1000, 0.7, rng)  # score +0.5: a change in the events
    alerts = m.take_alerts()
    assert [a.level for a in alerts if a.signal == "score"][:2] == ["warning", "drift"]
    drift = next(a for a in alerts if a.level == "drift")
    assert drift.events > 20_000 and abs(drift.reference - 0.2) < 0.05
    assert m.detections["score"] == 1 and not m.take_alerts()  # taken once


def test_stream_view_ignores_the_models_own_wander():
    rng = random.Random(4)
    m = monitor()
    for step in range(40):  # the mean score wanders by 0.15, as models do on stationary data
        feed_events(m, 1000, 0.3 + 0.15 * (step % 2), rng)
    assert not [a for a in m.take_alerts() if a.level == "drift"]


def test_label_error_fires_on_contradicting_labels_not_on_calibrated_ones():
    rng = random.Random(5)
    m = monitor()
    for _ in range(3000):  # calibrated: wrong as often as the model expects
        p = rng.uniform(0.5, 1.0)
        m.observe_prediction({"1": p, "0": 1 - p}, "1", "1" if rng.random() < p else "0", m.labels + 1)
    assert not [a for a in m.take_alerts() if a.level == "drift"]
    for _ in range(100):
        p = rng.uniform(0.5, 1.0)
        m.observe_prediction({"1": p, "0": 1 - p}, "1", "0" if rng.random() < 0.8 else "1", m.labels + 1)
    assert [a.level for a in m.take_alerts() if a.signal == LABEL_SIGNAL][-1] == "drift"


def test_label_error_does_not_see_the_samplers_bias():
    rng = random.Random(6)
    m = monitor()
    for i in range(4000):  # uncertainty-picked (p ~ 0.5, errors ~50%) mixed with confident audits
        p = rng.uniform(0.5, 0.6) if i % 10 else rng.uniform(0.9, 1.0)
        m.observe_prediction({"1": p, "0": 1 - p}, "1", "1" if rng.random() < p else "0", m.labels + 1)
    assert not [a for a in m.take_alerts() if a.level == "drift"]


def test_audit_layer_in_the_engine_only_from_random_audits():
    s = Settings(classes=["0", "1"], budget={"fraction": 1.0}, sampler={"random_share": 0.0}, drift={"audit_min_labels": 5})
    engine = Engine(s)
    for i in range(300):
        d = engine.on_event(Event(f"e{i}", None, LEGIT), 1000.0 + i)
        assert d.request is not None and d.request.reason != "random"
        engine.on_label(LabelMessage(request_id=d.request.request_id, label="0" if i % 2 else "1"), 1000.0 + i)
    assert engine.drift.audit_accuracy is None and engine.drift.audit.n_detections == 0  # type: ignore[union-attr]
    m = monitor(audit_window=10)
    for i in range(20):
        m.observe_audit(i % 4 != 0)
    assert m.audit_accuracy == 0.8


def test_snapshot_round_trip_continues_identically():
    rng = random.Random(7)
    m = monitor()
    feed_events(m, 5000, 0.3, rng)
    copy = pickle.loads(pickle.dumps(m))
    rng_a, rng_b = random.Random(8), random.Random(8)
    feed_events(m, 3000, 0.8, rng_a)
    feed_events(copy, 3000, 0.8, rng_b)
    assert [(a.signal, a.level, a.events) for a in m.take_alerts()] == [(a.signal, a.level, a.events) for a in copy.take_alerts()]
    assert m.states == copy.states and m.events == copy.events


def engine_with_drift(**drift: Any) -> Engine:
    s = Settings(
        classes=["legit", "fraud"], seed=1, sampler={"random_share": 0.0},
        budget={"fraction": 1.0, "clock": "event",
                "boost": {"allowance": "1000 per day", "max_extra_fraction": 0.1, "max_seconds": 500, "hard_cap_fraction": 1.0}},
        drift={"label_warmup": 100, "label_calibration": 100, **drift},
    )
    return Engine(s)


def teach(engine: Engine, start: int, n: int, flipped: bool) -> None:
    """Events alternate between two clear groups; after the drift their labels swap."""
    for i in range(start, start + n):
        features = LEGIT if i % 2 else FRAUD
        value = ("legit" if i % 2 else "fraud") if not flipped else ("fraud" if i % 2 else "legit")
        d = engine.on_event(Event(f"e{i}", None, dict(features)), float(i))
        if d.request is not None:
            engine.on_label(LabelMessage(request_id=d.request.request_id, label=value), float(i))


def test_engine_boosts_and_asks_for_a_swap_on_drift():
    engine = engine_with_drift(background_model=True, background_min_labels=5)
    teach(engine, 0, 600, flipped=False)
    assert not [a for a in engine.drift_alerts if a.level == "drift"] and not engine.outbox
    teach(engine, 600, 100, flipped=True)
    drifts = [a for a in engine.drift_alerts if a.level == "drift"]
    assert drifts and drifts[0].signal == LABEL_SIGNAL and 600 < drifts[0].events < 650
    assert engine.sampler.drift_boost.extra_fraction > 0  # type: ignore[union-attr]
    controls = [c.control for c in engine.outbox]
    assert "background_start" in controls and "model_swap" in controls


def test_on_control_start_swap_cooldown_and_min_labels():
    from stream_al.messages import ModelControl

    engine = engine_with_drift(
        background_model=True, background_min_labels=5, swap_cooldown_labels=50,
        warmup_events=0, calibration_blocks=200,
    )
    teach(engine, 0, 100, flipped=False)

    def control(kind: str) -> ModelControl:
        return ModelControl(control=kind, control_id=f"{kind}-{engine.counters.events}", signal="label_error", issued_at=0.0, issued_by="t")

    assert engine.on_control(control("background_start")) == "background model started"
    assert engine.on_control(control("background_start")).startswith("ignored")
    assert engine.on_control(control("model_swap")).startswith("swap pending")  # 0 of 5 labels
    assert engine.drift._labels_seen > 50  # type: ignore[union-attr]
    teach(engine, 100, 5, flipped=True)  # the background model learns 5: swapped in
    assert engine.counters.model_swaps == 1 and engine.background is None
    assert engine.drift._labels_seen <= 1  # type: ignore[union-attr]  # the swap reset label_error: its reference was the old model's
    engine.on_control(control("background_start"))
    assert engine.on_control(control("model_swap")).startswith("ignored: the last swap")  # cooldown
    teach(engine, 105, 60, flipped=True)
    engine.on_control(control("model_swap"))
    teach(engine, 165, 10, flipped=True)
    assert engine.counters.model_swaps == 2


def test_simulate_reports_delay_and_false_alarms():
    rng = random.Random(9)
    n, point = 6000, 3000
    features, labels = [], []
    for i in range(n):
        x = rng.uniform(-1, 1)
        features.append({"x": x})
        positive = x > 0 if i < point else x < 0  # the concept flips
        labels.append("1" if positive else "0")
    stream = Stream("flip", features, labels, ("0", "1"), "1", drift_points=[point])
    settings = Settings(classes=["0", "1"], positive_class="1", seed=0, budget={"fraction": 0.1, "clock": "event"})
    result = simulate(stream, settings, SimOptions())
    report = result.summary()["drift"]
    detection = report["detections"][0]
    assert detection["detected"] and 0 <= detection["delay_events"] < 1000
    assert detection["delay_labels"] > 0 and report["false_alarms"] == 0


def test_drift_report_counts_misses_and_false_alarms():
    alerts = [{"index": 100, "level": "drift", "signal": "score", "labels": 5},
              {"index": 150, "level": "warning", "signal": "score", "labels": 6},
              {"index": 30_000, "level": "drift", "signal": "label_error", "labels": 900}]
    report = drift_report(alerts, [1000], [50])
    assert report["detections"] == [{"point": 1000, "detected": False}] and report["false_alarms"] == 2
