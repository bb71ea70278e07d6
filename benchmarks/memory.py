"""Memory benchmark: the engine's RSS over a long stream, with a 5% budget and analysts answering.

What it does (one run):

1. creates fresh topics (``events`` with 4 partitions) on an embedded Tansu broker (or ``--bootstrap``);
2. starts ``python -m stream_al.cli run`` as a subprocess: logistic regression, 30 numeric features,
   ``budget.fraction: 0.05``, predictions on, ``/metrics`` on a free port picked here;
3. an *instant analyst* thread answers every label request as soon as it appears (the same analyst as
   ``throughput.py``), so labels flow for the whole run and the engine's label stores fill up;
4. a producer thread produces N events from a seeded RNG, in chunks, while the engine runs, and never
   more than ``--max-lag`` events ahead of what the engine has scored: 1M events are never held in
   this process, and the broker's backlog stays bounded (the in-memory broker still keeps every
   record it was sent; its RSS is shown for information, it is not the engine's);
5. every second it reads the engine's ``VmRSS``/``VmHWM`` from ``/proc/<pid>/status`` and its
   ``stream_al_events_total``, ``stream_al_pending_requests`` and ``stream_al_model_version`` from
   ``/metrics``. At the first sample past each checkpoint (default 100k and 1M events) it records the
   RSS (that sample, and the median of the last 5 samples: one sample swings by +-20 MiB with the
   batch in flight and the garbage collector) and measures the engine's bounded stores (open requests, answered window, features kept for
   corrections, waiting labels) in its newest snapshot, by deep ``sys.getsizeof``;
6. when every event is scored, SIGTERM, and the final ``--stats-json`` is read.

Verdict: the RSS growth (5-sample medians) between the first and the last checkpoint, minus the growth of the bounded
stores over the same span, must stay under ``--tolerance-mib`` (default 50 MiB). Why 50 MiB: between
100k and 1M events the engine sees 900k more events, so any per-event leak of 60 bytes or more
(one small dict entry, one float in a list) shows up as more than 50 MiB; an allocator's
fragmentation and the interpreter's caches stay well under it. The raw growth and its share of the
RSS at the first checkpoint are printed too. Note that with a 5% budget 1M events give ~50k labels,
below ``requests.applied_window`` (100k): the answered window is still filling at 1M, which is why
its growth is measured and subtracted rather than assumed to be zero.

Run it::

    /tmp/probe/bin/python benchmarks/memory.py                       # 1M events, checkpoints 100k and 1M
    /tmp/probe/bin/python benchmarks/memory.py --events 200000 --checkpoints 50000,200000 --json mem.json

On a small, shared machine (2 vCPUs behaving like ~1 core here) throughput, and so the run time,
varies with the other load; RSS is much less sensitive to it than throughput is.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
try:
    import stream_al  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

from kafka import KafkaProducer
from throughput import (  # same directory: the same topics, engine config and analyst
    FEATURES,
    InstantAnalyst,
    broker,
    check_crc32c,
    create_topics,
    delete_topics,
    engine_config,
    topic_names,
)

from stream_al.snapshot import SnapshotStore

MIB = 1024 * 1024
RSS_WINDOW = 5  # a checkpoint's RSS is the median of this many 1-second samples: one sample swings by +-20 MiB
STORES = ("pending", "answered", "answered_features", "waiting", "expired")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes; {} once it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def scrape(port: int) -> dict[str, float]:
    """The engine's unlabelled series from /metrics (labelled ones are summed per name)."""
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return {}
    values: dict[str, float] = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        name = name.split("{", 1)[0]
        try:
            values[name] = values.get(name, 0.0) + float(value)
        except ValueError:
            continue
    return values


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes held by ``obj`` and everything it references (containers, pydantic models, slots)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        size += sum(deep_size(item, seen) for item in obj)
    elif isinstance(obj, (str, bytes, int, float, bool, type(None))):
        pass
    else:
        if hasattr(obj, "__dict__"):
            size += deep_size(vars(obj), seen)
        for slot in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, slot):
                size += deep_size(getattr(obj, slot), seen)
    return size


def bounded_stores(snapshots_dir: Path) -> dict[str, Any]:
    """Entries and deep bytes of each bounded store in the engine's newest snapshot."""
    try:
        loaded = SnapshotStore(snapshots_dir).load_latest()
    except Exception as exc:  # noqa: BLE001  a snapshot being rotated: report, do not fail the run
        return {"error": repr(exc)}
    if loaded is None:
        return {"error": "no snapshot yet"}
    path, snapshot = loaded
    engine = snapshot["engine"]
    out: dict[str, Any] = {"snapshot": path.name, "model_version": engine.get("model_version")}
    total = 0
    for name in STORES:
        store = engine.get(name)
        if store is None:
            continue
        size = deep_size(store)
        total += size
        out[name] = {"entries": len(store), "bytes": size}
    out["total_bytes"] = total
    return out


def event_stream(n: int, seed: int):
    """Encoded events ``e0 .. e<n-1>``, generated lazily: uniform features in [0, 1)."""
    rng = random.Random(seed)
    names = [f"f{j}" for j in range(FEATURES)]
    dumps = orjson.dumps
    for i in range(n):
        yield dumps({"id": f"e{i}", "ts": time.time(), "features": {name: rng.random() for name in names}})


class Producer(threading.Thread):
    """Produces N events in chunks, never more than ``max_lag`` ahead of the engine's count."""

    def __init__(self, bootstrap: str, topic: str, events: int, seed: int, max_lag: int, chunk: int = 5000):
        super().__init__(name="producer", daemon=True)
        self.bootstrap, self.topic, self.events, self.seed = bootstrap, topic, events, seed
        self.max_lag, self.chunk = max_lag, chunk
        self.produced = 0
        self.engine_events = 0  # updated by the sampler
        self.error: BaseException | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap, linger_ms=5, batch_size=256 * 1024, acks=1, metrics_enabled=False,
        )
        try:
            stream = event_stream(self.events, self.seed)
            while self.produced < self.events and not self.halt.is_set():
                if self.produced - self.engine_events >= self.max_lag:
                    time.sleep(0.2)
                    continue
                count = 0
                for value in stream:
                    producer.send(self.topic, value=value)
                    count += 1
                    if count == self.chunk:
                        break
                producer.flush()
                self.produced += count
        except BaseException as exc:  # noqa: BLE001  (reported by the main thread)
            self.error = exc
        finally:
            producer.close(timeout=10)


def run(args: argparse.Namespace, bootstrap: str, broker_pid: int | None, workdir: Path) -> dict[str, Any]:
    prefix = f"bench-mem-{uuid.uuid4().hex[:8]}"
    topics = topic_names(prefix)
    create_topics(bootstrap, topics)
    port = free_port()
    config = engine_config(bootstrap, topics, f"{prefix}-engine", workdir, predictions=True)
    config["metrics"]["port"] = port
    config["log_level"] = "WARNING"
    config_path, stats_path, log_path = workdir / "engine.yaml", workdir / "stats.json", workdir / "engine.log"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    snapshots = Path(config["snapshots"]["dir"])

    analyst = InstantAnalyst(bootstrap, topics["label_requests"], topics["labels"])
    producer = Producer(bootstrap, topics["events"], args.events, args.seed, args.max_lag)
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_AL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "stream_al.cli", "run", "--config", str(config_path), "--stats-json", str(stats_path)]
    samples: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    pending_marks = sorted(args.checkpoints)
    started = time.monotonic()
    log = open(log_path, "wb")  # noqa: SIM115  (closed in the finally below)
    engine = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    analyst.start()
    producer.start()
    exit_code = None
    try:
        last_progress, last_count = time.monotonic(), -1
        while True:
            time.sleep(1.0)
            if engine.poll() is not None:
                raise RuntimeError(f"the engine exited early with code {engine.returncode}; see {log_path}")
            if producer.error is not None:
                raise RuntimeError(f"producer failed: {producer.error!r}")
            status, metrics = proc_status(engine.pid), scrape(port)
            count = int(metrics.get("stream_al_events_total", 0))
            producer.engine_events = count
            sample = {
                "t": round(time.monotonic() - started, 1), "events": count, "rss": status.get("VmRSS"),
                "hwm": status.get("VmHWM"), "pending": metrics.get("stream_al_pending_requests"),
                "model_version": metrics.get("stream_al_model_version"),
                "broker_rss": proc_status(broker_pid).get("VmRSS") if broker_pid else None,
            }
            samples.append(sample)
            while pending_marks and count >= pending_marks[0]:
                window = [x["rss"] for x in samples[-RSS_WINDOW:] if x["rss"]]
                mark = {"checkpoint": pending_marks.pop(0), **sample, "rss_median": statistics.median(window),
                        "stores": bounded_stores(snapshots)}
                marks.append(mark)
                print(f"  checkpoint {mark['checkpoint']:>9,}: at {count:,} events RSS {sample['rss'] / MIB:.1f} MiB,"
                      f" {int(sample['pending'] or 0)} pending, {mark['stores'].get('answered', {}).get('entries', '?')} answered"
                      f" (t={sample['t']:.0f} s)", flush=True)
            if count != last_count:
                last_progress, last_count = time.monotonic(), count
            if len(samples) % 15 == 0:
                rate = count / max(1e-9, sample["t"])
                print(f"  t={sample['t']:5.0f} s  events {count:>9,}  produced {producer.produced:>9,}  RSS {sample['rss'] / MIB:6.1f} MiB"
                      f"  labels {int(sample['model_version'] or 0):>6,}  ~{rate:,.0f} ev/s", flush=True)
            if count >= args.events and not pending_marks:
                break
            if time.monotonic() - last_progress > args.stall_timeout:
                raise RuntimeError(f"no progress for {args.stall_timeout:.0f} s at {count:,} events")
            if time.monotonic() - started > args.timeout:
                raise RuntimeError(f"timed out after {args.timeout:.0f} s at {count:,} events")
        engine.send_signal(signal.SIGTERM)
        exit_code = engine.wait(120)
    finally:
        producer.halt.set()
        if engine.poll() is None:
            engine.kill()
            engine.wait()
        analyst.stop()
        log.close()
        if not args.keep_topics:
            delete_topics(bootstrap, topics)
    stats = orjson.loads(stats_path.read_bytes()) if stats_path.is_file() else {}
    peak = max((s["hwm"] or 0) for s in samples)
    return {
        "marks": marks, "samples": samples, "peak_rss": peak, "engine_exit_code": exit_code, "stats": stats,
        "wall_seconds": time.monotonic() - started, "analyst_answers": analyst.answered, "metrics_port": port,
    }


def report(result: dict[str, Any], args: argparse.Namespace) -> bool:
    marks = result["marks"]
    print()
    head = f"{'checkpoint':>10}  {'events seen':>11}  {'RSS MiB (sample)':>16}  {'RSS MiB (median 5 s)':>20}  {'pending':>7}  {'answered window':>15}  {'corr. features':>14}  {'stores MiB':>10}  {'labels':>7}  {'broker RSS MiB':>14}"
    print(head)
    print("-" * len(head))
    for m in marks:
        st = m["stores"]
        print(f"{m['checkpoint']:>10,}  {m['events']:>11,}  {m['rss'] / MIB:>16.1f}  {m['rss_median'] / MIB:>20.1f}  {int(m['pending'] or 0):>7,}"
              f"  {st.get('answered', {}).get('entries', 0):>15,}  {st.get('answered_features', {}).get('entries', 0):>14,}"
              f"  {st.get('total_bytes', 0) / MIB:>10.1f}  {int(m['model_version'] or 0):>7,}"
              f"  {(m['broker_rss'] or 0) / MIB:>14.1f}")
    print(f"peak engine RSS (VmHWM): {result['peak_rss'] / MIB:.1f} MiB")
    ok = True
    if len(marks) >= 2:
        first, last = marks[0], marks[-1]
        growth = last["rss_median"] - first["rss_median"]
        stores = last["stores"].get("total_bytes", 0) - first["stores"].get("total_bytes", 0)
        unexplained = growth - stores
        per_event = unexplained / max(1, last["events"] - first["events"])
        ok = unexplained < args.tolerance_mib * MIB
        print(f"RSS growth {first['checkpoint']:,} -> {last['checkpoint']:,} events: {growth / MIB:+.1f} MiB"
              f" (median of 5 samples each; {100 * growth / first['rss_median']:+.1f}% of the RSS at {first['checkpoint']:,}); bounded stores grew {stores / MIB:+.1f} MiB;"
              f" unexplained {unexplained / MIB:+.1f} MiB ({per_event:+.1f} bytes/event)")
        print(f"verdict: {'PASS' if ok else 'FAIL'} (unexplained growth must stay under {args.tolerance_mib:g} MiB:"
              f" a leak of >= {args.tolerance_mib * MIB / max(1, last['events'] - first['events']):.0f} bytes per event would exceed it)")
    else:
        print("verdict: n/a (fewer than two checkpoints reached)")
    stats = result["stats"]
    print(f"engine: exit code {result['engine_exit_code']}, {stats.get('events', '?'):,} events, {stats.get('label_requests', '?'):,} requests,"
          f" {stats.get('labels_applied', '?'):,} labels applied, rejected {stats.get('labels_rejected')}, dead letters {stats.get('dead_letters')},"
          f" pending {stats.get('pending_requests')}; analyst answered {result['analyst_answers']:,}; wall {result['wall_seconds']:.0f} s")
    print("caveat: the machine is shared and small (2 vCPUs behaving like ~1 core, other test suites running); that changes the"
          " run time, hardly the RSS. The broker's RSS is the in-memory Tansu holding every record sent, not the engine's.")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000, help="events to produce and score (default 1000000)")
    parser.add_argument("--checkpoints", default="100000,1000000", help="event counts at which to record RSS (default 100000,1000000)")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="use this broker instead of starting an embedded one")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the marks, every sample and the final stats here")
    parser.add_argument("--max-lag", type=int, default=50_000, help="most events produced ahead of the engine (default 50000)")
    parser.add_argument("--tolerance-mib", type=float, default=50.0, help="allowed RSS growth beyond the bounded stores (default 50)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds (default 3600)")
    parser.add_argument("--stall-timeout", type=float, default=120.0, help="give up after this long without progress (default 120)")
    parser.add_argument("--keep-topics", action="store_true")
    args = parser.parse_args(argv)
    args.checkpoints = sorted(int(c.replace("_", "")) for c in args.checkpoints.split(","))
    if args.checkpoints[-1] > args.events:
        parser.error(f"checkpoint {args.checkpoints[-1]} is beyond --events {args.events}")
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"WARNING: the 1-minute load average is {load:.2f} before the benchmark starts: other processes compete for the CPU", file=sys.stderr)
    crc_fast = check_crc32c()
    workdir = Path(tempfile.mkdtemp(prefix="stream-al-mem-"))
    try:
        with broker(args.bootstrap) as bootstrap:
            broker_pid = None
            if not args.bootstrap:
                from stream_al.embedded_broker import EmbeddedBroker

                broker_pid = next((b.pid for b in EmbeddedBroker._live if b.running and b.bootstrap == bootstrap), None)
            print(f"{args.events:,} events, checkpoints {', '.join(f'{c:,}' for c in args.checkpoints)}; engine: logistic_regression,"
                  f" {FEATURES} features, budget.fraction 0.05, predictions on, instant analyst", flush=True)
            result = run(args, bootstrap, broker_pid, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    ok = report(result, args)
    if args.json:
        out = {"settings": {**{k: v for k, v in vars(args).items() if k != "json"}, "embedded_broker": args.bootstrap is None,
                            "cpu_count": os.cpu_count(), "load_average_at_start": load, "crc32c_c": crc_fast}, **result, "pass": ok}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_bytes(orjson.dumps(out, option=orjson.OPT_INDENT_2, default=str))
        print(f"results written to {args.json}")
    return 0 if ok and result["engine_exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
