"""Utilities: how much one event's label is worth, a number in [0, 1] (1 = most worth asking).

Every utility is total: a model that knows no class yet (``{}`` scores) or only one class gives 1.0
(cold start: anything it is told is news), and probabilities of exactly 0 or 1 are fine.

>>> least_confidence({"a": 0.5, "b": 0.5}), margin({"a": 0.9, "b": 0.1}), entropy({"a": 1.0, "b": 0.0})
(1.0, 0.19999999999999996, 0.0)
>>> least_confidence({}), entropy({"a": 1.0})
(1.0, 1.0)
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from river import base, compose

Scores = Mapping[str, float]
ScoreUtility = Callable[[Scores], float]


def least_confidence(scores: Scores) -> float:
    """``1 - max p``, scaled by ``k / (k - 1)`` so that a uniform posterior over k classes gives 1."""
    k = len(scores)
    if k < 2:
        return 1.0
    top = max(scores.values())
    return min(1.0, max(0.0, (1.0 - top) * k / (k - 1)))


def margin(scores: Scores) -> float:
    """``1 - (p1 - p2)``: one minus the gap between the two most likely classes."""
    if len(scores) < 2:
        return 1.0
    first = second = 0.0
    for p in scores.values():
        if p > first:
            first, second = p, first
        elif p > second:
            second = p
    return min(1.0, max(0.0, 1.0 - (first - second)))


def entropy(scores: Scores) -> float:
    """Shannon entropy over ``log k`` (River's EntropySampler normalises by the non-zero classes and
    divides by zero when only one is non-zero; here ``k`` is every class the model knows)."""
    k = len(scores)
    if k < 2:
        return 1.0
    total = sum(p for p in scores.values() if p > 0.0)
    if total <= 0.0:
        return 1.0  # no mass anywhere: the model knows nothing
    h = 0.0
    for p in scores.values():
        if p > 0.0:
            q = p / total
            h -= q * math.log(q)
    return min(1.0, max(0.0, h / math.log(k)))


UTILITIES: dict[str, ScoreUtility] = {"least_confidence": least_confidence, "margin": margin, "entropy": entropy}


class ClassBalance:
    """Imbalance-aware scores: divide each class probability by its running prior, renormalise.

    With rare positives (2%), a model that says ``fraud: 0.2`` is far more doubtful than its 0.8
    ``legit`` suggests; measured on the raw posterior such events never look uncertain, and the
    positive class is never queried. Dividing by the prior (an exponential mean of the model's own
    scores over ``horizon`` events, floored at ``floor``) moves the uncertain region to where the
    posterior crosses the prior. For balanced classes it changes almost nothing.

    >>> balance = ClassBalance(horizon=100)
    >>> for _ in range(1000):
    ...     _ = balance.adjust({"legit": 0.98, "fraud": 0.02})
    >>> {k: round(v, 2) for k, v in balance.adjust({"legit": 0.98, "fraud": 0.02}).items()}
    {'legit': 0.5, 'fraud': 0.5}
    """

    def __init__(self, horizon: int = 2000, floor: float = 1e-3):
        self.alpha = 1.0 / horizon
        self.floor = floor
        self.prior: dict[str, float] = {}

    def adjust(self, scores: Scores) -> dict[str, float]:
        if len(scores) < 2:
            return dict(scores)
        prior, alpha = self.prior, self.alpha
        for label, p in scores.items():
            old = prior.get(label)
            prior[label] = p if old is None else old + alpha * (p - old)
        weighted = {label: p / max(prior[label], self.floor) for label, p in scores.items()}
        total = sum(weighted.values())
        if total <= 0.0:
            return dict(scores)
        return {label: w / total for label, w in weighted.items()}


def committee_members(model: Any) -> tuple[list[Any], Callable[[dict], dict]]:
    """The members of an ensemble model (ARF, bagging, ...) and how to turn raw features into theirs.

    Looks through a :class:`river.compose.Pipeline` (its steps before the last transform the
    features) and wrappers such as ``BinaryLabels`` (``_wrapped_model``). No members: ``[]``.
    """
    transforms: list[Any] = []
    while True:
        if isinstance(model, compose.Pipeline):
            steps = list(model.steps.values())
            transforms.extend(steps[:-1])
            model = steps[-1]
        elif isinstance(model, base.Ensemble) or hasattr(model, "models"):
            members = list(model.models if hasattr(model, "models") else model)
            break
        elif isinstance(model, base.Wrapper):
            model = model._wrapped_model
        else:
            return [], lambda x: x

    def transform(x: dict) -> dict:
        for step in transforms:
            x = step.transform_one(x)
        return x

    return members, transform


def vote_entropy(model: Any, features: Mapping[str, Any] | None) -> float:
    """Committee disagreement: entropy of the members' votes over ``log min(members, classes)``.

    A committee whose members know no class yet, or a model that is not a committee, gives 1.0 (no
    agreement to rely on).
    """
    if model is None or features is None:
        return 1.0
    members, transform = committee_members(model)
    if len(members) < 2:
        return 1.0
    x = transform(dict(features))
    votes: dict[Any, int] = {}
    voters = 0
    for member in members:
        proba = member.predict_proba_one(x)
        if proba:
            vote = max(proba, key=proba.__getitem__)
            votes[vote] = votes.get(vote, 0) + 1
            voters += 1
    if voters < 2:
        return 1.0
    if len(votes) == 1:
        return 0.0
    h = -sum(n / voters * math.log(n / voters) for n in votes.values())
    return min(1.0, h / math.log(min(voters, len(votes))))

