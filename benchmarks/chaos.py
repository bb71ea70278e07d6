"""Chaos soak (not in the default suite): engine replicas killed and restarted while events and labels flow.

What it does:

1. fresh topics (``events`` with 2 partitions per replica) on an embedded Tansu broker (or ``--bootstrap``);
2. ``--replicas`` (default 3) ``stream-al run`` processes, each with its own snapshot directory, all in
   one consumer group (``session_timeout_ms`` 6000), ``budget.fraction`` 0.1, checkpoints every 2 s or
   100 labels, predictions on;
3. a producer thread sends events ``ev-<i>`` (features ``x``, ``y``; fraud when x + y > 1) at a steady
   ``--rate``; an analyst thread reads ``label-requests`` from the beginning and answers each distinct
   request once (by ``request_id``); a request seen again (re-emitted after a crash, same
   deterministic id) is counted as a *duplicate absorbed* and not answered again;
4. for ``--duration`` seconds a chaos loop picks a random replica every 4-10 s, sends it SIGKILL or
   SIGTERM (half each), waits for it to exit and restarts it after a random 0.5-4 s pause. A replica
   that exits by itself is recorded as an unexpected exit (with its code) and restarted;
5. the end: stop producing, SIGTERM every replica, then run rounds in which each replica in turn is started
   with ``--idle-exit-seconds`` and left to catch up until it exits by itself; rounds repeat until a
   round adds no new label to the labels topic (so every replica has seen the whole label log);
6. checks, each printed, and the exit status is 1 if any fails:
   a. every event produced appears in ``predictions`` at least once (lost events = 0);
   b. for each replica, its final ``--stats-json``: ``labels_applied`` and ``model_version`` equal the
      number of distinct labels on the labels topic, ``labels_rejected`` is empty, and the labels topic
      holds no duplicate (no label lost or applied twice across all the kills);
   c. a model rebuilt offline from the label log (:func:`stream_al.rebuild.rebuild`, what
      ``stream-al rebuild`` runs) agrees with each replica's newest snapshot model on a 5x5 grid of
      probe points within ``--tolerance`` (0.02 by default: the order in which a restart re-reads labels
      and requests may differ, far below the effect of one label) and has the same model version;
   d. the distinct label requests stay within the budget over the whole run, kills and rebalances
      included: ``fraction`` x events produced + each replica's burst (10).

Run it::

    /tmp/probe/bin/python benchmarks/chaos.py --duration 120
    /tmp/probe/bin/python benchmarks/chaos.py --replicas 2 --duration 300 --seed 4 --bootstrap 127.0.0.1:9092

On a small shared machine the replicas, the broker and this script share the CPU; a rebalance takes a
few seconds, so with kills every few seconds the group is often rebalancing. That is the point.
The work directory (configs, every replica's logs and stats) is kept and printed unless ``--cleanup``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import yaml

REPO = Path(__file__).resolve().parent.parent
try:
    import stream_al  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

from stream_al.config import Settings
from stream_al.engine import Engine
from stream_al.kafka_io import RecordProducer, TopicReader, create_topics
from stream_al.rebuild import rebuild
from stream_al.snapshot import SnapshotStore
from stream_al.sampling import FractionBudget

PROBES = [{"x": x / 4, "y": y / 4} for x in range(5) for y in range(5)]


def settings_for(bootstrap: str, prefix: str, replicas: int, snapshots_dir: Path) -> Settings:
    return Settings(
        classes=["legit", "fraud"], positive_class="fraud", log_level="INFO",
        kafka={"bootstrap_servers": bootstrap, "group_id": f"{prefix}engine", "client_id": f"{prefix}engine", "session_timeout_ms": 6000},
        topics={
            "events": f"{prefix}events", "label_requests": f"{prefix}label-requests", "labels": f"{prefix}labels",
            "predictions": f"{prefix}predictions", "dead_letters": f"{prefix}dead-letters", "events_partitions": 2 * replicas,
        },
        budget={"fraction": 0.1},
        snapshots={"dir": str(snapshots_dir), "interval_seconds": 2, "every_labels": 100},
        metrics={"port": 0},
    )


class Replica:
    """One ``stream-al run`` process at a time, restarted as often as the chaos loop likes."""

    def __init__(self, index: int, settings: Settings, workdir: Path):
        self.index = index
        self.dir = workdir / f"replica{index}"
        self.dir.mkdir(parents=True)
        data = settings.model_dump(mode="json")
        data["snapshots"]["dir"] = str(self.dir / "snapshots")
        data["snapshots"]["key"] = None  # the engine keeps its own key beside its snapshots
        data["kafka"]["client_id"] = f"{data['kafka']['client_id']}-{index}"
        self.config = self.dir / "engine.yaml"
        self.config.write_text(yaml.safe_dump(data))
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.stats_path: Path | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, *args: str) -> None:
        self.starts += 1
        self.stats_path = self.dir / f"stats-{self.starts:03d}.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_AL_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.dir / "engine.log", "ab") as log:
            log.write(f"==== start {self.starts} {' '.join(args)} at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stream_al.cli", "run", "--config", str(self.config), "--stats-json", str(self.stats_path), *args],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )

    def signal(self, sig: signal.Signals, timeout: float = 90) -> int:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:  # a SIGTERM that did not end it: reported as code -999
            self.process.kill()
            self.process.wait()
            return -999

    def stats(self) -> dict[str, Any] | None:
        if self.stats_path is None or not self.stats_path.is_file():
            return None
        return orjson.loads(self.stats_path.read_bytes())


class EventProducer(threading.Thread):
    def __init__(self, settings: Settings, rate: float, seed: int):
        super().__init__(name="producer", daemon=True)
        self.settings, self.rate, self.rng = settings, rate, random.Random(seed)
        self.produced = 0
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        producer = RecordProducer(self.settings.kafka)
        started = time.monotonic()
        try:
            while not self.halt.is_set():
                due = int((time.monotonic() - started) * self.rate)
                while self.produced < due:
                    x, y = self.rng.random(), self.rng.random()
                    event = {"id": f"ev-{self.produced}", "ts": time.time(), "features": {"x": x, "y": y}}
                    producer.send(self.settings.topics.events, orjson.dumps(event))
                    self.produced += 1
                producer.flush()
                time.sleep(0.1)
            producer.flush()
        except BaseException as exc:  # noqa: BLE001  (reported by the main thread)
            self.error = exc
        finally:
            producer.close()


class Analyst(threading.Thread):
    """Answers each distinct request once, with the truth (fraud when x + y > 1)."""

    def __init__(self, settings: Settings):
        super().__init__(name="analyst", daemon=True)
        self.settings = settings
        self.seen: set[str] = set()
        self.requests_read = 0
        self.duplicates = 0
        self.last_answer = time.monotonic()
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        reader = TopicReader(self.settings.kafka, [self.settings.topics.label_requests], fetch_max_wait_ms=20)
        producer = RecordProducer(self.settings.kafka, linger_ms=1)
        try:
            while not self.halt.is_set():
                records = reader.poll(100)
                for record in records:
                    request = orjson.loads(record.value)
                    self.requests_read += 1
                    rid = request["request_id"]
                    if rid in self.seen:
                        self.duplicates += 1
                        continue
                    self.seen.add(rid)
                    f = request["features"]
                    label = {"schema_version": 1, "request_id": rid, "event_id": request["event_id"],
                             "label": "fraud" if f["x"] + f["y"] > 1 else "legit", "annotator": "chaos-analyst"}
                    producer.send(self.settings.topics.labels, orjson.dumps(label), rid.encode())
                    self.last_answer = time.monotonic()
                if records:
                    producer.flush()
        except BaseException as exc:  # noqa: BLE001  (reported by the main thread)
            self.error = exc
        finally:
            with contextlib.suppress(Exception):
                producer.flush()
                producer.close()
            with contextlib.suppress(Exception):
                reader.close()


def read_topic(settings: Settings, topic: str) -> list[Any]:
    reader = TopicReader(settings.kafka, [topic])
    try:
        return reader.read_to_end(timeout=300)[0]
    finally:
        reader.close()


def snapshot_engine(settings: Settings, directory: Path) -> Engine:
    loaded = SnapshotStore(directory).load_latest()
    if loaded is None:
        raise RuntimeError(f"no snapshot in {directory}")
    engine = Engine(settings)
    engine.restore(loaded[1]["engine"])
    return engine


def chaos(replicas: list[Replica], args: argparse.Namespace, rng: random.Random, log: list[str]) -> tuple[Counter, list[tuple[int, int]]]:
    kills: Counter = Counter()
    unexpected: list[tuple[int, int]] = []
    started = time.monotonic()
    next_at = started + rng.uniform(args.min_interval, args.max_interval)
    while time.monotonic() - started < args.duration:
        for r in replicas:  # a replica that died on its own: note it and bring it back
            if not r.alive:
                unexpected.append((r.index, r.process.returncode if r.process else -999))
                log.append(f"{time.monotonic() - started:6.1f} s  replica {r.index} exited by itself with {unexpected[-1][1]}: restarting")
                r.start()
        if time.monotonic() < next_at:
            time.sleep(0.2)
            continue
        victim = rng.choice(replicas)
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        t0 = time.monotonic()
        code = victim.signal(sig)
        kills[sig.name] += 1
        if sig == signal.SIGTERM and code == -signal.SIGTERM:
            kills["SIGTERM during start-up, before the handler (exit -15)"] += 1
        elif sig == signal.SIGTERM and code != 0:
            kills[f"SIGTERM exit {code}"] += 1
        pause = rng.uniform(0.5, 4.0)
        log.append(f"{t0 - started:6.1f} s  {sig.name} replica {victim.index} (run {victim.starts}): exit {code}"
                   f" after {time.monotonic() - t0:.1f} s; restart in {pause:.1f} s")
        time.sleep(pause)
        victim.start()
        next_at = time.monotonic() + rng.uniform(args.min_interval, args.max_interval)
    return kills, unexpected


def catch_up(replicas: list[Replica], settings: Settings, analyst: Analyst, args: argparse.Namespace, log: list[str]) -> list[dict[str, Any]]:
    """Rounds of all replicas with --idle-exit-seconds until a round adds no label; the last stats of each."""
    rounds = []
    for number in range(1, args.max_rounds + 1):
        labels_before = len(read_topic(settings, settings.topics.labels))
        codes = {}
        # One replica at a time: a group of one forms at once, while several members joining together
        # after the churn can keep Tansu's group coordinator rebalancing for minutes.
        for r in replicas:
            r.start("--idle-exit-seconds", str(args.idle_exit_seconds))
            deadline = time.monotonic() + args.round_timeout
            try:
                codes[r.index] = r.process.wait(max(1, deadline - time.monotonic()))  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                codes[r.index] = r.signal(signal.SIGTERM)
                log.append(f"round {number}: replica {r.index} did not go idle in {args.round_timeout:.0f} s: SIGTERMed")
        while time.monotonic() - analyst.last_answer < 3:  # let the analyst answer what the round asked
            time.sleep(0.5)
        labels_after = len(read_topic(settings, settings.topics.labels))
        rounds.append({"round": number, "exit_codes": codes, "labels_before": labels_before, "labels_after": labels_after})
        log.append(f"catch-up round {number}: exit codes {codes}, labels on the topic {labels_before} -> {labels_after}")
        if labels_after == labels_before:
            break
    return rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of chaos (default 180)")
    parser.add_argument("--replicas", type=int, default=3, help="engine replicas (default 3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="use this broker instead of starting an embedded one")
    parser.add_argument("--rate", type=float, default=150.0, help="events per second (default 150)")
    parser.add_argument("--min-interval", type=float, default=4.0, help="least seconds between two kills (default 4)")
    parser.add_argument("--max-interval", type=float, default=10.0, help="most seconds between two kills (default 10)")
    parser.add_argument("--idle-exit-seconds", type=float, default=8.0, help="catch-up rounds: idle time before a replica exits (default 8)")
    parser.add_argument("--round-timeout", type=float, default=300.0, help="most seconds one catch-up round may take (default 300)")
    parser.add_argument("--max-rounds", type=int, default=4)
    parser.add_argument("--tolerance", type=float, default=0.02, help="model agreement on the probe grid, absolute (default 0.02)")
    parser.add_argument("--cleanup", action="store_true", help="delete the work directory at the end")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"WARNING: the 1-minute load average is {load:.2f}: the replicas compete with other processes for the CPU", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(prefix="stream-al-chaos-"))
    print(f"work directory {workdir}", flush=True)
    started = time.monotonic()
    embedded = None
    if not args.bootstrap:
        from stream_al.embedded_broker import EmbeddedBroker

        embedded = EmbeddedBroker(log_path=workdir / "broker.log").start()
    bootstrap = args.bootstrap or embedded.bootstrap  # type: ignore[union-attr]
    events: list[str] = []
    try:
        prefix = f"chaos-{uuid.uuid4().hex[:8]}-"
        settings = settings_for(bootstrap, prefix, args.replicas, workdir / "unused")
        create_topics(settings)
        replicas = [Replica(i, settings, workdir) for i in range(args.replicas)]
        producer, analyst = EventProducer(settings, args.rate, args.seed), Analyst(settings)
        analyst.start()
        for r in replicas:
            r.start()
        time.sleep(3)
        producer.start()
        print(f"{args.replicas} replicas on {bootstrap}, {args.rate:g} events/s, chaos for {args.duration:g} s (seed {args.seed})", flush=True)
        log: list[str] = []
        kills, unexpected = chaos(replicas, args, rng, log)
        producer.halt.set()
        producer.join(30)
        during = {orjson.loads(r.value)["event_id"] for r in read_topic(settings, settings.topics.predictions)}
        print(f"chaos over after {time.monotonic() - started:.0f} s: {producer.produced:,} events produced, {len(during):,} of them"
              " predicted during the chaos; catching up", flush=True)
        for r in replicas:
            if r.alive:
                code = r.signal(signal.SIGTERM)
                log.append(f"end of chaos: SIGTERM replica {r.index}: exit {code}")
        rounds = catch_up(replicas, settings, analyst, args, log)
        analyst.halt.set()
        analyst.join(15)
        for line in log:
            print("  " + line)
        for thread in (producer, analyst):
            if thread.error is not None:
                raise RuntimeError(f"{thread.name} failed: {thread.error!r}") from thread.error
        # -- checks ------------------------------------------------------------------------------
        topics = settings.topics
        predictions = [orjson.loads(r.value)["event_id"] for r in read_topic(settings, topics.predictions)]
        requests = [orjson.loads(r.value)["request_id"] for r in read_topic(settings, topics.label_requests)]
        labels = [orjson.loads(r.value)["request_id"] for r in read_topic(settings, topics.labels)]
        dead = read_topic(settings, topics.dead_letters)
        produced = {f"ev-{i}" for i in range(producer.produced)}
        predicted = set(predictions)
        lost = produced - predicted
        distinct_labels = set(labels)
        failures: list[str] = []
        if lost:
            failures.append(f"(a) {len(lost)} events never predicted, e.g. {sorted(lost)[:5]}")
        if len(labels) != len(distinct_labels):
            failures.append(f"(b) the labels topic holds {len(labels) - len(distinct_labels)} duplicate labels")
        # (d) the budget over the whole run, every kill and rebalance included: each replica's
        # fraction bucket saves up at most its burst besides the fraction of its events.
        asked = set(requests)
        budget = settings.budget
        burst = FractionBudget(budget.fraction, budget.fraction_burst).burst  # the engine's own bucket, default 10
        budget_bound = budget.fraction * producer.produced + burst * len(replicas)
        if len(asked) > budget_bound:
            failures.append(f"(d) {len(asked):,} distinct requests for {producer.produced:,} events: over the budget's bound {budget_bound:,.0f}")
        unanswered = asked - distinct_labels
        if unanswered:
            failures.append(f"the analyst left {len(unanswered)} requests unanswered")
        rebuilt_dir = workdir / "rebuilt"
        report = rebuild(settings, rebuilt_dir)
        offline = snapshot_engine(settings, rebuilt_dir)
        per_replica = []
        for r in replicas:
            stats = r.stats() or {}
            row = {"replica": r.index, "starts": r.starts, "labels_applied": stats.get("labels_applied"),
                   "model_version": stats.get("model_version"), "labels_rejected": stats.get("labels_rejected"),
                   "events": stats.get("events"), "label_requests": stats.get("label_requests"), "dead_letters": stats.get("dead_letters")}
            if stats.get("labels_applied") != len(distinct_labels) or stats.get("model_version") != len(distinct_labels):
                failures.append(f"(b) replica {r.index}: labels_applied {stats.get('labels_applied')}, model_version"
                                f" {stats.get('model_version')}, distinct labels on the topic {len(distinct_labels)}")
            if stats.get("labels_rejected") != {}:
                failures.append(f"(b) replica {r.index}: labels_rejected {stats.get('labels_rejected')}")
            online = snapshot_engine(settings, r.dir / "snapshots")
            diff = max(abs(online.model.predict_proba_one(p)["fraud"] - offline.model.predict_proba_one(p)["fraud"]) for p in PROBES)
            row["max_probe_diff"] = diff
            row["snapshot_model_version"] = online.model_version
            if diff > args.tolerance or online.model_version != offline.model_version:
                failures.append(f"(c) replica {r.index}: snapshot model v{online.model_version} vs rebuilt v{offline.model_version},"
                                f" largest probe difference {diff:.4f} (tolerance {args.tolerance})")
            per_replica.append(row)
        # -- report ------------------------------------------------------------------------------
        print()
        print(f"events produced                 {producer.produced:,}")
        print(f"predictions (incl. replays)     {len(predictions):,} ({len(predictions) - len(predicted):,} replays), distinct events {len(predicted):,}")
        print(f"predicted during the chaos      {len(during):,} distinct events (the rest in the catch-up rounds)")
        print(f"lost events                     {len(lost):,}")
        print(f"label requests                  distinct {len(asked):,} (budget bound {budget_bound:,.0f}), total on the topic {len(requests):,}")
        print(f"duplicates absorbed             {len(requests) - len(asked):,} re-emitted requests (the analyst skipped {analyst.duplicates:,})")
        print(f"labels on the topic             {len(labels):,} ({len(distinct_labels):,} distinct)")
        print(f"dead letters                    {len(dead):,}")
        print(f"kills                           {dict(kills)}; unexpected exits {unexpected or 'none'}")
        print(f"catch-up rounds                 {[(r['round'], r['exit_codes'], r['labels_after']) for r in rounds]}")
        print(f"rebuilt from the label log      {report.labels_applied:,} labels applied, rejected {report.labels_rejected or {}}, model v{offline.model_version}")
        print(f"{'replica':>7}  {'starts':>6}  {'labels applied':>14}  {'model version':>13}  {'rejected':>8}  {'events (cum.)':>13}  {'requests':>8}  {'max |p - p_rebuilt|':>19}")
        for row in per_replica:
            print(f"{row['replica']:>7}  {row['starts']:>6}  {row['labels_applied'] or 0:>14,}  {row['model_version'] or 0:>13,}"
                  f"  {row['labels_rejected']!s:>8}  {row['events'] or 0:>13,}  {row['label_requests'] or 0:>8,}  {row['max_probe_diff']:>19.5f}")
        print(f"wall time {time.monotonic() - started:.0f} s; machine shared and small (2 vCPUs ~ 1 core, other suites running)")
        if failures:
            print("\nFAILED:")
            for failure in failures:
                print("  " + failure)
        else:
            print("\nOK: lost = 0, every label applied exactly once on every replica, every replica's model equals the rebuilt one,"
                  " the budget held")
        print(f"logs and stats in {workdir}")
        return 1 if failures else 0
    finally:
        for r in locals().get("replicas", []):
            if r.alive:
                r.process.kill()
                r.process.wait()
        if embedded is not None:
            embedded.stop()
        if args.cleanup:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
