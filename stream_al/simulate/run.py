"""Replay a stream through the engine core, prequentially: predict, decide, then (maybe) learn.

:func:`simulate` drives :class:`stream_al.engine.Engine` exactly as the Kafka runner does:
``on_event`` for every event on a simulated clock (event ``i`` happens at ``start + i *
seconds_per_event``, or at the stream's own timestamps), ``on_label`` when the answer to a request
arrives (per :class:`~stream_al.simulate.delivery.Delivery`: label delay and analyst capacity), and
``tick`` for expiry. Every event is scored before any label for it can be learned, and the score is
what the metrics see (prequential evaluation). A model that knows no class yet predicts the first
configured class (the negative one).

:func:`full_supervision` is the upper baseline: the same model learns every event's label, with the
same delay and no analyst limit. :func:`random_settings` gives the lower one: random sampling at the
same budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from pydantic import ValidationError
from river import metrics

from stream_al.config import Settings
from stream_al.engine import Engine, ordered_classes
from stream_al.messages import Event, LabelMessage
from stream_al.models import build_model
from stream_al.simulate.data import Stream
from stream_al.simulate.delivery import AnalystPool, Delivery, LabelDelay
from stream_al.simulate.evaluation import average_precision, summary_stats, window_bound, window_size, worst_window

START_TIME = 1_700_000_000.0


@dataclass(frozen=True)
class SimOptions:
    """How labels come back and how time passes in a simulation."""

    delay: LabelDelay = LabelDelay("events", 0)
    pool: AnalystPool | None = None
    seconds_per_event: float = 1.0
    curve_points: int = 200
    tick_every: int = 16


@dataclass
class Curve:
    """Prequential accuracy so far, sampled along the stream."""

    events: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)


DETECTION_HORIZON = 10_000  # an alert later than this after a drift point does not detect it


@dataclass
class RunResult:
    """What one simulated run measured. :meth:`summary` is its ``--summary-json`` entry."""

    name: str
    strategy: str
    kind: str
    events: int
    requests: int
    labels_used: int
    unanswered: int
    accuracy: float
    kappa: float
    f1: float | None
    average_precision: float | None
    budget_target: float | None
    budget_achieved: float
    budget_ratio: float | None
    window: int | None
    worst_window_spend: int | None
    window_bound: float | None
    latency_events: dict[str, float | None]
    latency_seconds: dict[str, float | None]
    decisions_per_second: float
    seconds: float
    curve: Curve
    request_indices: list[int] = field(default_factory=list, repr=False)
    drift_alerts: list[dict[str, Any]] = field(default_factory=list)
    model_swaps: int = 0
    drift_points: list[int] = field(default_factory=list)
    labels_at_points: list[int] = field(default_factory=list)

    def drift_report(self, horizon: int = DETECTION_HORIZON) -> dict[str, Any]:
        """Detections of the known drift points, and false alarms (see :func:`drift_report`)."""
        return drift_report(self.drift_alerts, self.drift_points, self.labels_at_points, horizon)

    @property
    def window_ok(self) -> bool | None:
        if self.worst_window_spend is None or self.window_bound is None:
            return None
        return self.worst_window_spend <= self.window_bound + 1e-9

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "strategy": self.strategy, "events": self.events,
            "accuracy": self.accuracy, "cohen_kappa": self.kappa, "f1": self.f1, "average_precision": self.average_precision,
            "requests": self.requests, "labels_used": self.labels_used, "unanswered_requests": self.unanswered,
            "budget": {"target": self.budget_target, "achieved": self.budget_achieved, "achieved_over_target": self.budget_ratio},
            "worst_window_spend": {"window_events": self.window, "labels": self.worst_window_spend,
                                   "bound": self.window_bound, "within_bound": self.window_ok},
            "label_latency": {"events": self.latency_events, "seconds": self.latency_seconds},
            "decisions_per_second": self.decisions_per_second, "wall_seconds": self.seconds,
            "drift": self.drift_report(),
        }


def drift_report(
    alerts: list[dict[str, Any]], points: list[int], labels_at_points: list[int], horizon: int = DETECTION_HORIZON,
) -> dict[str, Any]:
    """Score drift-level alerts against known drift points.

    A detection of point ``p`` is the first drift-level alert at or after ``p``, within ``horizon``
    events and before the next point; its delay is counted in events and in labels learned since
    ``p``. Every other drift alert (several signals firing at one event count once) is a false alarm.

    >>> alerts = [{"index": 900, "level": "drift", "signal": "score", "labels": 40},
    ...           {"index": 5400, "level": "drift", "signal": "label_error", "labels": 260},
    ...           {"index": 5400, "level": "drift", "signal": "label_error", "labels": 260}]
    >>> report = drift_report(alerts, [5000], [250])
    >>> report["detections"][0]["delay_events"], report["detections"][0]["delay_labels"], report["false_alarms"]
    (400, 10, 1)
    """
    drifts = sorted({(a["index"], a["labels"], a["signal"]) for a in alerts if a["level"] == "drift"}, key=lambda a: a[0])
    seen: dict[int, tuple[int, int, str]] = {}
    for index, labels, signal in drifts:  # several signals at one event: one detection
        seen.setdefault(index, (index, labels, signal))
    firsts = list(seen.values())
    used: set[int] = set()
    detections = []
    for k, point in enumerate(points):
        end = min(point + horizon, points[k + 1] if k + 1 < len(points) else point + horizon)
        hit = next((a for a in firsts if point <= a[0] < end), None)
        entry: dict[str, Any] = {"point": point, "detected": hit is not None}
        if hit is not None:
            used.add(hit[0])
            at_point = labels_at_points[k] if k < len(labels_at_points) else 0
            entry.update(index=hit[0], signal=hit[2], delay_events=hit[0] - point, delay_labels=hit[1] - at_point)
        detections.append(entry)
    return {"points": list(points), "detections": detections, "false_alarms": sum(a[0] not in used for a in firsts),
            "drift_alerts": len(firsts)}


class _Scorer:
    """Prequential metrics of one run (River's Accuracy, CohenKappa, F1; AP from stored scores)."""

    def __init__(self, stream: Stream, settings: Settings, curve_every: int):
        self.default = ordered_classes(settings)[0]
        self.positive = stream.positive_class if stream.binary else None
        self.accuracy = metrics.Accuracy()
        self.kappa = metrics.CohenKappa()
        # On booleans: River 0.26's F1 with a string pos_val reports 0.0 whatever the predictions.
        self.f1 = metrics.F1() if self.positive is not None else None
        self.scores = np.zeros(len(stream)) if self.positive is not None else None
        self.curve = Curve()
        self.curve_every = curve_every

    def update(self, index: int, label: str, scores: dict[str, float], predicted: str | None, labels_used: int) -> None:
        guess = predicted if predicted is not None else self.default
        self.accuracy.update(label, guess)
        self.kappa.update(label, guess)
        if self.f1 is not None:
            self.f1.update(label == self.positive, guess == self.positive)
            self.scores[index] = scores.get(self.positive, 0.0)  # type: ignore[index]
        if (index + 1) % self.curve_every == 0:
            self.curve.events.append(index + 1)
            self.curve.labels.append(labels_used)
            self.curve.accuracy.append(self.accuracy.get())

    def results(self, labels: list[str]) -> dict[str, Any]:
        ap = None
        if self.positive is not None:
            ap = average_precision([y == self.positive for y in labels], self.scores)  # type: ignore[arg-type]
        return {"accuracy": self.accuracy.get(), "kappa": self.kappa.get(), "f1": self.f1.get() if self.f1 else None,
                "average_precision": ap, "curve": self.curve}


def _times(stream: Stream, options: SimOptions) -> list[float]:
    if stream.timestamps is not None:
        return stream.timestamps
    return [START_TIME + i * options.seconds_per_event for i in range(len(stream))]


def simulate(
    stream: Stream, settings: Settings, options: SimOptions = SimOptions(), name: str | None = None,
    progress: Callable[[int], None] | None = None, kind: str = "run",
) -> RunResult:
    """One prequential pass of ``stream`` through a fresh :class:`Engine` built from ``settings``."""
    started = time.perf_counter()
    engine = Engine(settings)
    delivery = Delivery(options.delay, options.pool, settings.seed)
    n = len(stream)
    scorer = _Scorer(stream, settings, max(1, n // options.curve_points))
    times, features, labels = _times(stream, options), stream.features, stream.labels
    requests: list[int] = []
    latency_events: list[float] = []
    latency_seconds: list[float] = []
    decide_seconds = 0.0
    drift_alerts: list[dict[str, Any]] = []
    points = set(stream.drift_points)
    labels_at_points: list[int] = []
    prefix = f"{stream.name}-"
    clock = time.perf_counter
    for i in range(n):
        now = times[i]
        if i in points:
            labels_at_points.append(engine.counters.labels_applied)
        event = Event(prefix + str(i), now, features[i])
        t0 = clock()
        decision = engine.on_event(event, now)
        decide_seconds += clock() - t0
        label = labels[i]
        scorer.update(i, label, decision.scores, decision.predicted, engine.counters.labels_applied)
        request = decision.request
        if request is not None:
            requests.append(i)
            delivery.submit(request.request_id, label, i, now, request.expires_at, request.priority)
        for answer in delivery.due(i, now):
            outcome = engine.on_label(LabelMessage(request_id=answer.request_id, label=answer.label), now)
            if outcome.status == "applied":
                latency_events.append(i - answer.index)
                latency_seconds.append(now - answer.created_at)
        if engine.drift_alerts or engine.outbox:
            _record_drift(engine, i, drift_alerts)
        if i % options.tick_every == 0:
            engine.tick(now)
        if progress is not None and i % 1000 == 0:
            progress(i)
    budget = settings.budget
    fraction = budget.fraction
    achieved = len(requests) / n
    window = window_size(fraction) if fraction else None
    return RunResult(
        name=name or settings.sampler.strategy, strategy=settings.sampler.strategy, kind=kind, events=n,
        requests=len(requests), labels_used=engine.counters.labels_applied, unanswered=delivery.expired,
        budget_target=fraction, budget_achieved=achieved,
        budget_ratio=(achieved / fraction) if fraction else engine.budget_used_ratio(),
        window=window, worst_window_spend=worst_window(requests, window) if window else None,
        window_bound=window_bound(fraction, budget.fraction_burst, window) if fraction and window else None,
        latency_events=summary_stats(latency_events), latency_seconds=summary_stats(latency_seconds),
        decisions_per_second=n / decide_seconds if decide_seconds else 0.0, seconds=time.perf_counter() - started,
        request_indices=requests, drift_alerts=drift_alerts, model_swaps=engine.counters.model_swaps,
        drift_points=list(stream.drift_points), labels_at_points=labels_at_points, **_metrics(scorer, labels),
    )


def _record_drift(engine: Engine, index: int, out: list[dict[str, Any]]) -> None:
    """Note the engine's new drift alerts at this event, and apply its model controls at once (in a
    simulation the label log is this loop, so a control is read back as soon as it is written)."""
    while engine.drift_alerts:
        alert = engine.drift_alerts.popleft()
        out.append({"index": index, "signal": alert.signal, "level": alert.level, "labels": engine.counters.labels_applied,
                    "statistic": alert.statistic})
    while engine.outbox:
        engine.on_control(engine.outbox.popleft())


def _metrics(scorer: _Scorer, labels: list[str]) -> dict[str, Any]:
    out = scorer.results(labels)
    return {"accuracy": out["accuracy"], "kappa": out["kappa"], "f1": out["f1"],
            "average_precision": out["average_precision"], "curve": out["curve"]}


def full_supervision(
    stream: Stream, settings: Settings, options: SimOptions = SimOptions(), progress: Callable[[int], None] | None = None,
) -> RunResult:
    """The upper baseline: the same model learns every label, with the same delay, no analyst limit."""
    started = time.perf_counter()
    model = build_model(settings.model.name, settings.model.params, ordered_classes(settings))
    delivery = Delivery(options.delay, None, settings.seed)
    n = len(stream)
    scorer = _Scorer(stream, settings, max(1, n // options.curve_points))
    times, features, labels = _times(stream, options), stream.features, stream.labels
    learned = 0
    latency_events: list[float] = []
    for i in range(n):
        now = times[i]
        scores = model.predict_proba_one(features[i])
        predicted = max(scores, key=scores.__getitem__) if scores else None
        scorer.update(i, labels[i], scores, predicted, learned)
        delivery.submit(str(i), labels[i], i, now, float("inf"), 0.0)
        for answer in delivery.due(i, now):
            model.learn_one(features[answer.index], answer.label)
            learned += 1
            latency_events.append(i - answer.index)
        if progress is not None and i % 1000 == 0:
            progress(i)
    seconds = time.perf_counter() - started
    return RunResult(
        name="full supervision", strategy="all labels", kind="full_supervision", events=n, requests=n,
        labels_used=learned, unanswered=0, budget_target=1.0, budget_achieved=1.0, budget_ratio=1.0,
        window=None, worst_window_spend=None, window_bound=None,
        latency_events=summary_stats(latency_events), latency_seconds={"mean": None, "median": None},
        decisions_per_second=0.0, seconds=seconds, **_metrics(scorer, labels),
    )


def with_overrides(settings: Settings, **sections: Any) -> Settings:
    """A copy of ``settings`` with top-level fields replaced and sections merged (validated again)."""
    data = settings.model_dump()
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Settings.model_validate(data)


def with_strategy(settings: Settings, strategy: str, **params: Any) -> Settings:
    """``settings`` with the sampler's strategy set to ``strategy`` (any name the settings accept)
    and ``params`` over the configured sampler parameters.

    Every configured parameter is kept: a strategy ignores the ones it does not use, and the ones
    it does (``--set sampler.fixed_threshold=0.05``, a config file's ``random_share``) are what
    the user asked for, for every strategy compared.

    >>> tuned = Settings(classes=["a", "b"], sampler={"fixed_threshold": 0.05, "random_share": 0.0})
    >>> sampler = with_strategy(tuned, "fixed_uncertainty").sampler
    >>> sampler.strategy, sampler.fixed_threshold, sampler.random_share
    ('fixed_uncertainty', 0.05, 0.0)
    """
    data = settings.model_dump()
    data["sampler"] = {**data["sampler"], **params, "strategy": strategy}
    return Settings.model_validate(data)


def random_settings(settings: Settings) -> tuple[Settings, str]:
    """Settings for random sampling at the same budget, and how it was made.

    The ``random`` strategy when the settings accept it; otherwise variable uncertainty with every
    label a random audit (``random_share=1``).
    """
    try:
        return with_strategy(settings, "random"), "random"
    except ValidationError:
        return with_strategy(settings, "variable_uncertainty", random_share=1.0), "random (variable_uncertainty, random_share=1)"
