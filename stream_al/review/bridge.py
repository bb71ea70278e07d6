"""The review app's link to Kafka: a thread that fills the queue and delivers the answers.

Each turn of its loop:

1. read ``label-requests`` (every partition, manual assignment, no consumer group) into the store;
2. read ``labels`` (the same way): answers made here are recognised by their ``answer_id``; labels
   from elsewhere (other tools, or this app's own labels replayed into an empty database) are
   recorded, so the queue never offers an item that is already answered;
3. deliver the outbox (answers waiting for the ``labels`` topic) and mark each delivered row; a
   failed send stays in the outbox and is retried on the next turn, so no answer is lost;
4. sweep: expire abandoned claims and old requests.

Positions are stored with the effect of each record in one SQLite transaction, so a restart
resumes exactly; an empty database replays both topics from the beginning (the rebuild). Requests
are read before labels on every turn, and while catching up all requests are read before any label,
so a label finds its request. Bad messages are logged and counted, never fatal.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable

import orjson

from stream_al.config import Settings
from stream_al.engine import request_id_for
from stream_al.kafka_io import RecordProducer, TopicReader
from stream_al.messages import InvalidInput, LabelRequest, ModelControl, canonical_label, parse_label_log, parse_label_request
from stream_al.review.metrics import ReviewMetrics
from stream_al.review.store import ReviewStore

log = logging.getLogger(__name__)

EARLY_LABELS = 10_000  # labels read before their request (a race between two partitions), kept in memory


class KafkaBridge:
    """Consumes requests and labels into the store and produces answers, on a thread of its own."""

    def __init__(
        self, settings: Settings, store: ReviewStore, metrics: ReviewMetrics,
        clock: Callable[[], float] = time.time, sweep_every: float = 0.5,
        accept: Callable[[LabelRequest], bool] | None = None,
    ):
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.sweep_every = sweep_every
        self.accept = accept  # which requests this queue serves (all by default; the demo keeps a share)
        self.stop_event = threading.Event()
        self.caught_up = threading.Event()
        self.error: str | None = None
        self._early: OrderedDict[str, tuple[Any, ...]] = OrderedDict()
        self._thread = threading.Thread(target=self._main, name="review-kafka-bridge", daemon=True)

    def start(self) -> KafkaBridge:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _main(self) -> None:
        try:
            self._run()
        except Exception as exc:  # the app keeps serving what it has; /readyz says why it is not ready
            self.error = repr(exc)
            log.exception("review bridge stopped")

    def _run(self) -> None:
        topics, kafka = self.settings.topics, self.settings.kafka
        offsets = self.store.offsets()
        if not offsets:
            log.info("review store is empty: rebuilding it from %s and %s", topics.label_requests, topics.labels)
        client = {"client_id": f"{kafka.client_id}-review"}
        requests = TopicReader(kafka, [topics.label_requests], start_offsets=offsets, **client)
        labels = TopicReader(kafka, [topics.labels], start_offsets=offsets, **client)
        producer = RecordProducer(kafka, client_id=f"{kafka.client_id}-review", acks="all")
        try:
            requests_done = labels_done = False
            last_sweep = 0.0
            while not self.stop_event.is_set():
                for record in requests.poll(timeout_ms=100 if requests_done else 200):
                    self.on_request_record(record)
                if not requests_done:
                    requests_done = requests.caught_up()
                if requests_done:  # a label after its request, also while rebuilding
                    for record in labels.poll(timeout_ms=0 if not labels_done else 50):
                        self.on_label_record(record)
                    if not labels_done:
                        labels_done = labels.caught_up()
                        if labels_done:
                            self.caught_up.set()
                            log.info("review queue caught up: %s", self.store.totals(self.clock()))
                self.deliver(producer)
                now = self.clock()
                if now - last_sweep >= self.sweep_every:
                    last_sweep = now
                    self.sweep(now)
        finally:
            self.deliver(producer)
            for closable in (requests, labels, producer):
                try:
                    closable.close()
                except Exception:
                    log.debug("closing a Kafka client failed", exc_info=True)

    # -- records (public so tests can drive them without a broker) -------------------------------

    def on_request_record(self, record: Any) -> None:
        position = (record.topic, record.partition, record.offset)
        try:
            request = parse_label_request(record.value)
        except InvalidInput as exc:
            self.metrics.bad_messages.labels(exc.reason).inc()
            log.warning("bad label request at %s:%d:%d skipped: %s", *position, exc.detail)
            self.store.skip_record(position)
            return
        if self.accept is not None and not self.accept(request):
            self.store.skip_record(position)
            return
        if self.store.add_request(request, self.clock(), position):
            self.metrics.requests.inc()
            early = self._early.pop(request.request_id, None)
            if early is not None:
                self.store.add_topic_label(*early, now=self.clock())

    def on_label_record(self, record: Any) -> None:
        position = (record.topic, record.partition, record.offset)
        try:
            label = parse_label_log(record.value)
            if isinstance(label, ModelControl):  # the engines' model changes share the label log
                self.store.skip_record(position)
                return
            value = canonical_label(label.label)
            extra = orjson.loads(record.value)
        except InvalidInput as exc:  # the engine dead-letters it; here it only does not count
            self.metrics.bad_messages.labels("invalid_label").inc()
            log.debug("unusable label at %s:%d:%d: %s", *position, exc.detail)
            self.store.skip_record(position)
            return
        rid = label.request_id or request_id_for(label.event_id)  # type: ignore[arg-type]
        answer_id = extra.get("answer_id") if isinstance(extra.get("answer_id"), str) else None
        note = extra.get("note") if isinstance(extra.get("note"), str) else None
        args = (rid, value, label.annotator, label.labeled_at, answer_id, note)
        outcome = self.store.add_topic_label(*args, now=self.clock(), position=position)
        if outcome == "unmatched" and not label.features:
            self._early[rid] = args  # late ground truth (with features) is the engine's business, not the queue's
            while len(self._early) > EARLY_LABELS:
                self._early.popitem(last=False)

    # -- outbox and time -------------------------------------------------------------------------

    def deliver(self, producer: RecordProducer) -> int:
        """Produce waiting answers to ``labels`` (key = request id); returns how many were delivered."""
        pending = self.store.pending_labels()
        if not pending:
            return 0
        errors = producer.deliver(self.settings.topics.labels, [(rid.encode(), payload) for _, rid, payload in pending])
        self.store.mark_sent([(seq, error) for (seq, _, _), error in zip(pending, errors)], self.clock())
        failed = sum(e is not None for e in errors)
        if failed:
            self.metrics.produce_errors.inc(failed)
            log.warning("%d label(s) not delivered, retrying: %s", failed, next(e for e in errors if e))
        self.metrics.labels_produced.inc(len(errors) - failed)
        return len(errors) - failed

    def sweep(self, now: float) -> None:
        result = self.store.sweep(now)
        if result.claims_abandoned:
            self.metrics.claims_abandoned.inc(result.claims_abandoned)
        if result.items_expired:
            self.metrics.expired.inc(result.items_expired)
