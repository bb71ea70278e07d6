"""One contract for every strategy: cold start, extreme probabilities, budgets, replay, snapshots, spend."""

from __future__ import annotations

import math
import pickle
import random
from collections import Counter
from fractions import Fraction
from typing import get_args

import pytest

from stream_al.config import SamplerSettings
from stream_al.sampling import (
    BalancedQuantileFilter, Context, FractionBudget, RandomRule, RateBudget, Sampler, StrategyName, build_strategy,
    entropy, least_confidence, margin, random_share_of,
)
from stream_al.sampling.utilities import ClassBalance

STRATEGIES = list(get_args(StrategyName))
# Reasons each strategy may give (besides cold_start and the sampler's random audits).
REASONS = {name: {"uncertainty"} for name in STRATEGIES} | {"random": {"random"}, "anomaly": {"anomaly"},
                                                             "exploit_explore": {"exploit", "uncertainty"}}


def sampler_for(name: str, fraction: float = 0.1, seed: int = 0, random_share: float | None = None, budgets=None, **params) -> Sampler:
    settings = SamplerSettings(strategy=name, **params)
    share = random_share_of(settings) if random_share is None else random_share
    return Sampler(build_strategy(settings, positive="fraud"), budgets or [FractionBudget(fraction)], seed=seed, random_share=share)


def scores_for(p_fraud: float) -> dict[str, float]:
    return {"legit": 1.0 - p_fraud, "fraud": p_fraud}


def random_scores(rng: random.Random) -> dict[str, float]:
    """Mostly confident legit, some doubtful, a few likely fraud, some exact 0/1."""
    roll = rng.random()
    if roll < 0.05:
        return scores_for(rng.choice([0.0, 1.0]))
    if roll < 0.7:
        return scores_for(rng.uniform(0.0, 0.2))
    return scores_for(rng.uniform(0.0, 1.0))


def run(sampler: Sampler, scores: list[dict[str, float]], start: int = 0, clock=float):
    return [sampler.decide(f"e{i}", s, clock(i)) for i, s in enumerate(scores, start=start)]


def stream(seed: int, n: int) -> list[dict[str, float]]:
    rng = random.Random(seed)
    return [random_scores(rng) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# The contract


@pytest.mark.parametrize("name", STRATEGIES)
def test_cold_start_is_queried(name):
    """A model that knows no class yet returns {}: River's EntropySampler never asks then (deadlock)."""
    sampler = sampler_for(name, fraction=0.5, random_share=0.0)
    choices = run(sampler, [{}] * 200)
    assert sum(c.query for c in choices) >= 0.9 * 100
    assert {c.reason for c in choices if c.query} == {"cold_start"}
    assert all(c.uncertainty == 1.0 and c.utility == 1.0 for c in choices)


@pytest.mark.parametrize("name", STRATEGIES)
def test_probabilities_of_exactly_zero_or_one_never_crash(name):
    """River's EntropySampler divides by zero on a posterior with one non-zero class."""
    extremes = [scores_for(0.0), scores_for(1.0), {"legit": 1.0}, {"fraud": 0.7},
                {"legit": 1.0, "fraud": 0.0, "review": 0.0}, {"legit": 0.0, "fraud": 0.0}, {"legit": 0.5, "fraud": 0.5}]
    sampler = sampler_for(name, fraction=0.3)
    choices = run(sampler, extremes * 50)
    assert all(0.0 <= c.utility <= 1.0 and 0.0 <= c.uncertainty <= 1.0 and 0.0 <= c.p_query <= 1.0 for c in choices)
    assert any(c.query for c in choices)


@pytest.mark.parametrize("name", STRATEGIES)
@pytest.mark.parametrize("seed", range(3))
def test_budgets_are_never_exceeded_at_any_prefix(name, seed):
    rng = random.Random(seed)
    fraction = rng.choice([0.01, 0.05, 0.2])
    rate, burst = rng.choice([0.05, 0.5]), 3.0
    sampler = sampler_for(name, seed=seed, budgets=[FractionBudget(fraction), RateBudget(rate, burst)],
                          random_share=rng.choice([0.0, 0.1, 0.5]))
    exact, t, spent, times = Fraction(str(fraction)), 0.0, 0, []
    picks = []
    for i, scores in enumerate([{}] * 5 + stream(seed, 3000)):
        t += rng.expovariate(1.0)
        choice = sampler.decide(f"e{i}", scores, t)
        spent += choice.query
        picks.append(choice.query)
        times.append(t)
        assert spent <= math.floor(exact * (i + 1))
    # The rate bound over every interval [t_i, t_j]: spent <= burst + rate * (t_j - t_i).
    best_start, before, worst = math.inf, 0, -math.inf
    for took, c in zip(picks, times):
        best_start = min(best_start, before - rate * c)
        before += took
        worst = max(worst, before - rate * c - best_start)
    assert worst <= burst + 1e-6


def decisions(sampler: Sampler, scores: list[dict[str, float]], ids: list[str]):
    return [(c.query, c.reason, c.p_query, c.utility) for c in (sampler.decide(i, s, float(n)) for n, (i, s) in enumerate(zip(ids, scores)))]


@pytest.mark.parametrize("name", STRATEGIES)
def test_decisions_are_a_function_of_seed_and_event_ids(name):
    scores = stream(1, 3000)
    ids = [f"payments:{i % 4}:{i}" for i in range(3000)]
    first = decisions(sampler_for(name, seed=7), scores, ids)
    assert first == decisions(sampler_for(name, seed=7), scores, ids)
    assert sum(q for q, *_ in first) > 0
    assert decisions(sampler_for(name, seed=8), scores, ids) != first  # the audit draws move with the seed


@pytest.mark.parametrize("name", STRATEGIES)
def test_pickle_round_trip_gives_identical_subsequent_decisions(name):
    scores = stream(2, 4000)
    original = sampler_for(name, seed=3, budgets=[FractionBudget(0.1), RateBudget(0.5, 5.0)])
    run(original, scores[:2000])
    clone = pickle.loads(pickle.dumps(original))
    after = [(c.query, c.reason, c.p_query, c.utility) for c in run(original, scores[2000:], start=2000)]
    assert after == [(c.query, c.reason, c.p_query, c.utility) for c in run(clone, scores[2000:], start=2000)]
    assert sum(q for q, *_ in after) > 0


@pytest.mark.parametrize("name", [n for n in STRATEGIES if n != "fixed_uncertainty"])
@pytest.mark.parametrize("kind", ["typical", "certain_of_everything", "never_certain"])
def test_no_budget_is_left_unused(name, kind):
    """Whatever the model's calibration (pure tree leaves say 0/1), the budget offered is spent."""
    rng = random.Random(5)
    n, fraction = 10_000, 0.05
    if kind == "typical":
        scores = stream(5, n)
    elif kind == "certain_of_everything":
        scores = [scores_for(float(rng.random() < 0.1)) for _ in range(n)]
    else:
        scores = [scores_for(0.5)] * n
    sampler = sampler_for(name, fraction=fraction)
    choices = run(sampler, scores)
    assert sum(c.query for c in choices) >= 0.95 * fraction * n
    assert sampler.used_ratio() >= 0.95
    assert {c.reason for c in choices if c.query} <= REASONS[name] | {"random"}


def test_fixed_uncertainty_leaves_budget_unused_and_it_shows():
    """The fixed threshold is a baseline: with a confident model it spends little, and used_ratio says so."""
    sampler = sampler_for("fixed_uncertainty", fraction=0.05, random_share=0.0)
    run(sampler, [scores_for(0.01)] * 10_000)
    assert sampler.used_ratio() < 0.1


@pytest.mark.parametrize("name", STRATEGIES)
def test_reasons_are_meaningful(name):
    sampler = sampler_for(name, fraction=0.1, random_share=0.2)
    reasons = Counter(c.reason for c in run(sampler, stream(9, 10_000)) if c.query)
    assert set(reasons) <= REASONS[name] | {"random"}
    assert reasons["random"] > 0
    if name == "exploit_explore":
        assert reasons["exploit"] > 0 and reasons["uncertainty"] > 0


# ---------------------------------------------------------------------------------------------
# Strategies do what they say


def asked_mean(name: str, key, **params) -> tuple[float, float]:
    rng = random.Random(4)
    p_fraud = [rng.betavariate(0.5, 4.0) for _ in range(20_000)]
    sampler = sampler_for(name, fraction=0.05, random_share=0.0, **params)
    choices = run(sampler, [scores_for(p) for p in p_fraud])
    asked = [key(p) for p, c in zip(p_fraud, choices) if c.query]
    assert len(asked) >= 0.95 * 1000
    return sum(asked) / len(asked), sum(key(p) for p in p_fraud) / len(p_fraud)


def closeness(p: float) -> float:
    return 1.0 - abs(2 * p - 1)


# Measured (seed 4): the stream's mean closeness to 0.5 is 0.22 and its top 5% average 0.88; the
# strategies reached VU 0.39, randomized VU 0.26 (its threshold is times N(1, 1)), entropy 0.51,
# quantile filter 0.74, fixed 0.71; random 0.22.
@pytest.mark.parametrize(("name", "lift"), [
    ("variable_uncertainty", 0.12), ("randomized_variable_uncertainty", 0.03), ("split", 0.12), ("entropy", 0.2),
    ("quantile_filter", 0.4), ("fixed_uncertainty", 0.4),
])
def test_uncertainty_strategies_ask_about_uncertain_events(name, lift):
    asked, overall = asked_mean(name, closeness, fixed_threshold=0.5)
    assert asked > overall + lift


def test_random_asks_about_a_random_sample():
    asked, overall = asked_mean("random", closeness)
    assert abs(asked - overall) < 0.05


def test_anomaly_asks_about_the_highest_scores():
    asked, overall = asked_mean("anomaly", lambda p: p)
    rng = random.Random(4)
    top = sorted((rng.betavariate(0.5, 4.0) for _ in range(20_000)), reverse=True)[:1000]
    assert asked > 0.7 * sum(top) / len(top) and asked > 3 * overall  # measured: 0.41 of the top's 0.52


@pytest.mark.parametrize("exploit_share", [0.25, 0.5, 0.8])
def test_exploit_explore_splits_the_budget_by_its_share(exploit_share):
    rng = random.Random(6)
    p_fraud = [rng.betavariate(0.5, 4.0) for _ in range(40_000)]
    sampler = sampler_for("exploit_explore", fraction=0.05, random_share=0.0, exploit_share=exploit_share)
    choices = run(sampler, [scores_for(p) for p in p_fraud])
    reasons = Counter(c.reason for c in choices if c.query)
    total = sum(reasons.values())
    assert total >= 0.95 * 2000
    assert reasons["exploit"] / total == pytest.approx(exploit_share, abs=0.05)
    exploited = [p for p, c in zip(p_fraud, choices) if c.reason == "exploit"]
    explored = [p for p, c in zip(p_fraud, choices) if c.reason == "uncertainty"]
    assert sum(exploited) / len(exploited) > 3 * sum(p_fraud) / len(p_fraud)  # the likeliest frauds
    assert sum(map(closeness, explored)) / len(explored) > 2 * sum(map(closeness, p_fraud)) / len(p_fraud)  # the most doubtful


def rare_positive_events(seed: int, n: int) -> list[tuple[bool, dict[str, float]]]:
    """2% positives; the model ranks them well but never says more than 0.3 (rare-class calibration)."""
    rng = random.Random(seed)
    events = []
    for _ in range(n):
        fraud = rng.random() < 0.02
        events.append((fraud, scores_for(min(0.3, max(0.0, rng.gauss(0.12 if fraud else 0.02, 0.03))))))
    return events


def test_the_default_strategy_queries_rare_positives():
    """With rare positives the model's fraud probability stays far below 0.5: the default measures
    uncertainty by rank among recent events (top of the window), so the likeliest positives are
    asked about, many times their 2% base rate. Variable uncertainty, which takes the next event
    above a loosening bar, barely beats the base rate here."""
    events = rare_positive_events(7, 30_000)
    hit_rates = {}
    for name in (SamplerSettings().strategy, "variable_uncertainty"):
        sampler = sampler_for(name, fraction=0.02, random_share=0.0)
        choices = run(sampler, [s for _, s in events])
        asked = [fraud for (fraud, _), c in zip(events, choices) if c.query]
        assert len(asked) >= 0.95 * 600
        hit_rates[name] = sum(asked) / len(asked)
    assert hit_rates[SamplerSettings().strategy] > 0.3
    assert hit_rates["variable_uncertainty"] < 0.1


def test_class_balance_moves_the_doubt_to_where_a_class_crosses_its_prior():
    """balance_classes measures uncertainty as if the classes were balanced: the most doubtful
    events are those whose fraud probability is near the fraud prior, not near 0.5."""
    balance = ClassBalance(horizon=200)
    for fraud, scores in rare_positive_events(3, 5000):
        balance.adjust(scores)
    assert balance.prior["fraud"] == pytest.approx(0.022, abs=0.01)
    at_prior = least_confidence(balance.adjust(scores_for(balance.prior["fraud"])))
    at_half = least_confidence(balance.adjust(scores_for(0.5)))
    assert at_prior == pytest.approx(1.0, abs=0.05) and at_half < 0.2


def test_class_balance_changes_little_for_balanced_classes():
    balance = ClassBalance(horizon=500)
    rng = random.Random(8)
    for _ in range(5000):
        p = rng.random()
        adjusted = balance.adjust(scores_for(p))
    assert adjusted["fraud"] == pytest.approx(p, abs=0.05)


# ---------------------------------------------------------------------------------------------
# Utilities and rules


@pytest.mark.parametrize("utility", [least_confidence, margin, entropy])
def test_utilities_are_in_the_unit_interval_and_ordered(utility):
    assert utility({}) == 1.0 and utility({"a": 1.0}) == 1.0
    assert utility({"a": 0.5, "b": 0.5}) == pytest.approx(1.0)
    assert utility({"a": 1.0, "b": 0.0}) == 0.0 and utility({"a": 0.0, "b": 1.0}) == 0.0
    assert utility({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}) == pytest.approx(1.0)
    values = [utility(scores_for(p)) for p in (0.5, 0.6, 0.8, 0.95, 1.0)]
    assert values == sorted(values, reverse=True)
    rng = random.Random(0)
    for _ in range(1000):
        raw = [rng.random() ** 4 for _ in range(rng.randint(2, 5))]
        assert 0.0 <= utility({str(i): v / sum(raw) for i, v in enumerate(raw)}) <= 1.0


def test_margin_and_least_confidence_differ_on_three_classes():
    scores = {"a": 0.45, "b": 0.45, "c": 0.1}
    assert margin(scores) == pytest.approx(1.0) and least_confidence(scores) == pytest.approx(0.825)


def test_quantile_filter_window_is_a_sorted_sliding_window():
    rule = BalancedQuantileFilter(window=50)
    ctx = Context("e", 0, fraction=0.0, available=1.0)
    rng = random.Random(1)
    values = [rng.random() for _ in range(500)]
    for v in values:
        rule.observe(v, ctx)
    assert rule.sorted == sorted(values[-50:]) and list(rule.recent) == values[-50:]


def test_random_rule_probability_grows_with_saved_labels():
    rule = RandomRule()
    hits = [rule.select(0.0, Context(f"e{i}", 0, fraction=0.1, available=a)) for i in range(4000) for a in (1.0,)]
    assert sum(h is not None for h in hits) / 4000 == pytest.approx(0.1, abs=0.02)
    assert all(h == pytest.approx(0.1) for h in hits if h is not None)
    assert rule.select(0.0, Context("x", 0, fraction=0.1, available=10.0)) == 1.0


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_is_buildable_from_config(name):
    strategy = build_strategy(SamplerSettings(strategy=name), positive="fraud")
    assert hasattr(strategy, "evaluate") and hasattr(strategy, "select")


def test_exploit_explore_needs_a_positive_class():
    with pytest.raises(ValueError, match="positive_class"):
        build_strategy(SamplerSettings(strategy="exploit_explore"), positive=None)


def test_split_uses_its_own_random_share():
    assert random_share_of(SamplerSettings(strategy="split")) == 0.2
    assert random_share_of(SamplerSettings(strategy="variable_uncertainty", random_share=0.05)) == 0.05
    sampler = sampler_for("split", fraction=0.1)
    reasons = Counter(c.reason for c in run(sampler, stream(3, 30_000)) if c.query)
    assert reasons["random"] / sum(reasons.values()) == pytest.approx(0.2, abs=0.03)


# ---------------------------------------------------------------------------------------------
# Config


@pytest.mark.parametrize(("overrides", "match"), [
    ({"sampler": {"strategy": "uncertainty"}}, "sampler.strategy"),
    ({"sampler": {"utility": "variance"}}, "sampler.utility"),
    ({"sampler": {"strategy": "exploit_explore"}}, "needs positive_class"),
    ({"sampler": {"exploit_share": 1.5}}, "sampler.exploit_share"),
    ({"budget": {"fraction": 0.3, "boost": {"hard_cap_fraction": 0.2}}}, "hard_cap_fraction"),
    ({"budget": {"boost": {"allowance": "lots"}}}, "budget.boost.allowance"),
])
def test_sampler_and_budget_settings_are_validated(overrides, match):
    from pydantic import ValidationError

    from stream_al.config import Settings

    with pytest.raises(ValidationError, match=match):
        Settings(classes=["legit", "fraud"], **overrides)


def test_the_default_is_the_quantile_filter_and_shipped_configs_still_load():
    from pathlib import Path

    from stream_al.config import Settings

    assert SamplerSettings().strategy == "quantile_filter"
    root = Path(__file__).resolve().parents[2]
    for path in [*root.glob("config/*.yaml"), *root.glob("examples/*.yaml")]:
        Settings.load(path)
    boost = Settings(classes=["a", "b"], budget={"boost": {"allowance": "50 per day"}}).budget.boost
    assert boost.allowance_burst == 50 and boost.allowance_per_second == pytest.approx(50 / 86400)


# ---------------------------------------------------------------------------------------------
# The default's quantile filter: warm start, its share of the budget, what a short stream spends


def test_the_warm_start_keeps_a_young_models_tied_doubts_out_of_the_window():
    """A model of one label (a scaled linear model) gives every event the same utility; with those
    ties in the window the bar sits above every later event and the budget starves. The warm start
    gives the first labels to events the budget pays for whatever their utility, and keeps their
    utilities out."""
    def spent(warm: int) -> int:
        sampler = sampler_for("quantile_filter", fraction=0.01, random_share=0.0, warm_start=warm)
        later = stream_of_doubts(5, 1250)
        for i in range(1250):  # the model: tied while it has one label, more confident after the second
            scores = scores_for(0.49875 if sampler.queried < 2 else later[i])
            sampler.decide(f"e{i}", scores, float(i))
        return sampler.queried

    assert spent(10) >= 12
    assert spent(0) <= 10  # measured 9 (7 with max_owed 10; phishing at 1% spent 7 of 12.5 labels, accuracy .38)


def stream_of_doubts(seed: int, n: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(0.0, 0.4) for _ in range(n)]


def test_the_warm_start_is_a_stratified_random_sample_blind_to_the_scores():
    """The j-th warm-up label goes to a random event of the j-th stretch that earns a label (10
    events at 10%): where depends on the seed, never on the scores."""
    def picks(seed: int, doubts: int) -> list[int]:
        sampler = sampler_for("quantile_filter", fraction=0.1, seed=seed, random_share=0.0, warm_start=5)
        choices = run(sampler, [scores_for(p) for p in stream_of_doubts(doubts, 200)])
        return [i for i, c in enumerate(choices) if c.query][:5]

    first = picks(0, 2)
    assert first[0] == 9  # the first event the budget pays for
    assert all(10 * (j + 1) - 1 <= i < 10 * (j + 2) - 1 for j, i in enumerate(first))
    assert picks(0, 3) == first  # other scores, the same picks
    others = {tuple(picks(seed, 2)) for seed in range(1, 6)}
    assert len(others) == 5 and tuple(first) not in others


def test_the_audits_labels_are_not_counted_as_the_strategys():
    """The quantile filter balances its spend against what it was offered; the audits' labels are
    not its own, or it would always be behind and lower its bar until it took almost anything."""
    rng = random.Random(4)
    p_fraud = [rng.betavariate(0.5, 4.0) for _ in range(20_000)]
    sampler = sampler_for("quantile_filter", fraction=0.05, random_share=0.1)
    choices = run(sampler, [scores_for(p) for p in p_fraud])
    rule = sampler.strategy.rule
    assert rule.forgiven == 0.0  # never more than max_owed behind
    picked = [closeness(p) for p, c in zip(p_fraud, choices) if c.reason == "uncertainty"]
    assert sum(picked) / len(picked) > 0.6  # measured .74 without audits; .43 when it was charged for them


@pytest.mark.parametrize("name", ["quantile_filter", "variable_uncertainty", "random"])
def test_audits_keep_up_without_the_bucket_holding_labels_for_them(name):
    """An audit takes the first label in hand once it is due (before the strategy), rather than the
    strategy holding labels back for audits. So the audits stay within a few labels of their share,
    and the bucket holds about one label: a short stream ends with little unspent (measured, 3
    seeds, when labels were held back for the audits: lag up to 13, ~2.1 held)."""
    for seed in range(3):
        rng = random.Random(seed)
        sampler = sampler_for(name, fraction=0.05, seed=seed)
        worst_lag = held = 0.0
        for i in range(20_000):
            sampler.decide(f"e{i}", scores_for(rng.betavariate(0.5, 4.0)), float(i))
            worst_lag = max(worst_lag, 0.1 * sampler.budgets[0].target() - sampler.audits)
            held += sampler.budgets[0].tokens
        assert worst_lag <= 4.0
        assert held / 20_000 <= 1.5
