"""The offline simulator: streams, delay and capacity semantics, budget, reports and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_al.cli import main
from stream_al.config import Settings
from stream_al.simulate import AnalystPool, Delivery, LabelDelay, SimOptions, load_stream, random_settings, simulate
from stream_al.simulate.data import Stream
from stream_al.simulate.run import full_supervision, with_strategy

DATA = Path(__file__).parent.parent / "data"


def settings_for(stream: Stream, fraction: float = 0.1, **extra) -> Settings:
    return Settings(classes=list(stream.classes), positive_class=stream.positive_class, budget={"fraction": fraction, "clock": "event"}, **extra)


@pytest.fixture(scope="module")
def phishing() -> Stream:
    return load_stream("phishing")


# -- determinism ---------------------------------------------------------------------------------


def test_same_seed_same_run_other_seed_other_decisions(phishing: Stream) -> None:
    a = simulate(phishing, settings_for(phishing, seed=1))
    b = simulate(phishing, settings_for(phishing, seed=1))
    c = simulate(phishing, settings_for(phishing, seed=2))
    assert a.request_indices == b.request_indices and a.accuracy == b.accuracy and a.curve.accuracy == b.curve.accuracy
    assert a.request_indices != c.request_indices  # the random audit share draws from hash(seed, event id)


def test_generators_are_seeded() -> None:
    assert load_stream("sea", events=300, seed=3).features == load_stream("sea", events=300, seed=3).features
    assert load_stream("sea", events=300, seed=3).features != load_stream("sea", events=300, seed=4).features


# -- delay ---------------------------------------------------------------------------------------


def test_delivery_applies_a_label_exactly_d_events_later() -> None:
    channel = Delivery(LabelDelay("events", 5), None)
    channel.submit("rq", "x", index=3, now=3.0, expires_at=1e9, priority=0.0)
    due_at = [i for i in range(20) if channel.due(i, float(i))]
    assert due_at == [8]


@pytest.mark.parametrize("delay", [0, 1, 37])
def test_simulated_labels_arrive_exactly_delay_events_late(phishing: Stream, delay: int) -> None:
    result = simulate(phishing, settings_for(phishing), SimOptions(delay=LabelDelay("events", delay)))
    assert result.latency_events == {"mean": float(delay), "median": float(delay)}
    # Requests made in the last `delay` events are never answered within the stream.
    expected = sum(1 for i in result.request_indices if i + delay <= len(phishing) - 1)
    assert result.labels_used == expected


def test_seconds_and_exponential_delays() -> None:
    fixed = Delivery(LabelDelay("seconds", 30.0), None)
    fixed.submit("rq", "x", index=0, now=100.0, expires_at=1e9, priority=0.0)
    assert [t for t in range(100, 200) if fixed.due(t, float(t))] == [130]
    delay = LabelDelay("exponential", 60.0)
    draws = [delay.due(f"rq-{i}", 0, 0.0, seed=1) for i in range(4000)]
    assert draws == [delay.due(f"rq-{i}", 0, 0.0, seed=1) for i in range(4000)]
    assert 55 < sum(draws) / len(draws) < 65 and min(draws) >= 0


# -- analyst capacity ----------------------------------------------------------------------------


def test_capacity_bounds_answers_and_expired_requests_get_no_label() -> None:
    # One analyst, 60 answers per hour: one answer per minute. Ten requests at t=0 expiring at t=300.
    channel = Delivery(LabelDelay("events", 0), AnalystPool(analysts=1, answers_per_hour=60.0))
    for k in range(10):
        channel.submit(f"rq{k}", "x", index=0, now=0.0, expires_at=300.0, priority=0.0)
    delivered = {}
    for t in range(0, 1000):
        for answer in channel.due(t, float(t)):
            delivered[answer.request_id] = t
    # Started at 0, 60, 120, 180, 240; the rest would start at >= 300: expired, no label.
    assert delivered == {"rq0": 60, "rq1": 120, "rq2": 180, "rq3": 240, "rq4": 300}
    assert channel.expired == 5 and channel.open() == 0


def test_priority_queue_answers_the_most_uncertain_first() -> None:
    channel = Delivery(LabelDelay("events", 0), AnalystPool(analysts=1, answers_per_hour=3600.0, order="priority"))
    for k, priority in enumerate([0.1, 0.9, 0.5]):
        channel.submit(f"rq{k}", "x", index=0, now=0.0, expires_at=1e9, priority=priority)
    order = [a.request_id for t in range(10) for a in channel.due(t, float(t))]
    assert order == ["rq1", "rq2", "rq0"]


def test_simulated_analysts_never_answer_more_than_capacity(phishing: Stream) -> None:
    # 1250 events at one per second (~21 minutes); two analysts at 30/h answer at most ~21 labels.
    pool = AnalystPool(analysts=2, answers_per_hour=30.0)
    result = simulate(phishing, settings_for(phishing, requests={"ttl_seconds": 600.0}), SimOptions(pool=pool))
    capacity = 2 * (len(phishing) / 120.0 + 1)
    assert 0 < result.labels_used <= capacity
    assert result.requests > result.labels_used and result.unanswered > 0


# -- budget --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.2])
def test_budget_achieved_within_five_percent_and_windows_within_bound(fraction: float) -> None:
    stream = load_stream("shuttle", events=20_000)
    result = simulate(stream, settings_for(stream, fraction))
    assert 0.95 <= result.budget_ratio <= 1.05, result.budget_ratio
    assert result.window_ok and result.worst_window_spend <= result.window_bound


def test_random_baseline_spends_the_same_budget(phishing: Stream) -> None:
    settings, how = random_settings(settings_for(phishing, 0.1))
    assert how.startswith("random")
    result = simulate(phishing, settings)
    assert 0.95 <= result.budget_ratio <= 1.05


def test_full_supervision_learns_every_label_with_the_same_delay(phishing: Stream) -> None:
    result = full_supervision(phishing, settings_for(phishing), SimOptions(delay=LabelDelay("events", 10)))
    assert result.labels_used == len(phishing) - 10
    assert result.accuracy > simulate(phishing, settings_for(phishing, 0.01)).accuracy


def test_f1_of_the_positive_class_counts_its_hits(phishing: Stream) -> None:
    """F1 from the run's own predictions: River 0.26's F1 with a string pos_val said 0.0 always."""
    result = full_supervision(phishing, settings_for(phishing))
    assert phishing.positive_class == "true" and 0.5 < result.f1 < 1  # type: ignore[operator]


def test_unknown_strategy_is_refused_by_the_settings(phishing: Stream) -> None:
    with pytest.raises(ValueError):
        with_strategy(settings_for(phishing), "no_such_strategy")


# -- files ---------------------------------------------------------------------------------------


def test_csv_numeric_strings_are_numbers_and_strings_one_hot() -> None:
    stream = load_stream(str(DATA / "simulate_small.csv"), target="label")
    assert stream.classes == ("fraud", "legit") and stream.positive_class == "fraud"  # the rarer class
    assert stream.features[0] == {"amount": 12.5, "country=FR": 1.0, "online": 1.0}
    assert stream.features[2]["amount"] == 3.0
    assert stream.features[3] == {"amount": 40.0, "online": 1.0}  # an empty cell is missing
    assert stream.labels[:2] == ["legit", "fraud"]


def test_csv_integer_labels_and_time_column(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("ts,x,y\n1700000000,1,0\n1700000005,2,1\n1700000009,3,0\n")
    stream = load_stream(str(path), target="y", time_column="ts")
    assert stream.classes == ("0", "1") and stream.positive_class == "1"
    assert stream.timestamps == [1700000000.0, 1700000005.0, 1700000009.0]
    assert stream.features[1] == {"x": 2.0}


def test_jsonl_stream(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    rows = [{"id": "a", "features": {"amount": 5, "kind": "card"}, "label": True},
            {"amount": 7.5, "kind": "wire", "label": False, "id": "b"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    stream = load_stream(str(path), target="label")
    assert stream.classes == ("false", "true") and stream.positive_class == "true"
    assert stream.features == [{"id=a": 1.0, "amount": 5.0, "kind=card": 1.0}, {"amount": 7.5, "kind=wire": 1.0, "id=b": 1.0}]


def test_shuffle_reorders_fixed_order_sources_per_seed_and_keeps_timed_files_in_order(tmp_path: Path) -> None:
    whole = load_stream("phishing")
    first = load_stream("phishing", events=200, shuffle=True, seed=3)
    assert load_stream("phishing", events=200, shuffle=True, seed=3).labels == first.labels
    assert first.features != whole.features[:200]  # drawn from the whole dataset, not its first 200
    pairs = {tuple(sorted(x.items())) for x in whole.features}
    assert all(tuple(sorted(x.items())) in pairs for x in first.features)
    assert first.classes == whole.classes
    generated = load_stream("sea", events=500, seed=4)
    assert load_stream("sea", events=500, seed=4, shuffle=True).features == generated.features  # keeps its drift
    path = tmp_path / "timed.csv"
    path.write_text("ts,x,y\n1700000000,1,0\n1700000005,2,1\n")
    with pytest.raises(ValueError, match="time column keeps its order"):
        load_stream(str(path), target="y", time_column="ts", shuffle=True)


def test_file_errors_are_clear(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("x,y\n1,a\n2,b\n")
    with pytest.raises(ValueError, match="--target"):
        load_stream(str(path))
    with pytest.raises(ValueError, match="no value for target 'label'"):
        load_stream(str(path), target="label")
    with pytest.raises(ValueError, match="unknown stream"):
        load_stream("nope")


def test_remote_river_dataset_is_not_downloaded() -> None:
    from river import datasets

    if datasets.Elec2().is_downloaded:
        pytest.skip("Elec2 happens to be downloaded on this machine")
    with pytest.raises(ValueError, match="not bundled"):
        load_stream("elec2")


# -- command line --------------------------------------------------------------------------------


def test_cli_end_to_end_summary_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary, png = tmp_path / "out" / "summary.json", tmp_path / "curves.png"
    code = main(["simulate", "--data", "phishing", "--model", "logistic_regression", "--strategy", "variable_uncertainty",
                 "--budget", "0.05,0.2", "--compare", "--label-delay", "20", "--seed", "3",
                 "--summary-json", str(summary), "--plot", str(png), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "variable_uncertainty @0.05" in out and "random @0.2" in out and "full supervision" in out
    doc = json.loads(summary.read_text())
    assert doc["stream"]["events"] == 1250 and doc["label_delay"] == {"kind": "events", "amount": 20}
    runs = {r["name"]: r for r in doc["runs"]}
    assert set(runs) == {"variable_uncertainty @0.05", "variable_uncertainty @0.2", "random @0.05", "random @0.2", "full supervision"}
    run = runs["variable_uncertainty @0.05"]
    for key in ("accuracy", "cohen_kappa", "f1", "average_precision", "labels_used", "budget", "worst_window_spend", "label_latency"):
        assert key in run
    assert run["budget"]["target"] == 0.05 and 0.95 <= run["budget"]["achieved_over_target"] <= 1.05
    assert run["worst_window_spend"]["within_bound"] is True and run["label_latency"]["events"]["median"] == 20
    assert 0.5 < run["accuracy"] <= 1 and 0 < run["average_precision"] <= 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_cli_csv_with_analysts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = tmp_path / "s.json"
    code = main(["simulate", "--data", str(DATA / "simulate_small.csv"), "--target", "label", "--budget", "0.5",
                 "--analysts", "1", "--answers-per-hour", "3600", "--no-baselines", "--summary-json", str(summary), "--no-progress"])
    assert code == 0
    doc = json.loads(summary.read_text())
    assert doc["analysts"] == {"analysts": 1, "answers_per_hour": 3600.0, "order": "fifo"}
    assert [r["kind"] for r in doc["runs"]] == ["run"] and doc["runs"][0]["events"] == 6


def test_cli_shuffle_replays_a_bundled_dataset_in_the_seeds_order(tmp_path: Path) -> None:
    def accuracy(*extra: str) -> float:
        summary = tmp_path / "s.json"
        assert main(["simulate", "--data", "phishing", "--events", "400", "--budget", "0.1", "--no-baselines",
                     "--summary-json", str(summary), "--no-progress", *extra]) == 0
        run = json.loads(summary.read_text())["runs"][0]
        assert run["events"] == 400
        return run["accuracy"]

    assert accuracy("--shuffle", "--seed", "5") == accuracy("--shuffle", "--seed", "5")
    assert accuracy("--shuffle", "--seed", "5") != accuracy("--seed", "5")  # other events: the first 400 of another order


def test_cli_set_reaches_every_compared_strategy(tmp_path: Path) -> None:
    """``--set sampler.X`` is kept when ``--strategy`` names another strategy than the configured
    one: it used to be dropped for any strategy but the default, silently."""
    summary = tmp_path / "s.json"
    assert main(["simulate", "--data", "sea", "--events", "300", "--budget", "0.05", "--compare",
                 "--strategy", "fixed_uncertainty,quantile_filter", "--set", "sampler.fixed_threshold=0.05",
                 "--set", "sampler.random_share=0", "--no-baselines", "--summary-json", str(summary), "--no-progress"]) == 0
    runs = json.loads(summary.read_text())["settings"]["runs"]
    assert {name: (run["sampler"]["fixed_threshold"], run["sampler"]["random_share"]) for name, run in runs.items()} == {
        "fixed_uncertainty @0.05": (0.05, 0.0), "quantile_filter @0.05": (0.05, 0.0)}


def test_cli_refuses_several_budgets_without_compare() -> None:
    with pytest.raises(SystemExit, match="--compare"):
        main(["simulate", "--data", "phishing", "--budget", "0.05,0.1"])
