"""KafkaIO.poll_control skips a poll only when kafka-python's fetch state says it would find nothing."""

from __future__ import annotations

from collections import deque
from types import SimpleNamespace
from typing import Any

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
