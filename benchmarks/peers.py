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
Decision-loop throughput is events / time spent scoring and deciding (not learning), median over runs.

    python benchmarks/peers.py --quick            # 3000 events per stream, budgets 5% and 10%
    python benchmarks/peers.py --out results.json # full panel: 1/5/10/20%, delays 0 and 500

Needs the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
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
from stream_al.engine import ordered_classes
from stream_al.models import build_model
from stream_al.simulate import LabelDelay, SimOptions, load_stream, random_settings, simulate, with_strategy
from stream_al.simulate.data import Stream
from stream_al.simulate.delivery import Delivery

PANEL = ("phishing", "bananas", "shuttle", "sea", "hyperplane", "agrawal", "imbalanced")
BUDGETS = (0.01, 0.05, 0.10, 0.20)
DELAYS = (0, 500)
OURS = "stream-al"
OURS_RANDOM = "stream-al random"


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


def _prequential(stream: Stream, delay: int, decide: Callable[[int, dict], tuple[str | None, bool]], learn: Callable[[dict, str], None]) -> tuple[float, float, int]:
    """Run a peer's loop: (accuracy, decisions/s, labels asked). ``decide`` returns (prediction, ask)."""
    accuracy = metrics.Accuracy()
    delivery = Delivery(LabelDelay("events", delay), None)
    default = stream.classes[0] if stream.positive_class is None else next(c for c in stream.classes if c != stream.positive_class)
    spent = 0.0
    asked = 0
    clock = time.perf_counter
    for i, (x, y) in enumerate(zip(stream.features, stream.labels)):
        t0 = clock()
        predicted, ask = decide(i, x)
        spent += clock() - t0
        accuracy.update(y, predicted if predicted is not None else default)
        if ask:
            asked += 1
            delivery.submit(str(i), y, i, float(i), float("inf"), 0.0)
        for answer in delivery.due(i, float(i)):
            learn(stream.features[answer.index], answer.label)
    return accuracy.get(), len(stream) / spent, asked


def river_entropy(stream: Stream, budget: float, delay: int, seed: int) -> tuple[float, float, int]:
    model = active.EntropySampler(_learner(stream), discount_factor=3, seed=seed)
    bucket = TokenBucket(budget)

    def decide(i: int, x: dict) -> tuple[str | None, bool]:
        proba, ask = model.predict_proba_one(x)
        predicted = max(proba, key=proba.get) if proba else None
        return predicted, bucket.spend_if(ask)

    return _prequential(stream, delay, decide, model.learn_one)


def _skactiveml_factories(classes: list[str]) -> dict[str, Callable[[float, int], Any]]:
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


def skactiveml_run(name: str, stream: Stream, budget: float, delay: int, seed: int) -> tuple[float, float, int]:
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
            strategy.update(vector, queried)
            return predicted, len(queried) > 0
        # Some budget managers (e.g. the balanced incremental quantile filter) need the utilities.
        strategy.update(vector, queried, budget_manager_param_dict={"utilities": utilities})
        return predicted, len(queried) > 0

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
               result.decisions_per_second, result.seconds, result.window_ok)


def run_panel(streams: list[str], budgets: list[float], delays: list[int], events: int | None, seed: int,
              peers: list[str] | None, log: Callable[[str], None], extra: list[str] = ()) -> list[Row]:
    rows: list[Row] = []
    for name in streams:
        stream = load_stream(name, events=events, seed=seed)
        peer_names = ["river EntropySampler", *_skactiveml_factories(list(stream.classes))]
        if peers is not None:
            peer_names = [p for p in peer_names if any(sel.lower() in p.lower() for sel in peers)]
        for budget in budgets:
            for delay in delays:
                rows.append(ours(stream, budget, delay, seed))
                rows.append(ours(stream, budget, delay, seed, random=True))
                rows.extend(ours(stream, budget, delay, seed, strategy=name) for name in extra)
                for peer in peer_names:
                    started = time.perf_counter()
                    try:
                        if peer.startswith("river"):
                            acc, dps, asked = river_entropy(stream, budget, delay, seed)
                        else:
                            acc, dps, asked = skactiveml_run(peer, stream, budget, delay, seed)
                    except Exception as exc:  # a peer that cannot run on a stream is reported, not fatal
                        log(f"  {peer} failed on {name}: {type(exc).__name__}: {exc}")
                        continue
                    rows.append(Row(name, budget, delay, peer, acc, asked / len(stream), dps, time.perf_counter() - started))
                done = [r for r in rows if r.stream == name and r.budget == budget and r.delay == delay]
                log(f"{name:10s} b={budget:<5g} d={delay:<4d} " + "  ".join(f"{r.strategy.replace('skal ', '')}={r.accuracy:.3f}" for r in done))
    return rows


def report(rows: list[Row]) -> tuple[str, dict[str, Any]]:
    """A markdown table (best peer marked with *) and the targets, checked."""
    strategies = list(dict.fromkeys(r.strategy for r in rows))
    peers = [s for s in strategies if not s.startswith(OURS)]
    keys = list(dict.fromkeys((r.stream, r.budget, r.delay) for r in rows))
    by = {(r.stream, r.budget, r.delay, r.strategy): r for r in rows}
    short = [s.replace("skal ", "").replace("river ", "") for s in strategies]
    lines = ["| stream | budget | delay | " + " | ".join(short) + " |", "|" + "---|" * (3 + len(strategies))]
    checks: dict[str, Any] = {"vs_random": [], "vs_best_peer": {}, "budget": [], "windows": []}
    for key in keys:
        cells = {s: by.get((*key, s)) for s in strategies}
        peer_acc = {s: cells[s].accuracy for s in peers if cells[s] is not None}
        best = max(peer_acc, key=peer_acc.get) if peer_acc else None
        line = f"| {key[0]} | {key[1]:.0%} | {key[2]} | "
        line += " | ".join("-" if cells[s] is None else f"{cells[s].accuracy:.3f}{'*' if s == best else ''}" for s in strategies)
        lines.append(line + " |")
        o, rnd = cells.get(OURS), cells.get(OURS_RANDOM)
        if o and rnd:
            checks["vs_random"].append({"key": key, "ours": o.accuracy, "random": rnd.accuracy, "ok": o.accuracy >= rnd.accuracy})
            checks["budget"].append({"key": key, "achieved_over_target": o.achieved / key[1], "ok": abs(o.achieved / key[1] - 1) <= 0.05})
            checks["windows"].append({"key": key, "ok": bool(o.worst_window_ok)})
        if o and best:
            # Also against the best peer that kept to its budget (estimated-budget managers may overspend).
            fair = {s: a for s, a in peer_acc.items() if cells[s].achieved <= 1.05 * key[1]}
            fair_best = max(fair, key=fair.get) if fair else None
            checks["vs_best_peer"].setdefault(f"{key[1]:g}@{key[2]}", []).append(
                {"stream": key[0], "ours": o.accuracy, "best_peer": best, "best": peer_acc[best], "ok": o.accuracy >= peer_acc[best],
                 "best_within_budget": fair_best, "ok_within_budget": fair_best is None or o.accuracy >= fair[fair_best]})
    throughput = {s: statistics.median(r.decisions_per_second for r in rows if r.strategy == s) for s in strategies}
    lines += ["", "| strategy | decisions/s (median over runs) | achieved budget / target (median) |", "|---|---|---|"]
    for s in strategies:
        ratios = [r.achieved / r.budget for r in rows if r.strategy == s]
        lines.append(f"| {s} | {throughput[s]:,.0f} | {statistics.median(ratios):.2f} |")
    summary = {
        "ours_at_least_random_everywhere": all(c["ok"] for c in checks["vs_random"]),
        "ours_below_random": [c for c in checks["vs_random"] if not c["ok"]],
        "streams_where_ours_at_least_best_peer": {k: sum(c["ok"] for c in v) for k, v in checks["vs_best_peer"].items()},
        "streams_where_ours_at_least_best_peer_within_budget": {k: sum(c["ok_within_budget"] for c in v) for k, v in checks["vs_best_peer"].items()},
        "streams_per_setting": {k: len(v) for k, v in checks["vs_best_peer"].items()},
        "budget_within_5_percent": all(c["ok"] for c in checks["budget"]),
        "budget_misses": [c for c in checks["budget"] if not c["ok"]],
        "no_window_over_bound": all(c["ok"] for c in checks["windows"]),
        "throughput_decisions_per_second": throughput,
        "ours_faster_than_river_entropy": throughput.get(OURS, 0) > throughput.get("river EntropySampler", float("inf")),
    }
    lines += ["", "Targets:", f"- stream-al >= random on every stream/budget/delay: {summary['ours_at_least_random_everywhere']}"]
    for c in summary["ours_below_random"]:
        lines.append(f"  - below random: {c['key']}: {c['ours']:.3f} < {c['random']:.3f}")
    for k, n in summary["streams_where_ours_at_least_best_peer"].items():
        fair = summary["streams_where_ours_at_least_best_peer_within_budget"][k]
        lines.append(f"- budget@delay {k}: stream-al >= best peer on {n}/{summary['streams_per_setting'][k]} streams"
                     f" ({fair} against the best peer that spent at most 105% of the budget)")
    lines.append(f"- achieved budget within ±5% everywhere: {summary['budget_within_5_percent']}")
    for c in summary["budget_misses"]:
        lines.append(f"  - {c['key']}: achieved/target {c['achieved_over_target']:.3f}")
    lines.append(f"- no window over its bound: {summary['no_window_over_bound']}")
    lines.append(f"- stream-al decision loop faster than River's EntropySampler: {summary['ours_faster_than_river_entropy']}")
    return "\n".join(lines), {"checks": checks, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3000 events per stream, budgets 5%% and 10%%")
    p.add_argument("--streams", help=f"comma-separated subset of {','.join(PANEL)}")
    p.add_argument("--budgets", help="comma-separated fractions")
    p.add_argument("--delays", help="comma-separated label delays in events")
    p.add_argument("--events", type=int, help="events per stream (default: whole bundled datasets, 20000 per generator)")
    p.add_argument("--peers", help="only peers whose name contains one of these (comma-separated)")
    p.add_argument("--ours-strategies", help="also run these stream-al strategies (comma-separated; not used in the targets)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="write rows and checks as JSON here")
    args = p.parse_args(argv)
    streams = args.streams.split(",") if args.streams else list(PANEL)
    budgets = [float(b) for b in args.budgets.split(",")] if args.budgets else ([0.05, 0.10] if args.quick else list(BUDGETS))
    delays = [int(d) for d in args.delays.split(",")] if args.delays else list(DELAYS)
    events = args.events or (3000 if args.quick else None)
    peers = args.peers.split(",") if args.peers else None
    warnings.filterwarnings("ignore", module="skactiveml")  # Parzen bandwidth notices on the first labels
    started = time.perf_counter()
    extra = args.ours_strategies.split(",") if args.ours_strategies else []
    rows = run_panel(streams, budgets, delays, events, args.seed, peers, lambda m: print(m, file=sys.stderr, flush=True), extra)
    text, checks = report(rows)
    print(text)
    print(f"\n{len(rows)} runs in {time.perf_counter() - started:.0f} s")
    if args.out:
        args.out.write_text(json.dumps({"rows": [asdict(r) for r in rows], **checks}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
