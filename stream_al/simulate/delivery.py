"""When (and whether) the answer to a label request reaches the engine: label delay and analysts.

Two models compose:

- :class:`LabelDelay` — the earliest moment the label can be known after the request: ``events``
  (exactly ``d`` events later: a label asked at event ``i`` is learned after event ``i + d`` is
  scored, so event ``i + d + 1`` is the first one predicted with it), ``seconds`` (fixed), or
  ``exponential`` (seconds, drawn per request from ``hash(seed, request id)``, so deterministic).
- :class:`AnalystPool` — ``analysts`` people each answering ``answers_per_hour``: requests queue
  (``fifo`` or ``priority``: the most uncertain first), an analyst takes the next one when free and
  answers ``3600 / answers_per_hour`` seconds later. A request whose ``expires_at`` passed before
  an analyst got to it is dropped: it gets no label.

A label is delivered when both hold: the delay has elapsed and (with a pool) an analyst has answered.

>>> delay = LabelDelay("events", 2)
>>> channel = Delivery(delay, None, seed=0)
>>> channel.submit("rq-a", "yes", index=0, now=0.0, expires_at=99.0, priority=0.5)
>>> [channel.due(i, float(i)) for i in range(4)]
[[], [], [Answer(request_id='rq-a', label='yes', index=0, created_at=0.0)], []]
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
from dataclasses import dataclass
from typing import Literal

DelayKind = Literal["events", "seconds", "exponential"]


@dataclass(frozen=True, slots=True)
class LabelDelay:
    """How long after its request a label can be known (``amount`` events or seconds; mean for exponential)."""

    kind: DelayKind = "events"
    amount: float = 0.0

    def __post_init__(self) -> None:
        if self.amount < 0 or not math.isfinite(self.amount):
            raise ValueError("label delay must be a finite number >= 0")

    def due(self, request_id: str, index: int, now: float, seed: int) -> float:
        """The event index (``events``) or time (otherwise) from which the label is known."""
        if self.kind == "events":
            return index + int(self.amount)
        if self.kind == "seconds":
            return now + self.amount
        return now - self.amount * math.log1p(-_uniform(seed, request_id))

    @property
    def in_events(self) -> bool:
        return self.kind == "events"


def _uniform(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from (seed, key): replays draw the same delays.

    >>> _uniform(0, "rq-1") == _uniform(0, "rq-1") != _uniform(1, "rq-1")
    True
    """
    digest = hashlib.blake2b(f"delay:{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


@dataclass(frozen=True, slots=True)
class AnalystPool:
    """``analysts`` people answering ``answers_per_hour`` each, taking requests in ``order``."""

    analysts: int = 1
    answers_per_hour: float = 60.0
    order: Literal["fifo", "priority"] = "fifo"

    def __post_init__(self) -> None:
        if self.analysts < 1 or not self.answers_per_hour > 0:
            raise ValueError("analysts must be >= 1 and answers_per_hour > 0")

    @property
    def service_seconds(self) -> float:
        return 3600.0 / self.answers_per_hour


@dataclass(frozen=True, slots=True)
class Answer:
    """A label delivered to the engine: the request it answers and when that request was made."""

    request_id: str
    label: str
    index: int
    created_at: float


class Delivery:
    """Holds requests until their labels are due, per a :class:`LabelDelay` and an optional :class:`AnalystPool`."""

    def __init__(self, delay: LabelDelay, pool: AnalystPool | None, seed: int = 0):
        self.delay = delay
        self.pool = pool
        self.seed = seed
        self._order = itertools.count()
        # Requests waiting for an analyst: (sort key, tiebreak, answer, expires_at).
        self._queue: list[tuple[float, int, Answer, float]] = []
        self._free_at = [0.0] * pool.analysts if pool else []  # a heap of the time each analyst is next free
        # Answered (or no pool), waiting for the delay: (due, tiebreak, answer, answered_at).
        self._waiting: list[tuple[float, int, Answer, float]] = []
        self.expired = 0
        self.answered = 0

    def submit(self, request_id: str, label: str, index: int, now: float, expires_at: float, priority: float) -> None:
        """A request was made at event ``index``, time ``now``; ``label`` is what the analyst will say."""
        answer = Answer(request_id, label, index, now)
        if self.pool is None:
            self._wait(answer, now)
            return
        key = -priority if self.pool.order == "priority" else float(next(self._order))
        heapq.heappush(self._queue, (key, next(self._order), answer, expires_at))

    def _wait(self, answer: Answer, answered_at: float) -> None:
        due = self.delay.due(answer.request_id, answer.index, answer.created_at, self.seed)
        heapq.heappush(self._waiting, (due, next(self._order), answer, answered_at))

    def _work(self, now: float) -> None:
        """Analysts free by ``now`` take queued requests; expired ones are dropped unanswered."""
        pool = self.pool
        assert pool is not None
        while self._queue and self._free_at[0] <= now:
            _, _, answer, expires_at = heapq.heappop(self._queue)
            start = max(self._free_at[0], answer.created_at)
            if start >= expires_at:
                self.expired += 1
                continue
            heapq.heapreplace(self._free_at, start + pool.service_seconds)
            self.answered += 1
            self._wait(answer, start + pool.service_seconds)

    def due(self, index: int, now: float) -> list[Answer]:
        """The labels known once event ``index`` (at time ``now``) has been scored, in due order."""
        if self.pool is not None:
            self._work(now)
        clock = index if self.delay.in_events else now
        out: list[Answer] = []
        held: list[tuple[float, int, Answer, float]] = []
        while self._waiting and self._waiting[0][0] <= clock:
            item = heapq.heappop(self._waiting)
            if item[3] <= now:
                out.append(item[2])
            else:
                held.append(item)  # the delay is over but the analyst is still working on it
        for item in held:
            heapq.heappush(self._waiting, item)
        return out

    def open(self) -> int:
        """Requests not yet delivered (queued, being answered or delayed)."""
        return len(self._queue) + len(self._waiting)
