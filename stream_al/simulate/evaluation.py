"""Prequential metrics the simulator reports beside River's: average precision, window spend, latency.

River has no streaming average precision, so the simulator stores every event's positive-class score
and computes AP at the end with :func:`average_precision` (numpy; the same step-wise definition as
scikit-learn's ``average_precision_score``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def average_precision(y_true: Sequence[bool], scores: Sequence[float]) -> float | None:
    """Area under the precision-recall curve as a step function (sum over thresholds of ΔR · P).

    Ties in score form one threshold. None when there is no positive.

    >>> average_precision([True, False, True, False], [0.9, 0.8, 0.7, 0.1])
    0.8333333333333333
    >>> average_precision([False, False], [0.2, 0.1]) is None
    True
    """
    y = np.asarray(y_true, dtype=bool)
    s = np.asarray(scores, dtype=float)
    positives = int(y.sum())
    if positives == 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # index of the last event at each threshold
    tp = np.cumsum(y)[last_of_tie]
    predicted = last_of_tie + 1
    precision = tp / predicted
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def worst_window(indices: Sequence[int], window: int) -> int:
    """The most requests made within any ``window`` consecutive events (``indices`` ascending).

    >>> worst_window([0, 1, 2, 10, 11], 3), worst_window([0, 5, 10], 5), worst_window([], 4)
    (3, 1, 0)
    """
    best = 0
    start = 0
    for end, index in enumerate(indices):
        while index - indices[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def window_bound(fraction: float, burst: float | None, window: int) -> float:
    """The most labels a fraction budget allows in ``window`` events: ``burst + fraction * window``.

    ``burst`` is the configured ``budget.fraction_burst`` (default 10, at least ``1 + fraction``),
    as :class:`stream_al.sampling.FractionBudget` states.

    >>> window_bound(0.05, None, 200)
    20.0
    """
    cap = max(1.0 + fraction, burst if burst is not None else 10.0)
    return cap + fraction * window


def summary_stats(values: Sequence[float]) -> dict[str, float | None]:
    """Mean and median (None when empty).

    >>> summary_stats([1.0, 2.0, 6.0])
    {'mean': 3.0, 'median': 2.0}
    """
    if not values:
        return {"mean": None, "median": None}
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "median": float(np.median(array))}


def window_size(fraction: float) -> int:
    """The window over which spend is checked: ``10 / fraction`` events.

    >>> window_size(0.05), window_size(0.3)
    (200, 34)
    """
    return max(1, math.ceil(10.0 / fraction - 1e-9))
