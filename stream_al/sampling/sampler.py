"""The sampler: one strategy, every budget, a random audit share and an optional drift boost.

It is what the engine holds: :meth:`Sampler.decide` runs once per event, spends the budgets when it
asks, and is picklable as a whole (it is part of the snapshot). All randomness is a hash of
(seed, event id), so a replay decides the same.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

from stream_al.sampling.budgets import EPSILON, Budget, DriftBoost, FractionBudget, OpenRequestsCap
from stream_al.sampling.randomness import hash_bernoulli, hash_uniform
from stream_al.sampling.rules import BalancedQuantileFilter, Context, VariableThreshold  # noqa: F401 (doctest)
from stream_al.sampling.strategies import Strategy, UtilityRule
from stream_al.sampling.utilities import ClassBalance, least_confidence, margin

_WHOLE_LABEL = 1.0 - EPSILON  # a budget holding this much can pay for one label
_INF = math.inf
_NO_FEED = object()
_HALF_AND_TIE = (1.0 + 1e-12) / 2


class Choice(NamedTuple):
    """What the sampler decided for one event.

    ``reason``: ``uncertainty``, ``random`` (an audit: the unbiased sample), ``cold_start`` (the model
    knows no class yet), ``exploit``, ``anomaly``, ``drift_boost`` (paid by a boost), or ``""``. ``uncertainty`` is ``1 - max p``; ``utility`` the
    strategy's worth of the label in [0, 1]. A named tuple: one is made per event, and the fast path
    builds it with ``tuple.__new__`` (a third of a dataclass's ``__init__``).
    """

    query: bool
    reason: str
    uncertainty: float
    p_query: float
    utility: float = 0.0


_new_tuple = tuple.__new__


class Sampler:
    """Strategy x budgets, with a share of the labels for uniformly random audit events.

    Every budget must allow a query, and each query spends them all. ``random_share`` of the labels
    offered go to audits, events picked without looking at them (a jittered systematic sample, see
    :meth:`_audit_due`); the strategy gets the rest.

    >>> from stream_al.sampling.budgets import FractionBudget
    >>> sampler = Sampler(UtilityRule("least_confidence", VariableThreshold()), [FractionBudget(0.2)], seed=0, random_share=0.0)
    >>> choices = [sampler.decide(f"e{i}", {"a": 0.55, "b": 0.45}, 0.0) for i in range(100)]
    >>> sum(c.query for c in choices), choices[-1].reason, sampler.used_ratio()
    (20, 'uncertainty', 1.0)
    """

    audit_jitter = 0.5  # snapshots from before the systematic audit draw (see _audit_due)
    in_flight = 0  # labels asked for and not answered yet (the engine's open requests), and
    learned = 0  # labels the model has learned: the engine keeps both (strategies see in_flight / (in_flight + learned + 1))

    def __init__(
        self, strategy: Strategy, budgets: list[Budget], seed: int = 0, random_share: float = 0.1,
        drift_boost: DriftBoost | None = None,
    ):
        if not budgets:
            raise ValueError("at least one budget is needed")
        if not 0.0 <= random_share <= 1.0:
            raise ValueError("random_share must be in [0, 1]")
        self.strategy = strategy
        self.budgets = budgets
        self.seed = seed
        self.random_share = random_share
        self.drift_boost = drift_boost
        self._caps = [b for b in budgets if isinstance(b, OpenRequestsCap)]
        self._paced = [b for b in budgets if not isinstance(b, OpenRequestsCap)]
        self.events = 0
        self.queried = 0
        self.audits = 0
        self.audit_jitter = hash_uniform(seed, "audit")  # see _audit_due
        self.boosted = 0
        self._last_boosted = False
        self._context: Context | None = None
        self._plan()

    def _plan(self) -> None:
        """Choose the per-event path (again after unpickling: the choice is derived, not state)."""
        strategy = self.strategy
        # The default shape: only fraction budgets (no cap, no boost) and least confidence (or margin,
        # without class balancing) under a rule that either ignores utilities until it selects
        # (``feed = None``) or takes them by ``feed``.
        plain = self.drift_boost is None and all(type(b) is FractionBudget for b in self.budgets)
        lean = type(strategy) is UtilityRule and (
            strategy.measure is least_confidence and (strategy.balance is None or type(strategy.balance) is ClassBalance)
            or strategy.measure is margin and strategy.balance is None
        )
        feed = getattr(strategy.rule, "feed", _NO_FEED) if lean else _NO_FEED
        self.__dict__.pop("decide", None)
        if plain and feed is not _NO_FEED:
            self._feeds = None if feed is None else strategy.rule  # the rule, when it wants utilities
            self._select = strategy.rule.select
            self._quantile = strategy.rule if type(strategy.rule) is BalancedQuantileFilter else None
            self._balance = strategy.balance
            self._margin = strategy.measure is margin
            self._single = self.budgets[0] if len(self.budgets) == 1 else None
            default = self._single is not None and self._quantile is not None and self._balance is None
            self.decide = self._decide_default if default else self._decide_fast  # type: ignore[method-assign]

    def decide(
        self, event_id: str, scores: Mapping[str, float], now: float, *, model: Any = None,
        features: Mapping[str, Any] | None = None, open_requests: int | None = None,
    ) -> Choice:
        """Decide for one scored event and, when it is a query, spend the budgets.

        ``model`` and ``features`` are for strategies that look past the scores (committee, bare
        anomaly detectors); ``open_requests`` updates the backlog cap (answered and expired requests
        free their slot).
        """
        self.events += 1
        if open_requests is not None:
            for cap in self._caps:
                cap.open = open_requests
        available = math.inf
        for budget in self.budgets:
            budget.on_event(now)
            if budget.tokens < available:
                available = budget.tokens
        boost = self.drift_boost
        if boost is not None:
            boost.on_event(now)
            if boost.cap.tokens < available:
                available = boost.cap.tokens
        if scores:
            top = max(scores.values())
            uncertainty = 1.0 - top
            cold = top * len(scores) <= 1.0 + 1e-12  # the top is the mean: all equal
        else:
            top, uncertainty, cold = None, 1.0, True
        context = self._context
        if context is None:
            context = self._context = Context(event_id, self.seed, 0.0, available)
        context.event_id, context.available, context.cold, context.top = event_id, available, cold, top
        context.model, context.features = model, features
        utility = self.strategy.evaluate(scores, context)
        normal = available >= 1.0 - EPSILON
        if not normal and boost is None:
            return Choice(False, "", uncertainty, 0.0, utility)
        offered = math.inf
        for budget in self._paced:
            target = budget.target()
            if target < offered:
                offered = target
        fraction = offered / self.events
        # The strategy is offered what the audits did not take: counting their labels as its own
        # would keep a balancing rule forever behind (owing a tenth of the budget at a 10% share),
        # and a rule that owes labels lowers its bar until it takes almost anything.
        context.offered, context.fraction = offered - self.audits, fraction if fraction < 1.0 else 1.0
        in_flight = self.in_flight
        context.stale = in_flight / (in_flight + self.learned + 1) if in_flight > 0 else 0.0
        if boost is not None:
            # While boosted the strategy is offered the extra labels too, or its bar (set for the
            # normal fraction) would leave the boost almost unspent.
            context.offered += boost.offered
            if boost.active():
                context.fraction = min(1.0, context.fraction + boost.extra_fraction)
        if normal and self.random_share:
            # The audits come first: see _audit_due. Without a paced budget (only a cap on open
            # requests) there is no offer to take a share of: each event is a lottery of random_share.
            p_audit = self.random_share * context.fraction
            if self._audit_due(offered) if offered < math.inf else hash_bernoulli(self.seed, event_id, p_audit):
                return self._audit(event_id, Choice(True, "random", uncertainty, p_audit, utility))
        boosted = (
            not normal and boost is not None and boost.active() and boost.allows() and all(cap.allows() for cap in self._caps)
        )
        if not (normal or boosted):
            return Choice(False, "", uncertainty, 0.0, utility)
        pick = self.strategy.select(utility, context)
        if pick is None:
            return Choice(False, "", uncertainty, 0.0, utility)
        if boosted:
            return self._spend_boost(Choice(True, "drift_boost", uncertainty, pick.p_query, utility))
        return self._spend(Choice(True, pick.reason if scores else "cold_start", uncertainty, pick.p_query, utility))

    def _decide_fast(
        self, event_id: str, scores: Mapping[str, float], now: float, *, model: Any = None,
        features: Mapping[str, Any] | None = None, open_requests: int | None = None,
    ) -> Choice:
        """:meth:`decide` for the default shape, fraction budgets and a least-confidence (or margin)
        rule with nothing else (no cap, no boost): the same decisions and the same state,
        in a third of the time (``tests/unit/test_sampling.py`` checks they agree).

        What it saves: method calls per budget (``on_event``, ``target``), the strategy's
        ``evaluate`` and ``select`` wrappers and their ``Pick``, and the context on every event
        where the rule is not consulted (most of them: the budget is empty, or the audits are owed
        the labels it holds). ``_plan`` installs it as ``self.decide``.
        """
        events = self.events = self.events + 1
        budget = self._single
        if budget is not None:  # one fraction budget (the default): FractionBudget.on_event, no loop
            budget.events += 1
            available = budget.tokens + budget.fraction
            if available >= budget.burst:
                available = budget.burst
            budget.tokens = available
        else:
            available = offered = _INF
            for budget in self.budgets:  # FractionBudget.on_event and .target, same arithmetic
                budget.events += 1
                tokens = budget.tokens + budget.fraction
                if tokens >= budget.burst:
                    tokens = budget.burst
                budget.tokens = tokens
                if tokens < available:
                    available = tokens
                target = budget.fraction * budget.events
                if target < offered:
                    offered = target
            budget = None
        balance = self._balance
        if balance is None and len(scores) == 2:  # the commonest shape, binary and unbalanced: the same arithmetic
            p1, p2 = scores.values()
            if p2 > p1:
                top, low = p2, p1
            else:
                top, low = p1, p2
            uncertainty = 1.0 - top
            cold = top <= _HALF_AND_TIE  # top * 2 <= 1 + 1e-12 (halving is exact)
            utility = 1.0 - (top - low) if self._margin else uncertainty * 2  # margin / least confidence
            if utility > 1.0:
                utility = 1.0
            elif utility < 0.0:
                utility = 0.0
        elif scores:  # UtilityRule(least_confidence[, ClassBalance]).evaluate
            k = len(scores)
            if k == 2:  # binary: unpacking beats max() by half
                (first, p1), (second, p2) = scores.items()
                top = p2 if p2 > p1 else p1
            else:
                top = max(scores.values())
            uncertainty = 1.0 - top
            cold = top * k <= 1.0 + 1e-12  # the top is the mean: all equal
            if k < 2:
                utility = 1.0
            elif self._margin:  # never with a balance: see _plan
                utility = margin(scores)
            else:
                doubt = top
                if balance is not None:
                    if k == 2:  # ClassBalance.adjust for two classes, without its three dicts
                        prior, alpha, floor = balance.prior, balance.alpha, balance.floor
                        old = prior.get(first)
                        q1 = prior[first] = p1 if old is None else old + alpha * (p1 - old)
                        old = prior.get(second)
                        q2 = prior[second] = p2 if old is None else old + alpha * (p2 - old)
                        w1 = p1 / (q1 if q1 >= floor else floor)
                        w2 = p2 / (q2 if q2 >= floor else floor)
                        total = w1 + w2
                        if total > 0.0:
                            doubt = w2 / total if w2 > w1 else w1 / total
                    else:
                        adjusted = balance.adjust(scores)
                        doubt = max(adjusted.values())
                utility = (1.0 - doubt) * k / (k - 1)
                utility = 1.0 if utility > 1.0 else (0.0 if utility < 0.0 else utility)
        else:
            top, uncertainty, cold, utility = None, 1.0, True, 1.0
        rule = self._feeds
        if rule is not None and not cold and rule.taken >= rule.warm:  # a cold or young model's doubts stay out of the window
            rule.feed(utility)  # BalancedQuantileFilter, the only rule that takes utilities
        if available < _WHOLE_LABEL:
            return _new_tuple(Choice, (False, "", uncertainty, 0.0, utility))
        if budget is not None:
            offered = budget.fraction * budget.events  # FractionBudget.target, only when it can matter
        fraction = offered / events
        if fraction > 1.0:
            fraction = 1.0
        random_share = self.random_share
        if random_share and random_share * offered - self.audits >= self.audit_jitter:  # _audit_due, inlined
            return self._audit(event_id, Choice(True, "random", uncertainty, random_share * fraction, utility))
        rule = self._quantile
        if rule is not None:  # the default rule, without a context
            return self._select_quantile(rule, event_id, self.strategy.reason if scores else "cold_start", uncertainty, utility, offered, fraction)
        context = self._context
        if context is None:
            context = self._context = Context(event_id, self.seed, 0.0, available)
        context.event_id, context.available, context.cold, context.top = event_id, available, cold, top
        context.model, context.features, context.offered, context.fraction = model, features, offered - self.audits, fraction
        p_query = self._select(utility, context)
        if p_query is None:
            return _new_tuple(Choice, (False, "", uncertainty, 0.0, utility))
        return self._spend(Choice(True, self.strategy.reason if scores else "cold_start", uncertainty, p_query, utility))

    def _decide_default(
        self, event_id: str, scores: Mapping[str, float], now: float, *, model: Any = None,
        features: Mapping[str, Any] | None = None, open_requests: int | None = None,
    ) -> Choice:
        """:meth:`_decide_fast` for the default configuration on a binary model: one fraction
        budget, the quantile filter over least confidence, no class balancing. The same arithmetic
        without the branches for other shapes (``tests/unit/test_sampling.py`` checks it agrees with
        :meth:`decide`); other scores go to :meth:`_decide_fast`."""
        try:
            p1, p2 = scores.values()
        except ValueError:  # not two classes (unpacking is cheaper than len() first)
            return self._decide_fast(event_id, scores, now, model=model, features=features, open_requests=open_requests)
        events = self.events = self.events + 1
        budget = self._single
        budget.events += 1
        available = budget.tokens + budget.fraction
        if available >= budget.burst:
            available = budget.burst
        budget.tokens = available
        if p2 > p1:
            top, low = p2, p1
        else:
            top, low = p1, p2
        uncertainty = 1.0 - top
        utility = 1.0 - (top - low) if self._margin else uncertainty * 2  # margin / least confidence
        if utility > 1.0:
            utility = 1.0
        elif utility < 0.0:
            utility = 0.0
        rule = self._quantile
        if top > _HALF_AND_TIE and rule.taken >= rule.warm:  # not cold: fed to the window
            rule.feed(utility)
        if available < _WHOLE_LABEL:
            return _new_tuple(Choice, (False, "", uncertainty, 0.0, utility))
        offered = budget.fraction * budget.events
        fraction = offered / events
        if fraction > 1.0:
            fraction = 1.0
        random_share = self.random_share
        if random_share and random_share * offered - self.audits >= self.audit_jitter:
            return self._audit(event_id, Choice(True, "random", uncertainty, random_share * fraction, utility))
        return self._select_quantile(rule, event_id, self.strategy.reason, uncertainty, utility, offered, fraction)

    def _select_quantile(
        self, rule: BalancedQuantileFilter, event_id: str, reason: str, uncertainty: float, utility: float,
        offered: float, fraction: float,
    ) -> Choice:
        """``BalancedQuantileFilter.select`` inlined for the fast paths (an event with a label in
        hand, after the audit check), without building its context; the same state changes."""
        max_owed, taken = rule.max_owed, rule.taken
        owed = rule.share * (offered - self.audits) - taken - rule.forgiven
        if owed > max_owed:
            rule.forgiven += owed - max_owed
            owed = max_owed
        elif owed < -max_owed:
            rule.forgiven += owed + max_owed
            owed = -max_owed
        values = rule.sorted
        if owed >= max_owed - 1e-9:
            b = 1.0
        elif rule.blind >= rule.blind_jitter:  # a blind pick (labels in flight), as the rule does
            rule.blind -= 1.0
            rule.blind_jitter = hash_uniform(self.seed, "blind:" + event_id)
            b = 1.0
        elif not values or taken < rule.warm:  # a stratified random pick, as the rule does
            if rule.warm_wait > 0:
                rule.warm_wait -= 1
                return _new_tuple(Choice, (False, "", uncertainty, 0.0, utility))
            rule.warm_wait = int(hash_uniform(self.seed, "warm:" + event_id) * (1.0 / fraction - 1.0)) if fraction > 0.0 else 0
            b = 1.0
        else:
            b = rule.share * fraction * (1.0 + owed if owed >= 0.0 else 1.0 / (1.0 - owed))
        if b > 0.0 and (b >= 1.0 or utility >= values[int((1.0 - b) * (len(values) - 1))]):
            rule.taken = taken + 1.0
            in_flight = self.in_flight
            if in_flight > 0:
                rule.blind += in_flight / (in_flight + self.learned + 1)
            return self._spend(Choice(True, reason, uncertainty, 1.0, utility))
        return _new_tuple(Choice, (False, "", uncertainty, 0.0, utility))

    def _audit_due(self, offered: float) -> bool:
        """The audit share is a jittered systematic sample: the ``k``-th audit is the first event
        with a label in hand once ``random_share`` of the labels offered reaches ``k - 1 + u``,
        ``u`` uniform in [0, 1) from hash(seed, id of the previous audit) (:meth:`_audit`).

        Which event it is depends on the stream position and the budget's state (earlier events),
        never on the event's own scores or features: an unbiased sample for estimates, with each
        event's chance the audit rate (``random_share`` x labels per event). Audits come before the
        strategy, so they always get their share and the strategy never holds labels back for them.
        It replaces a per-event Bernoulli draw of hash(seed, event id), which cost a CRC-32 screen
        on every event with a label in hand (~0.4 µs of a 1.8 µs decision).
        """
        return self.random_share * offered - self.audits >= self.audit_jitter

    def _audit(self, event_id: str, choice: Choice) -> Choice:
        self.audits += 1
        self.audit_jitter = hash_uniform(self.seed, event_id)
        return self._spend(choice)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_context"] = None  # per-event scratch; it may hold the model, which the snapshot has already
        for name in ("decide", "_select", "_quantile", "_balance", "_feeds", "_single", "_margin"):  # derived in _plan (bound methods: the rule would be pickled twice)
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._plan()

    def _spend(self, choice: Choice) -> Choice:
        self.charge()
        self._last_boosted = False
        return choice

    def charge(self) -> None:
        """Spend a label from every budget whatever they allow: what a query spends, for a label
        already asked for (a request made for an event about to be replayed). A budget may go
        below zero; it then allows nothing until it has earned the label back."""
        for budget in self.budgets:
            budget.spend()
        if self.drift_boost is not None:
            self.drift_boost.cap.spend()
        self.queried += 1

    def _spend_boost(self, choice: Choice) -> Choice:
        for cap in self._caps:
            cap.spend()
        self.drift_boost.spend()  # type: ignore[union-attr]
        self.queried += 1
        self.boosted += 1
        self._last_boosted = True
        return choice

    def refund(self) -> None:
        """Give back the last label: the event turned out to have a request already (a replay)."""
        if self._last_boosted:
            for cap in self._caps:
                cap.refund()
            self.drift_boost.refund()  # type: ignore[union-attr]
            self.boosted -= 1
        else:
            for budget in self.budgets:
                budget.refund()
            if self.drift_boost is not None:
                self.drift_boost.cap.refund()
        self.queried -= 1

    def boost(self, extra_fraction: float, until: float) -> tuple[float, float]:
        """Raise the rate by ``extra_fraction`` labels per event until ``until`` (clock of ``decide``),
        from the drift allowance and under its hard cap; returns what was granted (clipped)."""
        if self.drift_boost is None:
            raise ValueError("no drift boost is configured (budget.boost)")
        return self.drift_boost.grant(extra_fraction, until)

    def set_share(self, share: float) -> None:
        """This replica's share of the events partitions (DESIGN §3): rates scale, fractions need not."""
        if not 0.0 < share <= 1.0:
            raise ValueError("share must be in (0, 1]")
        for budget in self.budgets:
            budget.set_share(share)
        if self.drift_boost is not None:
            self.drift_boost.set_share(share)

    def used_ratio(self) -> float:
        """Achieved spend over target of the most-used paced budget (1.0 = every label offered was
        used; well below 1 over a long stream means labels were left unused: a defect)."""
        return max((b.used_ratio() for b in self._paced), default=0.0)
