"""The engine's work per event with no Kafka: what the runner does between a poll and its sends.

For every chunk of ``LABEL_CHECK_EVERY`` (250) raw JSON events (30 float features): parse them
(``EventParser``), score and decide them together (``Engine.on_events``, default settings with a 5%
fraction budget), encode each prediction and each label request as the runner does, and learn
each request's label at once (``Engine.on_label``; the label is a fixed linear concept of the
features). Timed in CPU seconds of this process, so other processes on the box matter less than in
``throughput.py``; use it to compare versions of the engine core:

    .venv/bin/python benchmarks/core_loop.py                     # 60000 events, 5 runs
    PYTHONPATH=../other-checkout .venv/bin/python benchmarks/core_loop.py   # another tree's code

Prints µs per event for each run, their median, and the request count (the same count on two
trees means the same decisions).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time

import orjson

from stream_al.config import Settings
from stream_al.engine import Engine
from stream_al.messages import EventParser, LabelMessage
from stream_al.runner import LABEL_CHECK_EVERY


def run_once(raws: list[bytes]) -> tuple[float, int]:
    """One pass over ``raws`` with a fresh engine; returns (µs of CPU per event, label requests)."""
    settings = Settings(classes=["0", "1"], budget={"fraction": 0.05})
    engine, parser, now = Engine(settings), EventParser(settings.input), time.time()
    gc.collect()
    gc.freeze()  # as the runner does before its loop
    started = time.process_time()
    for start in range(0, len(raws), LABEL_CHECK_EVERY):
        events = [parser.parse(raw, "events", 0, start + i) for i, raw in enumerate(raws[start : start + LABEL_CHECK_EVERY])]
        for decision in engine.on_events(events, now):
            orjson.dumps({
                "schema_version": 1, "event_id": decision.event_id, "predicted": decision.predicted,
                "scores": decision.scores, "model_version": decision.model_version, "queried": decision.request is not None,
            })
            request = decision.request
            if request is not None:
                request.to_json()
                x = request.features
                engine.on_label(LabelMessage(request_id=request.request_id, label="1" if x["f0"] + x["f1"] > 1 else "0"), now)
    elapsed = time.process_time() - started
    gc.unfreeze()
    return elapsed / len(raws) * 1e6, engine.counters.requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(0)
    raws = [orjson.dumps({"id": f"e{i}", "features": {f"f{j}": rng.random() for j in range(30)}}) for i in range(args.events)]
    results = [run_once(raws) for _ in range(args.runs)]
    per_event = [r[0] for r in results]
    print(f"{args.events:,} events, {args.runs} runs: median {statistics.median(per_event):.2f} µs/event of CPU "
          f"(runs {' '.join(f'{v:.2f}' for v in per_event)}), {results[0][1]:,} label requests")


if __name__ == "__main__":
    main()
