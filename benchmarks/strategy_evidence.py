"""Prequential evidence for the default sampling strategy: each strategy against random sampling.

Every run drives :class:`stream_al.engine.Engine` directly (logistic regression, the default
model): each event is scored (the prediction counts towards accuracy), the sampler decides, and an
oracle answers the request at once or ``--delay`` events later. Streams: River's Phishing and
Bananas, SEA with an abrupt concept drift at the middle, and a linear stream with ~2% positives
(scored by prequential ROC AUC of the fraud score, where accuracy would reward never predicting
fraud; the share of labels that were positives is reported too).

    .venv/bin/python benchmarks/strategy_evidence.py                    # all strategies, 2 seeds
    .venv/bin/python benchmarks/strategy_evidence.py --strategies variable_uncertainty random --seeds 1

Prints one table per (stream, delay): mean score over seeds per strategy and budget, the spend
achieved over target, and how often each strategy was at least as good as random.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import statistics
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Iterator

from river import datasets
from river.datasets import synth

from stream_al.config import Settings
from stream_al.engine import Engine
from stream_al.messages import Event, LabelMessage

STRATEGIES: dict[str, dict[str, Any]] = {
    "random": {"strategy": "random", "random_share": 0.0},
    "variable_uncertainty": {"strategy": "variable_uncertainty"},
    "vu_balanced": {"strategy": "variable_uncertainty", "balance_classes": True},
    "randomized_vu": {"strategy": "randomized_variable_uncertainty"},
    "split": {"strategy": "split"},
    "entropy": {"strategy": "entropy"},
    "quantile_filter": {"strategy": "quantile_filter"},
    "quantile_balanced": {"strategy": "quantile_filter", "balance_classes": True},
}
STREAMS = ("phishing", "bananas", "sea_drift", "imbalanced")


def stream(name: str, seed: int) -> Iterator[tuple[dict[str, float], str]]:
    if name == "phishing":
        data: Any = datasets.Phishing()
    elif name == "bananas":
        data = datasets.Bananas()
    elif name == "sea_drift":
        data = synth.ConceptDriftStream(
            synth.SEA(variant=0, seed=seed), synth.SEA(variant=3, seed=seed + 100), seed=seed, position=5000, width=200,
        ).take(10_000)
    elif name == "imbalanced":
        data = imbalanced(seed, 15_000)
    else:
        raise ValueError(name)
    for x, y in data:
        yield {str(k): float(v) for k, v in x.items()}, "pos" if y in (True, 1, "1") else "neg"


def imbalanced(seed: int, n: int) -> Iterator[tuple[dict[str, float], bool]]:
    """Five Gaussian features, positive when a noisy linear score is in its top ~2%."""
    rng = random.Random(seed)
    weights = [rng.uniform(-1, 1) for _ in range(5)]
    norm = math.sqrt(sum(w * w for w in weights))
    for _ in range(n):
        x = [rng.gauss(0, 1) for _ in range(5)]
        score = sum(w * v for w, v in zip(weights, x)) / norm + rng.gauss(0, 0.3)
        yield {f"x{i}": v for i, v in enumerate(x)}, score > 2.1


def run(stream_name: str, strategy: str, budget: float, delay: int, seed: int) -> dict[str, Any]:
    positive = "pos"
    settings = Settings(
        classes=["neg", "pos"], positive_class=positive, seed=seed, budget={"fraction": budget},
        sampler=STRATEGIES[strategy], requests={"ttl_seconds": 1e9, "max_pending": 10**6},
    )
    engine = Engine(settings)
    due: deque[tuple[int, str, str]] = deque()
    hits = events = 0
    ranked: list[tuple[float, bool]] = []
    positives_asked = 0
    for i, (x, y) in enumerate(stream(stream_name, seed)):
        while due and due[0][0] <= i:
            _, rid, label = due.popleft()
            engine.on_label(LabelMessage(request_id=rid, label=label), float(i))
        decision = engine.on_event(Event(f"{stream_name}-{i}", None, x), float(i))
        events += 1
        correct = decision.predicted == y
        hits += correct
        ranked.append((decision.scores.get(positive, 0.5), y == positive))
        if decision.request is not None:
            due.append((i + delay, decision.request.request_id, y))
            positives_asked += y == positive
    return {
        "stream": stream_name, "strategy": strategy, "budget": budget, "delay": delay, "seed": seed,
        "accuracy": hits / events, "auc": roc_auc(ranked),
        "positives_asked": positives_asked / max(1, engine.counters.requests),
        "spend": engine.counters.requests / (budget * events),
    }


def roc_auc(ranked: list[tuple[float, bool]]) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    ranked = sorted(ranked)
    positives = sum(p for _, p in ranked)
    negatives = len(ranked) - positives
    if not positives or not negatives:
        return float("nan")
    rank_sum, i = 0.0, 0
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        rank_sum += (i + j + 1) / 2 * sum(p for _, p in ranked[i:j])  # mean 1-based rank of the tie group
        i = j
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--streams", nargs="+", default=list(STREAMS), choices=list(STREAMS))
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.01, 0.05, 0.1, 0.2])
    parser.add_argument("--delays", nargs="+", type=int, default=[0, 200])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="write every run's result here")
    args = parser.parse_args(argv)
    strategies = sorted(set(args.strategies) | {"random"}, key=list(STRATEGIES).index)
    jobs = list(itertools.product(args.streams, strategies, args.budgets, args.delays, range(args.seeds)))
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(run, *zip(*jobs), chunksize=4))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    report(results, strategies, args)


def report(results: list[dict[str, Any]], strategies: list[str], args: argparse.Namespace) -> None:
    def mean(stream_name: str, strategy: str, budget: float, delay: int, key: str) -> float:
        return statistics.fmean(r[key] for r in results if (r["stream"], r["strategy"], r["budget"], r["delay"]) == (stream_name, strategy, budget, delay))

    wins = {s: [0, 0] for s in strategies}
    for stream_name, delay in itertools.product(args.streams, args.delays):
        key = "auc" if stream_name == "imbalanced" else "accuracy"
        print(f"\n{stream_name}, label delay {delay} events ({key}, mean of {args.seeds} seeds; spend/target)")
        print(f"{'strategy':<22}" + "".join(f"{b:>16.0%}" for b in args.budgets))
        for strategy in strategies:
            cells = []
            for b in args.budgets:
                score = mean(stream_name, strategy, b, delay, key)
                base = mean(stream_name, "random", b, delay, key)
                wins[strategy][0] += score >= base - 1e-9
                wins[strategy][1] += 1
                cells.append(f"{score:>9.3f} ({mean(stream_name, strategy, b, delay, 'spend'):.2f})")
            print(f"{strategy:<22}" + "".join(f"{c:>16}" for c in cells))
    print("\nat least as good as random (stream x delay x budget cells):")
    for strategy, (won, total) in wins.items():
        print(f"  {strategy:<22} {won}/{total}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
