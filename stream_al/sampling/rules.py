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
    with traffic) and ``offered`` their total less the sampler's random audits, i.e. the labels that
    were the strategy's to spend (``inf`` without a paced budget); the sampler sets
    both only before :meth:`Rule.select`. ``available`` is the labels the budgets hold right now;
    ``cold`` says the model knows nothing yet (no scores, or all equal); ``top`` is the highest
    score (``None`` without scores); ``model`` and ``features`` are given by engines whose strategy
    needs them (committees, anomaly scorers). The sampler reuses one context from event to event.
    """

    event_id: str
    seed: int
    fraction: float
    available: float
    cold: bool = False
    model: Any = None
    features: Mapping[str, Any] | None = None
    offered: float = 0.0
    top: float | None = None
    stale: float = 0.0

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

    feed = None  # utilities are of no use before select: the sampler's fast path skips them

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

    feed = None  # utilities are of no use before select: the sampler's fast path skips them

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

    feed = None  # utilities are of no use before select: the sampler's fast path skips them

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

    ``b`` is this rule's share of the budget's fraction, balanced by ``owed``: the labels it was
    offered (``share`` of what the budgets offered) minus those it took. Owing ``k`` labels
    multiplies ``b`` by ``1 + k``; being ``k`` ahead divides it by ``1 + k`` (``owed`` stays within
    ``[-max_owed, max_owed]``); owing ``max_owed`` labels (5: half of a fraction bucket's default
    burst of 10, well before it fills and loses labels) takes anything. Utilities of a model that knows nothing yet (``context.cold``) stay out
    of the window: they would hold the bar at 1 long after the first labels. So a quiet stretch
    lowers the bar, a busy one raises it, and a window still full of a younger model's doubts cannot
    starve the budget. The window is kept sorted (``bisect``): ``O(window)`` memory moves per kept
    utility; ``stride`` keeps one utility in ``stride`` (the window still spans ``window`` events).

    >>> rule = BalancedQuantileFilter(window=100)
    >>> ctx = Context("e", 0, fraction=0.001, available=1.0, offered=0.0)
    >>> for i in range(100):
    ...     rule.observe(i / 100, ctx)
    >>> rule.select(0.995, ctx), rule.select(0.5, ctx)
    (1.0, None)
    """

    # Older snapshots have no stride (they keep every utility), no warm start and no blind picks.
    stride = 1
    skipped = 0
    warm = 0
    blind = 0.0
    blind_jitter = 0.5
    warm_wait = 0

    def __init__(self, window: int = 1000, share: float = 1.0, max_owed: float = 5.0, stride: int = 1, warm: int = 0):
        if window < 2:
            raise ValueError("window must be at least 2")
        if stride < 1:
            raise ValueError("stride must be at least 1")
        self.window = window
        self.share = share
        self.max_owed = max_owed
        # Keep one utility in ``stride``: the window still spans ``window`` events but holds
        # ``window // stride`` of them. Keeping the sorted window is most of a decision's cost; a
        # quantile of 250 systematic samples of 1000 events is as good a bar as one of all 1000.
        self.stride = stride
        self.kept = max(2, window // stride)
        # The first ``warm`` labels go to events the budget pays for whatever their utility (a
        # stratified random sample, see ``select``), and the utilities
        # seen meanwhile stay out of the window: a model of a handful of labels changes with each
        # one, so the bar it leaves would be stale (with one label a scaled linear model gives every
        # event the same utility, and a window full of that tie starves the budget).
        self.warm = warm
        self.skipped = 0
        self.recent: deque[float] = deque()
        self.sorted: list[float] = []
        self.taken = 0.0
        self.forgiven = 0.0  # owed beyond the bounds, written off
        # Labels in flight (asked, not yet learned) make uncertainty picks redundant: the model that
        # chose them has not learned the ones before, so it keeps asking about the same stale
        # boundary. Each label taken owes ``context.stale`` (the share of the labels asked that are
        # still in flight, in flight / (in flight + learned + 1)) of a blind pick: the first event
        # with a label in hand once ``blind`` reaches ``blind_jitter`` (uniform, redrawn from
        # hash(seed, id) at each blind pick) is taken whatever its utility. Without a label delay
        # nothing is in flight at decision time and this never fires.
        self.blind = 0.0
        self.blind_jitter = 0.5
        self.warm_wait = 0  # the first pick: the first event the budget pays for

    def observe(self, utility: float, context: Context) -> None:
        if not context.cold and self.taken >= self.warm:
            self.feed(utility)

    def feed(self, utility: float) -> None:
        """Take one utility of a model that knows something into the window, keeping one in
        ``stride`` and dropping the oldest kept beyond ``kept``."""
        skipped = self.skipped + 1
        if skipped < self.stride:
            self.skipped = skipped
            return
        self.skipped = 0
        self.recent.append(utility)
        insort(self.sorted, utility)
        if len(self.recent) > self.kept:
            del self.sorted[bisect_left(self.sorted, self.recent.popleft())]

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("kept", self.window)  # an older snapshot: every utility was kept

    def owed(self, context: Context) -> float:
        """Labels offered to this rule and not taken, within the bounds (the excess is written off)."""
        owed = self.share * context.offered - self.taken - self.forgiven
        if owed > self.max_owed:
            self.forgiven += owed - self.max_owed
            return self.max_owed
        if owed < -self.max_owed:
            self.forgiven += owed + self.max_owed
            return -self.max_owed
        return owed

    def select(self, utility: float, context: Context) -> float | None:
        # self.owed(context), inlined: this runs on most events while the budget holds a label.
        owed = self.share * context.offered - self.taken - self.forgiven
        if owed > self.max_owed:
            self.forgiven += owed - self.max_owed
            owed = self.max_owed
        elif owed < -self.max_owed:
            self.forgiven += owed + self.max_owed
            owed = -self.max_owed
        values = self.sorted
        if owed >= self.max_owed - 1e-9:
            b = 1.0  # behind by a full bucket: any event
        elif self.blind >= self.blind_jitter:
            # A blind pick is due (labels in flight, see ``blind``): this event, whatever its utility.
            self.blind -= 1.0
            self.blind_jitter = context.draw("blind:")
            b = 1.0
        elif not values or self.taken < self.warm:
            # Nothing known yet, or warming up: any event is news. Each label goes to a random event
            # of the stretch that earns it (a stratified random sample, at the budget's pace): after
            # a pick, the next ``warm_wait`` events with a label in hand are passed over, ``u (1 /
            # fraction - 1)`` with u uniform from hash(seed, id of the pick). Taking the first event
            # each label pays for picked the same events for every seed: on a stream in a fixed
            # order (phishing) every seed's model started from the same few, a poor start there
            # (5%, no delay, against random: -.014 over seeds 0-2; with this -.003, and +.002 over 12).
            if self.warm_wait > 0:
                self.warm_wait -= 1
                return None
            self.warm_wait = int(context.draw("warm:") * (1.0 / context.fraction - 1.0)) if context.fraction > 0.0 else 0
            b = 1.0
        else:
            b = self.share * context.fraction * (1.0 + owed if owed >= 0.0 else 1.0 / (1.0 - owed))
        if b <= 0.0:
            return None
        if b >= 1.0 or utility >= values[int((1.0 - b) * (len(values) - 1))]:
            self.taken += 1.0
            self.blind += context.stale
            return 1.0
        return None


class ProportionalProbability:
    """Asks with ``p = min(1, fraction * saved * weight + owed / tolerance)``, ``weight`` being
    ``utility^exponent`` over its running mean (over ``horizon`` events).

    River's EntropySampler asks with ``p = entropy^discount`` whatever the budget, so its spend
    depends on the model's calibration; dividing by the running mean makes the expected spend the
    budget's fraction, ``saved`` (labels the budget holds, at least 1) spends what a quiet stretch
    saved up, and ``owed`` (labels offered minus taken, at most ``max_owed``) catches up while the
    mean lags behind a model that turned confident. A model certain of everything asks at random.
    """

    def __init__(self, exponent: float = 3.0, horizon: int = 1000, share: float = 1.0, tolerance: float = 100.0,
                 max_owed: float = 10.0):
        self.exponent = exponent
        self.alpha = 1.0 / horizon
        self.share = share
        self.tolerance = tolerance
        self.max_owed = max_owed
        self.mean: float | None = None
        self.taken = 0.0
        self.forgiven = 0.0

    def observe(self, utility: float, context: Context) -> None:
        value = utility**self.exponent
        self.mean = value if self.mean is None else self.mean + self.alpha * (value - self.mean)

    def select(self, utility: float, context: Context) -> float | None:
        owed = self.share * context.offered - self.taken - self.forgiven
        if owed > self.max_owed:
            self.forgiven += owed - self.max_owed
            owed = self.max_owed
        mean = utility**self.exponent if self.mean is None else self.mean
        weight = (utility**self.exponent + 1e-3) / (mean + 1e-3)
        p = min(1.0, self.share * context.fraction * max(1.0, context.available) * weight + max(0.0, owed) / self.tolerance)
        if context.draw("proportional:") < p:
            self.taken += 1.0
            return p
        return None
