"""Drift monitoring against the issue's targets, through the simulator (the engine core, no Kafka).

Four parts (``--parts``), all at ``budget.fraction`` 5% with an event clock, for logistic
regression and the Hoeffding tree, label delays of 0 and 500 events, several seeds:

- ``delay``: SEA and Agrawal with a concept drift half-way (the simulator's ``sea`` and
  ``agrawal``), or your own streams (``--drifting`` files with ``--drift-points``): detection
  delay in events and labels of the first drift alert after each drift point, per signal layer,
  and false alarms before the first.
- ``false``: false alarms (drift-level alerts, several signals at one event counting once) on
  stationary streams of ``--stationary-events`` events: SEA, Agrawal and Hyperplane without drift,
  and the imbalanced stream (~2% positives).
- ``boost``: accuracy over the 1k/2k/5k events after the drift with the drift boost
  (``budget.boost``, ``drift.boost: true``) against no boost at a base budget raised so the total
  labels match.
- ``swap``: the background model (``drift.background_model: true``) against none, same windows.

    .venv/bin/python benchmarks/drift.py                      # default: a few minutes on 2 vCPUs
    .venv/bin/python benchmarks/drift.py --parts false --seeds 3 --stationary-events 100000
    .venv/bin/python benchmarks/drift.py --json drift.json
    .venv/bin/python benchmarks/drift.py --parts delay boost --drifting mine.csv --target label --drift-points 5000,12000
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from stream_al.config import Settings
from stream_al.drift import LABEL_SIGNAL
from stream_al.simulate import LabelDelay, SimOptions, load_stream, simulate
from stream_al.simulate.data import Stream, _build, _imbalanced, _river_rows

MODELS = ("logistic_regression", "hoeffding_tree")
BOOST = {"allowance": "2000 per day", "max_extra_fraction": 0.15, "max_seconds": 3000, "hard_cap_fraction": 0.25}
WINDOWS = (1000, 2000, 5000)


def stationary(name: str, seed: int, events: int) -> Stream:
    """The stream without its drift (one concept throughout)."""
    from river.datasets import synth

    sources: dict[str, Iterable[tuple[dict, Any]]] = {
        "sea": synth.SEA(variant=0, seed=seed),
        "agrawal": synth.Agrawal(classification_function=0, seed=seed),
        "hyperplane": synth.Hyperplane(seed=seed, n_features=10, n_drift_features=0, noise_percentage=0.05),
    }
    if name == "imbalanced":
        rows = _river_rows(_imbalanced(seed, events))
        positive = "1"
    else:
        rows = _river_rows(sources[name])
        positive = "1" if name != "sea" else "True"
    stream = _build(name, itertools.islice(rows, events), None, None, None)
    if positive in stream.classes:
        stream.positive_class = positive
    return stream


def settings_for(stream: Stream, model: str, seed: int, fraction: float = 0.05, **drift: Any) -> Settings:
    budget: dict[str, Any] = {"fraction": fraction, "clock": "event"}
    if drift.pop("boost_budget", False):
        budget["boost"] = BOOST
    return Settings(classes=list(stream.classes), positive_class=stream.positive_class, seed=seed, budget=budget,
                    model={"name": model}, drift=drift)


def window_accuracy(result: Any, start: int, length: int) -> float | None:
    """Prequential accuracy over [start, start + length), from the cumulative curve (points every
    100 events); None when the curve has no point at either end (past the stream's end)."""
    curve = dict(zip(result.curve.events, result.curve.accuracy))
    a, b = start, start + length
    if a not in curve or b not in curve:
        return None
    return (curve[b] * b - curve[a] * a) / length


@dataclass(frozen=True)
class Source:
    """Where the drifting streams come from: panel names, or files with their label column and drift points."""

    target: str | None = None
    drift_points: tuple[int, ...] | None = None
    positive_class: str | None = None

    def load(self, name: str, events: int, seed: int) -> Stream:
        stream = load_stream(name, target=self.target, events=events, seed=seed, positive_class=self.positive_class,
                             drift_points=self.drift_points if self.drift_points and Path(name).suffix else None)
        if not stream.drift_points:
            raise ValueError(f"{name}: no known drift point; give a file's with --drift-points")
        return stream


def _delay_job(job: tuple[str, str, int, int, int, Source]) -> dict[str, Any]:
    name, model, delay, seed, events, source = job
    stream = source.load(name, events, seed)
    result = simulate(stream, settings_for(stream, model, seed), SimOptions(delay=LabelDelay("events", delay)))
    points = stream.drift_points
    drifts = [a for a in result.drift_alerts if a["level"] == "drift"]
    out: dict[str, Any] = {"part": "delay", "stream": name, "model": model, "delay": delay, "seed": seed,
                           "false_before": len({a["index"] for a in drifts if a["index"] < points[0]}), "points": []}
    for k, detection in enumerate(result.drift_report()["detections"]):
        point = points[k]
        end = points[k + 1] if k + 1 < len(points) else len(stream)
        free = [a for a in drifts if point <= a["index"] < end and a["signal"] not in (LABEL_SIGNAL, "audit_error")]
        out["points"].append({"point": point, "delay_events": detection.get("delay_events"),
                              "delay_labels": detection.get("delay_labels"), "signal": detection.get("signal"),
                              "label_free_delay": free[0]["index"] - point if free else None})
    return out


def _false_job(job: tuple[str, str, int, int, int]) -> dict[str, Any]:
    name, model, delay, seed, events = job
    stream = stationary(name, seed, events)
    result = simulate(stream, settings_for(stream, model, seed), SimOptions(delay=LabelDelay("events", delay)))
    drifts = [a for a in result.drift_alerts if a["level"] == "drift"]
    by_signal: dict[str, int] = {}
    for a in drifts:
        by_signal[a["signal"]] = by_signal.get(a["signal"], 0) + 1
    return {"part": "false", "stream": name, "model": model, "delay": delay, "seed": seed,
            "false_alarms": len({a["index"] for a in drifts}), "by_signal": by_signal}


def _pair_job(job: tuple[str, str, str, int, int, int, Source]) -> dict[str, Any]:
    """``boost``: boosted vs no boost at matched labels; ``swap``: background model vs none (after the first drift point)."""
    part, name, model, delay, seed, events, source = job
    stream = source.load(name, events, seed)
    events = len(stream)
    options = SimOptions(delay=LabelDelay("events", delay), curve_points=max(1, events // 100))
    point = stream.drift_points[0]
    if part == "boost":
        treated = simulate(stream, settings_for(stream, model, seed, boost_budget=True, boost=True), options)
        matched = treated.labels_used / events
        control = simulate(stream, settings_for(stream, model, seed, fraction=matched, boost=False), options)
    else:
        treated = simulate(stream, settings_for(stream, model, seed, background_model=True), options)
        control = simulate(stream, settings_for(stream, model, seed), options)
    acted = any(a["level"] == "drift" and a["index"] >= point for a in treated.drift_alerts)
    out: dict[str, Any] = {"part": part, "stream": name, "model": model, "delay": delay, "seed": seed,
                           "labels": [treated.labels_used, control.labels_used], "swaps": treated.model_swaps, "acted": acted}
    for w in WINDOWS:
        pair = [window_accuracy(treated, point, w), window_accuracy(control, point, w)]
        if None not in pair:
            out[f"acc{w}"] = pair
    return out


def _mean(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f}" if values else "-"


def report(results: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    rows = [r for r in results if r["part"] == "delay"]
    if rows:
        lines += ["## detection delay (events after the drift point; labels in brackets; - = not within 10,000 events)", "",
                  "| stream | model | delay | per seed: any signal | label-free only | false before |",
                  "|---|---|---:|---|---|---:|"]
        for key, group in itertools.groupby(sorted(rows, key=lambda r: (r["stream"], r["model"], r["delay"], r["seed"])),
                                            key=lambda r: (r["stream"], r["model"], r["delay"])):
            g = list(group)
            for k, first in enumerate(g[0]["points"]):
                at = [r["points"][k] for r in g]
                anyd = ", ".join("-" if p["delay_events"] is None else f"{p['delay_events']} ({p['delay_labels']}, {p['signal']})" for p in at)
                free = ", ".join("-" if p["label_free_delay"] is None else str(p["label_free_delay"]) for p in at)
                stream = key[0] if len(g[0]["points"]) == 1 else f"{key[0]} @{first['point']}"
                false_before = sum(r["false_before"] for r in g) if k == 0 else ""
                lines.append(f"| {stream} | {key[1]} | {key[2]} | {anyd} | {free} | {false_before} |")
        lines.append("")
    rows = [r for r in results if r["part"] == "false"]
    if rows:
        lines += ["## false alarms on stationary streams (per seed; signals summed)", "",
                  "| stream | model | delay | per seed | signals |", "|---|---|---:|---|---|"]
        for key, group in itertools.groupby(sorted(rows, key=lambda r: (r["stream"], r["model"], r["delay"], r["seed"])),
                                            key=lambda r: (r["stream"], r["model"], r["delay"])):
            g = list(group)
            signals: dict[str, int] = {}
            for r in g:
                for s, n in r["by_signal"].items():
                    signals[s] = signals.get(s, 0) + n
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {', '.join(str(r['false_alarms']) for r in g)} | "
                         f"{', '.join(f'{s}: {n}' for s, n in sorted(signals.items())) or '-'} |")
        lines.append("")
    for part, title in (("boost", "boost vs no boost at matched labels"), ("swap", "background model vs none")):
        rows = [r for r in results if r["part"] == part]
        if not rows:
            continue
        lines += [f"## {title}: accuracy over the first 1k / 2k / 5k events after the drift", "",
                  "Mean over seeds, treated / control; then the mean paired difference (treated - control) ± its sd",
                  "over the seeds where the treated run detected the drift (boosted or swapped), and their count.", "",
                  "| stream | model | delay | labels (treated / control) | 1k | 2k | 5k | detected | Δ1k | Δ2k | Δ5k |",
                  "|---|---|---:|---|---|---|---|---:|---|---|---|"]
        for key, group in itertools.groupby(sorted(rows, key=lambda r: (r["stream"], r["model"], r["delay"], r["seed"])),
                                            key=lambda r: (r["stream"], r["model"], r["delay"])):
            g = list(group)
            labels = f"{statistics.mean(r['labels'][0] for r in g):.0f} / {statistics.mean(r['labels'][1] for r in g):.0f}"
            cells = [f"{_mean([r[f'acc{w}'][0] for r in g if f'acc{w}' in r])} / {_mean([r[f'acc{w}'][1] for r in g if f'acc{w}' in r])}"
                     for w in WINDOWS]
            acted = [r for r in g if r["acted"]]
            cells.append(f"{len(acted)} of {len(g)}")
            for w in WINDOWS:
                diffs = [r[f"acc{w}"][0] - r[f"acc{w}"][1] for r in acted if f"acc{w}" in r]
                cells.append(f"{statistics.mean(diffs):+.3f} ± {statistics.stdev(diffs):.3f}" if len(diffs) > 1 else
                             (f"{diffs[0]:+.3f}" if diffs else "-"))
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {labels} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", nargs="+", default=["delay", "false", "boost"], choices=["delay", "false", "boost", "swap"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--delays", nargs="+", type=int, default=[0, 500])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--drifting", nargs="+", default=["sea", "agrawal"],
                   help="the drifting streams: sea, agrawal (drift half-way), or .csv / .jsonl files with --target and --drift-points")
    p.add_argument("--target", help="the label column of the --drifting files")
    p.add_argument("--drift-points", help="comma-separated event indices where the files' concept changes")
    p.add_argument("--positive-class", help="the files' positive class (default: none)")
    p.add_argument("--drift-events", type=int, default=20_000, help="events of the drifting streams (drift half-way; a file's first N)")
    p.add_argument("--stationary-events", type=int, default=100_000)
    p.add_argument("--stationary", nargs="+", default=["sea", "agrawal", "hyperplane", "imbalanced"])
    p.add_argument("--false-seeds", type=int, default=1, help="seeds of the stationary streams")
    p.add_argument("--pair-seeds", type=int, default=8, help="seeds of the boost and swap comparisons (their noise is large)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json")
    args = p.parse_args(argv)
    seeds = range(args.seeds)
    points = tuple(int(p) for p in args.drift_points.split(",")) if args.drift_points else None
    source = Source(args.target, points, args.positive_class)
    for name in args.drifting:
        source.load(name, args.drift_events, 0)  # a missing column or drift point fails here, not in a worker
    jobs: list[tuple[Any, tuple]] = []
    if "delay" in args.parts:
        jobs += [(_delay_job, (s, m, d, seed, args.drift_events, source)) for s in args.drifting for m in args.models
                 for d in args.delays for seed in seeds]
    if "false" in args.parts:
        jobs += [(_false_job, (s, m, d, seed, args.stationary_events)) for s in args.stationary for m in args.models
                 for d in args.delays for seed in range(args.false_seeds)]
    for part in ("boost", "swap"):
        if part in args.parts:
            jobs += [(_pair_job, (part, s, "logistic_regression", d, seed, args.drift_events, source)) for s in args.drifting
                     for d in args.delays for seed in range(args.pair_seeds)]
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(_call, jobs))
    print(report(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def _call(job: tuple[Any, tuple]) -> dict[str, Any]:
    return job[0](job[1])


if __name__ == "__main__":
    main()
