"""The sampling benchmarks take a stream of the user's own (a CSV and its label column), not only the panel."""

from __future__ import annotations

import csv
import importlib.util
import json
import random
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def benchmark_module(monkeypatch):
    """A benchmark script as a module of its own name (``benchmarks_drift``: a plain ``drift`` may
    already be ``stream_al/drift.py``, imported by the doctests' collection)."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, module)  # the worker processes unpickle jobs by module name
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def own_stream(tmp_path: Path) -> Path:
    """600 events of two numeric features and a string column; ``fraud`` above a line."""
    rng = random.Random(7)
    path = tmp_path / "mine.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["amount", "score", "channel", "outcome"])
        for _ in range(600):
            amount, score = rng.random(), rng.random()
            writer.writerow([f"{amount:.4f}", f"{score:.4f}", rng.choice(["web", "pos"]),
                             "fraud" if amount + score > 1.2 else "legit"])
    return path


def test_peers_benchmark_runs_on_a_users_csv(benchmark_module, own_stream: Path, tmp_path: Path, capsys) -> None:
    peers = benchmark_module("peers")
    out = tmp_path / "peers.json"
    code = peers.main(["--streams", str(own_stream), "--target", "outcome", "--positive-class", "fraud",
                       "--budgets", "0.1", "--delays", "0", "--seeds", "1", "--peers", "river", "--out", str(out)])
    assert code == 0
    rows = json.loads(out.read_text())["rows"]
    # Every row names the stream alike, so stream-al's rows and the peers' share one table row.
    assert {r["stream"] for r in rows} == {"mine.csv"}
    assert {"stream-al", "stream-al random", "river EntropySampler"} <= {r["strategy"] for r in rows}
    ours = next(r for r in rows if r["strategy"] == "stream-al")
    assert 0.95 <= ours["achieved"] / 0.1 <= 1.0
    assert ours["accuracy"] > 0.7  # a linear concept: well above the majority class after 60 labels
    table = capsys.readouterr().out
    assert "| mine.csv | 10% | 0 |" in table


def test_peers_benchmark_asks_for_the_label_column_of_a_file(benchmark_module, own_stream: Path) -> None:
    peers = benchmark_module("peers")
    with pytest.raises(ValueError, match="--target"):
        peers.main(["--streams", str(own_stream), "--budgets", "0.1", "--delays", "0", "--seeds", "1", "--no-peers"])


def test_default_vs_random_runs_on_a_users_csv(benchmark_module, own_stream: Path, tmp_path: Path) -> None:
    default_vs_random = benchmark_module("default_vs_random")
    out = tmp_path / "dvr.json"
    default_vs_random.main(["--streams", str(own_stream), "--target", "outcome", "--budgets", "0.1",
                            "--delays", "0", "--seeds", "2", "--workers", "1", "--json", str(out)])
    results = json.loads(out.read_text())
    assert sorted((r["candidate"], r["seed"]) for r in results) == [("default", 0), ("default", 1), ("random", 0), ("random", 1)]
    assert all(0.95 <= r["achieved"] / 0.1 <= 1.0 for r in results)


def test_drift_benchmark_runs_on_a_users_csv_with_its_drift_points(benchmark_module, own_stream: Path, tmp_path: Path, capsys) -> None:
    drift = benchmark_module("drift")
    out = tmp_path / "drift.json"
    drift.main(["--parts", "delay", "boost", "--drifting", str(own_stream), "--target", "outcome", "--drift-points", "200,400",
                "--models", "logistic_regression", "--delays", "0", "--seeds", "1", "--pair-seeds", "1", "--workers", "1",
                "--json", str(out)])
    results = json.loads(out.read_text())
    delay = next(r for r in results if r["part"] == "delay")
    assert [p["point"] for p in delay["points"]] == [200, 400]
    boost = next(r for r in results if r["part"] == "boost")
    assert "acc1000" not in boost  # 600 events: no 1,000-event window after the drift point, so no figure for it
    table = capsys.readouterr().out
    assert f"| {own_stream} @200 | logistic_regression | 0 |" in table and f"| {own_stream} @400 |" in table


def test_drift_benchmark_asks_for_a_files_drift_points(benchmark_module, own_stream: Path) -> None:
    drift = benchmark_module("drift")
    with pytest.raises(ValueError, match="--drift-points"):
        drift.main(["--parts", "delay", "--drifting", str(own_stream), "--target", "outcome", "--workers", "1"])


def test_peers_report_judges_peers_within_their_budget_per_stream_and_as_one_strategy(benchmark_module) -> None:
    peers = benchmark_module("peers")
    Row = peers.Row

    def rows(stream: str, ours: float, random: float, **peer: tuple[float, float, bool]) -> list:
        out = [Row(stream, 0.1, 0, peers.OURS, ours, 0.1, 1.0, 1.0, True), Row(stream, 0.1, 0, peers.OURS_RANDOM, random, 0.1, 1.0, 1.0, True)]
        return out + [Row(stream, 0.1, 0, f"skal {name}", acc, spent, 1.0, 1.0, window_ok) for name, (acc, spent, window_ok) in peer.items()]

    # Burst beats stream-al everywhere but breaks the window bound on "b"; Steady is best per stream on "a" only.
    table = (rows("a", 0.80, 0.70, Burst=(0.90, 0.1, True), Steady=(0.85, 0.1, True))
             + rows("b", 0.80, 0.70, Burst=(0.90, 0.1, False), Steady=(0.75, 0.1, True))
             + rows("c", 0.80, 0.70, Burst=(0.90, 0.1, True), Steady=(0.79, 0.1, True), Lavish=(0.99, 0.2, True)))
    text, result = peers.report(table)
    summary = result["summary"]
    # Per stream: a's best within budget is Burst (.90), b's Steady (.75), c's Burst (Lavish spent 2x).
    assert summary["streams_where_ours_at_least_best_peer_within_budget"] == {"0.1@0": 1}
    assert summary["streams_where_ours_at_least_best_peer"] == {"0.1@0": 0}
    # One strategy for all three: Burst is out (it burst on b), Lavish too (over budget on c): Steady.
    assert summary["streams_where_ours_at_least_best_single_peer"] == {"0.1@0": ("skal Steady", 2)}
    assert "skal Steady (the best mean over them among the peers within budget on every one): 2/3 streams" in text
