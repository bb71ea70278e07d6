"""Drift monitoring in three layers (DESIGN §6): what changed, seen with few and late labels.

1. **Label-free**, from every event, with no label needed:

   - the *stream* view: means over blocks of ``block_events`` events of the score (probability of
     the positive class, or the top probability), the uncertainty (``1 - max p``) and the
     would-query share (events a fixed-uncertainty sampler would ask about: ``max p`` below
     ``sampler.fixed_threshold``). These move when the events change (new fraud patterns, a
     changed upstream system) whatever the labels say.
2. **Label-based**, per label, against the prediction stored in its request (never a re-prediction):

   - ``label_error``: every label's error minus the error the model expected there (``1 - p(predicted)``).
     Which events are queried depends on the event, not on its label, so the excess error is free
     of the sampler's bias (see :meth:`DriftMonitor.observe_prediction`): every label counts.
   - ``audit_error``: the errors of the random *audit* requests only (``reason == "random"``), into
     River's ADWIN. Uncertainty-picked events are the hard ones; their raw error rate is high by
     design. :attr:`DriftMonitor.audit_accuracy` is the rolling, unbiased live accuracy.

3. **Per feature** (optional): block means of the named features, as in the stream view.

What the evidence says (``benchmarks/drift.py``): a pure concept drift (the same events, other
answers) is invisible without labels. The model's outputs move only once it has learned from
labels that contradict it, and its own wander on stationary data (up to ~0.15 in mean score over
1,000 events, more for a tree's would-query share) exceeds what a drift moves them in its first
1,000 events. So the stream view is tuned not to false-alarm (``output_tolerance``,
``would_query_tolerance``) and catches
changes in the events themselves (an upstream change, a new population); ``label_error`` is the
concept-drift signal. (Re-scoring a fixed panel of events after each batch of labels, to see the
model's own move without the spread of the events, was tried: it detected nothing within 1,000
events that ``label_error`` did not, false-alarmed on trees' splits, and cost ~30% of throughput.)

Every series but the audit errors is watched by a :class:`Cusum`: a two-sided CUSUM (Page 1954) on
the series standardised against its own reference (mean and spread measured over a calibration
period, then following slow change), so one threshold, in standard deviations, suits values in
[0, 1] of any spread. A ``warning`` precedes a ``drift``; a drift resets every CUSUM, ``label_error`` too
(the model is about to change, so their references are stale) and each then calibrates again.

>>> monitor = DriftMonitor(DriftSettings(warmup_events=0, calibration_blocks=10), positive_class="1")
>>> for i in range(4000):  # the positive score jumps from ~0.2 to ~0.6 at event 2000
...     p = (0.2 if i < 2000 else 0.6) + 0.1 * ((i * 7919) % 13 - 6) / 6
...     _ = monitor.observe_event({"0": 1 - p, "1": p}, min(p, 1 - p), {})
>>> [(a.signal, a.level, a.events) for a in monitor.take_alerts() if a.level == "drift"]
[('score', 'drift', 2250)]

(The uncertainty moved by 0.2, inside ``output_tolerance``: not evidence on its own.)
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping

from river.drift import ADWIN

from stream_al.config import DriftSettings

STABLE, WARNING, DRIFT = 0, 1, 2
Level = Literal["warning", "drift"]
STREAM_SIGNALS = ("score", "uncertainty", "would_query")
LABEL_SIGNAL = "label_error"
AUDIT_SIGNAL = "audit_error"


def feature_signal(name: str) -> str:
    return f"feature:{name}"


@dataclass(slots=True)
class DriftAlert:
    """A detector crossed its warning or drift threshold.

    ``events`` and ``labels``: what the monitor had seen when it fired; ``statistic``: the CUSUM in
    standard deviations (audit errors: the recent error rate); ``reference``: the series' mean
    before the change.
    """

    signal: str
    level: Level
    events: int
    labels: int
    statistic: float
    reference: float


class Cusum:
    """CUSUM (Page 1954) on a series standardised against its own reference, with a dead zone.

    The first ``calibration`` values set the reference mean and spread (no alarm meanwhile); after
    that each value's deviation ``d = x - mean`` first loses ``tolerance`` (an absolute dead zone:
    ``d' = sign(d) * max(0, |d| - tolerance)``), then becomes ``z = d' / max(std, min_std)``,
    clipped at ``±clip``, and the sums ``g+ = max(0, g+ + z - allowance)`` and ``g- = max(0, g- - z
    - allowance)`` grow while the series stays off its reference (``side``: ``"both"``, or ``"up"``
    for ``g+`` only). The level is ``warning`` above ``warning`` and ``drift`` above ``threshold``.
    While the statistic is below ``warning`` the reference follows slow change (an exponential
    average with ``halflife`` values).

    Why the dead zone: a model's own outputs wander on stationary data (it keeps learning; a tree
    splits), by up to ~0.15 in mean score over 1,000 events, far more than their spread predicts.
    Only a move beyond ``tolerance`` is evidence of a change in the events.

    >>> cusum = Cusum(threshold=8, warning=4, allowance=0.5, calibration=20, halflife=500, min_std=0.01)
    >>> levels = [cusum.update(0.3 + 0.02 * (i % 5 - 2)) for i in range(100)] + [cusum.update(0.5) for _ in range(5)]
    >>> max(levels[:100]), levels[100:]
    (0, [0, 1, 2, 0, 0])
    >>> wide = Cusum(threshold=8, warning=4, allowance=0.5, calibration=20, halflife=500, min_std=0.01, tolerance=0.25)
    >>> max(wide.update(0.3 + 0.02 * (i % 5 - 2)) for i in range(100)), max(wide.update(0.5) for _ in range(50))
    (0, 0)
    """

    def __init__(
        self, threshold: float, warning: float, allowance: float, calibration: int, halflife: float, min_std: float,
        clip: float = 3.0, tolerance: float = 0.0, side: Literal["both", "up"] = "both",
    ):
        if not 0 < warning <= threshold:
            raise ValueError("need 0 < warning <= threshold")
        self.threshold = threshold
        self.warning = warning
        self.allowance = allowance
        self.calibration = calibration
        self.fade = 0.5 ** (1.0 / halflife)
        self.min_std = min_std
        self.clip = clip
        self.tolerance = tolerance
        self.two_sided = side == "both"
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.var = 0.0
        self.high = self.low = 0.0
        self.level = STABLE

    @property
    def statistic(self) -> float:
        return max(self.high, self.low)

    def update(self, x: float) -> int:
        """Take one value; returns the level (0 stable, 1 warning, 2 drift). A drift resets the test."""
        if self.level == DRIFT:
            self.reset()
        self.n += 1
        if self.n <= self.calibration:  # Welford: the reference mean and variance
            delta = x - self.mean
            self.mean += delta / self.n
            self.var += (delta * (x - self.mean) - self.var) / self.n
            return STABLE
        delta = x - self.mean
        excess = abs(delta) - self.tolerance
        z = math.copysign(excess, delta) / max(math.sqrt(self.var), self.min_std) if excess > 0 else 0.0
        z = z if -self.clip < z < self.clip else math.copysign(self.clip, z)  # one outlier is not a drift
        self.high = max(0.0, self.high + z - self.allowance)
        if self.two_sided:
            self.low = max(0.0, self.low - z - self.allowance)
        stat = self.high if self.high > self.low else self.low
        if stat > self.threshold:
            self.level = DRIFT
        elif stat > self.warning:
            self.level = WARNING
        else:
            self.level = STABLE
            fade = self.fade
            self.mean += (1.0 - fade) * delta
            self.var = fade * (self.var + (1.0 - fade) * delta * delta)
        return self.level


@dataclass
class _Watch:
    """One signal's detector and its last level."""

    cusum: Cusum
    level: int = STABLE


class DriftMonitor:
    """The three layers for one engine. Feed it; read :meth:`take_alerts` and :attr:`states`.

    :meth:`observe_event` runs on every event and only adds to block sums (the detectors run once
    per block); :meth:`observe_prediction` takes every label with the prediction its request was
    made with, :meth:`observe_audit` each audit label's outcome.
    """

    def __init__(self, settings: DriftSettings, positive_class: str | None = None, wq_confidence: float = 0.9):
        self.settings = settings
        self.positive_class = positive_class
        self.wq_uncertainty = 1.0 - wq_confidence
        self.features = tuple(settings.features)
        s = settings
        tolerance = {"score": s.output_tolerance, "uncertainty": s.output_tolerance, "would_query": s.would_query_tolerance}
        self.watches: dict[str, _Watch] = {name: _Watch(self._cusum(tolerance[name])) for name in STREAM_SIGNALS}
        for feature in self.features:
            self.watches[feature_signal(feature)] = _Watch(self._cusum(0.0))  # features: no model wander, no dead zone
        if s.label_threshold:
            self.watches[LABEL_SIGNAL] = _Watch(Cusum(
                s.label_threshold, s.label_threshold / 2, s.label_allowance, s.label_calibration,
                s.label_halflife, 0.2, side="up",  # only more errors than expected is drift; a sure model's tiny spread is no scale
                clip=2.0,  # errors are 0/1: one error on a sure prediction is a huge z; a few must not make a drift
            ))
        self._labels_seen = 0
        self.audit = ADWIN(delta=s.audit_delta, clock=1, grace_period=s.audit_min_labels)
        self.audit_outcomes: deque[bool] = deque(maxlen=s.audit_window)
        self.audit_level = STABLE
        self.events = 0
        self.labels = 0
        self._block_n = 0
        self._score_sum = self._uncertainty_sum = 0.0
        self._would_query = 0
        self._feature_sums = [0.0] * len(self.features)
        self._feature_counts = [0] * len(self.features)
        self._alerts: list[DriftAlert] = []
        self.detections: dict[str, int] = {}

    def _cusum(self, tolerance: float) -> Cusum:
        s = self.settings
        return Cusum(
            s.threshold, s.warning_threshold, s.allowance, s.calibration_blocks, s.reference_halflife_blocks, s.min_std,
            tolerance=tolerance,
        )

    # -- layer 1 and 3: every event ------------------------------------------------------------

    def observe_event(self, scores: Mapping[str, float], uncertainty: float, features: Mapping[str, Any]) -> bool:
        """Add one scored event to the current block; a full block goes to the detectors.

        Returns True when there are alerts to take (only ever after a block closes: cheap to test).
        """
        return self.observe_events(((scores, uncertainty, features),))

    def observe_events(self, scored: Iterable[tuple[Mapping[str, float], float, Mapping[str, Any]]]) -> bool:
        """:meth:`observe_event` for each ``(scores, uncertainty, features)`` in order, in one loop
        (the engine's chunk path: a method call per event would cost as much as the sums)."""
        warmup, block = self.settings.warmup_events, self.settings.block_events
        positive, wq_uncertainty, watched = self.positive_class, self.wq_uncertainty, self.features
        for scores, uncertainty, features in scored:
            self.events += 1
            if self.events <= warmup:
                continue
            if not scores:
                score = 0.0
            elif positive is not None:
                score = scores.get(positive, 0.0)
            else:
                score = 1.0 - uncertainty
            self._score_sum += score
            self._uncertainty_sum += uncertainty
            if uncertainty > wq_uncertainty:
                self._would_query += 1
            if watched:
                sums, counts = self._feature_sums, self._feature_counts
                for i, name in enumerate(watched):
                    value = features.get(name)
                    if value is not None:
                        sums[i] += value
                        counts[i] += 1
            self._block_n += 1
            if self._block_n == block:
                self._close_block()
        return bool(self._alerts)

    def _close_block(self) -> None:
        n = self._block_n
        values = {"score": self._score_sum / n, "uncertainty": self._uncertainty_sum / n, "would_query": self._would_query / n}
        for i, name in enumerate(self.features):
            if self._feature_counts[i]:
                values[feature_signal(name)] = self._feature_sums[i] / self._feature_counts[i]
        self._block_n = 0
        self._score_sum = self._uncertainty_sum = 0.0
        self._would_query = 0
        self._feature_sums = [0.0] * len(self.features)
        self._feature_counts = [0] * len(self.features)
        self._update(values)

    def model_replaced(self) -> None:
        """A new model (a swap): every reference belonged to the old model, start afresh."""
        self._labels_seen = 0  # the new model's errors need their own reference
        self._reset_watches()

    # -- layer 2: labels against the predictions they answer ----------------------------------

    def observe_prediction(self, scores: Mapping[str, float], predicted: str | None, label: str, labels_applied: int) -> None:
        """A label for a request: was the stored prediction wrong, beyond what the model expected?

        The value watched is ``wrong - (1 - p(predicted))``: the error minus the model's own
        expected error on that event. Selection depends on the event only, so for a model that is
        as good as it believes (or stably miscalibrated, which the reference absorbs) this averages
        the same on uncertainty-picked events as on random ones: the sampler's bias does not look
        like drift, and every label counts, not only the ~10% random audits.
        """
        self.labels = labels_applied
        watch = self.watches.get(LABEL_SIGNAL)
        if watch is None or predicted is None or not scores:
            return
        self._labels_seen += 1
        if self._labels_seen <= self.settings.label_warmup:  # a young model's errors fall fast: not a reference
            return
        excess = (label != predicted) - (1.0 - scores.get(predicted, 0.0))
        self._update({LABEL_SIGNAL: excess})

    # -- layer 2: audit labels ----------------------------------------------------------------

    def observe_audit(self, correct: bool) -> None:
        """An audit label's outcome against the prediction its request was made with."""
        self.audit_outcomes.append(correct)
        error = 0.0 if correct else 1.0
        before = self.audit.estimation
        self.audit.update(error)
        if self.audit.drift_detected and self.audit.estimation > before:  # only a rise in error is drift
            self.audit_level = DRIFT
            self._alert(AUDIT_SIGNAL, "drift", self.audit.estimation, before)
        else:
            self.audit_level = STABLE

    @property
    def audit_accuracy(self) -> float | None:
        """Accuracy over the last ``audit_window`` audit labels: the unbiased live estimate."""
        if not self.audit_outcomes:
            return None
        return sum(self.audit_outcomes) / len(self.audit_outcomes)

    # -- shared ---------------------------------------------------------------------------------

    def _update(self, values: dict[str, float]) -> None:
        drifted = False
        for name, value in values.items():
            watch = self.watches.get(name)
            if watch is None:
                continue
            level = watch.cusum.update(value)
            if level != watch.level and level != STABLE:
                self._alert(name, "drift" if level == DRIFT else "warning", watch.cusum.statistic, watch.cusum.mean)
            watch.level = level
            drifted = drifted or level == DRIFT
        if drifted:
            self._reset_watches()

    def _reset_watches(self) -> None:
        """Every CUSUM calibrates again (the audit ADWIN keeps its own window)."""
        for watch in self.watches.values():
            watch.cusum.reset()
            watch.level = STABLE

    def _alert(self, signal: str, level: Level, statistic: float, reference: float) -> None:
        self._alerts.append(DriftAlert(signal, level, self.events, self.labels, statistic, reference))
        if level == "drift":
            self.detections[signal] = self.detections.get(signal, 0) + 1

    @property
    def has_alerts(self) -> bool:
        return bool(self._alerts)

    def take_alerts(self) -> list[DriftAlert]:
        """The alerts since the last call (oldest first)."""
        alerts, self._alerts = self._alerts, []
        return alerts

    @property
    def states(self) -> dict[str, int]:
        """Each signal's level now: 0 stable, 1 warning, 2 drift."""
        states = {name: watch.level for name, watch in self.watches.items()}
        states[AUDIT_SIGNAL] = self.audit_level
        return states
