"""Helpers for the engine's integration tests: settings on unique topics, and the engine as a
thread (to look inside) or as a real ``stream-al run`` process (to kill it)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

from stream_al.config import Settings
from stream_al.engine import Engine
from stream_al.messages import LabelRequest, ModelControl, parse_label_log
from stream_al.snapshot import SnapshotStore
from stream_al.kafka_io import RecordProducer, TopicReader, create_topics
from stream_al.runner import Runner, RunLimits


def engine_settings(bootstrap: str, prefix: str, state_dir: Path, **overrides: Any) -> Settings:
    """Settings on this test's own topics, group and snapshot directory; topics created."""
    base: dict[str, Any] = {
        "classes": ["legit", "fraud"],
        "positive_class": "fraud",
        "kafka": {"bootstrap_servers": bootstrap, "group_id": f"{prefix}engine", "session_timeout_ms": 6000},
        "topics": {
            "events": f"{prefix}events", "label_requests": f"{prefix}label-requests", "labels": f"{prefix}labels",
            "predictions": f"{prefix}predictions", "dead_letters": f"{prefix}dead-letters", "drift": f"{prefix}drift",
            "events_partitions": 2,
        },
        "snapshots": {"dir": str(state_dir / "snapshots"), "interval_seconds": 1},
        "metrics": {"port": 0},
        "sampler": {"random_share": 0.0},
    }
    for section, values in overrides.items():
        base[section] = {**base[section], **values} if isinstance(values, dict) and isinstance(base.get(section), dict) else values
    settings = Settings(**base)
    create_topics(settings)
    return settings


def write_config(settings: Settings, path: Path) -> Path:
    data = settings.model_dump(mode="json")
    data["snapshots"]["key"] = None  # the engine makes its own key file beside the snapshots
    path.write_text(yaml.safe_dump(data))
    return path


def separable_event(i: int, rng: random.Random) -> tuple[dict[str, Any], str]:
    """Fraud when x + y > 1: a linear model learns it from a few dozen labels."""
    x, y = rng.random(), rng.random()
    return {"id": f"ev-{i}", "ts": time.time(), "features": {"x": x, "y": y}}, ("fraud" if x + y > 1 else "legit")


def produce_events(settings: Settings, start: int, count: int, seed: int = 0) -> dict[str, str]:
    """Produce events ``start .. start+count-1``; returns event id -> true label."""
    rng = random.Random(seed * 1_000_003 + start)
    producer = RecordProducer(settings.kafka)
    truth = {}
    for i in range(start, start + count):
        event, label = separable_event(i, rng)
        truth[event["id"]] = label
        producer.send(settings.topics.events, orjson.dumps(event))
    producer.flush()
    producer.close()
    return truth


def send_raw(settings: Settings, topic: str, values: list[bytes]) -> None:
    producer = RecordProducer(settings.kafka)
    for value in values:
        producer.send(topic, value)
    producer.flush()
    producer.close()


def read_all(settings: Settings, topic: str, idle_seconds: float = 1.5, timeout: float = 30.0) -> list[Any]:
    """Every record of ``topic`` from the beginning, until nothing new comes for ``idle_seconds``."""
    reader = TopicReader(settings.kafka, [topic])
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline and time.monotonic() - last_new < idle_seconds:
            batch = reader.poll(200)
            if batch:
                records.extend(batch)
                last_new = time.monotonic()
    finally:
        reader.close()
    return records


def engine_from_label_log(settings: Settings, count: int | None = None) -> Engine:
    """A fresh engine fed the first ``count`` labels of the log (all by default), in log order,
    with the features of their requests on the topic: what any replica's model must equal."""
    requests: dict[str, LabelRequest] = {}
    for record in read_all(settings, settings.topics.label_requests):
        request = LabelRequest.model_validate_json(record.value)
        requests.setdefault(request.request_id, request)
    engine = Engine(settings)
    for record in read_all(settings, settings.topics.labels)[:count]:
        message = parse_label_log(record.value)
        if isinstance(message, ModelControl):
            engine.on_control(message)
            continue
        label = message
        request = requests[label.request_id]
        engine.on_request(request, now=request.created_at)
        engine.on_label(label, now=request.created_at)
    return engine


def engine_from_snapshot(settings: Settings, directory: Path | None = None) -> Engine:
    """An engine restored from the newest snapshot in ``directory`` (default: the settings' own)."""
    engine = Engine(settings)
    engine.restore(SnapshotStore(directory or settings.snapshots.dir).load_latest()[1]["engine"])
    return engine


class EngineThread:
    """The runner in a thread of the test process, so tests can look at the engine itself."""

    def __init__(self, settings: Settings, limits: RunLimits = RunLimits()):
        self.runner = Runner(settings, limits)
        self.exit_code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.exit_code = self.runner.run()

    def start(self) -> EngineThread:
        self.thread.start()
        wait_for(lambda: self.runner.owns_partitions, 30, "the engine never got an events partition")
        return self

    def stop(self) -> int | None:
        self.runner.stop()
        self.thread.join(30)
        return self.exit_code

    def __enter__(self) -> EngineThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EngineProcess:
    """``stream-al run`` as a real process: SIGKILL and SIGTERM mean what they mean in production."""

    def __init__(self, config: Path, stats: Path, *args: str):
        self.stats = stats
        log = open(stats.with_suffix(".log"), "ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "stream_al.cli", "run", "--config", str(config), "--stats-json", str(stats), *args],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def children(self) -> list[int]:
        """The engine's helper processes (the output writer)."""
        pids: list[int] = []
        for task in Path(f"/proc/{self.process.pid}/task").iterdir():
            pids += [int(pid) for pid in (task / "children").read_text().split()]
        return pids

    def kill(self) -> None:
        """SIGKILL, as a crash would; the helpers must notice and exit by themselves (their
        consumer leaves the group), or a restarted engine would share the partitions with a ghost."""
        helpers = self.children()
        assert helpers, "the engine has no helper processes to check"
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() and _not_zombie(pid) for pid in helpers), 20,
                 f"helper processes {helpers} outlived the killed engine")

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def read_stats(self) -> dict[str, Any]:
        return orjson.loads(self.stats.read_bytes())


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(condition: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{message} (after {timeout} s)")


class Analyst:
    """Answers every label request once, with the truth, from a thread."""

    def __init__(self, settings: Settings, truth: dict[str, str]):
        self.settings = settings
        self.truth = truth
        self.answered: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        reader = TopicReader(self.settings.kafka, [self.settings.topics.label_requests])
        producer = RecordProducer(self.settings.kafka)
        seen: set[str] = set()
        try:
            while not self.stop.is_set():
                for record in reader.poll(100):
                    request = orjson.loads(record.value)
                    if request["request_id"] in seen or request["event_id"] not in self.truth:
                        continue
                    seen.add(request["request_id"])
                    label = {"request_id": request["request_id"], "label": self.truth[request["event_id"]], "annotator": "test"}
                    producer.send(self.settings.topics.labels, orjson.dumps(label), request["request_id"].encode())
                    self.answered.append(request["request_id"])
                producer.flush()
        finally:
            producer.close()
            reader.close()

    def __enter__(self) -> Analyst:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
