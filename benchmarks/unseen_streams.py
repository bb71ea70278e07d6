"""The default strategy against random on streams the peer panel never used.

The panel (``peers.py``, ``default_vs_random.py``) is what the default was developed on; this is the
check that it was not fitted to it: River's bundled ImageSegments (7 classes, 2310 events, shuffled)
and four generators outside the panel, written once per seed as CSV files and read back through
``stream_al.simulate.load_stream`` (the simulator's file path, as a user's own data would be):

- ``rbfdrift``: RandomRBFDrift, 2 classes, 8 features, 10 of 20 centroids moving (gradual drift);
- ``waveform``: Waveform, 3 classes, 21 noisy features;
- ``mixed``: Mixed, its classification function flipped half-way (every label inverts);
- ``stagger``: STAGGER, three concepts one after the other (two abrupt drifts).

Budgets 5% and 10%, label delay 0 and 500 events, prequential accuracy; per cell the default and
random (mean over seeds) and the paired difference ± its standard error.

    .venv/bin/python benchmarks/unseen_streams.py --seeds 6        # ~20 s
"""

from __future__ import annotations

import argparse
import csv
import itertools
import statistics
from pathlib import Path
from typing import Any, Callable, Iterable

from river import datasets
from river.datasets import synth

from stream_al.config import Settings
from stream_al.simulate import LabelDelay, SimOptions, load_stream, random_settings, simulate

EVENTS = 3000


def _stagger(seed: int) -> Iterable[tuple[dict, Any]]:
    parts = [synth.STAGGER(classification_function=f, seed=seed + f) for f in (0, 1, 2)]
    return itertools.chain(*(itertools.islice(p, EVENTS // 3 + 1) for p in parts))


def _mixed(seed: int) -> Iterable[tuple[dict, Any]]:
    first = itertools.islice(synth.Mixed(seed=seed, classification_function=0), EVENTS // 2)
    return itertools.chain(first, synth.Mixed(seed=seed + 1, classification_function=1))


STREAMS: dict[str, Callable[[int], Iterable[tuple[dict, Any]]]] = {
    "segment": lambda seed: datasets.ImageSegments(),  # one fixed order: seeds vary the samplers only
    "rbfdrift": lambda seed: synth.RandomRBFDrift(seed_model=seed, seed_sample=seed + 100, n_classes=2, n_features=8,
                                                  n_centroids=20, change_speed=0.001, n_drift_centroids=10),
    "waveform": lambda seed: synth.Waveform(seed=seed),
    "mixed": _mixed,
    "stagger": _stagger,
}


def write_csv(path: Path, rows: Iterable[tuple[dict, Any]]) -> None:
    rows = list(itertools.islice(rows, EVENTS))
    names = sorted(rows[0][0])
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow([*names, "label"])
        for x, y in rows:
            out.writerow([float(x[n]) for n in names] + [str(y)])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--streams", nargs="+", default=list(STREAMS))
    p.add_argument("--budgets", nargs="+", type=float, default=[0.05, 0.1])
    p.add_argument("--delays", nargs="+", type=int, default=[0, 500])
    p.add_argument("--dir", type=Path, default=Path("/tmp/stream-al-unseen"), help="where the CSV files are written")
    args = p.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    acc: dict[tuple[str, float, int], dict[str, dict[int, float]]] = {}
    for name in args.streams:
        for seed in range(args.seeds):
            path = args.dir / f"{name}-{seed}.csv"
            if not path.exists():
                write_csv(path, STREAMS[name](seed))
            stream = load_stream(str(path), target="label")
            for budget, delay in itertools.product(args.budgets, args.delays):
                settings = Settings(classes=list(stream.classes), seed=seed, budget={"fraction": budget, "clock": "event"})
                for candidate, s in (("default", settings), ("random", random_settings(settings)[0])):
                    result = simulate(stream, s, SimOptions(delay=LabelDelay("events", delay)))
                    acc.setdefault((name, budget, delay), {}).setdefault(candidate, {})[seed] = result.accuracy
    print(f"default / random, mean of {args.seeds} seeds (paired difference ± standard error)\n")
    print("| stream | delay | " + " | ".join(f"{b:.0%}" for b in args.budgets) + " |")
    print("|---|---:|" + "---:|" * len(args.budgets))
    below = []
    for name, delay in itertools.product(args.streams, args.delays):
        cells = []
        for budget in args.budgets:
            runs = acc[(name, budget, delay)]
            diffs = [runs["default"][s] - runs["random"][s] for s in runs["default"]]
            mean = statistics.fmean(diffs)
            se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0
            if mean < 0:
                below.append(f"{name} {budget:.0%} d{delay}: {mean:+.3f}{' (> 2 SE)' if mean < -2 * se else ''}")
            cells.append(f"{statistics.fmean(runs['default'].values()):.3f} / {statistics.fmean(runs['random'].values()):.3f}"
                         f" ({mean:+.3f} ± {se:.3f})")
        print(f"| {name} | {delay} | " + " | ".join(cells) + " |")
    print(f"\nbelow random in {len(below)} of {len(acc)} cells: " + "; ".join(below))


if __name__ == "__main__":
    main()
