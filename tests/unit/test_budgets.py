"""Budget guarantees beyond the token buckets: the default strategy's spend, the backlog cap, the drift boost."""

from __future__ import annotations

import pickle
import random

import pytest

from stream_al.config import SamplerSettings
from stream_al.sampling import (
    DriftBoost, FractionBudget, OpenRequestsCap, RateBudget, Sampler, UtilityRule, VariableThreshold, build_strategy,
)

from .helpers import worst_excess


def default_sampler(budgets, seed: int = 0) -> Sampler:
    settings = SamplerSettings()
    return Sampler(build_strategy(settings, "fraud"), budgets, seed=seed, random_share=settings.random_share)


def model_scores(rng: random.Random, i: int) -> dict[str, float]:
    """A drifting model: calm stretches (confident), doubtful stretches, exact 0/1 now and then."""
    phase = (i // 3000) % 3
    p = rng.betavariate(0.3, 6.0) if phase == 0 else rng.betavariate(2.0, 2.0) if phase == 1 else float(rng.random() < 0.05)
    return {"legit": 1.0 - p, "fraud": p}


def worst_window(history: list[int], width: int) -> int:
    return max(history[j] - history[j - width] for j in range(width, len(history)))


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.2])
@pytest.mark.parametrize("seed", range(3))
def test_default_strategy_spends_within_five_percent_and_never_bursts(fraction, seed):
    """Stated bound: over any 10 / fraction consecutive events at most burst + 10 labels (20 with
    the default burst of 10); over the whole stream the achieved spend is within 5% of the target."""
    rng = random.Random(seed)
    n = int(60 / fraction) * 10  # 600 labels' worth
    budget = FractionBudget(fraction)
    sampler = default_sampler([budget], seed)
    spent, history = 0, [0]
    for i in range(n):
        spent += sampler.decide(f"e{i}", model_scores(rng, i), float(i)).query
        history.append(spent)
    target = fraction * n
    assert 0.95 * target <= spent <= target
    width = round(10 / fraction)
    assert worst_window(history, width) <= budget.burst + 10


def test_open_requests_cap_asks_nothing_above_it_and_a_freed_slot_is_used_at_once():
    cap = OpenRequestsCap(3)
    sampler = Sampler(UtilityRule("least_confidence", VariableThreshold()), [FractionBudget(1.0), cap], random_share=0.0)
    asked = [sampler.decide(f"e{i}", {}, 0.0, open_requests=0 if i == 0 else None).query for i in range(10)]
    assert asked == [True] * 3 + [False] * 7 and cap.open == 3
    assert sampler.decide("e10", {}, 0.0, open_requests=2).query  # one answered or expired
    assert not sampler.decide("e11", {}, 0.0).query
    assert cap.used_ratio() == 0.0 and sampler.used_ratio() > 0


def test_budget_left_unused_shows_in_used_ratio():
    budget = FractionBudget(0.1)
    sampler = Sampler(UtilityRule("least_confidence", VariableThreshold()), [budget, OpenRequestsCap(1)], random_share=0.0)
    for i in range(1000):
        sampler.decide(f"e{i}", {}, 0.0, open_requests=1)  # the analysts never answer
    assert sampler.used_ratio() == 0.0 and budget.tokens == budget.burst


def boost_sampler(seed: int = 0, fraction: float = 0.02, extra: float = 0.1, allowance: tuple[float, float] = (0.05, 20.0),
                  cap: float = 0.08, budgets=None) -> Sampler:
    drift = DriftBoost(max_extra_fraction=extra, max_seconds=500.0, allowance=RateBudget(*allowance), cap=FractionBudget(cap, 5.0))
    return Sampler(UtilityRule("least_confidence", VariableThreshold()), budgets or [FractionBudget(fraction)], seed=seed,
                   random_share=0.1, drift_boost=drift)


@pytest.mark.parametrize("seed", range(6))
def test_drift_boost_bounds(seed):
    rng = random.Random(seed)
    sampler = boost_sampler(seed)
    drift = sampler.drift_boost
    boosted, every, clock, t = [], [], [], 0.0
    for i in range(20_000):
        t += rng.expovariate(1.0)
        if i % 2500 == 100:  # a detector asks for a boost now and then, too much and for too long
            granted = sampler.boost(rng.choice([0.05, 0.5, 2.0]), until=t + rng.choice([100.0, 1e6]))
            assert granted[0] <= drift.max_extra_fraction and granted[1] <= t + drift.max_seconds
        choice = sampler.decide(f"e{i}", {"legit": 0.5, "fraud": 0.5}, t)
        boosted.append(choice.reason == "drift_boost")
        every.append(choice.query)
        clock.append(t)
    assert sum(boosted) > 0 and sampler.boosted == sum(boosted) == drift.spent
    # Boosted labels: over any w events at most 1 + extra * (w + 1) ...
    assert worst_excess(boosted, list(map(float, range(len(boosted)))), drift.max_extra_fraction) <= 1 + drift.max_extra_fraction + 1e-9
    # ... over any t seconds at most allowance burst + allowance rate * t ...
    assert worst_excess(boosted, clock, drift.allowance.rate) <= drift.allowance.burst + 1e-6
    # ... and all labels together over any w events at most cap burst + cap fraction * w.
    assert worst_excess(every, list(map(float, range(len(every)))), drift.cap.fraction) <= drift.cap.burst + 1e-9


def test_drift_boost_adds_labels_only_while_active_and_only_when_asked():
    quiet, boosted = boost_sampler(), boost_sampler()
    doubtful = {"legit": 0.5, "fraud": 0.5}
    for i in range(2000):
        if i == 1000:
            assert boosted.boost(0.05, until=1500.0) == (0.05, 1499.0)  # clock 999 + max_seconds 500
        quiet.decide(f"e{i}", doubtful, float(i))
        boosted.decide(f"e{i}", doubtful, float(i))
    assert quiet.boosted == 0 and quiet.queried in (39, 40)  # one may be held for an audit at the end
    assert boosted.boosted == pytest.approx(0.05 * 500, abs=1.5)  # only for events 1000..1499
    assert boosted.queried - boosted.boosted in (39, 40)


def test_a_boost_is_spent_by_the_default_quantile_filter():
    """The quantile filter sets its bar from the fraction it is offered: while boosted it must be
    offered the extra labels too, or its bar (for the normal fraction) leaves the boost unspent."""
    rng = random.Random(3)
    sampler = boost_sampler(fraction=0.05, extra=0.1, allowance=(1.0, 1000.0), cap=0.5)
    sampler.strategy = build_strategy(SamplerSettings(), "fraud")
    for i in range(4000):
        if i == 2000:
            sampler.boost(0.1, until=2500.0)
        p = rng.random()
        sampler.decide(f"e{i}", {"legit": 1 - p, "fraud": p}, float(i))
    assert sampler.boosted >= 0.8 * 0.1 * 500  # most of the 50 extra labels offered over events 2000..2499


def test_drift_boost_refund_and_pickle():
    sampler = boost_sampler()
    sampler.boost(0.1, until=1e9)
    for i in range(300):
        choice = sampler.decide(f"e{i}", {"legit": 0.5, "fraud": 0.5}, float(i))
        if choice.reason == "drift_boost":
            before = (sampler.drift_boost.spent, sampler.drift_boost.allowance.tokens, sampler.drift_boost.cap.tokens)
            sampler.refund()
            assert sampler.drift_boost.spent == before[0] - 1 and sampler.drift_boost.allowance.tokens == before[1] + 1
            break
    else:
        pytest.fail("no boosted label")
    clone = pickle.loads(pickle.dumps(sampler))
    ours = [sampler.decide(f"x{i}", {"legit": 0.5, "fraud": 0.5}, 300.0 + i).reason for i in range(500)]
    assert ours == [clone.decide(f"x{i}", {"legit": 0.5, "fraud": 0.5}, 300.0 + i).reason for i in range(500)]


def test_drift_boost_never_passes_the_backlog_cap():
    cap = OpenRequestsCap(2)
    sampler = boost_sampler(budgets=[FractionBudget(0.01), cap])
    sampler.boost(1.0, until=1e9)
    asked = [sampler.decide(f"e{i}", {}, float(i), open_requests=2).query for i in range(500)]
    assert not any(asked)


def test_a_boost_before_the_first_event_is_clipped_by_its_clock():
    sampler = boost_sampler()
    sampler.boost(0.1, until=1e12)
    sampler.decide("e0", {}, 5000.0)
    assert sampler.drift_boost.until == 5000.0 + sampler.drift_boost.max_seconds


def test_boost_without_an_allowance_is_an_error():
    sampler = Sampler(UtilityRule("least_confidence", VariableThreshold()), [FractionBudget(0.1)])
    with pytest.raises(ValueError, match="boost"):
        sampler.boost(0.1, until=10.0)


def test_set_share_scales_rates_and_the_boost_allowance_not_fractions():
    rate = RateBudget(10.0, 20.0)
    fraction = FractionBudget(0.1)
    sampler = boost_sampler(budgets=[fraction, rate])
    sampler.set_share(0.25)
    assert rate.rate == 2.5 and fraction.fraction == 0.1
    assert sampler.drift_boost.allowance.rate == pytest.approx(0.05 * 0.25)
    with pytest.raises(ValueError):
        sampler.set_share(0.0)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_extra_fraction": 0.0}, "max_extra_fraction"), ({"max_extra_fraction": 1.5}, "max_extra_fraction"),
    ({"max_seconds": 0.0}, "max_seconds"),
])
def test_drift_boost_rejects_bad_settings(kwargs, match):
    params = {"max_extra_fraction": 0.1, "max_seconds": 60.0, "allowance": RateBudget(1.0), "cap": FractionBudget(0.5), **kwargs}
    with pytest.raises(ValueError, match=match):
        DriftBoost(**params)
    with pytest.raises(ValueError):
        DriftBoost(0.1, 60.0, RateBudget(1.0), FractionBudget(0.5)).grant(-0.1, 10.0)
