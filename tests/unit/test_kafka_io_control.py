"""KafkaIO internals with no broker: when poll_control skips a poll, the output writer's record
appender, and the events consumer's record decoding."""

from __future__ import annotations

import io
import json
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest
from kafka import KafkaProducer, TopicPartition
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError, KafkaError
from kafka.producer.record_accumulator import RecordAccumulator
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder

from stream_al import kafka_io
from stream_al.kafka_io import KafkaIO, _fetch_may_have_records, _fetch_state


def fetcher(in_flight: bool = True, completed: int = 0, current: Any = None, paused: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(
        _nodes_with_pending_fetch_requests={0} if in_flight else set(), _completed_fetches=deque(range(completed)),
        _next_partition_records=current, _paused_completed_fetches=paused or {},
    )


def test_a_poll_is_skipped_only_while_a_fetch_is_out_and_nothing_arrived():
    assert not _fetch_may_have_records(fetcher())
    assert _fetch_may_have_records(fetcher(in_flight=False))  # the next fetch must be sent
    assert _fetch_may_have_records(fetcher(completed=1))
    assert _fetch_may_have_records(fetcher(current=object()))
    assert _fetch_may_have_records(fetcher(paused={"tp": object()}))
    assert _fetch_may_have_records(None)  # an unknown kafka-python: always poll


def test_fetch_state_needs_every_field_it_reads():
    assert _fetch_state(SimpleNamespace(_fetcher=fetcher())) is not None
    assert _fetch_state(SimpleNamespace(_fetcher=SimpleNamespace(_completed_fetches=deque()))) is None
    assert _fetch_state(SimpleNamespace()) is None


class FakeConsumer:
    def __init__(self) -> None:
        self.polls = 0

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        self.polls += 1
        return {}


def control_io(state: SimpleNamespace, polled_at: float) -> tuple[KafkaIO, FakeConsumer]:
    io = KafkaIO.__new__(KafkaIO)  # no broker: only the fields poll_control reads
    consumer = FakeConsumer()
    io.control_consumer, io._control_fetcher, io._control_polled_at = consumer, state, polled_at
    io.topics = SimpleNamespace(label_requests="label-requests")
    return io, consumer


def test_poll_control_polls_when_records_may_be_there_when_asked_to_wait_and_at_least_every_interval(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(kafka_io.time, "monotonic", lambda: clock[0])
    idle = fetcher()
    io, consumer = control_io(idle, polled_at=100.0)
    assert io.poll_control(0) == [] and consumer.polls == 0  # fetch out, nothing arrived: skipped
    io.poll_control(50)
    assert consumer.polls == 1  # a blocking call always polls
    idle._completed_fetches.append("response")
    io.poll_control(0)
    assert consumer.polls == 2
    idle._completed_fetches.clear()
    clock[0] += kafka_io.CONTROL_POLL_AT_LEAST_EVERY + 0.001
    io.poll_control(0)
    assert consumer.polls == 3  # the interval ran out: polls whatever the state says


# -- the output writer's producer: predictions ---------------------------------------------------
# A real kafka-python RecordAccumulator (no broker needed): what the writer builds is read back
# with kafka-python's own record parser.


class FakeSender:
    def __init__(self) -> None:
        self.wakeups = 0

    def wakeup(self) -> None:
        self.wakeups += 1


class FakeFuture:
    def __init__(self) -> None:
        self.callbacks: list[Any] = []
        self.errbacks: list[Any] = []

    def add_callback(self, fn: Any) -> None:
        self.callbacks.append(fn)

    def add_errback(self, fn: Any) -> None:
        self.errbacks.append(fn)


def writer_producer(batch_size: int = 512 * 1024, internals: bool = True) -> SimpleNamespace:
    producer = SimpleNamespace(
        config={"max_request_size": 4096}, sent=[], partitions_for=lambda topic: {0, 1},
        send=lambda topic, value, partition: producer.sent.append((topic, value, partition)) or FakeFuture(),
    )
    if internals:
        producer._accumulator = RecordAccumulator(batch_size=batch_size, linger_ms=5)
        producer._sender = FakeSender()
    return producer


def written(producer: SimpleNamespace) -> dict[int, list[list[bytes]]]:
    """Each partition's batches, as lists of record values (closing the batches, as the sender does)."""
    out: dict[int, list[list[bytes]]] = {}
    for tp, queue in producer._accumulator._batches.items():
        for batch in queue:
            batch.records.close()
            values = [record.value for records in MemoryRecords(bytes(batch.records.buffer())) for record in records]
            assert batch.record_count == len(values)
            out.setdefault(tp.partition, []).append(values)
    return out


def test_the_fast_append_writes_what_kafka_python_writes():
    assert kafka_io._fast_append_matches_kafka_python()


def test_writer_appends_runs_in_order_opens_a_batch_when_full_and_sends_what_it_cannot_append():
    producer = writer_producer(batch_size=1000)
    writer = kafka_io._OutputProducer(producer, "predictions", "label-requests")  # type: ignore[arg-type]
    values = [b"%03d" % i + b"x" * 100 for i in range(30)]
    writer.write({0: values[:20], 1: values[20:]})
    writer.write({0: [b"late"], 7: [b"unknown partition"], 1: [b"y" * 4000]})
    batches = written(producer)
    assert [v for batch in batches[0] for v in batch] == values[:20] + [b"late"]
    assert [v for batch in batches[1] for v in batch] == values[20:]
    # Batches split where kafka-python's own append splits them (8 of these records per 1000 bytes).
    reference = writer_producer(batch_size=1000)
    for partition, value in [*((0, v) for v in values[:20]), *((1, v) for v in values[20:]), (0, b"late")]:
        reference._accumulator.append(TopicPartition("predictions", partition), None, None, value, [])
    assert batches == written(reference) and [len(batch) for batch in batches[0]] == [8, 8, 5]
    assert producer.sent == [("predictions", b"unknown partition", 7), ("predictions", b"y" * 4000, 1)]
    assert producer._sender.wakeups >= 4 and writer.written == 33


def test_writer_reports_failures_and_records_never_confirmed():
    producer = writer_producer()
    writer = kafka_io._OutputProducer(producer, "predictions", "label-requests")  # type: ignore[arg-type]
    writer.write({0: [b"a", b"b", b"c"], 1: [b"d", b"e"]})  # the first of each opens a batch, the rest are fast-written
    assert writer.report(flushed=False) == {"flushed": False, "errors": [], "count": 0}  # still in flight: not a failure
    unconfirmed = writer.report(flushed=True)
    assert unconfirmed["count"] == 1 and "5 record(s) written but never confirmed" in unconfirmed["errors"][0]
    batches = [batch for queue in producer._accumulator._batches.values() for batch in queue]
    assert len(batches) == 2
    batches[0].done(base_offset=0, timestamp_ms=0)
    refused = KafkaError("broker said no")
    batches[1].complete_exceptionally(refused, lambda index: refused)  # what kafka-python's sender does
    assert writer.confirmed == batches[0].record_count
    report = writer.report(flushed=True)
    assert report["count"] == 2 and set(report["errors"]) == {repr(refused)}  # the batch (fast-written) and its first record


def test_writer_is_plain_send_without_the_internals():
    producer = writer_producer(internals=False)
    writer = kafka_io._OutputProducer(producer, "predictions", "label-requests")  # type: ignore[arg-type]
    writer.write({0: [b"a", b"b"]})
    assert producer.sent == [("predictions", b"a", 0), ("predictions", b"b", 0)] and writer.written == 2


# -- the events consumer's fast record decoding ---------------------------------------------------


def built_batch(rows: list[tuple[bytes | None, bytes | None, list[Any]]], compression: int = 0, base: int = 0) -> bytes:
    builder = MemoryRecordsBuilder(magic=2, compression_type=compression, batch_size=1 << 20, offset=base)
    for i, (key, value, headers) in enumerate(rows):
        builder.append(timestamp=1_700_000_000_000 + 1000 * i, key=key, value=value, headers=headers)
    builder.close()
    return builder.buffer()


def take_all(cls: type, data: bytes, fetch_offset: int = 0, **options: Any) -> list[Any]:
    records = cls(fetch_offset, TopicPartition("events", 2), MemoryRecords(data), **options)
    taken = []
    while records:
        taken += records.take(7)
    return taken


def test_fast_decoding_matches_kafka_python_on_the_built_batches():
    assert kafka_io._fast_fetch_matches_kafka_python()


def test_fast_decoding_returns_what_kafka_python_returns_for_events():
    rows = [(None, b'{"id": "e%d", "features": {"x": %d.5}}' % (i, i), []) for i in range(300)]
    rows[10] = (b"key", None, [("trace", b"abc"), ("empty", None)])  # a tombstone with headers
    data = built_batch(rows[:150]) + built_batch(rows[150:], compression=1, base=150)
    ours = take_all(kafka_io._FastPartitionRecords, data, fetch_offset=3)
    assert ours == take_all(Fetcher.PartitionRecords, data, fetch_offset=3)
    assert [r.offset for r in ours] == list(range(3, 300))
    assert ours[7].headers == [("trace", b"abc"), ("empty", None)] and ours[7].value is None


def test_the_start_check_fails_when_the_fast_path_decodes_differently(monkeypatch):
    decode = kafka_io._decode_batch

    def off_by_one_timestamp(batch: Any, topic: str, partition: int) -> tuple[list[Any], int]:
        records, size = decode(batch, topic, partition)
        return [r._replace(timestamp=r.timestamp + 1) for r in records], size

    monkeypatch.setattr(kafka_io, "_decode_batch", off_by_one_timestamp)
    assert not kafka_io._fast_fetch_matches_kafka_python()


def test_a_corrupt_record_is_refused_as_kafka_python_refuses_it():
    data = bytearray(built_batch([(None, b'{"x": 1}', [])] * 5))
    data[-4] ^= 0xFF  # inside the last record's value: the batch CRC no longer matches
    for cls in (Fetcher.PartitionRecords, kafka_io._FastPartitionRecords):
        with pytest.raises(CorruptRecordError, match="crc"):
            take_all(cls, bytes(data))
    data = bytearray(built_batch([(None, b'{"x": 1}', [])] * 5))
    data[61] += 2  # the first record's length varint: the record no longer ends where it says
    for cls in (Fetcher.PartitionRecords, kafka_io._FastPartitionRecords):
        with pytest.raises(CorruptRecordError):
            take_all(cls, bytes(data), check_crcs=False)


class TrickleStream:
    """A pipe whose every write takes at most ``limit`` bytes, as one interrupted by a signal does."""

    def __init__(self, limit: int):
        self.limit, self.data = limit, bytearray()

    def write(self, data: Any) -> int:
        taken = bytes(data[: self.limit])
        self.data += taken
        return len(taken)


def test_a_partial_write_to_a_helper_pipe_is_finished_not_lost():
    # Seen in a benchmark run: a write interrupted mid-way (py-spy's ptrace stop) lost the rest of
    # a batch, and the prediction writer then read a value's bytes as the next frame's partition.
    stream = TrickleStream(limit=1000)
    message = bytes(range(256)) * 40
    kafka_io._write_all(stream, message)
    assert stream.data == message


# -- label requests through the output writer ----------------------------------------------------


def test_writer_sends_label_requests_keyed_and_reports_a_refused_send():
    sent: list[tuple[str, bytes, bytes]] = []

    def send(topic: str, value: bytes, key: bytes) -> FakeFuture:
        if value == b"refused":
            raise KafkaError("no metadata for the topic")
        sent.append((topic, key, value))
        return FakeFuture()

    producer = SimpleNamespace(config={"max_request_size": 4096}, send=send)
    writer = kafka_io._OutputProducer(producer, None, "label-requests")  # type: ignore[arg-type]
    writer.write_requests([(b"r1", b'{"a": 1}'), (b"r2", b"refused"), (b"r3", b'{"c": 3}')])
    assert sent == [("label-requests", b"r1", b'{"a": 1}'), ("label-requests", b"r3", b'{"c": 3}')]
    report = writer.report(flushed=True)  # the refused one failed; the two sent were never confirmed here
    assert report["count"] == 1 and "no metadata" in report["errors"][0] and writer.written == 3


def test_outputs_too_large_for_kafka_are_refused_before_they_reach_the_writer():
    # kafka-python's own size estimate and limit, on a producer that never needs a broker for them.
    producer = KafkaProducer(bootstrap_servers="127.0.0.1:1", api_version=(2, 6), max_request_size=2000)
    try:
        engine_io = object.__new__(kafka_io.KafkaIO)
        engine_io.producer, engine_io._sure_size = producer, 2000 - 1024
        engine_io.output = SimpleNamespace(requests=[], predictions=[])
        engine_io.output.add_request = lambda value, key: engine_io.output.requests.append(key)
        engine_io.output.add_prediction = lambda value, partition: engine_io.output.predictions.append(partition)
        engine_io.send_request(b"x" * 1900, b"near-the-limit")  # 1,987 bytes serialized: kafka-python sends it
        engine_io.send_prediction(b"y" * 500, 3)
        with pytest.raises(kafka_io.MessageTooLarge, match="over max_request_size"):
            engine_io.send_request(b"x" * 1950, b"r" * 36)
        with pytest.raises(kafka_io.MessageTooLarge):
            engine_io.send_prediction(b"y" * 2000, 1)
        assert engine_io.output.requests == [b"near-the-limit"] and engine_io.output.predictions == [3]
    finally:
        producer.close(timeout=1)


def test_the_writer_process_reads_requests_and_predictions_framed_as_the_engine_writes_them(monkeypatch):
    writer = object.__new__(kafka_io.OutputWriter)
    writer.prediction_partitions, writer._predictions, writer._requests, writer._broken = 2, [], [], None
    messages: list[tuple[bytes, bytes]] = []
    writer._write = lambda kind, payload: messages.append((kind, payload))
    writer.add_request(b'{"request_id": "r1"}', b"r1")
    writer.add_prediction(b'{"p": 1}', 5)
    writer.add_request(b"{}", b"r-two")
    writer.send_batch()
    writer.send_batch()  # nothing new: nothing written
    stream = bytearray()
    for kind, payload in messages:
        stream += kafka_io._MESSAGE.pack(kind, len(payload)) + payload
    received: dict[str, Any] = {}

    class Recording:
        def __init__(self, producer: Any, topic: str | None, requests_topic: str):
            received["topics"] = (topic, requests_topic)
            self.producer = SimpleNamespace(close=lambda timeout: None)

        def write_requests(self, records: list[tuple[bytes, bytes]]) -> None:
            received.setdefault("requests", []).extend(records)

        def write(self, by_partition: dict[int, list[bytes]]) -> None:
            received.setdefault("predictions", []).append(by_partition)

    config = json.dumps({"topic": "predictions", "requests_topic": "label-requests"}).encode()
    stream = kafka_io._MESSAGE.pack(kafka_io._CONFIG, len(config)) + config + stream
    monkeypatch.setattr(kafka_io, "_OutputProducer", Recording)
    monkeypatch.setattr(kafka_io, "KafkaProducer", lambda **config: None)
    monkeypatch.setattr(kafka_io.sys, "stdin", SimpleNamespace(buffer=io.BytesIO(bytes(stream))))
    kafka_io._output_writer_main()  # ends at the end of its input, as when the engine is gone
    assert received == {
        "topics": ("predictions", "label-requests"),
        "requests": [(b"r1", b'{"request_id": "r1"}'), (b"r-two", b"{}")],
        "predictions": [{1: [b'{"p": 1}']}],
    }


def test_a_known_connected_coordinator_is_confirmed_without_asking_the_io_thread():
    asked: list[Any] = []
    connections = {"node-1"}
    coordinator = SimpleNamespace(
        coordinator_id="node-1", _client=SimpleNamespace(connected=lambda node: node in connections),
        ensure_coordinator_ready=lambda timeout_ms=None: asked.append(timeout_ms) or False,
    )
    kafka_io._known_coordinator_without_a_round_trip(SimpleNamespace(_coordinator=coordinator))  # type: ignore[arg-type]
    assert coordinator.ensure_coordinator_ready(100) is True and asked == []
    connections.clear()  # the connection dropped: kafka-python's own check decides
    assert coordinator.ensure_coordinator_ready(100) is False and asked == [100]
    coordinator.coordinator_id = None  # unknown: kafka-python looks it up
    coordinator.ensure_coordinator_ready(None)
    assert asked == [100, None]
