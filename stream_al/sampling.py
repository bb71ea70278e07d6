"""Selective sampling = a strategy (is this event worth a label?) x a budget (may we spend one?).

Budgets are hard limits; every one states the bound it guarantees:

- :class:`FractionBudget` — ``fraction`` labels per event, an event-count token bucket that starts
  empty: after ``n`` events at most ``floor(fraction * n)`` labels were spent, and over any ``w``
  consecutive events at most ``burst + fraction * w``.
- :class:`RateBudget` — ``rate`` labels per second, a time token bucket that starts full: over any
  interval of ``t`` seconds at most ``burst + rate * t`` labels.

Randomness comes from :func:`hash_uniform` of (seed, event id), never from a sequential generator,
so replaying a stream makes the same random decisions.

>>> budget = FractionBudget(0.1)
>>> spent = 0
>>> for _ in range(1000):
...     budget.on_event(0.0)
...     if budget.allows():
...         budget.spend(); spent += 1
>>> spent, budget.used_ratio()
(100, 1.0)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass


def hash_uniform(seed: int, key: str) -> float:
    """A uniform number in [0, 1) that depends only on (seed, key).

    >>> hash_uniform(0, "e1") == hash_uniform(0, "e1") != hash_uniform(1, "e1")
    True
    """
    digest = hashlib.blake2b(key.encode(), digest_size=8, key=seed.to_bytes(8, "little", signed=True)).digest()
    return int.from_bytes(digest, "little") / 2**64


class FractionBudget:
    """At most ``fraction`` labels per event seen (event-count token bucket, starts empty)."""

    def __init__(self, fraction: float, burst: float | None = None):
        if not 0 < fraction <= 1:
            raise ValueError("fraction must be in (0, 1]")
        self.fraction = fraction
        # Below 1 + fraction the cap would throw away part of each event's credit.
        self.burst = max(1.0 + fraction, burst if burst is not None else 10.0)
        self.tokens = 0.0
        self.events = 0
        self.spent = 0

    def on_event(self, now: float) -> None:
        self.events += 1
        self.tokens = min(self.burst, self.tokens + self.fraction)

    def allows(self) -> bool:
        # The epsilon absorbs float error so that 20 events at 5% earn exactly one label.
        return self.tokens >= 1.0 - 1e-9

    def spend(self) -> None:
        self.tokens -= 1.0
        self.spent += 1

    def refund(self) -> None:
        self.tokens += 1.0
        self.spent -= 1

    def target(self) -> float:
        """Labels this budget has made available so far."""
        return self.fraction * self.events

    def used_ratio(self) -> float:
        target = self.target()
        return self.spent / target if target else 0.0


class RateBudget:
    """At most ``rate`` labels per second, with bursts up to ``burst`` (time token bucket, starts full).

    ``share`` scales rate and burst when several replicas split the budget (DESIGN §3).

    >>> budget = RateBudget(rate=2.0, burst=2.0)
    >>> asked = []
    >>> for second in [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]:
    ...     budget.on_event(second)
    ...     asked.append(budget.allows() and (budget.spend() or True))
    >>> asked
    [True, True, False, True, True, False]
    """

    def __init__(self, rate: float, burst: float | None = None, share: float = 1.0):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.base_rate = rate
        # Default burst: ten seconds of rate (at least one label), so a backlog never arrives at once.
        self.base_burst = burst if burst is not None else max(1.0, rate * 10.0)
        self.share = share
        self.tokens = self.burst
        self.last: float | None = None
        self.first: float | None = None
        self.spent = 0

    @property
    def rate(self) -> float:
        return self.base_rate * self.share

    @property
    def burst(self) -> float:
        return max(1.0, self.base_burst * self.share)

    def set_share(self, share: float) -> None:
        self.share = share
        self.tokens = min(self.tokens, self.burst)

    def on_event(self, now: float) -> None:
        if self.last is None:
            self.first = self.last = now
        elif now > self.last:  # event time can go backwards; the bucket never refills twice
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def allows(self) -> bool:
        return self.tokens >= 1.0 - 1e-9

    def spend(self) -> None:
        self.tokens -= 1.0
        self.spent += 1

    def refund(self) -> None:
        self.tokens += 1.0
        self.spent -= 1

    def target(self) -> float:
        if self.first is None:
            return 0.0
        return self.burst + (self.last - self.first) * self.rate

    def used_ratio(self) -> float:
        target = self.target()
        return self.spent / target if target else 0.0


Budget = FractionBudget | RateBudget


@dataclass(slots=True)
class Choice:
    """What the strategy decided for one event."""

    query: bool
    reason: str
    uncertainty: float
    p_query: float


class VariableUncertainty:
    """Variable-uncertainty sampling with a random audit share (Zliobaite et al. 2014).

    An event is uncertain when its highest class probability is below a threshold. The threshold
    tightens after each query and loosens after each confident event, so the strategy spends what
    the budget offers whatever the model's calibration; every budget limit must allow a query.
    A share ``random_share`` of the labels goes to uniformly random events (drawn when the budget
    has a label to give): the only unbiased sample of live accuracy. A model that knows no class yet
    (empty scores) makes every event maximally uncertain. The threshold may rise just above 1 so
    that a model certain of everything (pure tree leaves) still spends its budget.

    >>> budget = FractionBudget(0.2)
    >>> sampler = VariableUncertainty([budget], seed=0, random_share=0.0)
    >>> choices = [sampler.decide(f"e{i}", {"a": 0.55, "b": 0.45}, 0.0) for i in range(100)]
    >>> sum(c.query for c in choices), choices[-1].reason
    (20, 'uncertainty')
    """

    def __init__(
        self, budgets: list[Budget], seed: int = 0, initial_threshold: float = 0.9,
        threshold_step: float = 0.01, random_share: float = 0.1,
    ):
        if not budgets:
            raise ValueError("at least one budget is needed")
        self.budgets = budgets
        self.seed = seed
        self.threshold = initial_threshold
        self.step = threshold_step
        self.random_share = random_share
        self.events = 0
        self.queried = 0
        self.audits = 0

    def decide(self, event_id: str, scores: dict[str, float], now: float) -> Choice:
        """Decide for one scored event and, when it is a query, spend the budget."""
        self.events += 1
        available = math.inf
        for budget in self.budgets:
            budget.on_event(now)
            available = min(available, budget.tokens)
        certainty = max(scores.values()) if scores else 0.0
        uncertainty = 1.0 - certainty
        if available < 1.0 - 1e-9:
            return Choice(False, "", uncertainty, 0.0)
        if self.random_share:
            # Audits are drawn with a fixed per-event probability, and the uncertainty path leaves
            # whole labels the audits are owed, so audits really get random_share of the budget.
            offered = min(b.target() for b in self.budgets)
            p_audit = self.random_share * min(1.0, offered / self.events)
            if hash_uniform(self.seed, event_id) < p_audit:
                self.audits += 1
                return self._spend(Choice(True, "random", uncertainty, p_audit))
            owed = min(2, int(self.random_share * offered) - self.audits)
            if owed > 0 and available < 1.0 + owed - 1e-9:
                return Choice(False, "", uncertainty, 0.0)
        if certainty < self.threshold:
            self.threshold = max(1e-6, self.threshold * (1.0 - self.step))
            return self._spend(Choice(True, "uncertainty" if scores else "cold_start", uncertainty, 1.0))
        self.threshold = min(1.0 + self.step, self.threshold * (1.0 + self.step))
        return Choice(False, "", uncertainty, 0.0)

    def _spend(self, choice: Choice) -> Choice:
        for budget in self.budgets:
            budget.spend()
        self.queried += 1
        return choice

    def refund(self) -> None:
        """Give back the last label: the event turned out to have a request already (a replay)."""
        for budget in self.budgets:
            budget.refund()
        self.queried -= 1

    def used_ratio(self) -> float:
        """Achieved spend over target of the tightest budget (1.0 = every label offered was used)."""
        return max(b.used_ratio() for b in self.budgets)
