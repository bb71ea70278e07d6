"""Prometheus series of the review app, on the engine's conventions (:mod:`stream_al.metrics`).

One registry of its own, the prefix ``stream_al_review_``, ``_total`` counters, seconds, and the
human-latency buckets (1 s to a day). Gauges read the store when scraped, so they are never stale.
"""

from __future__ import annotations

import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from stream_al.metrics import HUMAN_LATENCY_BUCKETS, PREFIX

REVIEW_PREFIX = f"{PREFIX}_review"


class ReviewMetrics:
    """Every series the review app exports."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = REVIEW_PREFIX
        self.queue_depth = Gauge(f"{p}_queue_depth", "Open items waiting for an answer.", registry=r)
        self.open_claims = Gauge(f"{p}_open_claims", "Items claimed by an analyst right now.", registry=r)
        self.outbox_backlog = Gauge(f"{p}_outbox_backlog", "Answers not yet delivered to the labels topic.", registry=r)
        self.requests = Counter(f"{p}_requests_total", "Label requests taken into the queue.", registry=r)
        self.bad_messages = Counter(f"{p}_bad_messages_total", "Unusable messages read from the topics, by reason.", ["reason"], registry=r)
        self.answers = Counter(f"{p}_answers_total", "Answers given, by kind (label, cant_tell, agreement).", ["kind"], registry=r)
        self.amendments = Counter(f"{p}_amendments_total", "Answers undone or amended.", registry=r)
        self.skips = Counter(f"{p}_skips_total", "Items skipped back to the queue.", registry=r)
        self.claims = Counter(f"{p}_claims_total", "Items claimed.", registry=r)
        self.claims_abandoned = Counter(f"{p}_claims_abandoned_total", "Claims that expired without an answer.", registry=r)
        self.expired = Counter(f"{p}_expired_total", "Items whose request expired unanswered.", registry=r)
        self.labels_produced = Counter(f"{p}_labels_produced_total", "Training labels delivered to the labels topic.", registry=r)
        self.produce_errors = Counter(f"{p}_produce_errors_total", "Failed deliveries to the labels topic (retried).", registry=r)
        self.answer_latency = Histogram(
            f"{p}_answer_latency_seconds", "Time from label request to the analyst's answer.",
            buckets=HUMAN_LATENCY_BUCKETS, registry=r,
        )
        self.time_to_answer = Histogram(
            f"{p}_time_to_answer_seconds", "Time from opening (claiming) an item to answering it.",
            buckets=HUMAN_LATENCY_BUCKETS, registry=r,
        )
        for kind in ("label", "cant_tell", "agreement"):
            self.answers.labels(kind)
        for reason in ("invalid_request", "invalid_label"):
            self.bad_messages.labels(reason)

    def watch(self, totals: Callable[[float], dict[str, int]], backlog: Callable[[], int]) -> None:
        """Read the gauges from the store at scrape time."""
        self.queue_depth.set_function(lambda: totals(time.time())["queue_depth"])
        self.open_claims.set_function(lambda: totals(time.time())["open_claims"])
        self.outbox_backlog.set_function(backlog)

    def render(self) -> bytes:
        return generate_latest(self.registry)
