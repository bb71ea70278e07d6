"""Offline simulator: replay a stream through the engine core with label delay and analyst capacity.

No Kafka: :func:`simulate` drives :class:`stream_al.engine.Engine` on a simulated clock, the way
the Kafka runner does, and measures it prequentially. ``stream-al simulate`` is its command line.

- :mod:`.data` — streams: River's bundled datasets, drifting generators, CSV and JSONL files;
- :mod:`.delivery` — when labels come back: delay (events, seconds, exponential) and analysts;
- :mod:`.run` — the replay loop, the full-supervision and random baselines;
- :mod:`.evaluation` — average precision, worst window spend, latency summaries;
- :mod:`.report` — the terminal table, the summary JSON and the learning-curve plot.
"""

from stream_al.simulate.data import NAMES, Stream, load_stream
from stream_al.simulate.delivery import AnalystPool, Delivery, LabelDelay
from stream_al.simulate.run import RunResult, SimOptions, full_supervision, random_settings, simulate, with_strategy

__all__ = [
    "NAMES", "AnalystPool", "Delivery", "LabelDelay", "RunResult", "SimOptions", "Stream", "full_supervision",
    "load_stream", "random_settings", "simulate", "with_strategy",
]
