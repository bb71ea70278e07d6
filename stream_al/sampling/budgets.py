"""Budgets: how many labels may be asked for. Each is a hard limit and states the bound it guarantees.

- :class:`FractionBudget` — ``fraction`` labels per event, an event-count token bucket that starts
  empty: after ``n`` events at most ``floor(fraction * n)`` labels were spent, and over any ``w``
  consecutive events at most ``burst + fraction * w`` (so over any ``10 / fraction`` events at most
  ``burst + 10``; with the default burst of 10 that is twice the nominal 10, never more).
  Unlike a sliding-window estimate (scikit-activeml's 100-event window overspends by ~40% at a 1%
  budget), the bucket never lends: the bounds hold for every fraction, however small.
- :class:`RateBudget` — ``rate`` labels per second, a time token bucket that starts full: over any
  interval of ``t`` seconds at most ``burst + rate * t`` labels.
- :class:`OpenRequestsCap` — at most ``limit`` requests open at once (the analysts' backlog); the
  caller says how many are open, so answered and expired requests free their slot.
- :class:`DriftBoost` — a temporary extra ``labels per event`` for a bounded time, drawn from a
  separate allowance (a :class:`RateBudget`), under a hard cap on all spend (a :class:`FractionBudget`).

A budget that is left unused is a defect too: ``used_ratio()`` is spent over offered.

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

import math

# Float error absorbed by every "is a whole label available" test: 20 events at 5% earn exactly one.
EPSILON = 1e-9


class _TokenBucket:
    """What the two token buckets share: whole labels are taken from ``tokens``."""

    tokens: float
    spent: int

    def available(self) -> float:
        return self.tokens

    def allows(self) -> bool:
        return self.tokens >= 1.0 - EPSILON

    def spend(self) -> None:
        self.tokens -= 1.0
        self.spent += 1

    def refund(self) -> None:
        self.tokens += 1.0
        self.spent -= 1

    def target(self) -> float:
        raise NotImplementedError

    def used_ratio(self) -> float:
        """Spent over offered so far (1.0: every label offered was used)."""
        target = self.target()
        return self.spent / target if target else 0.0


class FractionBudget(_TokenBucket):
    """At most ``fraction`` labels per event seen (event-count token bucket, starts empty).

    ``burst`` is the most labels saved up while nothing was worth asking (default 10, never below
    ``1 + fraction`` so no event's credit is thrown away).
    """

    hard = False  # a drift boost may go past it (under its own hard cap)

    def __init__(self, fraction: float, burst: float | None = None):
        if not 0 < fraction <= 1:
            raise ValueError("fraction must be in (0, 1]")
        self.fraction = fraction
        self.burst = max(1.0 + fraction, burst if burst is not None else 10.0)
        self.tokens = 0.0
        self.events = 0
        self.spent = 0

    def on_event(self, now: float) -> None:
        self.events += 1
        tokens = self.tokens + self.fraction
        self.tokens = tokens if tokens < self.burst else self.burst

    def set_share(self, share: float) -> None:
        """Nothing to do: a replica sees only its partitions' events, so a fraction splits by itself."""

    def target(self) -> float:
        """Labels this budget has made available so far."""
        return self.fraction * self.events


class RateBudget(_TokenBucket):
    """At most ``rate`` labels per second, with bursts up to ``burst`` (time token bucket, starts full).

    ``share`` scales rate and burst when several replicas split the budget (DESIGN §3). Event time
    may go backwards: only its high-water mark earns labels.

    >>> budget = RateBudget(rate=2.0, burst=2.0)
    >>> asked = []
    >>> for second in [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]:
    ...     budget.on_event(second)
    ...     asked.append(budget.allows() and (budget.spend() or True))
    >>> asked
    [True, True, False, True, True, False]
    """

    hard = False

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
        """Scale rate and burst to this replica's share; shrinking empties what no longer fits."""
        self.share = share
        self.tokens = min(self.tokens, self.burst)

    def on_event(self, now: float) -> None:
        if self.last is None:
            self.first = self.last = now
        elif now > self.last:  # event time can go backwards; the bucket never refills twice
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def target(self) -> float:
        if self.first is None or self.last is None:
            return 0.0
        return self.burst + (self.last - self.first) * self.rate


class OpenRequestsCap:
    """At most ``limit`` label requests open at once: above it nothing more is asked.

    The owner sets :attr:`open` before each decision (the engine counts its open requests, from every
    replica, after expiring the old ones), so answered and expired requests free their slot. Between
    two updates each spend takes a slot. No drift boost goes past it.

    >>> cap = OpenRequestsCap(2)
    >>> cap.open = 1; cap.allows()
    True
    >>> cap.spend(); cap.allows()
    False
    """

    hard = True

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.open = 0
        self.spent = 0

    def on_event(self, now: float) -> None:
        """Nothing: only answers and expiry free a slot."""

    @property
    def tokens(self) -> float:
        """Free slots: the labels this cap allows now."""
        return float(self.limit - self.open)

    def available(self) -> float:
        return self.tokens

    def allows(self) -> bool:
        return self.open < self.limit

    def spend(self) -> None:
        self.open += 1
        self.spent += 1

    def refund(self) -> None:
        self.open -= 1
        self.spent -= 1

    def set_share(self, share: float) -> None:
        """Nothing: every replica sees every open request, so the cap is global already."""

    def target(self) -> float:
        return math.inf  # no rate: it never asks to be spent

    def used_ratio(self) -> float:
        return 0.0


class DriftBoost:
    """A bounded, temporary extra rate from a separate allowance, never past a hard cap.

    :meth:`grant` (called through ``Sampler.boost``, e.g. by a drift detector) asks for
    ``extra_fraction`` more labels per event until ``until``. The grant is clipped to
    ``max_extra_fraction`` and to ``max_seconds`` from the current clock. Bounds:

    - boosted labels over any ``w`` events: at most ``1 + max_extra_fraction * (w + 1)`` (the extra
      credit starts empty and is never saved up beyond one label);
    - boosted labels over any ``t`` seconds: at most ``allowance.burst + allowance.rate * t`` (the
      allowance is a :class:`RateBudget`, e.g. 50 labels per day with a burst of 50);
    - all labels (normal and boosted) over any ``w`` events: at most ``cap.burst + cap.fraction * w``
      (``cap`` is a :class:`FractionBudget` that every query spends).

    >>> boost = DriftBoost(max_extra_fraction=0.5, max_seconds=60, allowance=RateBudget(1 / 3600, burst=3), cap=FractionBudget(1.0))
    >>> boost.on_event(0.0); boost.grant(2.0, until=1e9)  # clipped to 0.5 per event for one minute
    (0.5, 60.0)
    >>> spent = 0
    >>> for t in range(1, 200):
    ...     boost.on_event(float(t))
    ...     if boost.allows():
    ...         boost.spend(); spent += 1
    >>> spent  # the allowance of 3 labels ran out before the minute did
    3
    """

    offered = 0.0  # for snapshots written before the field existed

    def __init__(self, max_extra_fraction: float, max_seconds: float, allowance: RateBudget, cap: FractionBudget):
        if not 0 < max_extra_fraction <= 1:
            raise ValueError("max_extra_fraction must be in (0, 1]")
        if max_seconds <= 0:
            raise ValueError("max_seconds must be positive")
        self.max_extra_fraction = max_extra_fraction
        self.max_seconds = max_seconds
        self.allowance = allowance
        self.cap = cap
        self.extra_fraction = 0.0
        self.until = -math.inf
        self.unclipped = False
        self.credit = 0.0
        self.clock = -math.inf
        self.spent = 0
        self.offered = 0.0  # extra labels offered by every boost so far: the strategy is offered them too

    def grant(self, extra_fraction: float, until: float) -> tuple[float, float]:
        """Start (or replace) a boost; returns what was granted: (extra labels per event, until)."""
        if extra_fraction < 0:
            raise ValueError("extra_fraction must be >= 0")
        self.extra_fraction = min(extra_fraction, self.max_extra_fraction)
        # Before any event there is no clock yet: the first event's clock clips the boost.
        self.until = min(until, self.clock + self.max_seconds) if self.clock > -math.inf else until
        self.unclipped = self.clock == -math.inf
        if self.extra_fraction == 0.0:
            self.credit = 0.0
        return self.extra_fraction, self.until

    def active(self) -> bool:
        return self.clock < self.until and self.extra_fraction > 0.0

    def on_event(self, now: float) -> None:
        self.clock = max(self.clock, now)
        if self.unclipped:
            self.until = min(self.until, self.clock + self.max_seconds)
            self.unclipped = False
        self.allowance.on_event(now)
        self.cap.on_event(now)
        if self.active():
            self.credit = min(1.0 + self.extra_fraction, self.credit + self.extra_fraction)
            self.offered += self.extra_fraction
        else:
            self.credit = 0.0

    def allows(self) -> bool:
        """A boosted label may be spent now (the sampler checks the cap for normal labels too)."""
        return self.credit >= 1.0 - EPSILON and self.allowance.allows() and self.cap.allows()

    def spend(self) -> None:
        self.credit -= 1.0
        self.allowance.spend()
        self.cap.spend()
        self.spent += 1

    def refund(self) -> None:
        self.credit += 1.0
        self.allowance.refund()
        self.cap.refund()
        self.spent -= 1

    def set_share(self, share: float) -> None:
        self.allowance.set_share(share)


Budget = FractionBudget | RateBudget | OpenRequestsCap
