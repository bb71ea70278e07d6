"""The ``stream-al`` command: ``run``, ``review``, ``demo``, ``simulate``, ``topics create|check``, ``config``, ``rebuild``."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from stream_al.config import Settings

log = logging.getLogger("stream_al")


def load_settings(config: str | None, bootstrap: str | None = None, **overrides: Any) -> Settings:
    """Settings for a command, with a ``--bootstrap`` merged over the file's kafka section."""
    try:
        if bootstrap:
            kafka = Settings.load(config).kafka.model_dump() if config else {}
            overrides["kafka"] = {**kafka, "bootstrap_servers": bootstrap}
        return Settings.load(config, **overrides)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()]
        raise SystemExit("invalid configuration:\n" + "\n".join(lines)) from None
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from None


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # kafka-python logs every reconnect attempt at INFO/ERROR; the engine reports what matters.
    logging.getLogger("kafka").setLevel(logging.CRITICAL if level != "DEBUG" else logging.DEBUG)


def _cmd_run(args: argparse.Namespace) -> int:
    from stream_al.kafka_io import TopicsMissing
    from stream_al.runner import Runner, RunLimits

    settings = load_settings(args.config, args.bootstrap)
    setup_logging(settings.log_level)
    runner = Runner(settings, RunLimits(args.max_events, args.idle_exit_seconds), args.stats_json)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s: finishing the batch, then a final checkpoint", signal.Signals(signum).name)
        runner.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return runner.run()
    except TopicsMissing as exc:
        log.error("%s", exc)
        return 3


def _cmd_topics(args: argparse.Namespace) -> int:
    from stream_al.kafka_io import check_topics, create_topics

    settings = load_settings(args.config, args.bootstrap)
    setup_logging(settings.log_level)
    report = create_topics(settings) if args.action == "create" else check_topics(settings)
    for topic, status in report.items():
        print(f"{topic:30s} {status}")
    return 0 if all(s in ("created", "exists") or s.startswith("ok") for s in report.values()) else 1


def _cmd_rebuild(args: argparse.Namespace) -> int:
    from stream_al.rebuild import rebuild

    settings = load_settings(args.config, args.bootstrap)
    setup_logging(settings.log_level)
    report = rebuild(settings, args.snapshots_dir)
    print(f"label requests read  {report.requests:,}")
    print(f"labels read          {report.labels_read:,}")
    print(f"labels applied       {report.labels_applied:,}")
    print(f"labels rejected      {report.labels_rejected or 0}")
    print(f"requests still open  {report.open_requests:,}")
    print(f"snapshot             {report.snapshot}")
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, args.bootstrap)
    print(json.dumps(settings.redacted(), indent=2, default=str))
    return 0


def _cmd_review(args: argparse.Namespace) -> int:
    from stream_al.review.server import build_server

    overrides: dict[str, Any] = {}
    settings = load_settings(args.config, args.bootstrap)
    review = {k: v for k, v in (("host", args.host), ("port", args.port), ("db_path", args.db)) if v is not None}
    if review:
        overrides["review"] = {**settings.review.model_dump(), **review}
        settings = load_settings(args.config, args.bootstrap, **overrides)
    setup_logging(settings.log_level)
    if not settings.review.analysts:
        raise SystemExit("no analysts configured: add review.analysts (name: token) to the config, "
                         "or set STREAM_AL_REVIEW__ANALYSTS='{\"ana\": \"a-long-random-token\"}'")
    try:
        server = build_server(settings)
    except OSError as exc:
        raise SystemExit(f"cannot listen on {settings.review.host}:{settings.review.port}: {exc}") from None
    log.info("review queue on %s (store %s, %d analysts)", server.url, settings.review.db_path, len(settings.review.analysts))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print(f"review queue on {server.url}", flush=True)
    bridge = server.review.bridge
    try:
        while not stop.wait(0.5):
            if bridge is not None and bridge.error:
                break  # a supervisor restarts us; the database keeps every answer
            if not server.alive:
                log.error("the web server stopped")
                return 1
    finally:
        server.stop()
    if bridge is not None and bridge.error:
        log.error("Kafka bridge failed: %s", bridge.error)
        return 3 if "TopicsMissing" in bridge.error else 1
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from stream_al.demo import DemoOptions, run_demo, run_traffic

    setup_logging("WARNING" if not args.verbose else "INFO")
    options = DemoOptions(
        bootstrap=args.bootstrap, events=args.events, rate=args.rate, budget=args.budget, analysts=args.analysts,
        answers_per_second=args.answers_per_second, answer_delay=args.answer_delay, seed=args.seed,
        summary_json=args.summary_json, progress=not args.no_progress, metrics_port=args.metrics_port,
        traffic_only=args.traffic_only, review_port=None if args.no_review else args.review_port,
        human_share=args.human_share,
    )
    if args.traffic_only:
        if not (args.config or args.bootstrap):
            raise SystemExit("--traffic-only feeds an engine running elsewhere: give its --config (or --bootstrap)")
        return run_traffic(options, load_settings(args.config, args.bootstrap))
    return run_demo(options)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from stream_al.simulate.command import run as run_simulation

    return run_simulation(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stream-al", description="Streaming online active learning on Kafka.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", "-c", help="YAML settings file (STREAM_AL_... variables override it)")
        p.add_argument("--bootstrap", help="Kafka bootstrap servers, overrides kafka.bootstrap_servers")
        return p

    run = with_config(sub.add_parser("run", help="score events from Kafka and ask for labels"))
    run.add_argument("--max-events", type=int, help="stop after this many events (with a final checkpoint)")
    run.add_argument("--idle-exit-seconds", type=float, help="stop after this long with nothing to consume")
    run.add_argument("--stats-json", type=Path, help="write final counters and latencies here on exit")
    run.set_defaults(func=_cmd_run)

    topics = with_config(sub.add_parser("topics", help="create or check the engine's topics"))
    topics.add_argument("action", choices=["create", "check"])
    topics.set_defaults(func=_cmd_topics)

    rebuild = with_config(sub.add_parser("rebuild", help="build a fresh model from the whole label log, as a snapshot"))
    rebuild.add_argument("--snapshots-dir", type=Path, help="write here instead of snapshots.dir")
    rebuild.set_defaults(func=_cmd_rebuild)

    config = with_config(sub.add_parser("config", help="print the effective settings (secrets masked)"))
    config.set_defaults(func=_cmd_config)

    review = with_config(sub.add_parser("review", help="serve the analysts' review queue (web app)"))
    review.add_argument("--host", help="listen address (default review.host, 127.0.0.1)")
    review.add_argument("--port", type=int, help="listen port (default review.port, 8088)")
    review.add_argument("--db", type=Path, help="SQLite file of the queue (default review.db_path)")
    review.set_defaults(func=_cmd_review)

    from stream_al.demo import DemoOptions

    d = DemoOptions()
    demo = sub.add_parser("demo", help="the whole loop on a synthetic fraud stream, with simulated analysts")
    demo.add_argument("--bootstrap", help="use this Kafka instead of starting an embedded broker")
    demo.add_argument("--config", "-c", help="with --traffic-only: the engine's settings (topics, classes)")
    demo.add_argument("--traffic-only", action="store_true", help="only the synthetic stream and analysts, for an engine running elsewhere")
    demo.add_argument("--events", type=int, default=d.events, help=f"events to produce (default {d.events})")
    demo.add_argument("--rate", type=float, default=d.rate, help=f"events per second (default {d.rate:g})")
    demo.add_argument("--budget", type=float, default=d.budget, help=f"fraction of events to ask about (default {d.budget})")
    demo.add_argument("--analysts", type=int, default=d.analysts, help=f"simulated analysts (default {d.analysts})")
    demo.add_argument("--answers-per-second", type=float, default=d.answers_per_second, help=f"answers per analyst per second (default {d.answers_per_second:g})")
    demo.add_argument("--answer-delay", type=float, default=d.answer_delay, help=f"mean seconds before an analyst answers (default {d.answer_delay:g})")
    demo.add_argument("--seed", type=int, default=d.seed)
    demo.add_argument("--summary-json", type=Path, help="write the final summary here")
    demo.add_argument("--metrics-port", type=int, default=d.metrics_port, help=f"engine /metrics port (default {d.metrics_port}; taken: any free port)")
    demo.add_argument("--review-port", type=int, default=d.review_port, help=f"port of the review queue web app (default {d.review_port}; taken: any free port)")
    demo.add_argument("--no-review", action="store_true", help="do not start the review queue web app")
    demo.add_argument("--human-share", type=float, default=d.human_share, help=f"share of requests the simulated analysts leave to the review app (default {d.human_share:g}; with --traffic-only and no review app, use 0)")
    demo.add_argument("--no-progress", action="store_true", help="no live progress line")
    demo.add_argument("--verbose", action="store_true", help="engine logs on stderr")
    demo.set_defaults(func=_cmd_demo)

    from stream_al.simulate.command import DESCRIPTION, add_arguments

    simulate = add_arguments(sub.add_parser("simulate", help="offline replay of a labelled stream (no Kafka)", description=DESCRIPTION))
    simulate.set_defaults(func=_cmd_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
