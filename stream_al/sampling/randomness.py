"""Replayable randomness: every random draw is a function of (seed, event id), never of a sequence.

A replayed stream (after a crash, on another replica) therefore makes the same random decisions.
"""

from __future__ import annotations

import hashlib
from typing import Any
from statistics import NormalDist

_STANDARD_NORMAL = NormalDist()


# Keyed BLAKE2b per seed, copied per draw: the key schedule is paid once (half the cost of a draw).
_HASHERS: dict[int, Any] = {}


def hash_uniform(seed: int, key: str) -> float:
    """A uniform number in [0, 1) that depends only on (seed, key) (keyed BLAKE2b, 64 bits).

    >>> hash_uniform(0, "e1") == hash_uniform(0, "e1") != hash_uniform(1, "e1")
    True
    """
    hasher = _HASHERS.get(seed)
    if hasher is None:
        hasher = _HASHERS[seed] = hashlib.blake2b(digest_size=8, key=seed.to_bytes(8, "little", signed=True))
    h = hasher.copy()
    h.update(key.encode())
    return int.from_bytes(h.digest(), "little") / 18446744073709551616.0


def hash_normal(seed: int, key: str) -> float:
    """A standard normal number that depends only on (seed, key) (inverse CDF of :func:`hash_uniform`).

    >>> round(hash_normal(0, "e1"), 6) == round(hash_normal(0, "e1"), 6)
    True
    """
    u = hash_uniform(seed, key)
    return _STANDARD_NORMAL.inv_cdf(min(max(u, 1e-12), 1.0 - 1e-12))
