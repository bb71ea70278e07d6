"""Everything that talks to Kafka (the only module that imports ``kafka``).

Three clients, all used from the runner's single poll thread:

- the **events consumer** joins the consumer group, so replicas share the events partitions;
- the **control consumer** is assigned every partition of ``label-requests`` and ``labels`` (no
  group), so every replica sees every request and every label (DESIGN §3);
- one **producer** writes label requests, predictions and dead letters; every send's outcome is
  checked at the next checkpoint.

Partitions cross this boundary as ``(topic, partition)`` tuples, records as kafka-python
``ConsumerRecord`` objects (``topic``, ``partition``, ``offset``, ``key``, ``value``, ``headers``,
``timestamp`` in ms).

kafka-python 3.x runs rebalance callbacks on its IO thread, where ``commit`` and ``position``
raise; the listener here only pauses newly assigned partitions and records what happened. The
runner takes the record with :meth:`KafkaIO.take_rebalance` after each poll, seeks, and resumes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Iterable

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata

from stream_al.config import KafkaSettings, Settings, TopicSettings

log = logging.getLogger(__name__)

Partition = tuple[str, int]


class DeliveryError(RuntimeError):
    """A message the producer could not deliver: the checkpoint must not go ahead."""


class TopicsMissing(RuntimeError):
    """Topics the engine needs do not exist."""


def client_config(kafka: KafkaSettings) -> dict[str, Any]:
    """Connection and security settings shared by every kafka-python client (secrets unwrapped here only)."""
    config: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
        "request_timeout_ms": kafka.request_timeout_ms,
    }
    if kafka.sasl_mechanism:
        config["sasl_mechanism"] = kafka.sasl_mechanism
        config["sasl_plain_username"] = kafka.sasl_username
        config["sasl_plain_password"] = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        config["ssl_check_hostname"] = kafka.ssl_check_hostname
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(kafka, name)
            if value is not None:
                config[name] = str(value)
        if kafka.ssl_password is not None:
            config["ssl_password"] = kafka.ssl_password.get_secret_value()
    return config


def _tp(partition: Partition) -> TopicPartition:
    return TopicPartition(*partition)


class _RecordRebalance(ConsumerRebalanceListener):
    """Runs on kafka-python's IO thread: pause new partitions and record; the poll thread acts."""

    def __init__(self, io: KafkaIO):
        self.io = io

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        with self.io._rebalance_lock:
            self.io._revoked.update((tp.topic, tp.partition) for tp in revoked)

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = list(assigned)
        if assigned:
            self.io.events_consumer.pause(*assigned)  # no record flows until the poll thread has sought
        with self.io._rebalance_lock:
            self.io._assigned.update((tp.topic, tp.partition) for tp in assigned)


class KafkaIO:
    """The engine's Kafka clients."""

    def __init__(self, settings: Settings, control_offsets: dict[Partition, int] | None = None):
        self.settings = settings
        self.topics = settings.topics
        kafka = settings.kafka
        base = client_config(kafka)
        consumer_common = {
            **base,
            "enable_auto_commit": False,
            "max_poll_records": kafka.max_poll_records,
            "metrics_enabled": False,  # kafka-python's own metrics cost ~10% of a core at full speed
            "fetch_max_bytes": 50 * 1024 * 1024,
            "max_partition_fetch_bytes": 8 * 1024 * 1024,
        }
        self._rebalance_lock = threading.Lock()
        self._revoked: set[Partition] = set()
        self._assigned: set[Partition] = set()
        self._send_errors: list[str] = []
        self._lock_errors = threading.Lock()
        # Idempotence off: kafka-python 3.0 hangs every later send once an idempotent batch expires
        # in a long outage. Duplicates from retries are harmless here: request ids dedupe.
        self.producer = KafkaProducer(
            **base, acks="all", enable_idempotence=False, linger_ms=kafka.producer_linger_ms,
            batch_size=512 * 1024, metrics_enabled=False,
        )
        self.control_consumer = KafkaConsumer(**consumer_common, group_id=None, fetch_max_wait_ms=20)
        self.control_partitions = self._partitions_of([self.topics.label_requests, self.topics.labels])
        self.control_consumer.assign([_tp(p) for p in self.control_partitions])
        offsets = control_offsets or {}
        for partition in self.control_partitions:
            if partition in offsets:
                self.control_consumer.seek(_tp(partition), offsets[partition])
            else:
                # No snapshot for this partition: replay the whole label log (that rebuilds the model).
                self.control_consumer.seek_to_beginning(_tp(partition))
        self.events_consumer = KafkaConsumer(
            **consumer_common, group_id=kafka.group_id, auto_offset_reset=kafka.auto_offset_reset,
            session_timeout_ms=kafka.session_timeout_ms, heartbeat_interval_ms=max(1000, kafka.session_timeout_ms // 3),
            fetch_max_wait_ms=100,
        )
        self.events_partition_count = len(self._partitions_of([self.topics.events]))
        self.predictions_partition_count = len(self._partitions_of([self.topics.predictions])) if self.topics.predictions else 0
        self.events_consumer.subscribe([self.topics.events], listener=_RecordRebalance(self))

    def _partitions_of(self, topics: list[str]) -> list[Partition]:
        found, missing = [], []
        for topic in topics:
            ids = self.control_consumer.partitions_for_topic(topic)
            if not ids:
                missing.append(topic)
            found.extend((topic, p) for p in sorted(ids or ()))
        if missing:
            raise TopicsMissing(f"topics {missing} do not exist on {self.settings.kafka.bootstrap_servers}: run `stream-al topics create`")
        return found

    # -- consuming ------------------------------------------------------------------------------

    def poll_events(self, timeout_ms: int, max_records: int) -> list[Any]:
        batches = self.events_consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        if len(batches) == 1:
            return next(iter(batches.values()))
        return [record for records in batches.values() for record in records]

    def poll_control(self, timeout_ms: int = 0) -> list[Any]:
        """Label requests first, then labels, so a label's request read in the same poll is known."""
        batches = self.control_consumer.poll(timeout_ms=timeout_ms, max_records=5000)
        if not batches:
            return []
        requests_topic = self.topics.label_requests
        ordered = sorted(batches.items(), key=lambda item: item[0].topic != requests_topic)
        return [record for _, records in ordered for record in records]

    def take_rebalance(self) -> tuple[set[Partition], set[Partition]]:
        """What the group changed since the last call: (revoked, newly assigned and paused)."""
        with self._rebalance_lock:
            revoked, assigned = self._revoked, self._assigned
            self._revoked, self._assigned = set(), set()
        return revoked, assigned

    def owned_events_partitions(self) -> set[Partition]:
        return {(tp.topic, tp.partition) for tp in self.events_consumer.assignment()}

    def committed(self, partition: Partition) -> int | None:
        return self.events_consumer.committed(_tp(partition))

    def seek_and_resume(self, partition: Partition, offset: int | None) -> None:
        if offset is not None:
            self.events_consumer.seek(_tp(partition), offset)
        self.events_consumer.resume(_tp(partition))

    def commit_events(self, offsets: dict[Partition, int]) -> None:
        """Commit events offsets to the group (advisory: the snapshot's offsets win on recovery)."""
        owned = self.owned_events_partitions()
        commit = {_tp(p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items() if p in owned}
        if commit:
            self.events_consumer.commit(commit)

    # -- producing ------------------------------------------------------------------------------

    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None) -> None:
        self.producer.send(topic, value=value, key=key, headers=headers).add_errback(self._record_send_error, topic)

    def send_prediction(self, value: bytes, source_partition: int) -> None:
        """Predictions go to the partition of their event: no key hashing, and per-partition order kept."""
        partition = source_partition % self.predictions_partition_count
        self.producer.send(self.topics.predictions, value=value, partition=partition).add_errback(self._record_send_error, "predictions")

    def _record_send_error(self, exc: BaseException, topic: str) -> None:
        with self._lock_errors:
            self._send_errors.append(f"{topic}: {exc!r}")

    def flush_and_check(self, timeout: float) -> None:
        """Wait for every send; raise :class:`DeliveryError` if any failed (checkpoint step 1)."""
        try:
            self.producer.flush(timeout=timeout)
        except KafkaError as exc:
            raise DeliveryError(f"producer flush failed: {exc!r}") from exc
        with self._lock_errors:
            errors, self._send_errors = self._send_errors, []
        if errors:
            raise DeliveryError(f"{len(errors)} message(s) not delivered, first: {errors[0]}")

    def close(self) -> None:
        for client in (self.events_consumer, self.control_consumer):
            try:
                client.close()
            except Exception:  # closing after a broker loss must not mask the real error
                log.debug("closing consumer failed", exc_info=True)
        try:
            self.producer.close(timeout=5)
        except Exception:
            log.debug("closing producer failed", exc_info=True)


# -- topics -------------------------------------------------------------------------------------


def topic_specs(topics: TopicSettings) -> dict[str, int]:
    """Topic name → partitions. ``labels`` has one partition so the label log has one total order."""
    specs = {
        topics.events: topics.events_partitions,
        topics.label_requests: topics.label_requests_partitions,
        topics.labels: 1,
        topics.dead_letters: 1,
    }
    if topics.predictions:
        specs[topics.predictions] = topics.events_partitions
    return specs


def create_topics(settings: Settings) -> dict[str, str]:
    """Create the engine's topics; returns topic → 'created' | 'exists'."""
    admin = KafkaAdminClient(**client_config(settings.kafka))
    try:
        existing = set(admin.list_topics())
        result = {}
        for name, partitions in topic_specs(settings.topics).items():
            if name in existing:
                result[name] = "exists"
                continue
            try:
                admin.create_topics([NewTopic(name, partitions, settings.topics.replication_factor)])
                result[name] = "created"
            except TopicAlreadyExistsError:
                result[name] = "exists"
        return result
    finally:
        admin.close()


def check_topics(settings: Settings) -> dict[str, str]:
    """topic → 'ok (N partitions)' or what is wrong."""
    consumer = KafkaConsumer(**client_config(settings.kafka), metrics_enabled=False)
    try:
        report = {}
        for name, wanted in topic_specs(settings.topics).items():
            partitions = consumer.partitions_for_topic(name)
            if not partitions:
                report[name] = "missing"
            elif name == settings.topics.labels and len(partitions) != 1:
                report[name] = f"has {len(partitions)} partitions: labels need 1 for a total order"
            else:
                report[name] = f"ok ({len(partitions)} partitions)"
        return report
    finally:
        consumer.close()


class RecordProducer:
    """A plain producer for tools around the engine (demo producer, analysts, benchmarks, tests)."""

    def __init__(self, kafka: KafkaSettings, **overrides: Any):
        self.producer = KafkaProducer(**{**client_config(kafka), "linger_ms": 5, "metrics_enabled": False, **overrides})

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.producer.send(topic, value=value, key=key)

    def deliver(self, topic: str, messages: list[tuple[bytes | None, bytes]], timeout: float = 10.0) -> list[str | None]:
        """Send ``(key, value)`` messages and wait for each: ``None`` where delivered, else the error."""
        futures = [self.producer.send(topic, value=value, key=key) for key, value in messages]
        try:
            self.producer.flush(timeout=timeout)
        except KafkaError as exc:
            log.warning("flush failed: %r", exc)
        results: list[str | None] = []
        for future in futures:
            try:
                future.get(timeout=0.1)
                results.append(None)
            except Exception as exc:  # KafkaError or a timeout: the caller keeps the message for a retry
                results.append(repr(exc))
        return results

    def flush(self) -> None:
        self.producer.flush()

    def close(self) -> None:
        self.producer.close(timeout=5)


class TopicReader:
    """Reads whole topics from a position, without a group (demo analysts, benchmarks, tests)."""

    def __init__(
        self, kafka: KafkaSettings, topics: list[str], from_beginning: bool = True,
        start_offsets: dict[Partition, int] | None = None, **overrides: Any,
    ):
        self.consumer = KafkaConsumer(
            **{**client_config(kafka), "enable_auto_commit": False, "metrics_enabled": False, "fetch_max_wait_ms": 50, **overrides}
        )
        missing = [t for t in topics if not self.consumer.partitions_for_topic(t)]
        if missing:
            self.consumer.close()
            raise TopicsMissing(f"topics {missing} do not exist on {kafka.bootstrap_servers}: run `stream-al topics create`")
        partitions = [TopicPartition(t, p) for t in topics for p in sorted(self.consumer.partitions_for_topic(t) or ())]
        self.partitions = partitions
        self.consumer.assign(partitions)
        offsets = start_offsets or {}
        rest = [tp for tp in partitions if (tp.topic, tp.partition) not in offsets]
        for tp in partitions:
            if (tp.topic, tp.partition) in offsets:
                self.consumer.seek(tp, offsets[(tp.topic, tp.partition)])
        if rest:
            if from_beginning:
                self.consumer.seek_to_beginning(*rest)
            else:
                self.consumer.seek_to_end(*rest)

    def end_offsets(self) -> dict[Partition, int]:
        """The next offset to be written in every assigned partition (the "caught up" mark)."""
        return {(tp.topic, tp.partition): offset for tp, offset in self.consumer.end_offsets(self.partitions).items()}

    def position(self, partition: Partition) -> int:
        return self.consumer.position(_tp(partition))

    def poll(self, timeout_ms: int = 100, max_records: int = 5000) -> list[Any]:
        batches = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        return [record for records in batches.values() for record in records]

    def close(self) -> None:
        self.consumer.close()
