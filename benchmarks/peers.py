"""Peer benchmark: stream-al's sampler against scikit-activeml's stream strategies and River's EntropySampler.

Every strategy sees the same streams (the panel below), the same budgets, the same label delays and
the SAME base learner: stream-al's scaled logistic regression (``stream_al.models.build_model``).
scikit-activeml's strategies get it through a thin :class:`RiverClassifier` adapter (a
``SkactivemlClassifier`` whose ``predict_proba`` asks the River model), so only the strategy differs;
their own budget managers (the defaults each strategy ships with) decide the spend. River's
``active.EntropySampler`` (discount factor 3) has no budget of its own, so its asks are gated by the
same event-count token bucket stream-al uses (``fraction`` per event, burst 10). StreamProbabilisticAL
needs kernel frequency estimates: it gets ``metric="rbf"`` over the last 500 labelled events.

Prequential evaluation for all: each event is predicted before its label (if asked) is learned;
a label asked at event ``i`` with delay ``d`` is learned after event ``i + d`` is predicted.
Decision-loop throughput is events / time spent scoring and deciding (not learning), median over
runs. Every loop is timed the same way (``_prequential``): River's is ``EntropySampler.predict_proba_one``
plus its token bucket, stream-al's is ``predict_proba_one`` plus ``Sampler.decide`` (the "stream-al
score+decide" row; it must decide exactly as the simulator's run, which the script checks). The
simulator's own rate (``Engine.on_event``, which also builds each label request with its features
and explanation) is the "stream-al" row.

Several seeds (``--seeds``): each seed draws the generated streams and every sampler's randomness
anew (the bundled datasets are the same events in the same order). The tables give the mean over
seeds, a cell's spread (sd), and each target is checked on the means; stream-al vs random is also
checked per cell with the paired difference's standard error (``below`` only when the mean
difference is under zero by more than two standard errors). "At least as accurate as the best peer
strategy" is read two ways, both reported: per stream, against whichever peer did best there within
its budget; and against one strategy per budget and delay, the peer within its budget on every
stream with the best mean over them.

    python benchmarks/peers.py --quick            # 3000 events per stream, budgets 5% and 10%, 3 seeds
    python benchmarks/peers.py --out results.json # full panel: 1/5/10/20%, delays 0 and 500
    python benchmarks/peers.py --quick --streams mine.csv --target label   # a stream of your own

Needs the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from river import active, metrics

from stream_al.config import Settings
from stream_al.engine import build_sampler, ordered_classes
from stream_al.models import build_model
from stream_al.simulate import LabelDelay, SimOptions, load_stream, random_settings, simulate, with_strategy
from stream_al.simulate.data import Stream
from stream_al.simulate.delivery import Delivery
from stream_al.simulate.evaluation import window_bound, window_size, worst_window

PANEL = ("phishing", "bananas", "shuttle", "sea", "hyperplane", "agrawal", "imbalanced")
BUDGETS = (0.01, 0.05, 0.10, 0.20)
DELAYS = (0, 500)
OURS = "stream-al"
OURS_RANDOM = "stream-al random"
OURS_LOOP = "stream-al score+decide"


@dataclass
class Row:
    stream: str
    budget: float
    delay: int
    strategy: str
    accuracy: float
    achieved: float
    decisions_per_second: float
    seconds: float
    worst_window_ok: bool | None = None
    seed: int = 0


class TokenBucket:
    """``fraction`` labels per event, at most ``burst`` saved (stream-al's FractionBudget rule)."""

    def __init__(self, fraction: float, burst: float = 10.0):
        self.fraction, self.burst, self.tokens = fraction, max(burst, 1.0 + fraction), 0.0

    def spend_if(self, wanted: bool) -> bool:
        """One event: earn ``fraction``; spend a label if ``wanted`` and one is available."""
        self.tokens = min(self.burst, self.tokens + self.fraction)
        if wanted and self.tokens >= 1.0 - 1e-9:
            self.tokens -= 1.0
            return True
        return False


def _learner(stream: Stream) -> Any:
    settings = Settings(classes=list(stream.classes), positive_class=stream.positive_class)
    return build_model(settings.model.name, settings.model.params, ordered_classes(settings))


def _prequential(stream: Stream, delay: int, decide: Callable[[int, dict], tuple[str | None, bool]], learn: Callable[[dict, str], None]) -> tuple[float, float, list[int]]:
    """Run a peer's loop: (accuracy, decisions/s, the events it asked about). ``decide`` returns (prediction, ask)."""
    accuracy = metrics.Accuracy()
    delivery = Delivery(LabelDelay("events", delay), None)
    default = stream.classes[0] if stream.positive_class is None else next(c for c in stream.classes if c != stream.positive_class)
    spent = 0.0
    asked: list[int] = []
    clock = time.perf_counter
    for i, (x, y) in enumerate(zip(stream.features, stream.labels)):
        t0 = clock()
        predicted, ask = decide(i, x)
        spent += clock() - t0
        accuracy.update(y, predicted if predicted is not None else default)
        if ask:
            asked.append(i)
            delivery.submit(str(i), y, i, float(i), float("inf"), 0.0)
        for answer in delivery.due(i, float(i)):
            learn(stream.features[answer.index], answer.label)
    return accuracy.get(), len(stream) / spent, asked


def river_entropy(stream: Stream, budget: float, delay: int, seed: int) -> tuple[float, float, list[int]]:
    model = active.EntropySampler(_learner(stream), discount_factor=3, seed=seed)
    bucket = TokenBucket(budget)

    def decide(i: int, x: dict) -> tuple[str | None, bool]:
        proba, ask = model.predict_proba_one(x)
        predicted = max(proba, key=proba.get) if proba else None
        return predicted, bucket.spend_if(ask)

    return _prequential(stream, delay, decide, model.learn_one)


SKAL_PEERS = (
    "skal StreamRandomSampling", "skal PeriodicSampling", "skal FixedUncertainty", "skal VariableUncertainty",
    "skal RandomVariableUncertainty", "skal Split", "skal StreamProbabilisticAL",
)


def _skactiveml_factories(classes: list[str]) -> dict[str, Callable[[float, int], Any]]:
    """The :data:`SKAL_PEERS` (imported here: scikit-activeml is only needed when one of them runs)."""
    from skactiveml import stream as s

    return {
        "skal StreamRandomSampling": lambda b, r: s.StreamRandomSampling(allow_exceeding_budget=False, budget=b, random_state=r),
        "skal PeriodicSampling": lambda b, r: s.PeriodicSampling(budget=b, random_state=r),
        "skal FixedUncertainty": lambda b, r: s.FixedUncertainty(classes=classes, budget=b, random_state=r),
        "skal VariableUncertainty": lambda b, r: s.VariableUncertainty(budget=b, random_state=r),
        "skal RandomVariableUncertainty": lambda b, r: s.RandomVariableUncertainty(budget=b, random_state=r),
        "skal Split": lambda b, r: s.Split(budget=b, random_state=r),
        "skal StreamProbabilisticAL": lambda b, r: s.StreamProbabilisticAL(metric="rbf", budget=b, random_state=r),
    }


def _river_classifier_type() -> type:
    from skactiveml.base import SkactivemlClassifier

    class RiverClassifier(SkactivemlClassifier):
        """A SkactivemlClassifier whose probabilities come from a River model (learned elsewhere)."""

        def __init__(self, model: Any = None, names: tuple[str, ...] = (), classes: Any = None, missing_label: Any = None):
            super().__init__(classes=classes, missing_label=missing_label)
            self.model = model
            self.names = names
            self.classes_ = np.asarray(classes)
            self._label_encoder = None

        def fit(self, X: Any, y: Any, sample_weight: Any = None) -> RiverClassifier:
            return self  # learning happens in the benchmark loop, with River's learn_one

        def predict_proba(self, X: Any) -> np.ndarray:
            out = np.empty((len(X), len(self.classes_)))
            for row, values in enumerate(np.asarray(X)):
                proba = self.model.predict_proba_one(dict(zip(self.names, values.tolist())))
                out[row] = [proba.get(c, 1.0 / len(self.classes_)) for c in self.classes_]
            return out

    return RiverClassifier


CAPPED = " (capped)"


def skactiveml_run(name: str, stream: Stream, budget: float, delay: int, seed: int, capped: bool = False) -> tuple[float, float, list[int]]:
    """One scikit-activeml strategy with its own budget manager; ``capped``: every query also goes
    through the hard token bucket River's sampler and stream-al obey (``fraction`` per event, burst
    10), and a vetoed query is reported to the strategy's ``update`` as not queried, so its budget
    manager counts only the labels really asked for (it may then ask again sooner)."""
    bucket = TokenBucket(budget) if capped else None
    names = tuple(sorted({k for x in stream.features for k in x}))
    classes = list(stream.classes)
    model = _learner(stream)
    clf = _river_classifier_type()(model=model, names=names, classes=classes, missing_label=None)
    strategy = _skactiveml_factories(classes)[name](budget, seed)
    needs_clf = "Random" not in name or "Variable" in name
    needs_clf = needs_clf and "Periodic" not in name
    labelled_x: list[np.ndarray] = []
    labelled_y: list[str] = []
    pal = "Probabilistic" in name

    def decide(i: int, x: dict) -> tuple[str | None, bool]:
        vector = np.array([[x.get(n, 0.0) for n in names]])
        proba = model.predict_proba_one(x)
        predicted = max(proba, key=proba.get) if proba else None
        if pal:
            if labelled_x:
                X, y = np.vstack(labelled_x[-500:]), np.asarray(labelled_y[-500:], dtype=object)
            else:
                X, y = np.empty((0, len(names))), np.empty(0, dtype=object)
            if not len(y):  # nothing labelled yet: one unlabelled placeholder row
                X, y = np.zeros((1, len(names))), np.array([None], dtype=object)
            queried, utilities = strategy.query(vector, clf, X=X, y=y, return_utilities=True)
        elif needs_clf:
            queried, utilities = strategy.query(vector, clf, return_utilities=True)
        else:  # the random and periodic baselines: no classifier, no budget manager parameters
            queried = strategy.query(vector)
            queried = _veto(queried)
            strategy.update(vector, queried)
            return predicted, len(queried) > 0
        queried = _veto(queried)
        # Some budget managers (e.g. the balanced incremental quantile filter) need the utilities.
        strategy.update(vector, queried, budget_manager_param_dict={"utilities": utilities})
        return predicted, len(queried) > 0

    def _veto(queried: Any) -> Any:
        """The hard cap: the bucket earns every event and pays for a query only if a label is in hand."""
        if bucket is None:
            return queried
        return queried if bucket.spend_if(len(queried) > 0) else queried[:0]

    def learn(x: dict, y: str) -> None:
        model.learn_one(x, y)
        if pal:
            labelled_x.append(np.array([x.get(n, 0.0) for n in names]))
            labelled_y.append(y)

    return _prequential(stream, delay, decide, learn)


def ours(stream: Stream, budget: float, delay: int, seed: int, random: bool = False, strategy: str | None = None) -> Row:
    """stream-al through the simulator: its default strategy, the random baseline, or a named strategy."""
    settings = Settings(classes=list(stream.classes), positive_class=stream.positive_class, seed=seed,
                        budget={"fraction": budget, "clock": "event"})
    name = OURS
    if random:
        settings, name = random_settings(settings)[0], OURS_RANDOM
    elif strategy is not None:
        settings, name = with_strategy(settings, strategy), f"{OURS} {strategy}"
    result = simulate(stream, settings, SimOptions(delay=LabelDelay("events", delay)))
    return Row(stream.name, budget, delay, name, result.accuracy, result.budget_achieved,
               result.decisions_per_second, result.seconds, result.window_ok, seed)


def ours_decision_loop(stream: Stream, budget: float, delay: int, seed: int) -> tuple[float, float, list[int]]:
    """stream-al's default as River's loop is run: ``predict_proba_one`` + ``Sampler.decide``, timed
    alike (the simulator's rate also pays for building label requests). Same event ids as the
    simulator, so the same decisions."""
    settings = Settings(classes=list(stream.classes), positive_class=stream.positive_class, seed=seed,
                        budget={"fraction": budget, "clock": "event"})
    model = _learner(stream)
    sampler = build_sampler(settings)
    decide, predict = sampler.decide, model.predict_proba_one
    ids = [f"{stream.name}-{i}" for i in range(len(stream))]

    def step(i: int, x: dict) -> tuple[str | None, bool]:
        proba = predict(x)
        query = decide(ids[i], proba, float(i)).query
        if query:
            sampler.in_flight += 1  # the engine's open requests (Engine._show_label_loop)
        return (max(proba, key=proba.get) if proba else None), query

    def learn(x: dict, y: str) -> None:
        model.learn_one(x, y)
        sampler.in_flight -= 1
        sampler.learned += 1

    return _prequential(stream, delay, step, learn)


def run_panel(streams: list[str], budgets: list[float], delays: list[int], events: int | None, seeds: list[int],
              peers: list[str] | None, log: Callable[[str], None], extra: list[str] = (), with_ours: bool = True,
              load: Callable[..., Stream] = load_stream, capped: bool = True) -> list[Row]:
    rows: list[Row] = []
    for seed in seeds:
        rows.extend(run_seed(streams, budgets, delays, events, seed, peers, log, extra, with_ours, load, capped))
    return rows


def run_seed(streams: list[str], budgets: list[float], delays: list[int], events: int | None, seed: int,
             peers: list[str] | None, log: Callable[[str], None], extra: list[str] = (), with_ours: bool = True,
             load: Callable[..., Stream] = load_stream, capped: bool = True) -> list[Row]:
    """One seed of the panel; ``load(name, events=, seed=)`` reads each stream (``load_stream`` with
    a file's target column bound, for a CSV / JSONL of the user's own); ``capped=False`` leaves out
    the capped scikit-activeml peers."""
    rows: list[Row] = []
    for source in streams:
        stream = load(source, events=events, seed=seed)
        name = stream.name  # a file's stream is named by the file, as the simulator's rows name it
        # River's sampler has no budget of its own: it only runs capped (by the same bucket).
        peer_names = ["river EntropySampler", *SKAL_PEERS, *(p + CAPPED for p in SKAL_PEERS if capped)]
        if peers is not None:
            peer_names = [p for p in peer_names if any(sel.lower() in p.lower() for sel in peers)]
        for budget in budgets:
            for delay in delays:
                if with_ours:
                    rows.append(ours(stream, budget, delay, seed))
                    started = time.perf_counter()
                    acc, dps, asked = ours_decision_loop(stream, budget, delay, seed)
                    if abs(acc - rows[-1].accuracy) > 1e-12:  # the loop must be the simulator's decisions, only timed alike
                        log(f"  warning: {OURS_LOOP} accuracy {acc:.4f} differs from the simulator's {rows[-1].accuracy:.4f}")
                    rows.append(Row(name, budget, delay, OURS_LOOP, acc, len(asked) / len(stream), dps, time.perf_counter() - started, seed=seed))
                    rows.append(ours(stream, budget, delay, seed, random=True))
                    rows.extend(ours(stream, budget, delay, seed, strategy=name) for name in extra)
                for peer in peer_names:
                    started = time.perf_counter()
                    try:
                        if peer.startswith("river"):
                            acc, dps, asked = river_entropy(stream, budget, delay, seed)
                        else:
                            base = peer.removesuffix(CAPPED)
                            acc, dps, asked = skactiveml_run(base, stream, budget, delay, seed, capped=base != peer)
                    except Exception as exc:  # a peer that cannot run on a stream is reported, not fatal
                        log(f"  {peer} failed on {name}: {type(exc).__name__}: {exc}")
                        continue
                    rows.append(Row(name, budget, delay, peer, acc, len(asked) / len(stream), dps, time.perf_counter() - started,
                                    worst_window_ok=within_window_bound(asked, budget), seed=seed))
                done = [r for r in rows if r.stream == name and r.budget == budget and r.delay == delay and r.strategy != OURS_LOOP]
                log(f"seed {seed} {name:10s} b={budget:<5g} d={delay:<4d} " + "  ".join(f"{r.strategy.replace('skal ', '')}={r.accuracy:.3f}" for r in done))
    return rows


def within_window_bound(asked: list[int], fraction: float) -> bool:
    """Whether the events asked about keep the bound stream-al's fraction budget states: at most
    ``burst + fraction x window`` labels in any ``window = 10 / fraction`` consecutive events
    (burst 10), the issue's "no bursts" rule. A peer that spends its whole budget's worth at once
    and then waits is not within its budget, whatever its total.

    >>> within_window_bound(list(range(20)), 0.1), within_window_bound(list(range(21)), 0.1), within_window_bound(list(range(0, 1000, 5)), 0.1)
    (True, False, True)
    """
    window = window_size(fraction)
    return worst_window(asked, window) <= window_bound(fraction, None, window) + 1e-9


def best_single_peer(cells: list[tuple[str, float, dict[str, float]]]) -> dict[str, Any]:
    """The other reading of "the best peer strategy": one strategy for a budget and delay, the peer
    with the best mean accuracy over the setting's streams among those within their budget on every
    one of them; then on how many streams stream-al is at least as accurate. ``cells``: (stream,
    stream-al's accuracy, the peers within budget there and their accuracies).

    >>> cells = [("a", 0.90, {"P": 0.95, "Q": 0.85}), ("b", 0.80, {"P": 0.70, "Q": 0.79}), ("c", 0.70, {"Q": 0.60})]
    >>> best = best_single_peer(cells)
    >>> best["strategy"], best["streams_ok"]      # P is over budget on c: Q it is, beaten on all three
    ('Q', 3)
    """
    eligible = [s for s in cells[0][2] if all(s in fair for _, _, fair in cells)] if cells else []
    if not eligible:
        return {"strategy": None, "streams": [c[0] for c in cells], "streams_ok": 0}
    best = max(eligible, key=lambda s: statistics.fmean(fair[s] for _, _, fair in cells))
    return {"strategy": best, "mean": statistics.fmean(fair[best] for _, _, fair in cells),
            "ours_mean": statistics.fmean(ours for _, ours, _ in cells), "streams": [c[0] for c in cells],
            "streams_ok": sum(ours >= fair[best] for _, ours, fair in cells)}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def report(rows: list[Row]) -> tuple[str, dict[str, Any]]:
    """Markdown tables (mean over seeds, best peer marked with *) and the targets, checked on the means."""
    strategies = [s for s in dict.fromkeys(r.strategy for r in rows) if s != OURS_LOOP]
    peers = [s for s in strategies if not s.startswith(OURS)]
    keys = list(dict.fromkeys((r.stream, r.budget, r.delay) for r in rows))
    runs: dict[tuple, list[Row]] = {}
    for r in rows:
        runs.setdefault((r.stream, r.budget, r.delay, r.strategy), []).append(r)
    seeds = sorted({r.seed for r in rows})
    short = [s.replace("skal ", "").replace("river ", "") for s in strategies]
    lines = [f"Accuracy, mean of {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); stream-al and random as mean ± sd;"
             " * the best peer, + the best peer within its budget (capped, or spent at most 105% and kept stream-al's window"
             " bound in every seed).", "",
             "| stream | budget | delay | " + " | ".join(short) + " |", "|" + "---|" * (3 + len(strategies))]
    checks: dict[str, Any] = {"vs_random": [], "vs_best_peer": {}, "vs_best_strategy": {}, "budget": [], "windows": []}
    settings: dict[tuple[float, int], list[tuple[str, float, dict[str, float]]]] = {}  # (budget, delay): (stream, ours, fair peers)
    for key in keys:
        cells = {s: runs.get((*key, s)) for s in strategies}
        mean = {s: _mean_sd([r.accuracy for r in cells[s]])[0] for s in strategies if cells[s]}
        worst_spend = {s: max(r.achieved for r in cells[s]) for s in strategies if cells[s]}
        peer_acc = {s: mean[s] for s in peers if s in mean}
        best = max(peer_acc, key=peer_acc.get) if peer_acc else None
        # The target's peers: those that kept to the budget in every seed (a capped peer always does;
        # a raw one when it spent at most 105% of the budget and no window over the bound; rows
        # measured before windows were recorded, worst_window_ok None, are judged on the total only).
        fair = {s: a for s, a in peer_acc.items()
                if worst_spend[s] <= 1.05 * key[1] and all(r.worst_window_ok is not False for r in cells[s])}
        fair_best = max(fair, key=fair.get) if fair else None
        if OURS in mean:
            settings.setdefault(key[1:], []).append((key[0], mean[OURS], fair))

        def cell(s: str) -> str:
            if s not in mean:
                return "-"
            if s.startswith(OURS) and len(cells[s]) > 1:
                return f"{mean[s]:.3f} ± {_mean_sd([r.accuracy for r in cells[s]])[1]:.3f}"
            return f"{mean[s]:.3f}{'*' if s == best else ''}{'+' if s == fair_best else ''}"

        lines.append(f"| {key[0]} | {key[1]:.0%} | {key[2]} | " + " | ".join(cell(s) for s in strategies) + " |")
        o, rnd = cells.get(OURS), cells.get(OURS_RANDOM)
        if o and rnd:
            by_seed = {r.seed: r.accuracy for r in rnd}
            diffs = [r.accuracy - by_seed[r.seed] for r in o if r.seed in by_seed]
            d_mean, d_sd = _mean_sd(diffs)
            se = d_sd / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
            checks["vs_random"].append({"key": key, "ours": mean[OURS], "random": mean[OURS_RANDOM], "diff": d_mean, "se": se,
                                        "seeds": len(diffs), "ok": mean[OURS] >= mean[OURS_RANDOM],
                                        "clearly_below": len(diffs) > 1 and d_mean < -2 * se})
            for r in o:
                checks["budget"].append({"key": key, "seed": r.seed, "achieved_over_target": r.achieved / key[1],
                                         "ok": abs(r.achieved / key[1] - 1) <= 0.05})
                checks["windows"].append({"key": key, "seed": r.seed, "ok": bool(r.worst_window_ok)})
        if o and best:
            checks["vs_best_peer"].setdefault(f"{key[1]:g}@{key[2]}", []).append(
                {"stream": key[0], "ours": mean[OURS], "best_peer": best, "best": peer_acc[best], "ok": mean[OURS] >= peer_acc[best],
                 "best_within_budget": fair_best, "ok_within_budget": fair_best is None or mean[OURS] >= fair[fair_best]})
    for (budget, delay), cells in settings.items():
        checks["vs_best_strategy"][f"{budget:g}@{delay}"] = best_single_peer(cells)
    timed = [OURS_LOOP, *strategies] if any(r.strategy == OURS_LOOP for r in rows) else strategies
    throughput = {s: statistics.median(r.decisions_per_second for r in rows if r.strategy == s) for s in timed}
    river = {(r.stream, r.budget, r.delay, r.seed): r.decisions_per_second for r in rows if r.strategy == "river EntropySampler"}
    paired = [r.decisions_per_second / river[(r.stream, r.budget, r.delay, r.seed)] for r in rows
              if r.strategy == OURS_LOOP and (r.stream, r.budget, r.delay, r.seed) in river]
    lines += ["", "| strategy | decisions/s (median over runs) | achieved budget / target (median) |", "|---|---|---|"]
    for s in timed:
        ratios = [r.achieved / r.budget for r in rows if r.strategy == s]
        lines.append(f"| {s} | {throughput[s]:,.0f} | {statistics.median(ratios):.2f} |")
    summary = {
        "ours_at_least_random_everywhere": all(c["ok"] for c in checks["vs_random"]),
        "ours_below_random": [c for c in checks["vs_random"] if not c["ok"]],
        "ours_clearly_below_random": [c for c in checks["vs_random"] if c["clearly_below"]],
        "streams_where_ours_at_least_best_peer": {k: sum(c["ok"] for c in v) for k, v in checks["vs_best_peer"].items()},
        "streams_where_ours_at_least_best_peer_within_budget": {k: sum(c["ok_within_budget"] for c in v) for k, v in checks["vs_best_peer"].items()},
        "streams_per_setting": {k: len(v) for k, v in checks["vs_best_peer"].items()},
        "streams_where_ours_at_least_best_single_peer": {k: (v["strategy"], v["streams_ok"]) for k, v in checks["vs_best_strategy"].items()},
        "budget_within_5_percent": all(c["ok"] for c in checks["budget"]),
        "budget_misses": [c for c in checks["budget"] if not c["ok"]],
        "no_window_over_bound": all(c["ok"] for c in checks["windows"]),
        "throughput_decisions_per_second": throughput,
        "score_decide_over_river_per_run": statistics.median(paired) if paired else None,
        "ours_faster_than_river_entropy": throughput.get(OURS_LOOP, throughput.get(OURS, 0)) > throughput.get("river EntropySampler", float("inf")),
    }
    n_cells = len(checks["vs_random"])
    lines += ["", "Targets (on the means over seeds):",
              f"- stream-al >= random on every stream/budget/delay: {summary['ours_at_least_random_everywhere']}"
              f" ({n_cells - len(summary['ours_below_random'])}/{n_cells} cells; below by more than 2 standard errors of the"
              f" paired difference: {len(summary['ours_clearly_below_random'])})"]
    for c in summary["ours_below_random"]:
        flag = " (more than 2 SE)" if c["clearly_below"] else ""
        lines.append(f"  - below random: {c['key']}: {c['ours']:.3f} < {c['random']:.3f} (diff {c['diff']:+.3f}, SE {c['se']:.3f}){flag}")
    for k, n in summary["streams_where_ours_at_least_best_peer"].items():
        fair = summary["streams_where_ours_at_least_best_peer_within_budget"][k]
        lines.append(f"- budget@delay {k}: stream-al >= best peer within its budget on {fair}/{summary['streams_per_setting'][k]} streams"
                     f" ({n} against the best peer whatever it spent)")
        single = checks["vs_best_strategy"].get(k)
        if single and single["strategy"]:
            lines.append(f"  - against one strategy for all its streams, {single['strategy']} (the best mean over them among the peers"
                         f" within budget on every one): {single['streams_ok']}/{len(single['streams'])} streams")
    lines.append(f"- achieved budget within ±5% in every run: {summary['budget_within_5_percent']}")
    for c in summary["budget_misses"]:
        lines.append(f"  - {c['key']} seed {c['seed']}: achieved/target {c['achieved_over_target']:.3f}")
    lines.append(f"- no window over its bound: {summary['no_window_over_bound']}")
    ratio = summary["score_decide_over_river_per_run"]
    lines.append(f"- stream-al decision loop (score + decide) faster than River's EntropySampler: {summary['ours_faster_than_river_entropy']}"
                 + (f" (median over runs of the paired ratio: {ratio:.2f})" if ratio else ""))
    return "\n".join(lines), {"checks": checks, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3000 events per stream, budgets 5%% and 10%%, 3 seeds")
    p.add_argument("--streams", help=f"comma-separated: names from {','.join(PANEL)} (the panel), or .csv / .jsonl files")
    p.add_argument("--target", help="the label column of the --streams files (as stream-al simulate --target)")
    p.add_argument("--positive-class", help="the files' positive class, for F1 and the imbalance checks (default: none)")
    p.add_argument("--shuffle", action="store_true",
                   help="each seed replays the bundled datasets and files in its own order (generated streams are drawn anew per seed anyway)")
    p.add_argument("--budgets", help="comma-separated fractions")
    p.add_argument("--delays", help="comma-separated label delays in events")
    p.add_argument("--events", type=int, help="events per stream (default: whole bundled datasets, 20000 per generator)")
    p.add_argument("--peers", help="only peers whose name contains one of these (comma-separated)")
    p.add_argument("--no-peers", action="store_true", help="stream-al rows only (merge with a peers-only --out through --load)")
    p.add_argument("--no-ours", action="store_true", help="peer rows only (they do not depend on stream-al's sampler)")
    p.add_argument("--no-capped", action="store_true",
                   help="leave out the capped scikit-activeml peers (they keep the window bound by construction; to re-measure raw ones)")
    p.add_argument("--ours-strategies", help="also run these stream-al strategies (comma-separated; not used in the targets)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--seeds", type=int, help="how many seeds (default: 3 with --quick, else 1)")
    p.add_argument("--out", type=Path, help="write rows and checks as JSON here")
    p.add_argument("--load", type=Path, nargs="+", help="report on the rows of earlier --out files (e.g. one per seed, run in parallel) instead of running")
    args = p.parse_args(argv)
    streams = args.streams.split(",") if args.streams else list(PANEL)
    budgets = [float(b) for b in args.budgets.split(",")] if args.budgets else ([0.05, 0.10] if args.quick else list(BUDGETS))
    delays = [int(d) for d in args.delays.split(",")] if args.delays else list(DELAYS)
    events = args.events or (3000 if args.quick else None)
    peers = [] if args.no_peers else (args.peers.split(",") if args.peers else None)
    warnings.filterwarnings("ignore", module="skactiveml")  # Parzen bandwidth notices on the first labels
    started = time.perf_counter()
    extra = args.ours_strategies.split(",") if args.ours_strategies else []
    seeds = list(range(args.seed, args.seed + (args.seeds or (3 if args.quick else 1))))
    if args.load:
        rows = [Row(**r) for path in args.load for r in json.loads(path.read_text())["rows"]]
    else:
        load = functools.partial(load_stream, target=args.target, positive_class=args.positive_class, shuffle=args.shuffle)
        rows = run_panel(streams, budgets, delays, events, seeds, peers, lambda m: print(m, file=sys.stderr, flush=True), extra,
                         with_ours=not args.no_ours, load=load, capped=not args.no_capped)
    text, checks = report(rows)
    print(text)
    print(f"\n{len(rows)} runs in {time.perf_counter() - started:.0f} s")
    if args.out:
        args.out.write_text(json.dumps({"rows": [asdict(r) for r in rows], **checks}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
