"""The broker the other integration tests rely on, exercised with kafka-python over TCP.

`kafka_bootstrap` may be Tansu, a Docker Kafka or an external cluster, so these
tests only assert what real Kafka also guarantees. Tansu's known deviations are
worked around, not asserted: `end_offsets` is only compared after producing one
record per batch, and offset-commit metadata is not checked (Tansu drops it).
"""

from __future__ import annotations

import collections
import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError, TopicAlreadyExistsError

from stream_al.embedded_broker import EmbeddedBroker, tansu_binary

pytestmark = pytest.mark.integration

#: Tansu holds every fetch for the full fetch_max_wait_ms, even when records
#: arrive meanwhile (~130 ms median latency at the 500 ms default); 50 ms keeps
#: tests snappy at ~1% broker CPU.
FAST_FETCH = {"fetch_max_wait_ms": 50}


@pytest.fixture
def closing() -> Iterator[Callable]:
    """Register Kafka clients to close at teardown, even when the test fails."""
    clients: list = []

    def register(client):
        clients.append(client)
        return client

    yield register
    for client in reversed(clients):
        with contextlib.suppress(Exception):
            if isinstance(client, KafkaProducer):
                client.close(timeout=1)
            else:
                client.close()


def poll_records(consumer: KafkaConsumer, n: int, timeout: float = 15.0) -> list:
    """Poll until `n` records arrived or `timeout` seconds passed; return them."""
    records: list = []
    deadline = time.monotonic() + timeout
    while len(records) < n and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=100).values():
            records.extend(batch)
    return records


def create_topic(bootstrap: str, name: str, partitions: int, closing) -> KafkaAdminClient:
    admin = closing(KafkaAdminClient(bootstrap_servers=bootstrap))
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    return admin


# -- the EmbeddedBroker itself ----------------------------------------------------------


def test_tansu_binary_is_executable():
    path = tansu_binary()
    assert path.name == "tansu"
    assert path.stat().st_mode & 0o111


def test_embedded_broker_lifecycle():
    broker = EmbeddedBroker()
    with pytest.raises(RuntimeError):
        broker.bootstrap  # no port before start  # noqa: B018
    with broker:
        pid = broker.pid
        assert broker.running and pid > 0
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        broker.pause()
        assert broker.paused
    # stop() resumed the paused process before terminating it
    assert not broker.running and broker.pid is None and not broker.paused
    broker.stop()  # idempotent
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0


def test_embedded_broker_refuses_a_port_in_use(embedded_broker):
    # Without the check the readiness probe would be answered by the broker
    # already on that port while the new one dies with "Address in use".
    with pytest.raises(RuntimeError, match="already in use"):
        EmbeddedBroker(port=embedded_broker.port).start(timeout=10)


# -- admin, produce, consume ------------------------------------------------------------


def test_create_describe_and_recreate_topics(kafka_bootstrap, topic_prefix, closing):
    names = [f"{topic_prefix}events", f"{topic_prefix}labels"]
    admin = closing(KafkaAdminClient(bootstrap_servers=kafka_bootstrap))
    admin.create_topics([NewTopic(name, 3, 1) for name in names])

    assert set(names) <= set(admin.list_topics())
    described = {t["name"]: t for t in admin.describe_topics(names)}
    assert {name: len(described[name]["partitions"]) for name in names} == dict.fromkeys(names, 3)
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topics([NewTopic(names[0], 3, 1)])


def test_keys_values_and_headers_round_trip(kafka_bootstrap, topic_prefix, closing):
    topic = f"{topic_prefix}events"
    create_topic(kafka_bootstrap, topic, 3, closing)
    producer = closing(KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=0))
    sent = {}
    for i in range(12):
        key, value = f"user-{i % 5}".encode(), f'{{"i": {i}}}'.encode()
        headers = [("schema", b"event/v1"), ("seq", str(i).encode()), ("empty", b"")]
        # .get() per record: one record per batch keeps end_offsets exact on Tansu
        meta = producer.send(topic, key=key, value=value, headers=headers).get(timeout=10)
        sent[i] = (meta.partition, key, value, headers)

    partitions = [TopicPartition(topic, p) for p in range(3)]
    consumer = closing(KafkaConsumer(bootstrap_servers=kafka_bootstrap, **FAST_FETCH))
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    records = poll_records(consumer, len(sent))

    got = {int(dict(r.headers)["seq"]): (r.partition, r.key, r.value, r.headers) for r in records}
    assert got == sent
    # the same key always lands on the same partition
    assert all(len({p for p, k, *_ in sent.values() if k == key}) == 1 for _, key, *_ in sent.values())
    per_partition = collections.Counter(p for p, *_ in sent.values())
    assert consumer.beginning_offsets(partitions) == dict.fromkeys(partitions, 0)
    assert consumer.end_offsets(partitions) == {tp: per_partition[tp.partition] for tp in partitions}


def test_consumer_group_commit_round_trip(kafka_bootstrap, topic_prefix, closing):
    topic, group = f"{topic_prefix}events", f"{topic_prefix}scorer"
    create_topic(kafka_bootstrap, topic, 2, closing)
    producer = closing(KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=0))
    for i in range(6):
        producer.send(topic, key=str(i).encode(), value=b"x").get(timeout=10)

    # Tansu's join takes ~session_timeout_ms / 2, so keep it at Kafka's minimum.
    member = closing(
        KafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=group,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **FAST_FETCH,
        )
    )
    records = poll_records(member, 6, timeout=20)
    assert len(records) == 6
    partitions = [TopicPartition(topic, p) for p in range(2)]
    assert member.assignment() == set(partitions)
    member.commit()

    consumed = collections.Counter(r.partition for r in records)
    expected = {tp: consumed[tp.partition] or None for tp in partitions}
    assert {tp: member.committed(tp) for tp in partitions} == expected
    # A different client of the same group reads the offsets back from the broker.
    reader = closing(KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group))
    assert {tp: reader.committed(tp) for tp in partitions} == expected


# -- outage ---------------------------------------------------------------------------


def test_produce_stalls_while_broker_is_stopped_and_recovers(embedded_broker, topic_prefix, closing):
    topic = f"{topic_prefix}outage"
    bootstrap = embedded_broker.bootstrap
    create_topic(bootstrap, topic, 1, closing)
    tp = TopicPartition(topic, 0)
    producer = closing(KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0))
    consumer = closing(
        KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", **FAST_FETCH)
    )
    consumer.assign([tp])
    producer.send(topic, b"before").get(timeout=10)
    assert [r.value for r in poll_records(consumer, 1)] == [b"before"]

    embedded_broker.pause()
    try:
        during = producer.send(topic, b"during")
        with pytest.raises(KafkaTimeoutError):
            during.get(timeout=1.5)
        assert consumer.poll(timeout_ms=500) == {}
    finally:
        embedded_broker.resume()

    # The default producer (delivery_timeout_ms=120 s) kept the record and
    # delivers it as soon as the broker runs again; nothing needs rebuilding.
    assert during.get(timeout=10).offset == 1
    assert producer.send(topic, b"after").get(timeout=10).offset == 2
    assert [r.value for r in poll_records(consumer, 2)] == [b"during", b"after"]
