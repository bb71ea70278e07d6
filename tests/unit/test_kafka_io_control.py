"""KafkaIO internals with no broker: when poll_control skips a poll, and the prediction writer's record appender."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest

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


# -- the prediction writer's record appender ----------------------------------------------------


class FakeProducer:
    """The parts of a kafka-python KafkaProducer that _record_appender uses."""

    def __init__(self, partitions: set[int] | None = None, internals: bool = True, metadata_error: bool = False):
        self.config = {"max_request_size": 4096}
        self.appended: list[tuple[Any, bytes]] = []
        self.sent: list[tuple[str, bytes, int]] = []
        self.wakeups = 0
        self._partitions, self._metadata_error = partitions if partitions is not None else {0, 1}, metadata_error
        if internals:
            self._accumulator = SimpleNamespace(append=self._append)
            self._sender = SimpleNamespace(wakeup=self._wakeup)

    def partitions_for(self, topic: str) -> set[int]:
        if self._metadata_error:
            raise kafka_io.KafkaTimeoutError("no metadata")
        return self._partitions

    def _append(self, tp: Any, timestamp: Any, key: Any, value: bytes, headers: list) -> tuple[str, bool, bool, bool]:
        assert timestamp is None and key is None and headers == []
        new_batch = not any(t == tp for t, _ in self.appended)
        self.appended.append((tp, value))
        return "future", False, new_batch, False

    def _wakeup(self) -> None:
        self.wakeups += 1

    def send(self, topic: str, value: bytes, partition: int) -> str:
        self.sent.append((topic, value, partition))
        return "sent"


def test_record_appender_appends_to_the_accumulator_and_wakes_the_sender_on_a_new_batch():
    producer = FakeProducer()
    append = kafka_io._record_appender(producer, "predictions")  # type: ignore[arg-type]
    assert [append(b"a", 0), append(b"b", 0), append(b"c", 1)] == ["future"] * 3
    assert [(tp.topic, tp.partition, v) for tp, v in producer.appended] == [("predictions", 0, b"a"), ("predictions", 0, b"b"), ("predictions", 1, b"c")]
    assert producer.wakeups == 2 and producer.sent == []
    # An unknown partition, or a record near the size limit: send and its checks decide.
    assert append(b"d", 7) == "sent" and append(b"x" * 4000, 0) == "sent"
    assert [(p, len(v)) for _, v, p in producer.sent] == [(7, 1), (0, 4000)]


@pytest.mark.parametrize("producer", [FakeProducer(internals=False), FakeProducer(metadata_error=True)], ids=["no-internals", "no-metadata"])
def test_record_appender_is_plain_send_without_the_internals_or_the_metadata(producer):
    append = kafka_io._record_appender(producer, "predictions")
    assert append(b"a", 0) == "sent" and producer.sent == [("predictions", b"a", 0)]
