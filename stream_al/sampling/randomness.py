"""Replayable randomness: every random draw is a function of (seed, event id), never of a sequence.

A replayed stream (after a crash, on another replica) therefore makes the same random decisions.
"""

from __future__ import annotations

import hashlib
import zlib
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


# hash_bernoulli's screen passes this many times p: BLAKE2b runs on 8 p of the keys.
SCREEN = 8.0
_MASK = 0xFFFFFFFF


def screen_seed(seed: int) -> int:
    """The 32-bit seed of :func:`hash_bernoulli`'s screen."""
    return _fmix32(seed & _MASK ^ (seed >> 32) & _MASK ^ 0x9E3779B9)


def screen_value(start: int, key: str) -> int:
    """The screen's 32-bit draw: CRC-32 of the key (fast, but linear in the key), xor the mixed
    seed, through a multiplicative hash (a multiply is not linear over xor), so the screens of two
    seeds are as good as independent (``tests/unit/test_sampling.py`` checks the joint rate)."""
    return ((zlib.crc32(key.encode()) ^ start) * 0x9E3779B97F4A7C15 >> 32) & _MASK


def _fmix32(x: int) -> int:
    x = ((x ^ (x >> 16)) * 0x85EBCA6B) & _MASK
    x = ((x ^ (x >> 13)) * 0xC2B2AE35) & _MASK
    return x ^ (x >> 16)


def hash_bernoulli(seed: int, key: str, p: float) -> bool:
    """True with probability ``p``, a function of (seed, key) only: the distribution of
    ``hash_uniform(seed, key) < p`` at a third of its cost when ``p`` is small.

    A two-stage lottery: a cheap 32-bit hash (:func:`screen_value`) passes ``8 p`` of the keys and
    the keyed BLAKE2b keeps an eighth of those. The final draw is the keyed hash's, so which keys
    win depends on nothing but (seed, key), and two seeds draw independently.

    >>> hash_bernoulli(0, "e1", 0.3) == hash_bernoulli(0, "e1", 0.3)
    True
    >>> sum(hash_bernoulli(5, f"e{i}", 0.01) for i in range(100_000)) in range(900, 1100)
    True
    """
    screen = SCREEN * p
    if screen >= 1.0:
        return hash_uniform(seed, key) < p
    return screen_value(screen_seed(seed), key) < screen * 4294967296.0 and hash_uniform(seed, key) < 1.0 / SCREEN
