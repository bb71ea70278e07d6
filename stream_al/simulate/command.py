"""``stream-al simulate``: the command line of the offline simulator.

>>> args = build_parser().parse_args(["--data", "phishing", "--budget", "0.05,0.1", "--compare"])
>>> runs_of(args.strategy, args.budget, args.compare)
[(None, 0.05), (None, 0.1)]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import ValidationError

from stream_al.config import Settings
from stream_al.simulate.data import NAMES, Stream, load_stream
from stream_al.simulate.delivery import AnalystPool, LabelDelay
from stream_al.simulate.progress import Progress
from stream_al.simulate.report import plot, summary, table, write_summary
from stream_al.simulate.run import RunResult, SimOptions, full_supervision, random_settings, simulate, with_overrides, with_strategy

DESCRIPTION = """Replay a labelled stream through the engine core, with no Kafka: every event is scored, the
sampler decides under the budget whether to ask for its label, and the label comes back after the
configured delay (and analyst capacity). Prequential evaluation: predict, then (maybe) learn."""


def _list(kind: type) -> Any:
    def parse(text: str) -> list[Any]:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]

    return parse


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``simulate`` flags, on ``p`` (the CLI's subparser, or a standalone parser)."""
    data = p.add_argument_group("stream")
    data.add_argument("--data", required=True, help=f"a stream name ({', '.join(NAMES)}) or a .csv / .jsonl file")
    data.add_argument("--target", help="the label column of a CSV / JSONL file (the other columns are the features)")
    data.add_argument("--events", type=int, help="use only the first N events (generators: default 20000)")
    data.add_argument("--shuffle", action="store_true",
                      help="replay a bundled dataset or a file in an order drawn from --seed (generators keep theirs)")
    data.add_argument("--classes", help="declare the class set, comma-separated (default: the labels in the data)")
    data.add_argument("--positive-class", help="the class analysts hunt for (F1, AP); default: true/1, or the rarer of two")
    data.add_argument("--time-column", help="event time from this column (epoch s/ms or ISO-8601) instead of one event per --seconds-per-event")
    data.add_argument("--seconds-per-event", type=float, default=1.0, help="simulated time between events (default 1)")
    eng = p.add_argument_group("engine")
    eng.add_argument("--config", "-c", help="YAML settings file; the flags below override it")
    eng.add_argument("--model", help="model name or dotted path (default: the settings' model, logistic_regression)")
    eng.add_argument("--strategy", type=_list(str), help="sampling strategy (comma-separated with --compare)")
    eng.add_argument("--budget", type=_list(float), help="labels per event, e.g. 0.05 (comma-separated with --compare)")
    eng.add_argument("--rate", help="a time-rate budget too, e.g. '120 per hour' (on the simulated clock)")
    eng.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="any setting by dotted path, e.g. sampler.random_share=0 or model.params.learning_rate=0.1")
    eng.add_argument("--seed", type=int, help="seed of the sampler's randomness, the generators and the delays")
    eng.add_argument("--compare", action="store_true", help="run every strategy x budget given, side by side")
    eng.add_argument("--no-baselines", action="store_true", help="skip the random and full-supervision baselines")
    lab = p.add_argument_group("labels")
    delay = lab.add_mutually_exclusive_group()
    delay.add_argument("--label-delay", type=int, default=0, metavar="EVENTS", help="a label arrives exactly this many events after its request (default 0)")
    delay.add_argument("--label-delay-seconds", type=float, metavar="S", help="a label arrives S simulated seconds after its request")
    delay.add_argument("--label-delay-exponential", type=float, metavar="MEAN_S", help="exponential delay with this mean, in seconds")
    lab.add_argument("--analysts", type=int, help="analysts answering requests (default: unlimited capacity)")
    lab.add_argument("--answers-per-hour", type=float, default=60.0, help="answers per analyst per hour (default 60)")
    lab.add_argument("--queue", choices=["fifo", "priority"], default="fifo", help="analysts take the oldest, or the most uncertain, request first")
    lab.add_argument("--expiry", type=float, metavar="SECONDS", help="a request no analyst has taken by then gets no label (requests.ttl_seconds)")
    out = p.add_argument_group("output")
    out.add_argument(
        "--drift-points", type=_points, metavar="I,J", help="event indices where the concept changes, for the drift report "
        "(sea and agrawal know theirs: half-way)",
    )
    out.add_argument("--summary-json", type=Path, help="write per-run metrics here")
    out.add_argument("--plot", type=Path, help="write learning curves (PNG) here")
    out.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress line on stderr (default: when stderr is a terminal)")
    return p


def _points(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected event indices like 5000,12000, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog="stream-al simulate", description=DESCRIPTION))


def runs_of(strategies: list[str] | None, budgets: list[float] | None, compare: bool) -> list[tuple[str | None, float | None]]:
    """The (strategy, budget) pairs to run: one, or with ``--compare`` every combination."""
    strategies = strategies or [None]  # type: ignore[list-item]
    budgets = budgets or [None]  # type: ignore[list-item]
    if not compare and (len(strategies) > 1 or len(budgets) > 1):
        raise SystemExit("several strategies or budgets: add --compare to run them side by side")
    return list(itertools.product(strategies, budgets))


def _setting(text: str) -> dict[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"--set {text!r}: expected KEY=VALUE")
    node: Any = yaml.safe_load(value)
    for part in reversed(key.split(".")):
        node = {part: node}
    return node


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def base_settings(args: argparse.Namespace, stream: Stream) -> Settings:
    """The settings every run starts from: file, then flags, then ``--set``; classes from the stream."""
    overrides: dict[str, Any] = {"classes": list(stream.classes), "positive_class": stream.positive_class}
    if args.seed is not None:
        overrides["seed"] = args.seed
    try:
        settings = Settings.load(args.config, **overrides)
        data = settings.model_dump()
        if args.model:
            data["model"] = {"name": args.model, "params": {}}
        budget = {"clock": "event"}  # simulated time is event time
        if args.rate:
            budget["rate"] = args.rate
        if args.expiry is not None:
            data["requests"] = {**data["requests"], "ttl_seconds": args.expiry}
        data["budget"] = {**data["budget"], **budget}
        for text in args.set:
            data = _merge(data, _setting(text))
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SystemExit("invalid settings:\n" + _errors(exc)) from None
    except FileNotFoundError as exc:
        raise SystemExit(str(exc)) from None


def _errors(exc: ValidationError) -> str:
    return "\n".join(f"  {'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors())


def _declared_classes(args: argparse.Namespace) -> list[str] | None:
    if args.classes:
        return [c.strip() for c in args.classes.split(",")]
    if args.config and Path(args.config).is_file():
        doc = yaml.safe_load(Path(args.config).read_text()) or {}
        if isinstance(doc, dict) and doc.get("classes"):
            classes = doc["classes"]
            return [c.strip() for c in classes.split(",")] if isinstance(classes, str) else list(classes)
    return None


def configure(settings: Settings, strategy: str | None, budget: float | None) -> Settings:
    """``settings`` with this run's strategy and budget (either may stay as configured)."""
    try:
        if strategy is not None:
            settings = with_strategy(settings, strategy)
        if budget is not None:
            settings = with_overrides(settings, budget={"fraction": budget})
    except ValidationError as exc:
        raise SystemExit(f"invalid strategy {strategy!r} or budget {budget!r}:\n" + _errors(exc)) from None
    return settings


def _label(settings: Settings) -> str:
    fraction = settings.budget.fraction
    return settings.sampler.strategy + (f" @{fraction:.3g}" if fraction else "") + (f" {settings.budget.rate}" if settings.budget.rate else "")


def run(args: argparse.Namespace) -> int:
    """Run ``stream-al simulate``; returns the exit code."""
    try:
        stream = load_stream(
            args.data, target=args.target, events=args.events, seed=args.seed or 0, classes=_declared_classes(args),
            positive_class=args.positive_class, time_column=args.time_column, drift_points=args.drift_points,
            shuffle=args.shuffle,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(str(exc)) from None
    base = base_settings(args, stream)
    if args.label_delay_seconds is not None:
        delay = LabelDelay("seconds", args.label_delay_seconds)
    elif args.label_delay_exponential is not None:
        delay = LabelDelay("exponential", args.label_delay_exponential)
    else:
        delay = LabelDelay("events", args.label_delay)
    pool = AnalystPool(args.analysts, args.answers_per_hour, args.queue) if args.analysts else None
    options = SimOptions(delay=delay, pool=pool, seconds_per_event=args.seconds_per_event)
    plan: list[tuple[str, str, Settings]] = []
    for strategy, budget in runs_of(args.strategy, args.budget, args.compare):
        settings = configure(base, strategy, budget)
        plan.append(("run", _label(settings), settings))
    if not args.no_baselines:
        seen: set[tuple[Any, Any]] = set()
        for _, _, settings in list(plan):
            key = (settings.budget.fraction, settings.budget.rate)
            if key in seen:
                continue
            seen.add(key)
            random, how = random_settings(settings)
            name = "random" + (f" @{settings.budget.fraction:.3g}" if settings.budget.fraction else "")
            plan.append(("random", name, random))
    show = sys.stderr.isatty() if args.progress is None else args.progress
    results: list[RunResult] = []
    for kind, name, settings in plan:
        bar = Progress(len(stream), name, enabled=show)
        results.append(simulate(stream, settings, options, name=name, progress=bar.update, kind=kind))
        bar.close()
    if not args.no_baselines:
        bar = Progress(len(stream), "full supervision", enabled=show)
        results.append(full_supervision(stream, base, SimOptions(delay=delay, seconds_per_event=args.seconds_per_event), progress=bar.update))
        bar.close()
    print(f"{stream.name}: {len(stream)} events, classes {list(stream.classes)}, positive {stream.positive_class!r}, "
          f"label delay {delay.amount:g} {'events' if delay.in_events else 's (' + delay.kind + ')'}"
          + (f", {pool.analysts} analysts x {pool.answers_per_hour:g}/h ({pool.order})" if pool else ""))
    print(table(results))
    if args.summary_json:
        settings_doc = {"model": base.model.model_dump(mode="json"), "seed": base.seed,
                        "runs": {name: {"sampler": s.sampler.model_dump(mode="json"), "budget": s.budget.model_dump(mode="json")} for _, name, s in plan}}
        write_summary(args.summary_json, summary(stream, options, results, settings_doc))
    if args.plot:
        plot(args.plot, stream, results)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
