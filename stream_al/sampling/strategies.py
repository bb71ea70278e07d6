"""Strategies: a utility (is this event's label worth having?) and a rule (ask, given that utility?).

All share one interface, :class:`Strategy`: ``evaluate`` runs on every event and returns the
utility in [0, 1]; ``select`` runs only when the budgets have a label to give and returns a
:class:`Pick` (reason, probability it asked with) or ``None``. :func:`build_strategy` builds the
named strategies of the ``sampler`` config section:

========================================  ===============================================================
``random``                                random events (Zliobaite et al. 2014)
``fixed_uncertainty``                     confidence under a fixed threshold (Zliobaite)
``variable_uncertainty``                  confidence under a self-adjusting threshold (Zliobaite)
``randomized_variable_uncertainty``       the same, threshold randomised per event (Zliobaite)
``split``                                 variable uncertainty plus a random share (Zliobaite's v = 0.2)
``entropy``                               River's EntropySampler, probability ∝ entropy³, budget-calibrated
``quantile_filter``                       top utilities of a recent window, balanced (Kottke et al. 2015)
``committee``                             vote entropy of an ensemble's members (ARF, bagging)
``anomaly``                               highest anomaly scores (HalfSpaceTrees), top of a window
``exploit_explore``                       part most-likely positives, part most uncertain (fraud queues)
========================================  ===============================================================

Threshold and quantile strategies measure uncertainty with ``utility`` (least confidence, margin or
entropy), optionally imbalance-aware (``balance_classes``: probabilities over their running prior).

Why ``quantile_filter`` is the default: prequential runs through :class:`stream_al.engine.Engine`
(``benchmarks/strategy_evidence.py --seeds 3``, logistic regression, 10% audit share; accuracy,
ROC AUC on the 2%-positive stream; mean of 3 seeds). Each cell: quantile filter / random /
variable uncertainty. It is at least as good as random in 25 of 32 cells (variable uncertainty 23,
randomized VU 24, split 22, entropy 18), and far more selective (it asks about the top of the
window; variable uncertainty takes roughly every other event once a label is available).

==================  =====  =================  =================  =================  =================
stream              delay  1%                 5%                 10%                20%
==================  =====  =================  =================  =================  =================
phishing (1250)     0      .507 .526 .691     .814 .830 .825     .852 .838 .848     .874 .876 .866
phishing            200    .526 .538 .641     .778 .781 .789     .799 .790 .790     .813 .821 .805
bananas             0      .513 .505 .486     .560 .508 .532     .536 .517 .548     .518 .518 .561
bananas             200    .522 .504 .493     .568 .507 .525     .530 .512 .538     .524 .518 .520
SEA, drift at 5000  0      .901 .829 .880     .947 .909 .916     .938 .927 .929     .939 .934 .950
SEA, drift at 5000  200    .879 .818 .866     .927 .900 .903     .919 .915 .914     .925 .921 .931
2% positives (AUC)  0      .850 .669 .760     .823 .735 .637     .808 .771 .788     .870 .868 .900
2% positives (AUC)  200    .730 .666 .771     .717 .729 .616     .798 .762 .760     .858 .856 .883
==================  =====  =================  =================  =================  =================

The whole panel of ``benchmarks/peers.py`` (``benchmarks/default_vs_random.py --events 5000
--seeds 6``: the simulator, prequential accuracy, budgets 1/5/10/20%, label delay 0 and 500
events, mean of 6 seeds; at the end of the sampling-3 branch). Each cell: the default / random;
``<`` marks the default below random. A cell's seed-to-seed spread is about 0.013 (and at 1% on
phishing, 12 labels, about 0.1).

==================  =====  ===========  ===========  ===========  ===========
stream              delay  1%           5%           10%          20%
==================  =====  ===========  ===========  ===========  ===========
phishing (1250)     0      .678 .569    .835<.837    .857 .852    .877 .873
phishing            500    .633 .540    .728<.737    .739<.745    .760 .759
bananas             0      .531 .512    .575 .513    .583 .517    .582 .521
bananas             500    .548 .518    .546 .520    .553 .520    .568 .522
shuttle (8% pos.)   0      .793<.806    .947 .904    .972 .937    .983 .967
shuttle             500    .791<.810    .897<.899    .947 .932    .967 .960
SEA, drift          0      .841 .807    .925 .898    .938 .912    .941 .927
SEA                 500    .772 .748    .830<.838    .841<.851    .855<.861
hyperplane          0      .710 .693    .869 .842    .891 .869    .909 .895
hyperplane          500    .687 .662    .806 .801    .826 .825    .850 .848
agrawal, drift      0      .500<.503    .569 .520    .585 .539    .646 .558
agrawal             500    .498 .486    .503 .502    .542 .516    .552 .528
2% positives        0      .684 .636    .923 .838    .956 .905    .963 .944
2% positives        500    .688 .660    .867 .841    .910 .905    .940<.944
==================  =====  ===========  ===========  ===========  ===========

Below random in 11 of 56 cells, mean advantage +.024 accuracy (at the start of sampling-3: 14 of
56, +.022; before the fixes below: 17 of 56, +.006, worst -.158). Below by more than two standard
errors of the paired difference in 2 cells, both with the 500-event delay and small: phishing at
5% (-.008 ± .004) and SEA at 20% (-.006 ± .001). Without delay the default is below random only at 1% (shuttle -.013,
agrawal -.003) and on phishing at 5% (-.002). With the delay it is on a par with random: a model
that learns 500 events late keeps asking about a stale boundary; the blind picks (below) bring it
level, not ahead. The 5%/10% panel on 12 seeds is in ``benchmarks/README.md``.

What made the difference (same panel, 3000 events, budgets 5/10%, 3 seeds, mean accuracy over the
28 cells; random .737):

- the strategy is offered only the labels the audits did not take (``Context.offered``). Charged
  for the audits' labels, the quantile filter was always ``max_owed`` behind, so its bar fell to
  the top half of the window and it barely selected: .747 -> .757;
- a warm start (``sampler.warm_start``, 10 labels): the first labels go to events the budget pays
  for whatever their utility, and their utilities stay out of the window. A scaled linear model of
  one label gives every event the same utility; a window full of that tie held the bar above every
  later event (phishing at 1%: 7 of 12 labels spent, accuracy .38; with it .69, random .65);
- the warm start's events are a stratified random sample (one random event of each stretch that
  earns a label, drawn from hash(seed, id)), not the first event each label pays for: on a stream
  in a fixed order that was the same events for every seed, and phishing's were a poor start
  (5%, no delay, seeds 0-2: -.014 against random; 12 seeds: +.003);
- blind picks while labels are in flight (``BalancedQuantileFilter.blind``): each label taken owes
  ``in flight / (in flight + learned + 1)`` of a pick made whatever the utility. A model that
  learns 500 events late keeps asking about the same stale boundary, and its picks in flight are
  redundant; after an abrupt drift they also miss the region whose class flipped. 500-event delay,
  5/10%, 3000 events, 12 seeds: mean advantage over random -.001 -> +.005, worst cell -.023 (SEA
  10%) -> -.008; still below random in 7 of 14 cells, each within 2 standard errors.

Tried and not kept (same measure): a smaller or larger window (500: +.003, 2000: +.001; noise), a
larger audit share (0.2: +.001, 0.3: -.001; under the 500-event delay even 0.5 stayed below
random in 6 of 14 cells), warm starts of 5 or 20 (-.000, -.003), widening the bar by the labels in
flight under delay (-.004: it lost more on bananas and the 2%-positive stream than it gained on
SEA), twice the blind share (``2 x in flight / (...)``: +.002 against +.004 in a 6-seed prototype), a scaler that learns
from every event, labelled or not (both the default and random gain, phishing +.02-.03 and
shuttle up to +.06, but the default stays below random in as many cells; and the model would no
longer be a function of the label log, which replicas and recovery rely on), a budget that lends its first labels (+.002 with a broken filter, -.001
after the fixes), ``balance_classes`` (it asks about events whose posterior crosses the running
prior, not the likeliest rare positives: in ``test_the_default_strategy_queries_rare_positives``
0.2% of its labels were positives, against over 30% for the unbalanced filter).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

from stream_al.sampling.rules import (
    BalancedQuantileFilter, Context, FixedThreshold, ProportionalProbability, RandomizedVariableThreshold, RandomRule,
    Rule, VariableThreshold,
)
from stream_al.sampling.utilities import UTILITIES, ClassBalance, ScoreUtility, Scores, committee_members, least_confidence, vote_entropy

if TYPE_CHECKING:
    from stream_al.config import SamplerSettings

StrategyName = Literal[
    "random", "fixed_uncertainty", "variable_uncertainty", "randomized_variable_uncertainty", "split", "entropy",
    "quantile_filter", "committee", "anomaly", "exploit_explore",
]
UtilityName = Literal["least_confidence", "margin", "entropy"]


class Pick(NamedTuple):
    """A strategy's yes: why, and the probability the event had of being asked (1.0 if certain)."""

    reason: str
    p_query: float


class Strategy(Protocol):
    def evaluate(self, scores: Scores, context: Context) -> float: ...

    def select(self, utility: float, context: Context) -> Pick | None: ...


class UtilityRule:
    """A score utility under a rule: the shape of most strategies.

    >>> from stream_al.sampling.rules import FixedThreshold
    >>> strategy = UtilityRule("margin", FixedThreshold(0.5))
    >>> ctx = Context("e1", 0, fraction=0.1, available=1.0)
    >>> u = strategy.evaluate({"a": 0.6, "b": 0.4}, ctx)
    >>> round(u, 2), strategy.select(u, ctx)
    (0.8, Pick(reason='uncertainty', p_query=1.0))
    """

    def __init__(self, utility: str | ScoreUtility, rule: Rule, reason: str = "uncertainty", balance: ClassBalance | None = None):
        self.measure = UTILITIES[utility] if isinstance(utility, str) else utility
        self.rule = rule
        self.reason = reason
        self.balance = balance

    def evaluate(self, scores: Scores, context: Context) -> float:
        if self.balance is not None:
            utility = self.measure(self.balance.adjust(scores))
        elif self.measure is least_confidence and context.top is not None:
            k = len(scores)  # the hot path: least confidence from the top score the sampler found
            utility = 1.0 if k < 2 else min(1.0, max(0.0, (1.0 - context.top) * k / (k - 1)))
        else:
            utility = self.measure(scores)
        self.rule.observe(utility, context)
        return utility

    def select(self, utility: float, context: Context) -> Pick | None:
        p = self.rule.select(utility, context)
        return None if p is None else Pick(self.reason, p)


class Committee(UtilityRule):
    """Vote entropy over an ensemble's members (needs ``model`` and ``features`` in the context).

    A model without members (not an ensemble) falls back to the least confidence of its scores.
    """

    def __init__(self, rule: Rule):
        super().__init__(least_confidence, rule)

    def evaluate(self, scores: Scores, context: Context) -> float:
        if context.model is not None and context.features is not None and len(committee_members(context.model)[0]) >= 2:
            utility = 1.0 if not scores else vote_entropy(context.model, context.features)
        else:
            utility = self.measure(scores)
        self.rule.observe(utility, context)
        return utility


class AnomalyScore(UtilityRule):
    """The review queue gets the highest anomaly scores the budget allows.

    The score is the positive class's score (what the ``half_space_trees`` model reports: its
    anomaly score), or ``model.score_one(features)`` for a bare River anomaly detector.
    """

    def __init__(self, positive: str | None, rule: Rule):
        super().__init__(least_confidence, rule, reason="anomaly")
        self.positive = positive

    def evaluate(self, scores: Scores, context: Context) -> float:
        if self.positive is not None and self.positive in scores:
            utility = min(1.0, max(0.0, scores[self.positive]))
        elif context.model is not None and context.features is not None and hasattr(context.model, "score_one"):
            utility = min(1.0, max(0.0, context.model.score_one(dict(context.features))))
        else:
            utility = 1.0  # nothing scored yet: every event is news
        self.rule.observe(utility, context)
        return utility


class ExploitExplore:
    """Part of the budget to the most likely positives, the rest to the most uncertain events.

    Analysts must review likely fraud anyway (``exploit``, top ``exploit_share`` of the budget by
    ``p(positive)``); the uncertain events teach the model (``uncertainty``). Each side is a
    :class:`BalancedQuantileFilter` with its own share of the budget, so neither starves the other.
    The utility it reports is the explore side's.
    """

    def __init__(self, positive: str, exploit_share: float, explore_utility: str | ScoreUtility = "least_confidence",
                 balance: ClassBalance | None = None, window: int = 1000):
        self.positive = positive
        self.exploit = BalancedQuantileFilter(window, share=exploit_share)
        self.explore = UtilityRule(explore_utility, BalancedQuantileFilter(window, share=1.0 - exploit_share), balance=balance)
        self.likelihood = 0.0

    def evaluate(self, scores: Scores, context: Context) -> float:
        self.likelihood = scores.get(self.positive, 1.0) if scores else 1.0
        self.exploit.observe(self.likelihood, context)
        return self.explore.evaluate(scores, context)

    def select(self, utility: float, context: Context) -> Pick | None:
        if self.exploit.share > 0.0 and self.exploit.select(self.likelihood, context) is not None:
            return Pick("exploit", 1.0)
        if self.exploit.share < 1.0:
            return self.explore.select(utility, context)
        return None


def build_strategy(s: SamplerSettings, positive: str | None) -> Strategy:
    """The strategy named by a ``sampler`` config section; ``positive`` is the positive class."""
    balance = ClassBalance(s.balance_horizon) if s.balance_classes else None

    def variable() -> VariableThreshold:
        return VariableThreshold(s.initial_threshold, s.threshold_step)

    def quantile(share: float = 1.0, warm: int = 0) -> BalancedQuantileFilter:
        # ~250 utilities kept whatever the window: the bar's precision, at a quarter of the cost for 1000.
        return BalancedQuantileFilter(s.quantile_window, share, stride=max(1, s.quantile_window // 250), warm=warm)

    name = s.strategy
    if name == "random":
        return UtilityRule(s.utility, RandomRule(), reason="random")
    if name == "fixed_uncertainty":
        return UtilityRule(s.utility, FixedThreshold(s.fixed_threshold), balance=balance)
    if name in ("variable_uncertainty", "split"):
        return UtilityRule(s.utility, variable(), balance=balance)
    if name == "randomized_variable_uncertainty":
        return UtilityRule(s.utility, RandomizedVariableThreshold(s.initial_threshold, s.threshold_step, s.randomization), balance=balance)
    if name == "entropy":
        return UtilityRule("entropy", ProportionalProbability(s.entropy_exponent), balance=balance)
    if name == "quantile_filter":
        return UtilityRule(s.utility, quantile(warm=s.warm_start), balance=balance)
    if name == "committee":
        return Committee(variable())
    if name == "anomaly":
        return AnomalyScore(positive, quantile())
    if name == "exploit_explore":
        if positive is None:
            raise ValueError("sampler.strategy exploit_explore needs positive_class")
        return ExploitExplore(positive, s.exploit_share, s.utility, balance, s.quantile_window)
    raise ValueError(f"unknown sampler.strategy {name!r}")


def random_share_of(s: SamplerSettings) -> float:
    """The audit share: ``split`` uses ``split_share`` (Zliobaite's v), the others ``random_share``."""
    return s.split_share if s.strategy == "split" else s.random_share


__all__ = ["AnomalyScore", "Committee", "ExploitExplore", "Pick", "Strategy", "StrategyName", "UtilityName", "UtilityRule",
           "build_strategy", "random_share_of"]
