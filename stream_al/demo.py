"""``stream-al demo``: the whole loop on one machine, in about a minute.

It starts an embedded Kafka-protocol broker (unless ``--bootstrap`` names one), creates the topics,
and runs, side by side:

- the engine (the same :class:`~stream_al.runner.Runner` as ``stream-al run``);
- a producer of a synthetic card-payment stream (:mod:`stream_al.synthetic`: ~3% fraud, and the
  fraud pattern changes half-way), with a little bad input mixed in;
- a simulated analyst team that reads label requests, answers each after a random delay, at a
  limited rate per analyst, and makes a few mistakes of form (unknown class, orphan, duplicate);
- a scorer that reads the predictions topic and compares it with the truth;
- the analysts' review queue (``stream-al review``) on the demo's topics, unless ``--no-review``:
  the simulated analysts leave a share of the requests (``--human-share``) to the people who open
  the page, so a newcomer can answer requests with the keyboard while the stream runs.

It prints live progress, then a summary table; ``--summary-json`` writes the summary.
"""

from __future__ import annotations

import hashlib
import logging
import math
import queue
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from stream_al.config import Settings
from stream_al.kafka_io import RecordProducer, TopicReader, create_topics
from stream_al.runner import Runner, RunLimits
from stream_al.synthetic import FraudStream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoOptions:
    bootstrap: str | None = None
    events: int = 60_000
    rate: float = 1000.0
    budget: float = 0.05
    analysts: int = 3
    answers_per_second: float = 20.0
    answer_delay: float = 0.5
    seed: int = 7
    summary_json: Path | None = None
    progress: bool = True
    metrics_port: int = 9108
    traffic_only: bool = False  # producer and analysts only, for an engine running elsewhere
    review_port: int | None = 8088  # the review queue's port (0: any free port); None: no review app
    human_share: float = 0.1  # requests the simulated analysts leave to the people in the review app


def for_humans(request_id: str, share: float) -> bool:
    """Whether the simulated analysts leave this request to the review app (a fixed share of ids)."""
    if share <= 0:
        return False
    draw = int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8, person=b"humans").digest(), "big")
    return draw / 2**64 < share


class Scoreboard:
    """Prequential accuracy and fraud F1 of the predictions topic against the truth."""

    def __init__(self, positive: str, window: int = 2000):
        self.positive = positive
        self.recent: deque[bool] = deque(maxlen=window)
        self.correct = self.total = 0
        self.tp = self.fp = self.fn = 0

    def add(self, predicted: str | None, truth: str) -> None:
        hit = predicted == truth
        self.recent.append(hit)
        self.correct += hit
        self.total += 1
        if predicted == self.positive:
            self.tp += truth == self.positive
            self.fp += truth != self.positive
        elif truth == self.positive:
            self.fn += 1

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else math.nan

    @property
    def rolling_accuracy(self) -> float:
        return sum(self.recent) / len(self.recent) if self.recent else math.nan

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0


class Demo:
    """The demo's moving parts; :meth:`run` returns the summary."""

    def __init__(self, options: DemoOptions, settings: Settings, workdir: Path):
        self.options = options
        self.settings = settings
        self.truth: dict[str, str] = {}
        self.produced = 0
        self.bad_events = 0
        self.producer_done = threading.Event()
        self.stop = threading.Event()
        self.answers = 0
        self.lock = threading.Lock()
        self.scoreboard = Scoreboard(settings.positive_class or settings.classes[-1])
        self.requests: queue.Queue[dict[str, Any]] = queue.Queue()
        self.runner = None if options.traffic_only else Runner(settings, RunLimits(), stats_path=workdir / "engine-stats.json")
        self.review_server: Any = None
        self.left_for_humans = 0

    @staticmethod
    def demo_settings(options: DemoOptions, bootstrap: str, workdir: Path) -> Settings:
        """The demo engine's settings: its own topics on a shared broker, budgets the analysts can meet."""
        prefix = "" if options.bootstrap is None else f"demo-{int(time.time())}-"
        capacity = options.analysts * options.answers_per_second
        return Settings(
            classes=["legit", "fraud"], positive_class="fraud", seed=options.seed, log_level="WARNING",
            kafka={"bootstrap_servers": bootstrap, "group_id": f"{prefix}stream-al-demo", "session_timeout_ms": 6000},
            topics={name: f"{prefix}{default}" for name, default in
                    [("events", "events"), ("label_requests", "label-requests"), ("labels", "labels"),
                     ("predictions", "predictions"), ("dead_letters", "dead-letters"), ("drift", "drift")]},
            # The analysts' capacity is a budget too: never ask faster than they can answer.
            budget={"fraction": options.budget, "rate": f"{capacity} per second", "max_open_requests": max(10, int(capacity * 30))},
            requests={"ttl_seconds": 60, "label_wait_seconds": 5},
            # The new fraud pattern shows in the events too (bursts of payments from new cards): the
            # per-feature watches see it without a label, beside the label-free and label signals.
            drift={"features": ("velocity_1h", "card_age_days")},
            snapshots={"dir": str(workdir / "snapshots"), "interval_seconds": 10},
            metrics={"port": options.metrics_port},
            review={"port": options.review_port or 0, "db_path": str(workdir / "review.sqlite3"), "double_annotation_share": 0.1,
                    "analysts": {"you": secrets.token_urlsafe(12), "alex": secrets.token_urlsafe(12)}},
        )

    # -- the parts ------------------------------------------------------------------------------

    def produce(self) -> None:
        opts, topics = self.options, self.settings.topics
        stream = FraudStream(seed=opts.seed, drift_at=opts.events // 2)
        producer = RecordProducer(self.settings.kafka)
        while self.runner is not None and not (self.runner.owns_partitions or self.stop.is_set()):
            time.sleep(0.1)  # a live stream: events start flowing once the engine has joined
        started = time.monotonic()
        try:
            for i in range(opts.events):
                if self.stop.is_set():
                    break
                event, label = stream.next()
                self.truth[event["id"]] = label
                producer.send(topics.events, orjson.dumps(event))
                self.produced += 1
                if i % 10_000 == 5_000:  # bad input must reach the dead-letter topic, not stop the engine
                    producer.send(topics.events, b'{"id": "broken", "features": {"amount": 1')
                    producer.send(topics.events, orjson.dumps({"id": f"bad-{i}", "features": {"amount": [1, 2]}}))
                    self.bad_events += 2
                ahead = (i + 1) / opts.rate - (time.monotonic() - started)
                if ahead > 0.005:
                    time.sleep(ahead)
            producer.flush()
        finally:
            producer.close()
            self.producer_done.set()

    def read_requests(self) -> None:
        reader = TopicReader(self.settings.kafka, [self.settings.topics.label_requests])
        seen: set[str] = set()
        try:
            while not self.stop.is_set():
                for record in reader.poll(100):
                    request = orjson.loads(record.value)
                    if request["request_id"] not in seen:  # replays after a restart repeat requests
                        seen.add(request["request_id"])
                        # A review app runs here, or (with --traffic-only) beside the engine elsewhere.
                        people = self.review_server is not None or self.options.traffic_only
                        if people and for_humans(request["request_id"], self.options.human_share):
                            self.left_for_humans += 1  # answered in the review app, or expires there
                            continue
                        self.requests.put(request)
        finally:
            reader.close()

    def analyst(self, number: int) -> None:
        opts, topic = self.options, self.settings.topics.labels
        rng_delay = FraudStream(seed=opts.seed * 100 + number).rng
        producer = RecordProducer(self.settings.kafka)
        pause = 1.0 / opts.answers_per_second
        try:
            while not self.stop.is_set():
                try:
                    request = self.requests.get(timeout=0.2)
                except queue.Empty:
                    continue
                think = rng_delay.expovariate(1 / opts.answer_delay) if opts.answer_delay > 0 else 0.0
                due = request["created_at"] + think
                if due > time.time():
                    time.sleep(min(5.0, due - time.time()))
                truth = self.truth.get(request["event_id"])
                if truth is None:
                    continue
                label = {"request_id": request["request_id"], "label": truth, "annotator": f"analyst-{number}", "labeled_at": time.time()}
                producer.send(topic, orjson.dumps(label), request["request_id"].encode())
                with self.lock:
                    self.answers += 1
                    make_mistakes = self.answers == 50
                if make_mistakes:
                    self._mistakes(producer, request, truth)
                time.sleep(pause)
        finally:
            producer.close()

    def _mistakes(self, producer: RecordProducer, request: dict[str, Any], truth: str) -> None:
        """Analysts' tools misbehave too: each of these must land in the dead-letter topic."""
        topic, rid = self.settings.topics.labels, request["request_id"]
        producer.send(topic, orjson.dumps({"request_id": rid, "label": "maybe"}))  # unknown class
        producer.send(topic, orjson.dumps({"request_id": rid, "label": truth}))  # duplicate
        producer.send(topic, orjson.dumps({"request_id": "rq-does-not-exist", "label": "fraud"}))  # orphan
        producer.send(topic, b"label: fraud")  # not JSON

    def score_predictions(self) -> None:
        reader = TopicReader(self.settings.kafka, [self.settings.topics.predictions])
        try:
            while not self.stop.is_set():
                for record in reader.poll(100):
                    prediction = orjson.loads(record.value)
                    truth = self.truth.get(prediction["event_id"])
                    if truth is not None:
                        self.scoreboard.add(prediction["predicted"], truth)
        finally:
            reader.close()

    # -- orchestration --------------------------------------------------------------------------

    def start_review(self) -> None:
        """The review queue on the demo's topics, in this process (uvicorn in a thread)."""
        from stream_al.review.app import create_app
        from stream_al.review.server import ReviewServer

        review = self.settings.review
        share = self.options.human_share
        # The page serves only the requests the simulated analysts leave alone: nobody answers under your cursor.
        app = create_app(self.settings, accept=lambda request: for_humans(request.request_id, share))
        try:
            server = ReviewServer(app, review.host, review.port)
        except OSError:  # the port is taken: any free one
            server = ReviewServer(app, review.host, 0)
        self.review_server = server.start()
        you = review.analysts["you"].get_secret_value()
        alex = review.analysts["alex"].get_secret_value()
        print(f"review queue: {server.url}  (sign in as 'you' with token {you}; a second analyst 'alex': {alex})", flush=True)
        print(f"  {self.options.human_share:.0%} of the requests are left to you there (the simulated analysts answer the rest); "
              "keys: N next, 1/2 legit/fraud, 0 can't tell, S skip, U undo", flush=True)

    def run(self) -> dict[str, Any]:
        create_topics(self.settings)
        if self.options.review_port is not None and self.runner is not None:
            self.start_review()
        engine = threading.Thread(target=self._run_engine, name="engine", daemon=True)
        if self.runner is not None:
            engine.start()
        workers = [threading.Thread(target=self.produce, name="producer", daemon=True),
                   threading.Thread(target=self.read_requests, name="requests", daemon=True)]
        if self.settings.topics.predictions:
            workers.append(threading.Thread(target=self.score_predictions, name="scorer", daemon=True))
        workers += [threading.Thread(target=self.analyst, args=(n,), name=f"analyst-{n}", daemon=True) for n in range(self.options.analysts)]
        for worker in workers:
            worker.start()
        started = time.monotonic()
        try:
            self._wait_until_done(started)
        except KeyboardInterrupt:
            print("\ninterrupted: stopping", file=sys.stderr)
        finally:
            if self.runner is not None:
                self.runner.stop()
                engine.join(timeout=30)
            self.stop.set()
            for worker in workers:
                worker.join(timeout=5)
            if self.review_server is not None:
                self.review_stats = self.review_server.review.store.stats(time.time())
                self.review_server.stop()
        return self.summary(time.monotonic() - started)

    def _run_engine(self) -> None:
        try:
            self.exit_code = self.runner.run()
        except Exception:
            log.exception("engine failed")
            self.exit_code = 1
            self.stop.set()

    def _wait_until_done(self, started: float) -> None:
        total = self.options.events
        last_print = 0.0
        settled_since: float | None = None
        while not self.stop.is_set():
            time.sleep(0.25)
            now = time.monotonic()
            if self.options.progress and now - last_print >= (0.5 if sys.stdout.isatty() else 5.0):
                last_print = now
                self._print_progress(now - started)
            if self.runner is None:
                engine_done = self.producer_done.is_set()
            else:
                engine_done = self.runner.events_this_run >= total + self.bad_events and self.producer_done.is_set()
            scored = not self.settings.topics.predictions or self.scoreboard.total >= self.produced
            answered = self.requests.empty() and scored
            if engine_done and answered:
                # Give the last answers a moment to reach the engine, then stop.
                settled_since = settled_since or now
                if now - settled_since >= 3.0:
                    break
            if now - started > max(120.0, 3 * total / self.options.rate):
                print("\ndemo timed out", file=sys.stderr)
                break
        if self.options.progress:
            self._print_progress(time.monotonic() - started, final=True)

    def _print_progress(self, elapsed: float, final: bool = False) -> None:
        if self.runner is None:
            line = (
                f"[{elapsed:5.1f}s] produced {self.produced:>8,} | answers {self.answers:>6,}"
                f" | predictions seen {self.scoreboard.total:>8,} | accuracy {self.scoreboard.rolling_accuracy:6.1%}"
            )
            print(line, flush=True)
            return
        c = self.runner.engine.counters
        line = (
            f"[{elapsed:5.1f}s] events {c.events:>7,} ({c.events / max(elapsed, 1e-9):>6,.0f}/s)"
            f" | requests {c.requests:>5,} | budget used {self.runner.engine.budget_used_ratio():4.0%}"
            f" | labels {c.labels_applied:>5,} | pending {len(self.runner.engine.pending):>4,}"
            f" | accuracy {self.scoreboard.rolling_accuracy:6.1%} | fraud F1 {self.scoreboard.f1:4.2f}"
            f" | dead letters {sum(self.runner.dead_letters.values())}"
        )
        if sys.stdout.isatty():
            print("\r" + line, end="\n" if final else "", flush=True)
        else:
            print(line, flush=True)

    def summary(self, elapsed: float) -> dict[str, Any]:
        if self.runner is None:
            return {"events": self.produced, "answers": self.answers, "accuracy": self.scoreboard.accuracy,
                    "fraud_f1": self.scoreboard.f1, "elapsed_seconds": round(elapsed, 1)}
        stats = self.runner.stats()
        events = stats["events"]
        return {
            "events": events,
            "label_requests": stats["label_requests"],
            "labels_applied": stats["labels_applied"],
            "budget_target": self.options.budget,
            "budget_achieved": stats["label_requests"] / events if events else 0.0,
            "accuracy": self.scoreboard.accuracy,
            "dead_letters": sum(stats["dead_letters"].values()),
            "dead_letters_by_reason": stats["dead_letters"],
            "rolling_accuracy": self.scoreboard.rolling_accuracy,
            "fraud_f1": self.scoreboard.f1,
            "requests_expired": stats["requests_expired"],
            "label_to_update_seconds": stats["label_to_update_seconds"],
            "drift_detections": stats["drift_detections"],
            "elapsed_seconds": round(elapsed, 1),
            "engine_exit_code": getattr(self, "exit_code", None),
            "review": self._review_summary(),
        }

    def _review_summary(self) -> dict[str, Any] | None:
        stats = getattr(self, "review_stats", None)
        if stats is None:
            return None
        return {"left_for_humans": self.left_for_humans, "requests": stats["requests"], "answers": stats["answers"],
                "labels_sent": stats["labels_sent"], "expired": stats["expired"]}


def print_summary(summary: dict[str, Any]) -> None:
    rows = [
        ("events scored", f"{summary['events']:,}"),
        ("label requests", f"{summary['label_requests']:,}"),
        ("labels applied", f"{summary['labels_applied']:,}"),
        ("budget target", f"{summary['budget_target']:.2%} of events"),
        ("budget achieved", f"{summary['budget_achieved']:.2%} of events"),
        ("accuracy (prequential)", f"{summary['accuracy']:.2%}"),
        ("accuracy (last 2,000)", f"{summary['rolling_accuracy']:.2%}"),
        ("fraud F1", f"{summary['fraud_f1']:.3f}"),
        ("dead letters", f"{summary['dead_letters']} {summary['dead_letters_by_reason']}"),
        ("requests expired", f"{summary['requests_expired']}"),
        ("label to update p50/p99", "{p50} / {p99}".format(**{k: f"{v * 1000:.1f} ms" if v is not None else "-" for k, v in summary["label_to_update_seconds"].items() if k != "count"})),
        ("drift detections", f"{sum(summary['drift_detections'].values())} {summary['drift_detections']}"),
        ("wall time", f"{summary['elapsed_seconds']} s"),
    ]
    if summary.get("review"):
        r = summary["review"]
        rows.insert(-1, ("review queue", f"{r['left_for_humans']} left for people, {r['answers']} answered there, {r['expired']} expired"))
    width = max(len(name) for name, _ in rows)
    print("\nstream-al demo summary")
    print("-" * (width + 40))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _any_free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_traffic(options: DemoOptions, settings: Settings) -> int:
    """Only the synthetic stream and the analysts, against the topics in ``settings``."""
    workdir = Path(tempfile.mkdtemp(prefix="stream-al-traffic-"))
    try:
        print(f"traffic to {settings.kafka.bootstrap_servers}: {options.rate:g} events/s, "
              f"{options.analysts} analysts x {options.answers_per_second:g} answers/s", flush=True)
        summary = Demo(options, settings, workdir).run()
        print(orjson.dumps(summary).decode())
        return 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_demo(options: DemoOptions) -> int:
    """Run the demo; returns the process exit code."""
    workdir = Path(tempfile.mkdtemp(prefix="stream-al-demo-"))
    broker = None
    try:
        if options.bootstrap is None:
            from stream_al.embedded_broker import EmbeddedBroker

            print("starting an embedded Kafka-protocol broker (Tansu)...", flush=True)
            broker = EmbeddedBroker(log_path=workdir / "broker.log").start()
            bootstrap = broker.bootstrap
        else:
            bootstrap = options.bootstrap
        port = options.metrics_port if _port_free(options.metrics_port) else _any_free_port()
        options = replace(options, metrics_port=port)
        demo = Demo(options, Demo.demo_settings(options, bootstrap, workdir), workdir)
        print(f"broker {bootstrap}; engine metrics on http://127.0.0.1:{port}/metrics", flush=True)
        print(f"{options.events:,} events at {options.rate:,.0f}/s, budget {options.budget:.0%}, "
              f"{options.analysts} analysts x {options.answers_per_second:g} answers/s, fraud pattern changes half-way", flush=True)
        summary = demo.run()
        print_summary(summary)
        if options.summary_json:
            options.summary_json.parent.mkdir(parents=True, exist_ok=True)
            options.summary_json.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        return 0 if summary["engine_exit_code"] == 0 and summary["labels_applied"] > 0 else 1
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
