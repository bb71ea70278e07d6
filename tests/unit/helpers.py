"""Synthetic streams and small drivers shared by the unit tests."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

BINARY = ("legit", "fraud")
THREE = ("low", "mid", "high")

# Well separated Gaussian blobs (plus a pure-noise feature): every model must learn these.
BINARY_CENTERS = {"legit": (-1.5, -1.5), "fraud": (1.5, 1.5)}
THREE_CENTERS = {"low": (0.0, 0.0), "mid": (4.0, 0.0), "high": (0.0, 4.0)}


def blobs(seed: int, centers: dict[str, tuple[float, float]], n: int, std: float = 0.6) -> Iterator[tuple[dict[str, float], str]]:
    rng = random.Random(seed)
    labels = sorted(centers)
    for _ in range(n):
        label = rng.choice(labels)
        cx, cy = centers[label]
        yield {"x1": rng.gauss(cx, std), "x2": rng.gauss(cy, std), "noise": rng.uniform(-1.0, 1.0)}, label


def linear_stream(seed: int, n: int) -> Iterator[tuple[dict[str, float], str]]:
    """A noiseless, linearly separable binary stream with an oblique boundary (about 40% fraud)."""
    rng = random.Random(seed)
    for _ in range(n):
        x1, x2 = rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0)
        yield {"x1": x1, "x2": x2}, ("fraud" if x1 + 0.5 * x2 > 0.2 else "legit")


def argmax(scores: dict[str, float]) -> str | None:
    return max(scores, key=scores.__getitem__) if scores else None


def worst_excess(spent: list[bool], clock: list[float], rate: float) -> float:
    """max over event ranges [i, j] of spent(i..j) - rate * (clock_j - clock_i)."""
    best_start = math.inf  # min over i <= j of S_{i-1} - rate * clock_i
    s_before = 0
    worst = -math.inf
    for took, c in zip(spent, clock):
        best_start = min(best_start, s_before - rate * c)
        s_before += took
        worst = max(worst, s_before - rate * c - best_start)
    return worst
