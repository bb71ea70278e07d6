"""Throughput benchmark: the stream-al engine against a plain Kafka consume-and-decode loop.

What it measures, per run, on the same freshly produced ``events`` topic (4 partitions, N JSON events
``{"id": "e<i>", "ts": <epoch s>, "features": {"f0".."f29": float}}``):

1. **plain loop** -- a kafka-python ``KafkaConsumer`` in its own group that reads all N events and
   decodes each value with ``orjson.loads``. Nothing else. Its events/s is counted from the first
   record received to the last one decoded, so the group join is excluded. It uses the engine's
   client tuning (``metrics_enabled=False``, the same fetch sizes), so the ratio below is the cost
   of the engine's own work, not of a different client configuration.
2. **engine** -- ``python -m stream_al.cli run`` as a subprocess: logistic regression, 30 numeric
   features, ``budget.fraction: 0.05`` and no other limit, predictions on, metrics on port 0, its own
   consumer group and snapshot directory. Its events/s is ``events_per_second`` from its
   ``--stats-json`` (the runner measures first to last batch itself, group join excluded). While it
   runs, an *instant analyst* thread here reads ``label-requests`` and answers every request as soon
   as it reads it on ``labels`` (``"1" if f0 + f1 > 1 else "0"``; requests fetched 50 ms or 64 KiB at
   a time, answers sent with a 10 ms linger), so the engine learns while it scores; the stats
   then give ``label_to_update_seconds`` (label's Kafka timestamp to the model update) p50/p99.

The two consumers run one after the other, never together; each run uses fresh topics. The table
shows every run and the medians: plain events/s and the plain loop's CPU % (under 100 when it waited
for the broker), engine events/s, engine/plain, label->update p50 and p99, labels applied, budget
used ratio, and the engine's CPU time (user+sys, from the child's rusage, which includes start-up and
the idle seconds before it exits). ``--no-predictions`` runs the engine without the predictions
topic, to see what that output costs.

Run it (it starts an embedded Tansu broker unless ``--bootstrap`` is given)::

    .venv/bin/python benchmarks/throughput.py
    .venv/bin/python benchmarks/throughput.py --bootstrap 127.0.0.1:9092 --events 100000 --runs 3 --json bench.json

Numbers depend on the machine: the engine, the analyst thread and the broker share the CPU while
the engine runs, and a busy machine (load average printed as a warning at start) lowers everything.
The benchmark's topics are named ``bench-<random>-*`` and deleted after each run (best effort).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

REPO = Path(__file__).resolve().parent.parent
try:
    import stream_al  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer  # noqa: E402

from stream_al.config import KafkaSettings  # noqa: E402
from stream_al.kafka_io import RecordProducer, TopicReader  # noqa: E402

FEATURES = 30
PARTITIONS = 4
BUDGET_FRACTION = 0.05
IDLE_EXIT_SECONDS = 3
SESSION_TIMEOUT_MS = 6000
# The engine's events-consumer tuning (stream_al.kafka_io.KafkaIO), applied to the plain loop too.
# fetch_max_wait_ms too: with kafka-python's default (500 ms) the plain loop's first fetches stall
# ~0.5 s on the embedded broker, which at 100k events cut its rate from ~88k to ~61k events/s and
# made engine/plain look ~40% better than it is.
CLIENT_TUNING = {
    "metrics_enabled": False, "fetch_max_bytes": 50 * 1024 * 1024, "max_partition_fetch_bytes": 8 * 1024 * 1024,
    "fetch_max_wait_ms": 100,
}


@dataclass
class RunResult:
    run: int
    plain_events: int = 0
    plain_events_per_second: float = 0.0
    plain_join_seconds: float = 0.0
    plain_cpu_seconds: float = 0.0
    plain_cpu_percent: float = 0.0
    engine_events: int = 0
    engine_events_per_second: float | None = None
    ratio: float | None = None
    label_to_update_p50_ms: float | None = None
    label_to_update_p99_ms: float | None = None
    labels_applied: int = 0
    label_requests: int = 0
    budget_used_ratio: float | None = None
    engine_cpu_seconds: float | None = None
    engine_wall_seconds: float = 0.0
    analyst_answers: int = 0
    engine_stats: dict[str, Any] = field(default_factory=dict)


# -- setup --------------------------------------------------------------------------------------


def check_crc32c() -> bool:
    """kafka-python checksums every record batch; in pure Python that alone costs several times the decode."""
    from kafka.record import util

    c_impl = getattr(util, "crc32c_c", None)
    fast = c_impl is not None and getattr(util, "_crc32c", c_impl) is c_impl
    if not fast:
        print("WARNING: kafka-python is using its pure-Python crc32c (pip install crc32c): every number below is slower", file=sys.stderr)
    return fast


def make_events(n: int, seed: int = 7) -> list[bytes]:
    """N encoded events, uniform features in [0, 1): about half have f0 + f1 > 1."""
    rng = random.Random(seed)
    names = [f"f{j}" for j in range(FEATURES)]
    now = round(time.time(), 3)
    return [
        orjson.dumps({"id": f"e{i}", "ts": now + i * 0.001, "features": {name: rng.random() for name in names}})
        for i in range(n)
    ]


def topic_names(prefix: str) -> dict[str, str]:
    return {
        "events": f"{prefix}-events",
        "label_requests": f"{prefix}-label-requests",
        "labels": f"{prefix}-labels",
        "predictions": f"{prefix}-predictions",
        "dead_letters": f"{prefix}-dead-letters",
    }


def create_topics(bootstrap: str, topics: dict[str, str]) -> None:
    """The engine's topic layout: events and predictions with 4 partitions, the others with 1."""
    from kafka.admin import NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="stream-al-bench")
    try:
        wide = {"events", "predictions"}
        admin.create_topics([NewTopic(name, PARTITIONS if role in wide else 1, 1) for role, name in topics.items()])
    finally:
        admin.close()
    deadline = time.monotonic() + 30
    probe = KafkaConsumer(bootstrap_servers=bootstrap, metrics_enabled=False)
    try:
        while not all(probe.partitions_for_topic(name) for name in topics.values()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics {sorted(topics.values())} did not appear within 30 s")
            time.sleep(0.1)
            probe.topics()  # refresh metadata
    finally:
        probe.close()


def delete_topics(bootstrap: str, topics: dict[str, str]) -> None:
    with contextlib.suppress(Exception):
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="stream-al-bench")
        try:
            admin.delete_topics(list(topics.values()))
        finally:
            admin.close()


def produce(bootstrap: str, topic: str, events: list[bytes]) -> float:
    """Send every event (no key: spread over the partitions); returns the seconds it took."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024, acks=1, metrics_enabled=False,
        max_request_size=8 * 1024 * 1024,
    )
    started = time.perf_counter()
    try:
        for value in events:
            producer.send(topic, value=value)
        producer.flush()
    finally:
        producer.close(timeout=10)
    return time.perf_counter() - started


# -- the plain loop -----------------------------------------------------------------------------


def plain_loop(bootstrap: str, topic: str, group: str, expected: int, stall_timeout: float = 60.0) -> tuple[int, float, float, float]:
    """Consume and decode ``expected`` events; returns (events, events/s, join seconds, CPU seconds)."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
        max_poll_records=1000, session_timeout_ms=SESSION_TIMEOUT_MS, **CLIENT_TUNING,
    )
    loads = orjson.loads
    count = 0
    created = time.perf_counter()
    first = last = None
    cpu_first = 0.0
    last_progress = created
    try:
        while count < expected:
            batches = consumer.poll(timeout_ms=100)
            now = time.perf_counter()
            if not batches:
                if now - last_progress > stall_timeout:
                    raise RuntimeError(f"plain loop: no record for {stall_timeout:.0f} s after {count}/{expected} events")
                continue
            if first is None:
                first, cpu_first = now, time.process_time()
            for records in batches.values():
                for record in records:
                    loads(record.value)
                count += len(records)
            last = last_progress = time.perf_counter()
        cpu = time.process_time() - cpu_first
    finally:
        consumer.close()
    assert first is not None and last is not None
    return count, count / (last - first), first - created, cpu


# -- the instant analyst ------------------------------------------------------------------------


# The analyst reads requests and sends its answers in batches (64 KiB or 50 ms of requests a fetch,
# 10 ms of answers a produce request), as a review queue's answers would arrive. One fetch and one
# produce per few answers (10 ms fetch wait, 1 ms linger) made ~1,000 tiny requests a second at
# 1,000 labels/s, a load on the broker and the engine no analyst team makes.
ANALYST_FETCH_WAIT_MS = 50
ANALYST_FETCH_MIN_BYTES = 64 * 1024
ANALYST_LINGER_MS = 10


class InstantAnalyst(threading.Thread):
    """Answers every label request as soon as it is read: ``"1" if f0 + f1 > 1 else "0"``."""

    def __init__(self, bootstrap: str, requests_topic: str, labels_topic: str):
        super().__init__(name="instant-analyst", daemon=True)
        kafka = KafkaSettings(bootstrap_servers=bootstrap, client_id="stream-al-bench-analyst")
        self.reader = TopicReader(
            kafka, [requests_topic], from_beginning=True,
            fetch_max_wait_ms=ANALYST_FETCH_WAIT_MS, fetch_min_bytes=ANALYST_FETCH_MIN_BYTES,
        )
        self.producer = RecordProducer(kafka, linger_ms=ANALYST_LINGER_MS)
        self.labels_topic = labels_topic
        self.answered = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                for record in self.reader.poll(timeout_ms=50):
                    request = orjson.loads(record.value)
                    features = request["features"]
                    label = "1" if features["f0"] + features["f1"] > 1 else "0"
                    answer = {
                        "schema_version": 1, "request_id": request["request_id"], "event_id": request["event_id"],
                        "label": label, "annotator": "instant-analyst", "labeled_at": time.time(),
                    }
                    self.producer.send(self.labels_topic, orjson.dumps(answer), request["request_id"].encode())
                    self.answered += 1
            self.producer.flush()
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            with contextlib.suppress(Exception):
                self.reader.close()
            with contextlib.suppress(Exception):
                self.producer.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=15)


# -- the engine ---------------------------------------------------------------------------------


def engine_config(bootstrap: str, topics: dict[str, str], group: str, workdir: Path, predictions: bool = True) -> dict[str, Any]:
    return {
        "classes": ["0", "1"],
        "positive_class": "1",
        "log_level": "INFO",
        "kafka": {
            "bootstrap_servers": bootstrap, "group_id": group, "client_id": group,
            "session_timeout_ms": SESSION_TIMEOUT_MS, "max_poll_records": 1000,
        },
        "topics": {**topics, "predictions": topics["predictions"] if predictions else None, "events_partitions": PARTITIONS},
        "model": {"name": "logistic_regression"},
        "budget": {"fraction": BUDGET_FRACTION, "rate": None, "max_open_requests": None},
        "snapshots": {"dir": str(workdir / "snapshots")},
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": 0},
    }


def _wait_with_rusage(proc: subprocess.Popen[bytes], timeout: float) -> float:
    """Reap the child like ``proc.wait`` and return its user+sys CPU seconds."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            raise TimeoutError(f"engine still running after {timeout:.0f} s")
        time.sleep(0.05)


def run_engine(config: dict[str, Any], workdir: Path, timeout: float) -> tuple[dict[str, Any], float, float]:
    """Run ``stream-al run`` until it is idle; returns (its stats JSON, CPU seconds, wall seconds)."""
    config_path, stats_path, log_path = workdir / "engine.yaml", workdir / "stats.json", workdir / "engine.log"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    command = [
        sys.executable, "-m", "stream_al.cli", "run", "--config", str(config_path),
        "--idle-exit-seconds", str(IDLE_EXIT_SECONDS), "--stats-json", str(stats_path),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_AL_")}  # only the file counts
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            cpu = _wait_with_rusage(proc, timeout)
        finally:
            if proc.returncode is None:  # timed out or interrupted: do not leave it behind
                proc.kill()
                proc.wait()
    wall = time.perf_counter() - started
    if proc.returncode != 0 or not stats_path.is_file():
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"engine exited with code {proc.returncode}; last lines of its log:\n{tail}")
    return orjson.loads(stats_path.read_bytes()), cpu, wall


# -- one run ------------------------------------------------------------------------------------


def run_once(
    index: int, bootstrap: str, events: list[bytes], workdir: Path, timeout: float, keep_topics: bool, predictions: bool = True,
) -> RunResult:
    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    topics = topic_names(prefix)
    rundir = workdir / f"run{index}"
    rundir.mkdir()
    result = RunResult(run=index)
    create_topics(bootstrap, topics)
    try:
        seconds = produce(bootstrap, topics["events"], events)
        print(f"run {index}: produced {len(events)} events to {topics['events']} in {seconds:.1f} s", flush=True)

        count, rate, join, cpu = plain_loop(bootstrap, topics["events"], f"{prefix}-plain", len(events))
        result.plain_events, result.plain_events_per_second, result.plain_join_seconds, result.plain_cpu_seconds = count, rate, join, cpu
        result.plain_cpu_percent = 100 * cpu * rate / count
        print(f"run {index}: plain loop {rate:,.0f} events/s (group join {join:.1f} s)", flush=True)

        analyst = InstantAnalyst(bootstrap, topics["label_requests"], topics["labels"])
        analyst.start()
        try:
            config = engine_config(bootstrap, topics, f"{prefix}-engine", rundir, predictions)
            stats, cpu, wall = run_engine(config, rundir, timeout)
        finally:
            analyst.stop()
        if analyst.error is not None:
            raise RuntimeError(f"instant analyst failed: {analyst.error!r}") from analyst.error
    finally:
        if not keep_topics:
            delete_topics(bootstrap, topics)

    latency = stats.get("label_to_update_seconds") or {}
    result.engine_stats = stats
    result.engine_events = stats.get("events_this_run", 0)
    result.engine_events_per_second = stats.get("events_per_second")
    if result.engine_events_per_second:
        result.ratio = result.engine_events_per_second / result.plain_events_per_second
    result.label_to_update_p50_ms = None if latency.get("p50") is None else latency["p50"] * 1000
    result.label_to_update_p99_ms = None if latency.get("p99") is None else latency["p99"] * 1000
    result.labels_applied = stats.get("labels_applied", 0)
    result.label_requests = stats.get("label_requests", 0)
    result.budget_used_ratio = stats.get("budget_used_ratio")
    result.engine_cpu_seconds, result.engine_wall_seconds = cpu, wall
    result.analyst_answers = analyst.answered
    if result.engine_events != len(events):
        print(f"WARNING: run {index}: the engine scored {result.engine_events} events, not {len(events)}", file=sys.stderr)
    return result


# -- report -------------------------------------------------------------------------------------

COLUMNS = [
    ("run", "run", "{}"),
    ("plain ev/s", "plain_events_per_second", "{:,.0f}"),
    ("plain CPU %", "plain_cpu_percent", "{:.0f}"),
    ("engine ev/s", "engine_events_per_second", "{:,.0f}"),
    ("engine/plain", "ratio", "{:.3f}"),
    ("l->u p50 ms", "label_to_update_p50_ms", "{:.1f}"),
    ("l->u p99 ms", "label_to_update_p99_ms", "{:.1f}"),
    ("labels", "labels_applied", "{:,.0f}"),
    ("budget used", "budget_used_ratio", "{:.3f}"),
    ("engine CPU s", "engine_cpu_seconds", "{:.1f}"),
    ("engine wall s", "engine_wall_seconds", "{:.1f}"),
]


def medians(results: list[RunResult]) -> dict[str, Any]:
    out: dict[str, Any] = {"run": "median"}
    for _, key, _ in COLUMNS[1:]:
        values = [getattr(r, key) for r in results if getattr(r, key) is not None]
        out[key] = statistics.median(values) if values else None
    return out


def print_table(results: list[RunResult], median: dict[str, Any]) -> None:
    rows = [[_fmt(fmt, getattr(r, key)) for _, key, fmt in COLUMNS] for r in results]
    rows.append([_fmt(fmt, median[key]) for _, key, fmt in COLUMNS])
    widths = [max(len(title), *(len(row[i]) for row in rows)) for i, (title, _, _) in enumerate(COLUMNS)]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.rjust(w) for cell, w in zip(cells, widths))

    print()
    print(line([title for title, _, _ in COLUMNS]))
    for i, row in enumerate(rows):
        if i == len(rows) - 1:
            print(line(["-" * w for w in widths]))
        print(line(row))


def _fmt(fmt: str, value: Any) -> str:
    return "-" if value is None else fmt.format(value)


@contextlib.contextmanager
def broker(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    from stream_al.embedded_broker import EmbeddedBroker

    with EmbeddedBroker() as embedded:
        print(f"embedded broker at {embedded.bootstrap}", flush=True)
        yield embedded.bootstrap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="use this broker instead of starting an embedded one")
    parser.add_argument("--events", type=int, default=200_000, help="events per run (default 200000)")
    parser.add_argument("--runs", type=int, default=3, help="runs; the table ends with the medians (default 3)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every result and the medians here")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds one engine run may take (default 900)")
    parser.add_argument("--keep-topics", action="store_true", help="do not delete the benchmark topics afterwards")
    parser.add_argument("--no-predictions", action="store_true", help="engine without the predictions topic (to see its cost)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep each run's engine config, log and snapshots (the path is printed)")
    args = parser.parse_args(argv)
    if args.events < 1 or args.runs < 1:
        parser.error("--events and --runs must be at least 1")

    load = os.getloadavg()[0]
    if load > 0.5:  # measured before this script adds any load of its own
        print(f"WARNING: the 1-minute load average is {load:.2f} before the benchmark starts: other processes compete"
              " for the CPU and every number below is lower than on an idle machine", file=sys.stderr)
    crc_fast = check_crc32c()
    print(f"generating {args.events:,} events with {FEATURES} features ...", flush=True)
    events = make_events(args.events)
    workdir = Path(tempfile.mkdtemp(prefix="stream-al-bench-"))
    results: list[RunResult] = []
    try:
        with broker(args.bootstrap) as bootstrap:
            for index in range(1, args.runs + 1):
                results.append(run_once(index, bootstrap, events, workdir, args.timeout, args.keep_topics, not args.no_predictions))
    finally:
        if args.keep_workdir:
            print(f"engine configs, logs and snapshots kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    median = medians(results)
    print_table(results, median)
    print(
        f"\nmachine: {os.cpu_count()} vCPUs (two busy processes get ~1.8x one on the reference box when it is quiet); the plain loop and\n"
        "the engine run one after the other, but the broker (and, for the engine, the analyst thread) share the CPU.\n"
        f"events: {args.events:,} per run, {FEATURES} features, {PARTITIONS} partitions; engine: logistic_regression,"
        f" budget.fraction {BUDGET_FRACTION}, predictions {'off' if args.no_predictions else 'on'}; crc32c in C: {'yes' if crc_fast else 'NO'}.\n"
        "plain CPU %: CPU time of this process over the plain loop's first-to-last window (under 100: it waited for\n"
        "the broker). l->u: time from the label's Kafka timestamp to the model update. engine CPU: user+sys of the\n"
        f"whole engine process, start-up and the {IDLE_EXIT_SECONDS} s idle exit included."
    )
    if args.json:
        report = {
            "settings": {"events": args.events, "runs": args.runs, "features": FEATURES, "partitions": PARTITIONS,
                         "budget_fraction": BUDGET_FRACTION, "predictions": not args.no_predictions,
                         "embedded_broker": args.bootstrap is None,
                         "cpu_count": os.cpu_count(), "load_average_at_start": load, "crc32c_c": crc_fast},
            "runs": [asdict(r) for r in results],
            "median": median,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
