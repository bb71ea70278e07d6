"""Selective sampling = a strategy (is this event worth a label?) x budgets (may we spend one?).

- :mod:`~stream_al.sampling.budgets` — hard limits, each with its stated bound: fraction of events,
  time rate, open-requests cap, drift boost;
- :mod:`~stream_al.sampling.utilities` — how much a label is worth (least confidence, margin,
  entropy, vote entropy, class-prior balancing);
- :mod:`~stream_al.sampling.rules` — when to ask given a utility (fixed, variable, randomised
  variable threshold, balanced quantile filter, proportional probability, random);
- :mod:`~stream_al.sampling.strategies` — the named strategies (utility x rule) of the config;
- :mod:`~stream_al.sampling.sampler` — :class:`Sampler`, what the engine holds;
- :mod:`~stream_al.sampling.randomness` — draws from hash(seed, event id), so replays decide the same.
"""

from stream_al.sampling.budgets import Budget, DriftBoost, FractionBudget, OpenRequestsCap, RateBudget
from stream_al.sampling.randomness import hash_bernoulli, hash_normal, hash_uniform
from stream_al.sampling.rules import (
    BalancedQuantileFilter, Context, FixedThreshold, ProportionalProbability, RandomizedVariableThreshold, RandomRule,
    VariableThreshold,
)
from stream_al.sampling.sampler import Choice, Sampler
from stream_al.sampling.strategies import (
    AnomalyScore, Committee, ExploitExplore, Pick, Strategy, StrategyName, UtilityName, UtilityRule, build_strategy,
    random_share_of,
)
from stream_al.sampling.utilities import ClassBalance, entropy, least_confidence, margin, vote_entropy

__all__ = [
    "AnomalyScore", "BalancedQuantileFilter", "Budget", "Choice", "ClassBalance", "Committee", "Context", "DriftBoost",
    "ExploitExplore", "FixedThreshold", "FractionBudget", "OpenRequestsCap", "Pick", "ProportionalProbability",
    "RandomRule", "RandomizedVariableThreshold", "RateBudget", "Sampler", "Strategy", "StrategyName", "UtilityName",
    "UtilityRule", "VariableThreshold", "build_strategy", "entropy", "hash_normal", "hash_uniform", "least_confidence",
    "margin", "random_share_of", "vote_entropy", "hash_bernoulli",
]
