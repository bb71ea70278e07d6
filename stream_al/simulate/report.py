"""What a simulation shows: a terminal table, the ``--summary-json`` document and the learning curves.

The plot needs matplotlib (the ``simulate`` extra: ``pip install 'stream-al[simulate]'``); it is
drawn with the Agg backend, so no display is needed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from stream_al.simulate.data import Stream
from stream_al.simulate.run import RunResult, SimOptions


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def table(results: Sequence[RunResult]) -> str:
    """One line per run: accuracy, kappa, F1, AP, labels, budget achieved/target, worst window, latency."""
    header = ["run", "accuracy", "kappa", "F1", "AP", "labels", "budget", "achieved", "worst window", "latency ev", "decisions/s"]
    drift = any(r.drift_points or r.drift_alerts for r in results)
    if drift:  # detection delay (events/labels) per known drift point, and false alarms
        header += ["drift delay ev/labels", "false alarms"]
    rows = [header]
    for r in results:
        window = "-" if r.worst_window_spend is None else f"{r.worst_window_spend}/{r.window_bound:g}" + ("" if r.window_ok else " OVER")
        rows.append([
            r.name, _fmt(r.accuracy), _fmt(r.kappa), _fmt(r.f1), _fmt(r.average_precision), str(r.labels_used),
            _fmt(r.budget_target, ".1%"), _fmt(r.budget_achieved, ".2%"), window,
            _fmt(r.latency_events["median"], ".0f"), f"{r.decisions_per_second:,.0f}" if r.decisions_per_second else "-",
        ])
        if drift:
            report = r.drift_report()
            delays = [f"{d['delay_events']}/{d['delay_labels']}" if d["detected"] else "missed" for d in report["detections"]]
            rows[-1] += [", ".join(delays) or "-", str(report["false_alarms"])]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary(stream: Stream, options: SimOptions, results: Sequence[RunResult], settings: dict[str, Any]) -> dict[str, Any]:
    """The ``--summary-json`` document: the stream, the delivery model, and one entry per run."""
    pool = options.pool
    return {
        "stream": {"name": stream.name, "events": len(stream), "classes": list(stream.classes),
                   "positive_class": stream.positive_class, "class_counts": stream.class_counts()},
        "label_delay": {"kind": options.delay.kind, "amount": options.delay.amount},
        "analysts": None if pool is None else {"analysts": pool.analysts, "answers_per_hour": pool.answers_per_hour, "order": pool.order},
        "seconds_per_event": options.seconds_per_event if stream.timestamps is None else None,
        "settings": settings,
        "runs": [r.summary() for r in results],
    }


def write_summary(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")


def plot(path: Path, stream: Stream, results: Sequence[RunResult], title: str | None = None) -> None:
    """Two panels: prequential accuracy vs events, and vs labels spent (log scale), one line per run.

    On the events panel, thin vertical lines in a run's colour mark its drift detections, and red
    dashed ones the stream's known drift points.
    """
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'stream-al[simulate]'") from None
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (by_events, by_labels) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    greys = iter(["0.5", "0.3", "0.65", "0.15", "0.8"] * 10)  # one shade per random baseline (one per budget)
    for r in results:
        style: dict[str, Any] = {"linewidth": 1.6}
        if r.kind == "full_supervision":
            style.update(color="black", linestyle="--")
        elif r.kind == "random":
            style.update(color=next(greys), linestyle=":", linewidth=2.0)
        line = by_events.plot(r.curve.events, r.curve.accuracy, label=r.name, **style)[0]
        for index in sorted({a["index"] for a in r.drift_alerts if a["level"] == "drift"}):  # this run's detections
            by_events.axvline(index, color=line.get_color(), linewidth=0.8, alpha=0.7)
        points = [(max(lab, 1), acc) for lab, acc in zip(r.curve.labels, r.curve.accuracy)]
        if points:
            by_labels.plot([p[0] for p in points], [p[1] for p in points], label=r.name, **style)
    for point in stream.drift_points:  # the known drift points
        by_events.axvline(point, color="red", linestyle="--", linewidth=1.0, alpha=0.6)
    by_events.set_xlabel("events")
    by_events.set_ylabel("prequential accuracy (so far)")
    by_events.set_title("accuracy vs events")
    by_labels.set_xscale("log")
    by_labels.set_xlabel("labels spent (log scale)")
    by_labels.set_title("accuracy vs labels spent")
    for ax in (by_events, by_labels):
        ax.grid(True, alpha=0.3)
    by_events.legend(loc="lower right", fontsize="small")
    fig.suptitle(title or f"{stream.name}: {len(stream)} events")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
