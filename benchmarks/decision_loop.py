"""The per-event decision loop: stream-al's sampler against River's ``active.EntropySampler``.

Both loops score every event with the same trained logistic regression (stream-al's
``logistic_regression``: scaler + binary logistic regression) and decide whether to ask for its
label; nothing is learned inside the timed loop, so both time exactly "score + decide":

- ``score only``: ``model.predict_proba_one(x)``, the floor every sampler pays;
- ``stream-al <strategy>``: ``predict_proba_one`` + ``Sampler.decide`` (a 5% fraction budget and
  the default 10% random audit share, a jittered systematic sample drawn from hash(seed, event id));
- ``river EntropySampler``: ``EntropySampler.predict_proba_one`` (score + entropy + RNG draw);
- ``stream-al engine path``: what the Kafka runner does with the default strategy: each chunk of
  ``LABEL_CHECK_EVERY`` (250) events scored at once (``models.batch_scorer``, numpy; the same
  scores as ``predict_proba_one`` to 1e-9), then ``Sampler.decide`` event by event. River's sampler
  can only score one event at a time; this is the loop stream-al actually runs.

    .venv/bin/python benchmarks/decision_loop.py                    # 20000 events, 7 runs
    .venv/bin/python benchmarks/decision_loop.py --events 50000 --runs 9 --strategies quantile_filter random

Prints ns/event per run and the median of the runs (the machine is noisy: compare medians), and
the decision's own cost (median minus the score-only median).
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time
from typing import Any, Callable

from river import active

from stream_al.config import SamplerSettings
from stream_al.models import batch_scorer, build_model
from stream_al.runner import LABEL_CHECK_EVERY
from stream_al.sampling import FractionBudget, Sampler, build_strategy, random_share_of

CLASSES = ("legit", "fraud")


def events(n: int, seed: int = 0) -> list[tuple[str, dict[str, float], str]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = {f"f{j}": rng.gauss(0, 1) for j in range(10)}
        y = "fraud" if x["f0"] + 0.5 * x["f1"] + rng.gauss(0, 0.5) > 1.5 else "legit"
        out.append((f"events:{i % 4}:{i}", x, y))
    return out


def trained_model(stream: list[tuple[str, dict[str, float], str]]) -> Any:
    model = build_model("logistic_regression", {}, CLASSES)
    for _, x, y in stream[:500]:
        model.learn_one(x, y)
    return model


def timed(loop: Callable[[], int], n: int) -> float:
    start = time.perf_counter_ns()
    loop()
    return (time.perf_counter_ns() - start) / n


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--strategies", nargs="+", default=["variable_uncertainty", "quantile_filter"])
    args = parser.parse_args(argv)
    stream = events(args.events + 500)
    warm = trained_model(stream)
    timed_events = stream[500:]
    n = len(timed_events)
    results: dict[str, list[float]] = {}

    def score_only() -> int:
        model = copy.deepcopy(warm)
        predict = model.predict_proba_one
        for _, x, _ in timed_events:
            predict(x)
        return n

    def stream_al(strategy: str) -> Callable[[], int]:
        def loop() -> int:
            model = copy.deepcopy(warm)
            settings = SamplerSettings(strategy=strategy)
            sampler = Sampler(build_strategy(settings, "fraud"), [FractionBudget(0.05)], seed=0, random_share=random_share_of(settings))
            predict, decide = model.predict_proba_one, sampler.decide
            asked = 0
            for i, (event_id, x, _) in enumerate(timed_events):
                asked += decide(event_id, predict(x), float(i)).query
            return asked
        return loop

    def river_entropy() -> int:
        sampler = active.EntropySampler(copy.deepcopy(warm), seed=0)
        predict = sampler.predict_proba_one
        asked = 0
        for _, x, _ in timed_events:
            asked += predict(x)[1]
        return asked

    def engine_path() -> int:
        model = copy.deepcopy(warm)
        settings = SamplerSettings()
        sampler = Sampler(build_strategy(settings, "fraud"), [FractionBudget(0.05)], seed=0, random_share=random_share_of(settings))
        score, decide = batch_scorer(model), sampler.decide
        asked = 0
        for start in range(0, n, LABEL_CHECK_EVERY):
            chunk = timed_events[start : start + LABEL_CHECK_EVERY]
            for (event_id, _, _), scores in zip(chunk, score([x for _, x, _ in chunk])):
                asked += decide(event_id, scores, float(start)).query
        return asked

    loops: dict[str, Callable[[], int]] = {
        "score only": score_only, "river EntropySampler": river_entropy, "stream-al engine path (batch score)": engine_path,
    }
    for strategy in args.strategies:
        loops[f"stream-al {strategy}"] = stream_al(strategy)
    for run in range(args.runs):
        for name, loop in loops.items():  # interleaved, so drifting machine load hits every loop alike
            results.setdefault(name, []).append(timed(loop, n))
    floor = statistics.median(results["score only"])
    print(f"{n:,} events, {args.runs} runs, ns/event (median; decision = median - score-only median)")
    for name, values in results.items():
        median = statistics.median(values)
        runs = " ".join(f"{v:,.0f}" for v in values)
        print(f"  {name:<36} {median:>8,.0f}   decision {median - floor:>7,.0f}   runs: {runs}")


if __name__ == "__main__":
    main()
