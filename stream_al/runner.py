"""The Kafka runner: one thread, one poll loop, an ordered checkpoint protocol.

Each turn of the loop:

1. poll the control consumer (``label-requests`` then ``labels``, all partitions) and hand each
   record to the engine: requests are remembered, labels are learned at once, model controls
   (a background model started or swapped in after a drift) are applied in label-log order;
2. poll the events consumer (the group) for a bounded batch and, chunk by chunk of
   ``LABEL_CHECK_EVERY`` events (the control topics are looked at again between chunks), score the
   chunk's events together, decide each in order, and send label requests, predictions and dead
   letters;
3. publish what the drift monitor found: alerts to the ``drift`` topic, logs and metrics; model
   controls to the ``labels`` topic, where every replica (this one too) reads them back in order;
4. handle any rebalance the poll recorded (seek new partitions, resume them, re-split the budget);
5. expire old requests, refresh gauges, and checkpoint when due.

**Checkpoint protocol** (every ``snapshots.interval_seconds``, every ``snapshots.every_labels``
labels, and on stop), in this order:

1. flush the producer and check every send since the last checkpoint. If any failed: write no
   snapshot, commit nothing, exit non-zero. The messages since the previous snapshot are then
   replayed by the next start, and their deterministic request ids absorb the duplicates.
2. write the snapshot atomically: engine state (model, sampler and budgets, open requests, answered
   window, waiting labels) and the next offset of every partition consumed (events, label requests,
   labels), all from the same instant, so state and positions always agree;
3. commit the snapshot's events offsets to the consumer group. This is advisory: on recovery each
   partition starts at the later of the snapshot's offset and the committed one (a later commit
   means another replica decided those events after a rebalance); the control topics always start
   at the snapshot's offsets, which is what applies every label exactly once.

Whenever the group assigns events partitions (on start too), the control topics are read to their
end before those partitions are resumed, and the requests already made for the events about to be
replayed (each request carries its event's partition and offset: made by this replica before a
crash, or by the partition's previous owner) are charged to the budget (``Engine.charge_replayed``).
A replay may pick other events than the first run did; charged first, it still stays within the
budget.

**Broker outages.** A probe thread asks the cluster for metadata every second. While it gets no
answer, ``/readyz`` says not ready, polls simply return nothing, and no checkpoint is attempted
(sends cannot be confirmed); the state stays in memory and the loop carries on when the broker is
back. An outage longer than ``kafka.max_outage_seconds`` ends the process with exit code 4 and no
snapshot; sends that expired during an outage fail the next checkpoint (exit code 2). Either way
the next start resumes from the last snapshot, and nothing is lost.

Every bad input (undecodable, wrong types, NaN, unknown class, orphan or duplicate label, output
too large for Kafka) goes to the dead-letter topic with its source position, stage and reason, and
is counted; nothing stops the loop but a stop signal, ``--max-events``, ``--idle-exit-seconds``, a
failed checkpoint or a long outage. Fault-injection tests kill the process at named points
(:mod:`stream_al.faults`).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from stream_al.config import Settings
from stream_al.engine import Engine, Outcome
from stream_al.faults import crash_point
from stream_al.kafka_io import BrokerProbe, DeliveryError, KafkaIO, MessageTooLarge, Partition
from stream_al.messages import Event, EventParser, InvalidInput, ModelControl, parse_label_log, parse_label_request
from stream_al.metrics import HealthServer, Metrics
from stream_al.snapshot import SnapshotStore

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 1
EXIT_CHECKPOINT_FAILED = 2
EXIT_BROKER_UNREACHABLE = 4
DEAD_LETTER_MAX_BYTES = 256 * 1024
LABEL_CHECK_EVERY = 250  # events processed between two looks at the labels topic
LOOP_GC_THRESHOLD = 10_000  # new containers between two young-generation collections while the loop runs (see run)


def snapshot_payload(engine: Engine, events_offsets: dict[Partition, int], control_offsets: dict[Partition, int]) -> dict[str, Any]:
    """What a snapshot holds: the engine's state and the next offset of every partition consumed."""
    return {
        "format": SNAPSHOT_FORMAT,
        "written_at": time.time(),
        "engine": engine.state(),
        "events_offsets": dict(events_offsets),
        "control_offsets": dict(control_offsets),
    }


@dataclass(frozen=True)
class RunLimits:
    """Ways for a run to end by itself (backfills, tests, benchmarks)."""

    max_events: int | None = None
    idle_exit_seconds: float | None = None


class Runner:
    """Drives an :class:`Engine` from Kafka. Call :meth:`run`; :meth:`stop` from any thread."""

    def __init__(self, settings: Settings, limits: RunLimits = RunLimits(), stats_path: Path | None = None):
        self.settings = settings
        self.limits = limits
        self.stats_path = stats_path
        self.metrics = Metrics()
        self.engine = Engine(settings)
        self.parser = EventParser(settings.input)
        for signal in self.engine.drift.states if self.engine.drift else ():
            self.metrics.drift_detected.labels(signal)  # every signal's series exists from the start, at 0
        key = settings.snapshots.key.get_secret_value().encode() if settings.snapshots.key else None
        self.store = SnapshotStore(settings.snapshots.dir, key=key, keep=settings.snapshots.keep)
        self.events_offsets: dict[Partition, int] = {}
        self.control_offsets: dict[Partition, int] = {}
        self._stop = threading.Event()
        self.events_this_run = 0
        self.update_latencies: deque[float] = deque(maxlen=100_000)
        self.dead_letters: dict[str, int] = {}
        self._first_batch_at: float | None = None
        self._last_batch_at = 0.0
        self._expired_reported = 0
        self._swaps_reported = self.engine.counters.model_swaps
        self.owns_partitions = False
        self.io: KafkaIO | None = None
        self.probe: BrokerProbe | None = None
        self.health: HealthServer | None = None
        self.broker_down_since: float | None = None

    def stop(self) -> None:
        self._stop.set()

    # -- start ----------------------------------------------------------------------------------

    def _recover(self) -> None:
        loaded = self.store.load_latest()
        if loaded is None:
            log.info("no snapshot in %s: starting a new model and replaying the label log", self.store.directory)
            return
        path, snapshot = loaded
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            raise RuntimeError(f"snapshot {path} has format {snapshot.get('format')}, this engine reads {SNAPSHOT_FORMAT}")
        for warning in self.engine.restore(snapshot["engine"]):
            log.warning(warning)
        self._swaps_reported = self.engine.counters.model_swaps
        self.events_offsets = dict(snapshot["events_offsets"])
        self.control_offsets = dict(snapshot["control_offsets"])
        log.info("resumed from %s: model version %d, %d open requests", path.name, self.engine.model_version, len(self.engine.pending))

    def run(self) -> int:
        """Run until stopped; returns the process exit code (0 clean, 2 failed checkpoint)."""
        cfg = self.settings
        self._recover()
        if cfg.metrics.enabled:
            self.health = HealthServer(self.metrics, cfg.metrics.host, cfg.metrics.port).start()
            log.info("metrics and health on http://%s:%d/metrics", cfg.metrics.host, self.health.port)
        self.io = KafkaIO(cfg, self.control_offsets)
        self.probe = BrokerProbe(cfg.kafka, on_change=self._on_broker_change).start()
        # Everything built so far (modules, the model, the clients) lives as long as the loop, so the
        # cyclic garbage collector need not walk it again on every full collection: measured in the
        # throughput benchmark, full collections took 590 ms per 100k events (8 of ~74 ms), 80 after.
        gc.freeze()
        # A poll's records and their events are alive while a chunk is processed, so CPython's
        # default first threshold (700 new containers) collects in the middle of every chunk and
        # promotes what it finds, which the older generations then walk again. Nearly everything the
        # loop allocates is freed by reference counting, so a threshold of 10,000 collects ~1% as
        # often: GC took 275-355 ms per 200k events in the throughput benchmark, 36-90 ms after.
        thresholds = gc.get_threshold()
        gc.set_threshold(LOOP_GC_THRESHOLD, *thresholds[1:])
        try:
            code = self._loop()
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()  # back to normal for a caller that goes on (tests run several engines in one process)
            self.probe.stop()
            if self.health:
                self.health.live = False
                self.health.set_ready(False, "stopped")
            self.io.close()
            self._write_stats()
            if self.health:
                self.health.stop()
        return code

    # -- the loop -------------------------------------------------------------------------------

    def _loop(self) -> int:
        cfg = self.settings
        io = self.io
        assert io is not None
        max_records = cfg.kafka.max_poll_records
        last_activity = last_tick = last_checkpoint = time.monotonic()
        labels_at_checkpoint = self.engine.counters.labels_applied
        started = time.monotonic()
        while not self._stop.is_set():
            control = io.poll_control(0)
            if control:
                self._process_control(control)
            budget = max_records
            if self.limits.max_events is not None:
                budget = min(budget, self.limits.max_events - self.events_this_run)
            records = io.poll_events(0 if control else 20, budget) if budget > 0 else []
            for start in range(0, len(records), LABEL_CHECK_EVERY):
                if start:  # labels wait at most one chunk of events, not a whole poll batch
                    more = io.poll_control(0)
                    if more:
                        self._process_control(more)
                        control = control or more
                    crash_point("mid_batch")
                self._process_events(records[start : start + LABEL_CHECK_EVERY])
            if self.engine.drift_alerts or self.engine.outbox:
                self._publish_drift()
            self._handle_rebalance()
            now = time.monotonic()
            if records or control or not self.owns_partitions:
                last_activity = now  # idleness counts only once the group has given us partitions
            if now - last_tick >= 0.5:
                last_tick = now
                self._tick()
            if not self._broker_reachable():
                if self.probe.seconds_unreachable() > cfg.kafka.max_outage_seconds:  # type: ignore[union-attr]
                    log.error(
                        "broker unreachable for %.0f s, more than kafka.max_outage_seconds (%.0f s): exiting without a "
                        "snapshot; the next start resumes from the last one (%s)",
                        self.probe.seconds_unreachable(), cfg.kafka.max_outage_seconds, self.probe.last_error,  # type: ignore[union-attr]
                    )
                    return EXIT_BROKER_UNREACHABLE
                continue  # no checkpoint while sends cannot be confirmed; the state stays in memory
            labels = self.engine.counters.labels_applied
            if now - last_checkpoint >= cfg.snapshots.interval_seconds or labels - labels_at_checkpoint >= cfg.snapshots.every_labels:
                if not self._checkpoint():
                    return EXIT_CHECKPOINT_FAILED
                last_checkpoint, labels_at_checkpoint = now, labels
            if self.limits.max_events is not None and self.events_this_run >= self.limits.max_events:
                log.info("processed --max-events %d events", self.limits.max_events)
                break
            if self.limits.idle_exit_seconds is not None and now - last_activity >= self.limits.idle_exit_seconds:
                log.info("nothing to consume for %.1f s: exiting (--idle-exit-seconds)", self.limits.idle_exit_seconds)
                break
        elapsed = time.monotonic() - started
        log.info("stopping after %d events in %.1f s: final checkpoint", self.events_this_run, elapsed)
        if self.health:
            self.health.set_ready(False, "stopping")
        self._tick()
        return 0 if self._checkpoint(final=True) else EXIT_CHECKPOINT_FAILED

    def _on_broker_change(self, reachable: bool, detail: str) -> None:
        """From the probe's thread: readiness follows the broker even while the loop is blocked."""
        if self.health and not reachable:
            self.health.set_ready(False, f"broker unreachable: {detail}")

    def _broker_reachable(self) -> bool:
        """Track outages for readiness and logs; True while the broker answers the probe."""
        down_for = self.probe.seconds_unreachable() if self.probe else 0.0
        if down_for == 0.0:
            if self.broker_down_since is not None:
                log.warning("broker reachable again after %.1f s", time.monotonic() - self.broker_down_since)
                self.broker_down_since = None
            return True
        if self.broker_down_since is None:  # readiness already follows the probe (_on_broker_change, _tick)
            self.broker_down_since = time.monotonic() - down_for
            log.warning("broker unreachable (%s): no checkpoints until it is back", self.probe.last_error)  # type: ignore[union-attr]
        return False

    def _process_events(self, records: list[Any]) -> None:
        """Parse a chunk of records, score and decide them together, then send their outputs in order.

        The engine scores the whole chunk at once (:meth:`Engine.on_events`); no label is learned
        inside a chunk, so that is what scoring them one by one would give.
        """
        started = time.perf_counter()
        now = time.time()
        parse = self.parser.parse
        offsets = self.events_offsets
        parsed: list[Any] = []
        events: list[Event] = []
        for record in records:
            offsets[(record.topic, record.partition)] = record.offset + 1
            try:
                events.append(parse(record.value, record.topic, record.partition, record.offset))
            except InvalidInput as exc:
                self._dead_letter(record, "decode_event", exc.reason, exc.detail)
                continue
            parsed.append(record)
        decisions = self.engine.on_events(events, now) if events else []
        send_request = self.io.send_request  # type: ignore[union-attr]
        send_prediction = self.io.send_prediction  # type: ignore[union-attr]
        predictions = self.settings.topics.predictions
        dumps = orjson.dumps
        for record, decision in zip(parsed, decisions):
            request = decision.request
            try:
                if request is not None:
                    send_request(request.to_json(), request.request_id.encode())
                    self.metrics.label_requests.labels(request.reason).inc()
                if predictions:
                    value = dumps({
                        "schema_version": 1, "event_id": decision.event_id, "predicted": decision.predicted,
                        "scores": decision.scores, "model_version": decision.model_version, "queried": request is not None,
                    })
                    send_prediction(value, record.partition)
            except MessageTooLarge as exc:
                self._dead_letter(record, "send_output", "too_large", str(exc))
        self.io.end_batch()  # type: ignore[union-attr]
        self.events_this_run += len(records)
        self.metrics.events.inc(len(records))
        self._last_batch_at = time.perf_counter()
        self.metrics.batch_seconds.observe(self._last_batch_at - started)
        if self._first_batch_at is None:
            self._first_batch_at = started

    def _process_control(self, records: list[Any]) -> None:
        now = time.time()
        engine = self.engine
        requests_topic = self.settings.topics.label_requests
        for record in records:
            self.control_offsets[(record.topic, record.partition)] = record.offset + 1
            try:
                if record.topic == requests_topic:
                    # Keyed by request id (DESIGN §2): most are this engine's own, already known.
                    if record.key is not None and engine.on_known_request(record.key.decode("utf-8", "replace")):
                        continue
                    outcomes = engine.on_request(parse_label_request(record.value), now)
                else:
                    message = parse_label_log(record.value)
                    if isinstance(message, ModelControl):
                        self._apply_control(message)
                        continue
                    outcomes = [engine.on_label(message, now, ref=record)]
            except InvalidInput as exc:
                self._dead_letter(record, "decode_" + ("request" if record.topic == requests_topic else "label"), exc.reason, exc.detail)
                continue
            for outcome in outcomes:
                self._account(outcome)
                if outcome.status == "applied":
                    crash_point("label")

    def _apply_control(self, control: ModelControl) -> None:
        result = self.engine.on_control(control)
        log.info("model control %s %s (signal %s, from %s): %s", control.control, control.control_id, control.signal, control.issued_by, result)

    def _publish_drift(self) -> None:
        """Send the drift monitor's alerts and model controls (step 3 of the loop)."""
        engine, topics, io = self.engine, self.settings.topics, self.io
        assert io is not None
        while engine.drift_alerts:
            alert = engine.drift_alerts.popleft()
            log.warning(
                "drift monitor: %s on %s (statistic %.1f, reference %.4f) after %d events and %d labels",
                alert.level, alert.signal, alert.statistic, alert.reference, alert.events, alert.labels,
            )
            if alert.level == "drift":
                self.metrics.drift_detected.labels(alert.signal).inc()
            if topics.drift:
                body = {"schema_version": 1, **asdict(alert), "detected_at": time.time(), "replica": self.settings.kafka.client_id,
                        "model_version": engine.model_version}
                io.send(topics.drift, orjson.dumps(body), alert.signal.encode())
        while engine.outbox:
            control = engine.outbox.popleft()
            io.send(topics.labels, control.model_dump_json().encode(), control.control_id.encode())
            log.info("asked every replica for %s (signal %s) through the label log", control.control, control.signal)

    def _account(self, outcome: Outcome) -> None:
        m = self.metrics
        if outcome.status == "applied":
            kind = "correction" if outcome.correction else ("answer" if outcome.label_latency is not None else "late_ground_truth")
            m.labels_applied.labels(kind).inc()
            if outcome.label_latency is not None:
                m.label_latency.observe(outcome.label_latency)
            if outcome.ref is not None and outcome.ref.timestamp and outcome.ref.timestamp > 0:
                delay = max(0.0, time.time() - outcome.ref.timestamp / 1000.0)
                m.label_to_update.observe(delay)
                self.update_latencies.append(delay)
        elif outcome.status == "rejected":
            m.labels_rejected.labels(outcome.reason).inc()
            if outcome.ref is not None:
                self._dead_letter(outcome.ref, "apply_label", outcome.reason or "rejected", outcome.detail or "")

    def _dead_letter(self, record: Any, stage: str, reason: str, detail: str) -> None:
        headers = [
            ("source_topic", record.topic.encode()),
            ("partition", str(record.partition).encode()),
            ("offset", str(record.offset).encode()),
            ("stage", stage.encode()),
            ("reason", reason.encode()),
            ("error", detail[:1000].encode()),
        ]
        value = record.value or b""
        if len(value) > DEAD_LETTER_MAX_BYTES:  # the dead letter itself must fit in a Kafka message
            headers.append(("truncated_from", str(len(value)).encode()))
            value = value[:DEAD_LETTER_MAX_BYTES]
        self.io.send(self.settings.topics.dead_letters, value, record.key, headers)  # type: ignore[union-attr]
        self.metrics.dead_letters.labels(reason).inc()
        self.dead_letters[reason] = self.dead_letters.get(reason, 0) + 1
        log.debug("dead letter %s:%d:%d %s: %s", record.topic, record.partition, record.offset, reason, detail)

    def _handle_rebalance(self) -> None:
        io = self.io
        assert io is not None
        revoked, assigned = io.take_rebalance()
        if not (revoked or assigned):
            return
        if assigned:
            self._catch_up_control()
        charged = 0
        for partition in sorted(assigned):
            snapshot_offset = self.events_offsets.get(partition)
            committed = io.committed(partition)
            use_snapshot = snapshot_offset is not None and (committed is None or snapshot_offset > committed)
            seek = snapshot_offset if use_snapshot else None  # None: the committed offset, else auto_offset_reset
            resume = seek if seek is not None else committed
            if resume is None and self.settings.kafka.auto_offset_reset == "earliest":
                resume = 0
            if resume is not None:
                charged += self.engine.charge_replayed(partition[1], resume)
            io.seek_and_resume(partition, seek)
        if charged:
            self.metrics.replayed_requests_charged.inc(charged)
            log.info("charged the budget %d labels for requests already made for events to be replayed", charged)
        owned = io.owned_events_partitions()
        share = len(owned) / max(1, io.events_partition_count)
        self.engine.set_budget_share(share)
        self.metrics.owned_partitions.set(len(owned))
        self.owns_partitions = bool(owned)
        self._tick()  # readiness follows the new assignment at once
        log.info("events partitions: revoked %s, assigned %s; budget share %.2f", sorted(revoked), sorted(assigned), share)

    def _catch_up_control(self) -> None:
        """Read the label requests and labels to their end before events partitions are resumed, so
        that every request already made for an event about to be replayed is known and charged
        (:meth:`Engine.charge_replayed`). Bounded by the request timeout: a request read later is
        not charged, and its event's replay may ask again. Half the poll interval at most: the
        events consumer is not polled meanwhile, and the group would drop a member silent longer."""
        io = self.io
        assert io is not None
        kafka = self.settings.kafka
        wait = min(kafka.request_timeout_ms, kafka.max_poll_interval_ms / 2) / 1000
        deadline = time.monotonic() + wait
        while not io.control_caught_up():
            if time.monotonic() > deadline:
                log.warning("label requests and labels not read to their end within %.0f s: resuming the events anyway", wait)
                return
            records = io.poll_control(100)
            if records:
                self._process_control(records)

    def _tick(self) -> None:
        now = time.time()
        for outcome in self.engine.tick(now):
            self._account(outcome)
        m, engine = self.metrics, self.engine
        expired_total = engine.counters.expired
        m.requests_expired.inc(expired_total - self._expired_reported)
        self._expired_reported = expired_total
        swaps = engine.counters.model_swaps
        if swaps > self._swaps_reported:
            log.warning("the background model is live now (model swap %d, model version %d)", swaps, engine.model_version)
            m.model_swaps.inc(swaps - self._swaps_reported)
            self._swaps_reported = swaps
        m.pending_requests.set(len(engine.pending))
        m.budget_used_ratio.set(engine.budget_used_ratio())
        m.model_version.set(engine.model_version)
        if engine.drift is not None:
            for signal, level in engine.drift.states.items():
                m.drift_state.labels(signal).set(level)
            accuracy = engine.drift.audit_accuracy
            if accuracy is not None:
                m.audit_accuracy.set(accuracy)
        m.background_model_labels.set(engine.background_labels)  # 0 whenever no background model trains
        if self.health:
            owned = self.io.owned_events_partitions() if self.io else set()
            down_for = self.probe.seconds_unreachable() if self.probe else 0.0
            if down_for > 0:
                self.health.set_ready(False, f"broker unreachable for {down_for:.0f} s: {self.probe.last_error}")  # type: ignore[union-attr]
            elif owned:
                self.health.set_ready(True, f"owns {len(owned)} events partition(s)")
            else:
                self.health.set_ready(False, "waiting for an events partition assignment")

    def _checkpoint(self, final: bool = False) -> bool:
        """The checkpoint protocol of the module docstring. False: the process must exit non-zero.

        A periodic checkpoint whose sends are merely not acknowledged yet is skipped (the broker is
        slow or away; they may still succeed); the final one waits for them up to the delivery timeout.
        """
        io = self.io
        assert io is not None
        kafka = self.settings.kafka
        timeout = (kafka.delivery_timeout_ms if final else kafka.request_timeout_ms) / 1000
        try:
            flushed = io.flush_and_check(timeout=timeout)
        except DeliveryError as exc:
            log.error("checkpoint aborted, no snapshot written, nothing committed: %s", exc)
            return False
        if not flushed:
            if final:
                log.error("checkpoint aborted: sends still unacknowledged after %.0f s; no snapshot written", timeout)
                return False
            log.warning("checkpoint skipped: sends not acknowledged within %.0f s", timeout)
            return True
        crash_point("before_snapshot")
        path = self.store.write(snapshot_payload(self.engine, self.events_offsets, self.control_offsets))
        self.metrics.snapshots.inc()
        crash_point("after_snapshot")
        try:
            io.commit_events(self.events_offsets)
        except Exception as exc:  # advisory: the snapshot already holds the offsets
            log.warning("events offsets not committed (the snapshot %s still has them): %s", path.name, exc)
        return True

    # -- report ---------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        c = self.engine.counters
        latencies = sorted(self.update_latencies)

        def quantile(q: float) -> float | None:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None

        busy = self._last_batch_at - self._first_batch_at if self._first_batch_at is not None else 0.0
        return {
            "events": c.events,
            "events_this_run": self.events_this_run,
            "events_per_second": self.events_this_run / busy if busy > 0 else None,
            "label_requests": c.requests,
            "replayed_requests_charged": c.replayed_requests_charged,  # made before a crash or by a previous owner
            "labels_applied": c.labels_applied,
            "corrections": c.corrections,
            "late_ground_truth": c.late_ground_truth,
            "labels_rejected": dict(c.labels_rejected),
            "requests_expired": c.expired,
            "dead_letters": dict(self.dead_letters),
            "pending_requests": len(self.engine.pending),
            "model_version": self.engine.model_version,
            "drift_detections": dict(self.engine.drift.detections) if self.engine.drift else {},
            "model_swaps": c.model_swaps,
            "budget_used_ratio": self.engine.budget_used_ratio(),
            "label_to_update_seconds": {"p50": quantile(0.5), "p99": quantile(0.99), "count": len(latencies)},
        }

    def _write_stats(self) -> None:
        if self.stats_path is not None:
            self.stats_path.parent.mkdir(parents=True, exist_ok=True)
            self.stats_path.write_bytes(orjson.dumps(self.stats(), option=orjson.OPT_INDENT_2))
