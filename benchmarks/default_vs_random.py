"""The default strategy (and candidate variants) against random sampling on the peer panel.

Runs stream-al through the simulator (``stream_al.simulate``, as ``peers.py`` does) on every stream
of the panel (phishing, bananas, shuttle, SEA with abrupt drift, hyperplane, agrawal with drift,
~2% positives), every budget and label delay, over several seeds, and prints one table per
candidate: prequential accuracy of candidate vs random (mean over seeds), and the cells where the
candidate is below random.

    .venv/bin/python benchmarks/default_vs_random.py --events 3000 --seeds 2
    .venv/bin/python benchmarks/default_vs_random.py --candidate qf='{"strategy":"quantile_filter"}' --json out.json
    .venv/bin/python benchmarks/default_vs_random.py --streams mine.csv --target label --seeds 4
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from stream_al.config import Settings
from stream_al.simulate import LabelDelay, SimOptions, load_stream, random_settings, simulate

PANEL = ("phishing", "bananas", "shuttle", "sea", "hyperplane", "agrawal", "imbalanced")


def run(stream_name: str, candidate: str, sampler: dict[str, Any] | None, budget: float, delay: int, seed: int,
        events: int | None, target: str | None = None, positive_class: str | None = None, shuffle: bool = False) -> dict[str, Any]:
    stream = load_stream(stream_name, target=target, events=events, seed=seed, positive_class=positive_class, shuffle=shuffle)
    settings = Settings(classes=list(stream.classes), positive_class=stream.positive_class, seed=seed,
                        budget={"fraction": budget, "clock": "event"})
    if sampler is None:
        settings = random_settings(settings)[0]
    elif sampler:
        data = settings.model_dump()
        data["sampler"] = {**data["sampler"], **sampler}
        settings = Settings.model_validate(data)
    result = simulate(stream, settings, SimOptions(delay=LabelDelay("events", delay)))
    return {"stream": stream_name, "candidate": candidate, "budget": budget, "delay": delay, "seed": seed,
            "accuracy": result.accuracy, "achieved": result.budget_achieved}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--candidate", action="append", default=[], help='name=JSON sampler overrides ({} = the default)')
    p.add_argument("--streams", nargs="+", default=list(PANEL), help="panel names, or .csv / .jsonl files")
    p.add_argument("--target", help="the label column of the --streams files")
    p.add_argument("--positive-class", help="the files' positive class (default: none)")
    p.add_argument("--shuffle", action="store_true", help="each seed replays the bundled datasets and files in its own order")
    p.add_argument("--budgets", nargs="+", type=float, default=[0.01, 0.05, 0.1, 0.2])
    p.add_argument("--delays", nargs="+", type=int, default=[0, 500])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--events", type=int, default=None, help="events per stream (default: the simulator's)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json")
    p.add_argument("--load", nargs="*", default=[], help="earlier --json results to merge (and skip)")
    args = p.parse_args(argv)
    candidates: dict[str, dict[str, Any] | None] = {"random": None}
    for spec in args.candidate or ["default={}"]:
        name, _, blob = spec.partition("=")
        candidates[name] = json.loads(blob or "{}")
    results: list[dict[str, Any]] = []
    for path in args.load:
        with open(path) as f:
            results.extend(json.load(f))
    done = {(r["stream"], r["candidate"], r["budget"], r["delay"], r["seed"]) for r in results}
    jobs = [(s, c, candidates[c], b, d, seed, args.events, args.target, args.positive_class, args.shuffle)
            for s, c, b, d, seed in itertools.product(args.streams, candidates, args.budgets, args.delays, range(args.seeds))
            if (s, c, b, d, seed) not in done]
    with ProcessPoolExecutor(args.workers) as pool:
        results.extend(pool.map(run, *zip(*jobs), chunksize=2) if jobs else [])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    report(results, [c for c in candidates if c != "random"], args)


def report(results: list[dict[str, Any]], candidates: list[str], args: argparse.Namespace) -> None:
    def mean(stream: str, cand: str, b: float, d: int) -> float:
        return statistics.fmean(r["accuracy"] for r in results if (r["stream"], r["candidate"], r["budget"], r["delay"]) == (stream, cand, b, d))

    for cand in candidates:
        below = []
        print(f"\n{cand} vs random (accuracy, mean of {args.seeds} seeds)")
        print("| stream | delay | " + " | ".join(f"{b:.0%}" for b in args.budgets) + " |")
        print("|---|---:|" + "---:|" * len(args.budgets))
        for stream, d in itertools.product(args.streams, args.delays):
            cells = []
            for b in args.budgets:
                ours, rnd = mean(stream, cand, b, d), mean(stream, "random", b, d)
                mark = "" if ours >= rnd - 1e-9 else " (-)"
                if mark:
                    below.append(f"{stream} {b:.0%} d{d}: {ours - rnd:+.3f}")
                cells.append(f"{ours:.3f} / {rnd:.3f}{mark}")
            print(f"| {stream} | {d} | " + " | ".join(cells) + " |")
        total = len(args.streams) * len(args.delays) * len(args.budgets)
        print(f"{cand}: below random in {len(below)} of {total} cells: " + "; ".join(below))


if __name__ == "__main__":
    main()
