"""A synthetic card-payment stream: rare fraud, and a fraud pattern that changes half-way.

Before the drift, fraud is large foreign card-present payments at risky merchants; after it,
fraud is many small online payments from new cards in quick succession. A model that stops
learning at the drift keeps flagging the old pattern and misses the new one.

>>> stream = FraudStream(seed=1, drift_at=500)
>>> events = [stream.next() for _ in range(1000)]
>>> sorted(events[0][0]["features"])[:3]
['amount', 'card_age_days', 'distance_km']
>>> 0.01 < sum(label == "fraud" for _, label in events) / 1000 < 0.08
True
"""

from __future__ import annotations

import math
import random
import time
from typing import Any


class FraudStream:
    """Yields ``(event, label)``; events follow the default input mapping ``{id, ts, features}``."""

    def __init__(self, seed: int = 0, drift_at: int | None = None, fraud_rate: float = 0.03):
        self.rng = random.Random(seed)
        self.drift_at = drift_at
        self.fraud_rate = fraud_rate
        self.count = 0

    @property
    def drifted(self) -> bool:
        return self.drift_at is not None and self.count > self.drift_at

    def next(self) -> tuple[dict[str, Any], str]:
        rng = self.rng
        self.count += 1
        fraud = rng.random() < self.fraud_rate
        features = {
            "amount": round(math.exp(rng.gauss(3.5, 1.0)), 2),
            "hour": rng.randrange(24),
            "merchant_risk": round(rng.betavariate(2, 8), 4),
            "distance_km": round(rng.expovariate(1 / 20), 2),
            "velocity_1h": rng.randrange(4),
            "card_age_days": rng.randrange(30, 3000),
            "foreign": rng.random() < 0.1,
            "online": rng.random() < 0.4,
        }
        if fraud and not self.drifted:
            features["amount"] = round(math.exp(rng.gauss(6.0, 0.7)), 2)
            features["merchant_risk"] = round(rng.betavariate(6, 3), 4)
            features["distance_km"] = round(rng.expovariate(1 / 800), 2)
            features["foreign"] = rng.random() < 0.8
            features["online"] = rng.random() < 0.2
        elif fraud:
            features["amount"] = round(math.exp(rng.gauss(2.0, 0.5)), 2)
            features["velocity_1h"] = rng.randrange(6, 20)
            features["card_age_days"] = rng.randrange(0, 20)
            features["online"] = rng.random() < 0.95
        event = {"id": f"tx-{self.count:08d}", "ts": round(time.time(), 3), "features": features}
        return event, "fraud" if fraud else "legit"
