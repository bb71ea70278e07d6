"""Rules: given an event's utility, ask for its label? Consulted only when the budget has a label.

Every rule sees every event's utility (:meth:`observe`) and answers :meth:`select` with the
probability it asked with (``1.0`` for a deterministic rule) or ``None``. Randomised rules draw from
``context.draw(salt)``, a hash of (seed, event id): replays decide the same.

- :class:`RandomRule` — uniformly random events (Zliobaite's *random*), ``p = fraction * labels saved``;
- :class:`FixedThreshold` — confidence ``1 - utility`` below a fixed threshold (*fixed uncertainty*);
- :class:`VariableThreshold` — the threshold tightens after each query and loosens after each skip,
  so it spends what the budget offers whatever the model's calibration (*variable uncertainty*);
- :class:`RandomizedVariableThreshold` — the same with the threshold times ``N(1, delta)`` per event;
- :class:`BalancedQuantileFilter` — utility in the top ``fraction`` of a window of recent utilities,
  the quantile shifted by the labels owed or overspent (Kottke et al. 2015);
- :class:`ProportionalProbability` — ask with probability proportional to ``utility ** exponent``,
  scaled so the expected spend is the budget (River's EntropySampler, calibrated to a budget).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from stream_al.sampling.randomness import hash_normal, hash_uniform


@dataclass(slots=True)
class Context:
    """What a decision may look at besides the scores.

    ``fraction`` is the labels per event the budgets have offered so far (for rate budgets it moves
    with traffic); ``available`` the labels the budgets hold right now; ``model`` and ``features``
    are given by engines whose strategy needs them (committees, anomaly scorers).
    """

    event_id: str
    seed: int
    fraction: float
    available: float
    model: Any = None
    features: Mapping[str, Any] | None = None

    def draw(self, salt: str = "") -> float:
        """A uniform number in [0, 1) from (seed, salt + event id)."""
        return hash_uniform(self.seed, salt + self.event_id)


class Rule(Protocol):
    def observe(self, utility: float, context: Context) -> None: ...

    def select(self, utility: float, context: Context) -> float | None: ...


class RandomRule:
    """Uniformly random events: ``p = min(1, fraction * labels saved)``, so saved labels get spent.

    >>> rule = RandomRule()
    >>> rule.select(0.0, Context("e1", 0, fraction=0.5, available=2.0))
    1.0
    """

    def observe(self, utility: float, context: Context) -> None:
        pass

    def select(self, utility: float, context: Context) -> float | None:
        p = min(1.0, context.fraction * max(1.0, context.available))
        return p if context.draw("random:") < p else None


class FixedThreshold:
    """Asks while ``1 - utility < threshold``. Can leave budget unused (confident model) or
    spend it on the first events of a long stretch: it is the baseline, not a default.

    >>> FixedThreshold(0.9).select(0.2, Context("e", 0, 0.1, 1.0)), FixedThreshold(0.9).select(0.05, Context("e", 0, 0.1, 1.0))
    (1.0, None)
    """

    def __init__(self, threshold: float = 0.9):
        self.threshold = threshold

    def observe(self, utility: float, context: Context) -> None:
        pass

    def select(self, utility: float, context: Context) -> float | None:
        return 1.0 if 1.0 - utility < self.threshold else None


class VariableThreshold:
    """Asks while ``1 - utility < threshold``; the threshold is multiplied by ``1 - step`` after a
    query and by ``1 + step`` after a skip (up to ``1 + step``, so a model certain of everything
    still spends: Zliobaite et al. 2014).

    >>> rule = VariableThreshold(0.9, 0.1)
    >>> rule.select(0.05, Context("e", 0, 0.1, 1.0)), round(rule.threshold, 3)
    (None, 0.99)
    >>> rule.select(0.05, Context("e", 0, 0.1, 1.0)), round(rule.threshold, 3)
    (1.0, 0.891)
    """

    def __init__(self, initial_threshold: float = 0.9, step: float = 0.01):
        self.threshold = initial_threshold
        self.step = step

    def observe(self, utility: float, context: Context) -> None:
        pass

    def select(self, utility: float, context: Context) -> float | None:
        if 1.0 - utility < self._effective(context):
            self.threshold = max(1e-6, self.threshold * (1.0 - self.step))
            return 1.0
        self.threshold = min(1.0 + self.step, self.threshold * (1.0 + self.step))
        return None

    def _effective(self, context: Context) -> float:
        return self.threshold


class RandomizedVariableThreshold(VariableThreshold):
    """Variable threshold times ``1 + delta * N(0, 1)`` drawn per event: now and then it asks about a
    confident event too, which finds changes far from the decision boundary (Zliobaite et al. 2014)."""

    def __init__(self, initial_threshold: float = 0.9, step: float = 0.01, delta: float = 1.0):
        super().__init__(initial_threshold, step)
        self.delta = delta

    def _effective(self, context: Context) -> float:
        return self.threshold * (1.0 + self.delta * hash_normal(context.seed, "rvu:" + context.event_id))


class BalancedQuantileFilter:
    """Asks when the utility is in the top ``b`` of the last ``window`` utilities (Kottke et al. 2015).

    ``b = share * fraction + owed / tolerance``: ``owed`` is the labels this rule was offered
    (``share`` of the budget's fraction per event) minus those it took, bounded by ``max_owed`` both
    ways, so a quiet stretch lowers the bar and a busy one raises it. The window is kept sorted
    (``bisect``): ``O(window)`` memory moves per event, no sort.

    >>> rule = BalancedQuantileFilter(window=100)
    >>> ctx = Context("e", 0, fraction=0.1, available=1.0)
    >>> for i in range(100):
    ...     rule.observe(i / 100, ctx)
    >>> rule.select(0.95, ctx), rule.select(0.5, ctx)
    (1.0, None)
    """

    def __init__(self, window: int = 1000, tolerance: float = 100.0, share: float = 1.0, max_owed: float = 10.0):
        if window < 2:
            raise ValueError("window must be at least 2")
        self.window = window
        self.tolerance = tolerance
        self.share = share
        self.max_owed = max_owed
        self.recent: deque[float] = deque()
        self.sorted: list[float] = []
        self.owed = 0.0

    def observe(self, utility: float, context: Context) -> None:
        self.recent.append(utility)
        insort(self.sorted, utility)
        if len(self.recent) > self.window:
            del self.sorted[bisect_left(self.sorted, self.recent.popleft())]
        self.owed = min(self.max_owed, self.owed + self.share * context.fraction)

    def select(self, utility: float, context: Context) -> float | None:
        b = self.share * context.fraction + self.owed / self.tolerance
        if b <= 0.0:
            return None
        values = self.sorted
        index = int((1.0 - min(1.0, b)) * (len(values) - 1))
        if utility >= values[index]:
            self.owed = max(-self.max_owed, self.owed - 1.0)
            return 1.0
        return None


class ProportionalProbability:
    """Asks with ``p = min(1, fraction * saved * utility^exponent / mean(utility^exponent))``.

    River's EntropySampler asks with ``p = entropy^discount`` whatever the budget, so its spend
    depends on the model's calibration; dividing by the running mean (over ``horizon`` events)
    makes the expected spend the budget's fraction, and ``saved`` (labels the budget holds, at
    least 1) spends what a quiet stretch saved up. A model certain of everything asks at random.
    """

    def __init__(self, exponent: float = 3.0, horizon: int = 1000, share: float = 1.0):
        self.exponent = exponent
        self.alpha = 1.0 / horizon
        self.share = share
        self.mean = 1.0

    def observe(self, utility: float, context: Context) -> None:
        self.mean += self.alpha * (utility**self.exponent - self.mean)

    def select(self, utility: float, context: Context) -> float | None:
        weight = (utility**self.exponent + 1e-3) / (self.mean + 1e-3)
        p = min(1.0, self.share * context.fraction * max(1.0, context.available) * weight)
        return p if context.draw("proportional:") < p else None
