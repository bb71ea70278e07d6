"""Everything that talks to Kafka (the only module that imports ``kafka``).

The engine's clients, all driven from the runner's single poll thread:

- the **events consumer** joins the consumer group, so replicas share the events partitions;
- the **control consumer** is assigned every partition of ``label-requests`` and ``labels`` (no
  group), so every replica sees every request and every label (DESIGN §3). Both decode record
  batches with :class:`_FastPartitionRecords` (half kafka-python's cost per record);
- the **output writer**, a subprocess (``python -m stream_al.kafka_io``), writes label requests
  and predictions; one **producer** in the engine writes the rest (dead letters, drift alerts,
  model controls). Every send's outcome, in both, is checked at the next checkpoint;
- the **broker probe**, a thread of its own, tells the loop whether the cluster answers.

Tools around the engine (demo, review app, rebuild, tests) use :class:`RecordProducer` and
:class:`TopicReader`.

Partitions cross this boundary as ``(topic, partition)`` tuples, records as kafka-python
``ConsumerRecord`` objects (``topic``, ``partition``, ``offset``, ``key``, ``value``, ``headers``,
``timestamp`` in ms).

kafka-python 3.x runs rebalance callbacks on its IO thread, where ``commit`` and ``position``
raise; the listener here only pauses newly assigned partitions and records what happened. The
runner takes the record with :meth:`KafkaIO.take_rebalance` after each poll, seeks, and resumes.
"""

from __future__ import annotations

import fcntl
import json
import logging
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CorruptRecordError, KafkaError, KafkaTimeoutError, MessageSizeTooLargeError, TopicAlreadyExistsError
from kafka.protocol.consumer import IsolationLevel
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder
from kafka.record.util import decode_varint, encode_varint
from kafka.structs import OffsetAndMetadata

from stream_al.config import KafkaSettings, Settings, TopicSettings

log = logging.getLogger(__name__)

Partition = tuple[str, int]


class DeliveryError(RuntimeError):
    """A message the producer could not deliver: the checkpoint must not go ahead."""


class MessageTooLarge(ValueError):
    """A message over the producer's size limit: refused at once, before any send."""


class BrokerProbe:
    """Asks the cluster for its metadata every ``interval`` seconds from a thread of its own.

    Consumers and the producer ride out an outage silently (polls return nothing, sends wait), so
    the runner needs its own signal: ``seconds_unreachable()`` is 0 while the last probe answered.
    """

    def __init__(
        self, kafka: KafkaSettings, interval: float = 1.0, timeout_ms: int = 2000,
        on_change: Callable[[bool, str], None] | None = None,
    ):
        self._config = {**client_config(kafka), "request_timeout_ms": timeout_ms}
        self.interval = interval
        self.on_change = on_change
        self._reachable = True
        self.last_ok = time.monotonic()
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-al-broker-probe", daemon=True)

    def start(self) -> BrokerProbe:
        self._thread.start()
        return self

    def _run(self) -> None:
        admin = None
        while not self._stop.wait(self.interval):
            try:
                if admin is None:
                    admin = KafkaAdminClient(**self._config)
                admin.describe_cluster()
                self.last_ok = time.monotonic()
                self._report(True)
            except Exception as exc:  # any failure means "not reachable now"; the loop decides what to do
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.seconds_unreachable() > 0:
                    self._report(False)
                if admin is not None:
                    try:
                        admin.close()
                    except Exception:
                        pass
                    admin = None
        if admin is not None:
            admin.close()

    def _report(self, reachable: bool) -> None:
        if reachable != self._reachable:
            self._reachable = reachable
            if self.on_change is not None:
                self.on_change(reachable, self.last_error)

    def seconds_unreachable(self) -> float:
        elapsed = time.monotonic() - self.last_ok
        return 0.0 if elapsed < self.interval * 2 + 2.5 else elapsed

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


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


def _log_commit_failure(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):
        log.warning("events offsets not committed (the snapshot still has them): %r", response)


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


CONTROL_FETCH_WAIT_MS = 20
CONTROL_POLL_AT_LEAST_EVERY = 0.1  # seconds: bounds what a misread of kafka-python's fetch state can delay


def _fetch_state(consumer: KafkaConsumer) -> Any:
    """The consumer's fetcher when it has the kafka-python 3 fields :func:`_fetch_may_have_records`
    reads, else None (then every poll goes ahead)."""
    fetcher = getattr(consumer, "_fetcher", None)
    fields = ("_nodes_with_pending_fetch_requests", "_completed_fetches", "_next_partition_records", "_paused_completed_fetches")
    return fetcher if fetcher is not None and all(hasattr(fetcher, f) for f in fields) else None


def _fetch_may_have_records(fetcher: Any) -> bool:
    """False only when a poll would surely return nothing: a fetch is in flight and no response is
    waiting to be read. kafka-python's IO thread appends a response's data to ``_completed_fetches``
    *before* it clears the in-flight mark, and this reads the mark first, so a response that lands
    in between is seen now or at the next call, never missed."""
    if fetcher is None:
        return True
    in_flight = bool(fetcher._nodes_with_pending_fetch_requests)
    return not in_flight or bool(fetcher._completed_fetches or fetcher._next_partition_records or fetcher._paused_completed_fetches)


_FRAME = struct.Struct(">HI")  # a prediction in a batch: partition, length
_KEYED_FRAME = struct.Struct(">II")  # a label request in a batch: key length, value length
_MESSAGE = struct.Struct(">cI")  # engine -> writer: kind, length
_CONFIG, _PREDICTIONS, _REQUESTS, _FLUSH, _QUIT = b"C", b"B", b"R", b"F", b"Q"
_PIPE_BYTES = 1 << 20


def _zigzag_varint(value: int) -> bytes:
    """Kafka's record varint (zigzag, base 128), as kafka-python's ``encode_varint`` writes it."""
    out = bytearray()
    encode_varint(value, out.append)
    return bytes(out)


_VARINTS = [_zigzag_varint(i) for i in range(1 << 14)]  # record lengths, offset and time deltas


def _varint(value: int) -> bytes:
    return _VARINTS[value] if 0 <= value < 16384 else _zigzag_varint(value)


def _surely_sendable(producer: KafkaProducer) -> int:
    """Key plus value bytes below which no record can fail ``send``'s size check (a record's and
    a batch's own overhead is under 100 bytes); above it, kafka-python's estimate decides."""
    return producer.config["max_request_size"] - 1024


class _OutputProducer:
    """The writer process's producer: label requests through ``send`` (keyed: the default
    partitioner places them), predictions a partition's run of values at a time.

    ``KafkaProducer.send`` costs ~15 µs of CPU per record (checks, locks, a future per record, the
    record's encoding), and the writer sends one prediction per event on a small box where its CPU
    competes with the engine's. For each partition's run of predictions this
    writes the records straight into the open batch of the producer's record accumulator (under
    the accumulator's lock for that partition, as ``append`` does), ~1 µs each; when there is no
    open batch with room, the next value goes through ``accumulator.append``, which opens one. The
    encoding is checked once at start against kafka-python's own builder: a kafka-python whose
    internals differ gets plain ``send`` for every record.

    Delivery is confirmed per batch for the records written this way (one callback per batch, not
    a future per record), and :meth:`report` after a flush gives the failures, or says that fewer
    records were confirmed than written: kafka-python splits a batch the broker finds too large
    into batches this does not watch, so those records count as unconfirmed, the checkpoint fails
    and the events are replayed; nothing is lost unseen.
    """

    def __init__(self, producer: KafkaProducer, topic: str | None, requests_topic: str):
        self.producer, self.topic, self.requests_topic = producer, topic, requests_topic
        self.written = 0
        self.confirmed = 0
        self.errors: deque[str] = deque()  # appended on the producer's IO thread, taken by report()
        self._fast_written: dict[int, int] = {}  # id of a watched batch -> records this wrote into it
        self._accumulator = getattr(producer, "_accumulator", None)
        self._wakeup = getattr(getattr(producer, "_sender", None), "wakeup", None)
        self._targets: dict[int, TopicPartition] = {}
        if topic and self._accumulator is not None and callable(self._wakeup) and _fast_append_matches_kafka_python():
            try:
                partitions = producer.partitions_for(topic) or ()  # waits for the topic's metadata, as send would
            except KafkaError:  # no metadata yet: send waits for it again (and reports) per record
                partitions = ()
            self._targets = {p: TopicPartition(topic, p) for p in partitions}
        self._limit = _surely_sendable(producer)  # bigger ones go through send and its check

    def write_requests(self, records: list[tuple[bytes, bytes]]) -> None:
        """Send (key, value) records to the requests topic; the engine has checked their size."""
        for key, value in records:
            self.written += 1
            try:
                future = self.producer.send(self.requests_topic, value=value, key=key)
            except KafkaError as exc:  # reported at the next flush: that checkpoint fails, nothing is lost
                self._failed(exc)
                continue
            future.add_callback(self._record_confirmed)
            future.add_errback(self._failed)

    def write(self, values_by_partition: dict[int, list[bytes]]) -> None:
        """Write predictions, each list to its partition of the predictions topic, in order."""
        for partition, values in values_by_partition.items():
            tp = self._targets.get(partition)
            start = 0
            while start < len(values):
                if tp is not None:
                    start = self._append_run(tp, values, start)
                    if start == len(values):
                        break
                value = values[start]  # no open batch with room (or no fast path): this one opens one
                if tp is None or len(value) > self._limit:
                    future = self.producer.send(self.topic, value=value, partition=partition)
                else:
                    future = self._accumulator.append(tp, None, None, value, [])[0]  # type: ignore[union-attr]
                    self._wakeup()  # type: ignore[misc]
                self.written += 1
                future.add_callback(self._record_confirmed)
                future.add_errback(self._failed)
                start += 1

    def _append_run(self, tp: TopicPartition, values: list[bytes], start: int) -> int:
        """Append values[start:] to the partition's open batch while they fit; returns where it stopped."""
        accumulator = self._accumulator
        with accumulator._tp_lock(tp):  # type: ignore[union-attr]
            queue = accumulator._batches[tp]  # type: ignore[union-attr]
            if not queue or queue[-1].records._closed or queue[-1].records._builder._first_timestamp is None:
                return start
            batch = queue[-1]
            stop = _append_records(batch.records, values, start, self._limit)
            if stop > start:
                batch.last_append = time.monotonic()
                self.written += stop - start
                key = id(batch)
                if key not in self._fast_written:
                    self._fast_written[key] = 0
                    batch.produce_future.add_callback(self._batch_confirmed, key)
                    batch.produce_future.add_errback(self._failed)
                self._fast_written[key] += stop - start
        if stop < len(values):
            self._wakeup()  # type: ignore[misc]  # the batch is full: the sender may take it
        return stop

    # Called on the producer's IO thread; each counter has a single writer, so no lock is needed.
    def _batch_confirmed(self, key: int, result: tuple[Any, Any, Any]) -> None:
        written = self._fast_written.pop(key)
        record_exceptions = result[2]  # kafka-python completes a failed batch's future with this
        if record_exceptions is None:
            self.confirmed += written
        else:
            self.errors.append(repr(record_exceptions(0)))

    def _record_confirmed(self, _metadata: Any) -> None:
        self.confirmed += 1

    def _failed(self, exc: BaseException) -> None:
        self.errors.append(repr(exc))

    def report(self, flushed: bool) -> dict[str, Any]:
        """After a flush: the failures since the last report, and any record written but not confirmed."""
        errors = [self.errors.popleft() for _ in range(len(self.errors))]
        unconfirmed = self.written - self.confirmed
        if flushed and unconfirmed and not errors:
            errors.append(f"{unconfirmed} record(s) written but never confirmed by the broker")
        return {"flushed": flushed, "errors": errors[:5], "count": len(errors)}


def _append_records(records: Any, values: list[bytes], start: int, limit: int) -> int:
    """Encode values[start:] as records at the end of an open kafka-python batch, while they fit.

    What ``DefaultRecordBatchBuilder.append`` writes for a record with no key and no headers
    (length, attributes, timestamp delta, offset delta, key -1, value, 0 headers), and the batch's
    counters updated as it updates them; ``records`` is a ``MemoryRecordsBuilder``.
    """
    builder = records._builder
    buffer = builder._buffer
    room = builder._batch_size - len(buffer)
    now_ms = int(time.time() * 1000)
    delta = _varint(max(0, now_ms - builder._first_timestamp))
    first = offset = records._next_offset
    parts: list[bytes] = []
    varint = _varint
    for value in values[start:]:
        size = len(value)
        if size > limit:
            break
        body = b"".join((b"\x00", delta, varint(offset), b"\x01", varint(size), value, b"\x00"))
        record = varint(len(body)) + body
        room -= len(record)
        if room < 0:
            break
        parts.append(record)
        offset += 1
    count = offset - first
    if count:
        buffer.extend(b"".join(parts))
        builder._num_records += count
        builder._last_offset = offset - 1
        builder._max_timestamp = max(builder._max_timestamp, now_ms)
        records._next_offset = offset
    return start + count


def _fast_append_matches_kafka_python() -> bool:
    """Whether :func:`_append_records` writes exactly the batch kafka-python's own ``append`` writes."""
    try:
        values = [b"", b"x", b"y" * 300, b"z" * 20000]
        ours, theirs = MemoryRecordsBuilder(2, 0, 1 << 20), MemoryRecordsBuilder(2, 0, 1 << 20)
        ours.append(None, None, b"first", [])
        theirs.append(ours._builder._first_timestamp, None, b"first", [])
        if _append_records(ours, values, 0, 1 << 20) != len(values):
            return False
        for value in values:
            theirs.append(ours._builder._max_timestamp, None, value, [])
        ours.close()
        theirs.close()
        return bytes(ours.buffer()) == bytes(theirs.buffer())
    except Exception:  # noqa: BLE001 - any difference in the internals means: do not use them
        log.warning("kafka-python's record internals are not what the output writer expects: using send", exc_info=True)
        return False


def _output_writer_main() -> None:
    """The writer process (``python -m stream_al.kafka_io``): batches on stdin become records."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the engine, which stops us
    stdin, stdout = sys.stdin.buffer, sys.stdout
    writer: _OutputProducer | None = None
    while True:
        header = stdin.read(_MESSAGE.size)
        if len(header) < _MESSAGE.size:
            break  # the engine is gone: what it did not checkpoint is replayed from its last snapshot
        kind, length = _MESSAGE.unpack(header)
        payload = stdin.read(length)
        if len(payload) < length:
            break  # the engine died mid-message
        if kind == _CONFIG:
            config = json.loads(payload)
            topic, requests_topic = config.pop("topic"), config.pop("requests_topic")
            writer = _OutputProducer(KafkaProducer(**config), topic, requests_topic)
        elif kind == _REQUESTS:
            records: list[tuple[bytes, bytes]] = []
            offset = 0
            while offset < length:
                key_size, value_size = _KEYED_FRAME.unpack_from(payload, offset)
                offset += _KEYED_FRAME.size
                records.append((payload[offset : offset + key_size], payload[offset + key_size : offset + key_size + value_size]))
                offset += key_size + value_size
            writer.write_requests(records)  # type: ignore[union-attr]
        elif kind == _PREDICTIONS:
            by_partition: dict[int, list[bytes]] = {}
            view, offset = memoryview(payload), 0
            while offset < length:
                partition, size = _FRAME.unpack_from(view, offset)
                offset += _FRAME.size
                by_partition.setdefault(partition, []).append(payload[offset : offset + size])
                offset += size
            writer.write(by_partition)  # type: ignore[union-attr]
        else:  # flush (or quit): report what happened to every send so far
            try:
                writer.producer.flush(timeout=json.loads(payload)["timeout"])  # type: ignore[union-attr]
                flushed = True
            except KafkaTimeoutError:
                flushed = False
            stdout.write(json.dumps(writer.report(flushed)) + "\n")  # type: ignore[union-attr]
            stdout.flush()
            if kind == _QUIT:
                break
    if writer is not None:
        writer.producer.close(timeout=5)


def _write_all(stream: Any, data: bytes) -> None:
    """Write all of ``data`` to an unbuffered pipe. One ``write`` may write only part of a large
    buffer (a signal, or a debugger's ptrace stop, during a blocked write) and says so only in its
    return value: the rest would be lost and the reader's framing broken."""
    view = memoryview(data)
    while view:
        view = view[stream.write(view) :]


class OutputWriter:
    """Writes label requests and predictions from a process of its own.

    kafka-python spends ~15-30 µs of Python per produced record (its sender thread included), under
    the engine's GIL; one prediction per event made that the largest cost of the loop, and label
    requests (5% of events at the default budget) cost ~8% of the loop's time. The engine hands
    each batch to this process as framed buffers over a pipe (a full pipe blocks the engine:
    backpressure), and each checkpoint asks it to flush and report failed sends, so the checkpoint
    protocol covers these sends too. A plain subprocess, not multiprocessing: nothing of the caller
    is re-imported. Sizes are checked by the caller (:meth:`KafkaIO.send_request`), as ``send``
    would check them, so a message too large is refused at once and never reaches the writer.
    """

    def __init__(self, config: dict[str, Any], predictions_topic: str | None, prediction_partitions: int, requests_topic: str):
        self._process = subprocess.Popen(
            [sys.executable, "-m", "stream_al.kafka_io"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
        )
        self.prediction_partitions = prediction_partitions
        try:  # 1 MiB instead of 64 KiB: a writer not scheduled for a moment does not stop the loop
            fcntl.fcntl(self._process.stdin.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)  # type: ignore[union-attr]
        except (OSError, AttributeError):  # a lower pipe-max-size, or not Linux: the default size
            pass
        self._predictions: list[bytes] = []
        self._requests: list[bytes] = []
        self._broken: str | None = None
        # Settings go through the pipe, not argv or the environment: they may hold passwords.
        self._write(_CONFIG, json.dumps({**config, "topic": predictions_topic, "requests_topic": requests_topic}).encode())

    def _write(self, kind: bytes, payload: bytes) -> None:
        if self._broken is None:
            try:
                _write_all(self._process.stdin, _MESSAGE.pack(kind, len(payload)) + payload)
            except OSError as exc:
                self._broken = f"output writer process gone (exit code {self._process.poll()}): {exc!r}"

    def add_prediction(self, value: bytes, source_partition: int) -> None:
        self._predictions.append(_FRAME.pack(source_partition % self.prediction_partitions, len(value)))
        self._predictions.append(value)

    def add_request(self, value: bytes, key: bytes) -> None:
        self._requests.append(_KEYED_FRAME.pack(len(key), len(value)))
        self._requests.append(key)
        self._requests.append(value)

    def send_batch(self) -> None:
        if self._requests:
            self._write(_REQUESTS, b"".join(self._requests))
            self._requests.clear()
        if self._predictions:
            self._write(_PREDICTIONS, b"".join(self._predictions))
            self._predictions.clear()

    def _ask(self, kind: bytes, timeout: float) -> dict[str, Any] | None:
        self.send_batch()
        self._write(kind, json.dumps({"timeout": timeout}).encode())
        if self._broken is not None:
            raise DeliveryError(self._broken)
        ready, _, _ = select.select([self._process.stdout], [], [], timeout + 5)
        if not ready:
            return None
        line = self._process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            self._broken = f"output writer process gone (exit code {self._process.poll()})"
            raise DeliveryError(self._broken)
        return json.loads(line)

    def flush(self, timeout: float) -> bool:
        """Flush the writer; raises DeliveryError on failed sends, False if still unacknowledged."""
        report = self._ask(_FLUSH, timeout)
        if report is None:
            return False
        if report["count"]:
            raise DeliveryError(f"{report['count']} label request(s) or prediction(s) not delivered, first: {report['errors'][0]}")
        return report["flushed"]

    def close(self, timeout: float) -> None:
        try:
            self._ask(_QUIT, timeout)
        except DeliveryError:
            pass
        try:
            self._process.stdin.close()  # type: ignore[union-attr]
            self._process.wait(timeout + 5)
        except (OSError, subprocess.TimeoutExpired):
            self._process.kill()


# -- the events consumer's record decoding --------------------------------------------------------


def _varint_at(buffer: Any, pos: int) -> tuple[int, int]:
    """Kafka's zigzag varint at ``pos``: (value, next position); one and two bytes inline, as
    nearly every field of an event record is (kafka-python's ``decode_varint`` for the rest)."""
    first = buffer[pos]
    if first < 0x80:
        return (first >> 1) ^ -(first & 1), pos + 1
    second = buffer[pos + 1]
    if second < 0x80:
        raw = (first & 0x7F) | (second << 7)
        return (raw >> 1) ^ -(raw & 1), pos + 2
    return decode_varint(buffer, pos)


def _decode_batch(batch: Any, topic: str, partition: int) -> tuple[list[ConsumerRecord], int]:
    """Every record of a magic-2 batch as kafka-python's consumer returns it, and the records' bytes.

    The same checks as kafka-python's ``DefaultRecordBatch._read_msg``: each record's length, the
    header count, and no bytes left over.
    """
    batch._maybe_uncompress()
    buffer, pos = batch._buffer, batch._pos
    header = batch._header_data
    base_offset, first_timestamp, leader_epoch = header[0], header[7], header[2]
    timestamp_type = batch.timestamp_type
    append_time = header[8] if timestamp_type == batch.LOG_APPEND_TIME else None
    records: list[ConsumerRecord] = []
    new_record = tuple.__new__
    size = 0
    for _ in range(header[12]):
        length, pos = _varint_at(buffer, pos)
        start = pos
        # The one-byte cases of attributes (0), no key (-1) and no headers (0) are tested inline:
        # three function calls fewer per record.
        if buffer[pos] < 0x80:  # attributes, unused in format v2
            pos += 1
        else:
            _, pos = _varint_at(buffer, pos)
        timestamp_delta, pos = _varint_at(buffer, pos)
        offset_delta, pos = _varint_at(buffer, pos)
        if buffer[pos] == 0x01:
            key: bytes | None = None
            key_size = -1
            pos += 1
        else:
            key_size, pos = _varint_at(buffer, pos)
            if key_size >= 0:
                key = bytes(buffer[pos : pos + key_size])
                pos += key_size
            else:
                key, key_size = None, -1
        value_size, pos = _varint_at(buffer, pos)
        if value_size >= 0:
            value: bytes | None = bytes(buffer[pos : pos + value_size])
            pos += value_size
        else:
            value, value_size = None, -1
        headers: list[tuple[str, bytes | None]] = []
        header_size = -1
        if buffer[pos] == 0x00:
            pos += 1
        else:
            count, pos = _varint_at(buffer, pos)
            if count < 0:
                raise CorruptRecordError(f"Found invalid number of record headers {count}")
            for _ in range(count):
                name_size, pos = _varint_at(buffer, pos)
                if name_size < 0:
                    raise CorruptRecordError(f"Invalid negative header key size {name_size}")
                name = buffer[pos : pos + name_size].decode("utf-8")
                pos += name_size
                item_size, pos = _varint_at(buffer, pos)
                item = bytes(buffer[pos : pos + item_size]) if item_size >= 0 else None
                pos += max(0, item_size)
                headers.append((name, item))
            header_size = sum(len(name.encode("utf-8")) + (len(item) if item is not None else 0) for name, item in headers)
        if pos - start != length:
            raise CorruptRecordError(f"Invalid record size: expected to read {length} bytes in record payload, but instead read {pos - start}")
        size += length
        records.append(new_record(ConsumerRecord, (  # the namedtuple without its Python-level __new__
            topic, partition, leader_epoch, base_offset + offset_delta,
            append_time if append_time is not None else first_timestamp + timestamp_delta, timestamp_type,
            key, value, headers, None, key_size, value_size, header_size,
        )))
    if pos != len(buffer):
        raise CorruptRecordError(f"{len(buffer) - pos} unconsumed bytes after all records consumed")
    return records, size


class _FastPartitionRecords(Fetcher.PartitionRecords):
    """kafka-python's fetched-records iterator, with each magic-2 batch decoded in one function.

    kafka-python decodes a record through a ``DefaultRecord`` object, a varint function call per
    field and two deserializer calls: ~8 µs of the engine's one thread per event (~19% of it in
    the throughput benchmark). This decodes a batch's records in one loop, ~4 µs each. Everything
    else is kafka-python's: CRC checks, control batches, the fetch position, and the whole path
    for deserializers, ``read_committed`` and the old message formats. At start
    :func:`_fast_fetch_matches_kafka_python` compares the two on built batches; if they differ,
    the consumer keeps kafka-python's own.
    """

    def _unpack_records(self, tp: TopicPartition, records: Any, key_deserializer: Any, value_deserializer: Any) -> Any:
        if key_deserializer is not None or value_deserializer is not None or self.isolation_level != IsolationLevel.READ_UNCOMMITTED:
            yield from super()._unpack_records(tp, records, key_deserializer, value_deserializer)
            return
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if self.check_crcs and not batch.validate_crc():
                raise CorruptRecordError(f"Record batch for partition {self.topic_partition} at offset {batch.base_offset} failed crc check")
            if batch.magic != 2:  # the old formats are rare: kafka-python's own record path
                yield from self._unpack_legacy(tp, batch)
            elif not batch.is_control_batch:  # control batches mark transactions; they carry no records for us
                self.leader_epoch = batch.leader_epoch
                try:
                    decoded, size = _decode_batch(batch, tp.topic, tp.partition)
                except (ValueError, IndexError) as exc:
                    raise CorruptRecordError(f"Found invalid record structure: {exc!r}") from None
                self.records_read += len(decoded)
                self.bytes_read += size
                for record in decoded:
                    self.next_fetch_offset = record.offset + 1
                    yield record
            else:
                self.next_fetch_offset = batch.next_offset
            batch = records.next_batch()
        if last_batch is not None and last_batch.magic == 2:
            self.next_fetch_offset = last_batch.next_offset
        self.drain()

    def _unpack_legacy(self, tp: TopicPartition, batch: Any) -> Any:
        for record in batch:
            if self.check_crcs and not record.validate_crc():
                raise CorruptRecordError(f"Record for partition {self.topic_partition} at offset {record.offset} failed crc check")
            self.records_read += 1
            self.bytes_read += record.size_in_bytes
            self.next_fetch_offset = record.offset + 1
            yield ConsumerRecord(
                tp.topic, tp.partition, self.leader_epoch, record.offset, record.timestamp, record.timestamp_type,
                record.key, record.value, record.headers, record.checksum,
                len(record.key) if record.key is not None else -1, len(record.value) if record.value is not None else -1, -1,
            )


def _fast_fetch_matches_kafka_python() -> bool:
    """Decode built batches (keys, headers, null values, gzip, a legacy batch, a fetch position
    inside a batch) with kafka-python's iterator and with :class:`_FastPartitionRecords`: same
    records, position and counts?"""
    def records(batches: list[bytes]) -> MemoryRecords:
        return MemoryRecords(b"".join(batches))

    def batch(magic: int, compression: int, base: int, rows: list[tuple[bytes | None, bytes | None, list[Any]]]) -> bytes:
        builder = MemoryRecordsBuilder(magic=magic, compression_type=compression, batch_size=1 << 20, offset=base)
        for i, (key, value, headers) in enumerate(rows):
            builder.append(timestamp=1_700_000_000_000 + 70 * i, key=key, value=value, headers=headers if magic == 2 else [])
        builder.close()
        return builder.buffer()

    rows = [(None if i % 3 else f"k{i}".encode(), None if i == 5 else b'{"x": %d}' % i * (1 + 40 * (i % 4)),
             [("h", b"v"), ("e", None)] if i % 7 == 0 else []) for i in range(200)]
    rows[9] = (b"k", b"x" * 20_000, [])  # a three-byte length
    data = [batch(2, 0, 0, rows), batch(2, 1, 200, rows[:50]), batch(1, 0, 250, [r[:2] + ([],) for r in rows[:20]]), batch(2, 0, 270, rows[:3])]
    tp = TopicPartition("t", 3)
    try:
        for fetch_offset in (0, 117, 260):
            theirs = Fetcher.PartitionRecords(fetch_offset, tp, records(data))
            ours = _FastPartitionRecords(fetch_offset, tp, records(data))
            taken = 0
            while theirs or ours:  # until drained; both at once, or they differ
                n = (1, 60, 1000)[min(2, taken)]
                if not (theirs and ours) or theirs.take(n) != ours.take(n) or theirs.next_fetch_offset != ours.next_fetch_offset:
                    return False
                taken += 1
            if (theirs.records_read, theirs.bytes_read) != (ours.records_read, ours.bytes_read):
                return False
    except Exception:  # kafka-python internals this does not know
        log.debug("fast record decoding check failed", exc_info=True)
        return False
    return taken > 1


def _caught_up(consumer: KafkaConsumer, partitions: list[TopicPartition]) -> bool:
    """Whether every partition has been read up to its high watermark.

    The high watermark comes from fetch responses: ListOffsets (``end_offsets``, ``seek_to_end``)
    undercounts on some Kafka-protocol brokers (Tansu) after multi-record batches. False until a
    first fetch has answered for every partition.
    """
    for tp in partitions:
        highwater = consumer.highwater(tp)
        if highwater is None or consumer.position(tp) < highwater:
            return False
    return True


def _known_coordinator_without_a_round_trip(consumer: KafkaConsumer) -> None:
    """Answer the group coordinator check of every ``poll`` on the calling thread while the
    coordinator is known and connected.

    kafka-python 3 runs ``ensure_coordinator_ready`` on its IO thread and blocks the caller until
    it is done, at every poll: a thread hand-off that cost ~5% of the loop's wall time in the
    throughput benchmark, only to learn that nothing changed. When the coordinator is known and
    its connection is up, that check returns True at once, so this returns True without the
    hand-off (two dictionary reads); in every other case it is kafka-python's own call.
    """
    coordinator = consumer._coordinator
    client = coordinator._client
    ensure_on_io_thread = coordinator.ensure_coordinator_ready

    def ensure_coordinator_ready(timeout_ms: int | None = None) -> bool:
        known = coordinator.coordinator_id
        if known is not None and client.connected(known):
            return True
        return ensure_on_io_thread(timeout_ms)

    coordinator.ensure_coordinator_ready = ensure_coordinator_ready


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
            delivery_timeout_ms=kafka.delivery_timeout_ms,
            batch_size=512 * 1024, metrics_enabled=False,
        )
        # A short fetch wait: Tansu does not always answer a waiting fetch when a record arrives
        # (with 500 ms, label->update p50 went from ~30 to ~120 ms), so the wait bounds the latency.
        self.control_consumer = KafkaConsumer(**consumer_common, group_id=None, fetch_max_wait_ms=CONTROL_FETCH_WAIT_MS)
        self._control_fetcher = _fetch_state(self.control_consumer)
        self._control_polled_at = 0.0
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
            max_poll_interval_ms=kafka.max_poll_interval_ms,
            fetch_max_wait_ms=100,
        )
        if _fast_fetch_matches_kafka_python():  # on these two consumers' fetchers only
            self.events_consumer._fetcher.PartitionRecords = _FastPartitionRecords
            self.control_consumer._fetcher.PartitionRecords = _FastPartitionRecords
        else:
            log.warning("this kafka-python decodes records differently from stream-al's fast path: using kafka-python's own (slower)")
        self.events_partition_count = len(self._partitions_of([self.topics.events]))
        self.output = OutputWriter(
            {**base, "acks": "all", "linger_ms": max(5, kafka.producer_linger_ms), "batch_size": 512 * 1024,
             "delivery_timeout_ms": kafka.delivery_timeout_ms, "metrics_enabled": False, "enable_idempotence": False},
            self.topics.predictions,
            len(self._partitions_of([self.topics.predictions])) if self.topics.predictions else 0,
            self.topics.label_requests,
        )
        self._sure_size = _surely_sendable(self.producer)
        _known_coordinator_without_a_round_trip(self.events_consumer)
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
        """Label requests first, then labels, so a label's request read in the same poll is known.

        A non-blocking call returns ``[]`` at once, without polling, while the control consumer's
        fetch is still out at the broker and nothing has arrived: the poll would find nothing, and
        each kafka-python poll costs two hand-offs to its IO thread (~1 ms on a busy 2-vCPU box;
        the runner looks every 250 events). At least every CONTROL_POLL_AT_LEAST_EVERY seconds it
        polls anyway, so nothing waits long on kafka-python internals this check misreads.
        """
        now = time.monotonic()
        if timeout_ms == 0 and now - self._control_polled_at < CONTROL_POLL_AT_LEAST_EVERY and not _fetch_may_have_records(self._control_fetcher):
            return []
        self._control_polled_at = now
        batches = self.control_consumer.poll(timeout_ms=timeout_ms, max_records=5000)
        if not batches:
            return []
        requests_topic = self.topics.label_requests
        ordered = sorted(batches.items(), key=lambda item: item[0].topic != requests_topic)
        return [record for _, records in ordered for record in records]

    def control_caught_up(self) -> bool:
        """Whether every label-requests and labels partition has been read up to its high watermark."""
        return _caught_up(self.control_consumer, [_tp(p) for p in self.control_partitions])

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
        if commit:  # asynchronous: an advisory commit must never hold up the poll loop
            self.events_consumer.commit_async(commit, callback=_log_commit_failure)

    # -- producing ------------------------------------------------------------------------------

    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None) -> None:
        try:
            future = self.producer.send(topic, value=value, key=key, headers=headers)
        except MessageSizeTooLargeError as exc:
            raise MessageTooLarge(str(exc)) from None
        future.add_errback(self._record_send_error, topic)

    def send_request(self, value: bytes, key: bytes) -> None:
        """A label request, keyed by its id (the default partitioner places it), through the output writer."""
        self._refuse_if_too_large(key, value)
        self.output.add_request(value, key)

    def send_prediction(self, value: bytes, source_partition: int) -> None:
        """Predictions go to the partition of their event (no key hashing; per-partition order kept)."""
        self._refuse_if_too_large(None, value)
        self.output.add_prediction(value, source_partition)

    def _refuse_if_too_large(self, key: bytes | None, value: bytes) -> None:
        """kafka-python's own size check, made here: the output writer sends later, in another process."""
        if len(value) + (len(key) if key else 0) > self._sure_size:
            size = self.producer._estimate_size_in_bytes(key, value)
            if size > self.producer.config["max_request_size"]:
                raise MessageTooLarge(f"the message is {size} bytes serialized, over max_request_size ({self.producer.config['max_request_size']})")

    def end_batch(self) -> None:
        """Hand the batch's label requests and predictions to the output writer."""
        self.output.send_batch()

    def _record_send_error(self, exc: BaseException, topic: str) -> None:
        with self._lock_errors:
            self._send_errors.append(f"{topic}: {exc!r}")

    def flush_and_check(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every send (checkpoint step 1).

        Returns False if some sends are still unacknowledged (a slow or unreachable broker: they may
        still succeed); raises :class:`DeliveryError` if any send failed for good.
        """
        try:
            self.producer.flush(timeout=timeout)
            flushed = True
        except KafkaTimeoutError:
            flushed = False
        except KafkaError as exc:
            raise DeliveryError(f"producer flush failed: {exc!r}") from exc
        with self._lock_errors:
            errors, self._send_errors = self._send_errors, []
        if errors:
            raise DeliveryError(f"{len(errors)} message(s) not delivered, first: {errors[0]}")
        return self.output.flush(timeout) and flushed

    def close(self, timeout: float = 5.0) -> None:
        """Close every client within about ``timeout`` seconds each, even with the broker gone."""
        for client in (self.events_consumer, self.control_consumer):
            try:
                client.close(autocommit=False, timeout_ms=int(timeout * 1000))
            except Exception:  # closing after a broker loss must not mask the real error
                log.debug("closing consumer failed", exc_info=True)
        self.output.close(timeout)
        try:
            self.producer.close(timeout=timeout)
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
    if topics.drift:
        specs[topics.drift] = 1
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

    def caught_up(self) -> bool:
        """Whether every partition has been read up to its high watermark."""
        return _caught_up(self.consumer, self.partitions)

    def poll(self, timeout_ms: int = 100, max_records: int = 5000) -> list[Any]:
        batches = self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        return [record for records in batches.values() for record in records]

    def read_to_end(self, timeout: float = 120.0) -> tuple[list[Any], dict[Partition, int]]:
        """Every record from the start up to the high watermark, in log order per partition, and
        the positions reached."""
        self.consumer.seek_to_beginning(*self.partitions)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while not self.caught_up():
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {sorted(str(tp) for tp in self.partitions)} to the end in {timeout:.0f} s")
            records.extend(self.poll(200))
        return records, {(tp.topic, tp.partition): self.consumer.position(tp) for tp in self.partitions}

    def close(self) -> None:
        self.consumer.close()


if __name__ == "__main__":
    _output_writer_main()
