"""Several engine replicas in one consumer group: they share the events partitions, each applies
every label (one logical model), and partitions move on join and leave without losing events."""

from __future__ import annotations

import orjson
import pytest

from .engine_helpers import (
    Analyst, EngineProcess, engine_from_label_log, engine_from_snapshot, engine_settings, produce_events, read_all,
    wait_for, write_config,
)

pytestmark = pytest.mark.integration

PROBES = [{"x": x / 4, "y": y / 4} for x in range(5) for y in range(5)]


def test_two_replicas_share_events_apply_every_label_and_survive_a_leave(kafka_bootstrap, topic_prefix, tmp_path):
    settings = engine_settings(kafka_bootstrap, topic_prefix, tmp_path, budget={"fraction": 0.2})
    configs = {}
    for name in ("a", "b"):
        replica = settings.model_copy(update={"snapshots": settings.snapshots.model_copy(update={"dir": tmp_path / name})})
        configs[name] = write_config(replica, tmp_path / f"{name}.yaml")
    truth = produce_events(settings, 0, 400, seed=11)
    with Analyst(settings, truth) as analyst:
        a = EngineProcess(configs["a"], tmp_path / "a.json")
        wait_for(lambda: len(analyst.answered) >= 60, 60, "replica a alone made no requests")
        b = EngineProcess(configs["b"], tmp_path / "b.json")  # joins: the group rebalances
        # The waves go to both: without this wait a could score them all before b's join completed
        # (it did, in ~3 s, on a quiet machine), and the test would never see the two share.
        wait_for(lambda: "assigned [(" in (tmp_path / "b.log").read_text(), 60, "b never got a partition while a ran")
        for wave in range(1, 5):
            truth.update(produce_events(settings, wave * 400, 400, seed=11))
            wait_for(lambda: len(analyst.answered) >= 60 + wave * 60, 90, f"wave {wave} not answered")
        assert a.terminate() == 0  # leaves: b takes all partitions over
        truth.update(produce_events(settings, 2000, 400, seed=11))
        wait_for(lambda: len(analyst.answered) >= 420, 90, "events after a left not answered")
        wait_for(lambda: False if b.process.poll() is not None else len(read_all(settings, settings.topics.predictions, idle_seconds=0.3)) >= 2400,
                 90, "b did not score every event after a left")
        assert b.terminate() == 0
    stats_a, stats_b = a.read_stats(), b.read_stats()
    predictions = [orjson.loads(r.value) for r in read_all(settings, settings.topics.predictions)]
    assert {p["event_id"] for p in predictions} == set(truth)  # no event lost across join and leave
    assert 0 < stats_b["events_this_run"] < len(truth)  # b did share the stream while a was there
    answered = len(set(analyst.answered))
    assert stats_b["labels_applied"] == answered  # b applied every label, a's requests' included
    assert 0 < stats_a["labels_applied"] <= answered
    # One logical model: each replica's model is the label log's model at the labels it had applied.
    for stats, state_dir in ((stats_a, tmp_path / "a"), (stats_b, tmp_path / "b")):
        replica = engine_from_snapshot(settings, state_dir)
        offline = engine_from_label_log(settings, stats["labels_applied"]).model
        for probe in PROBES:
            assert replica.model.predict_proba_one(probe)["fraud"] == pytest.approx(offline.predict_proba_one(probe)["fraud"], abs=0.02)


def test_rebuild_trains_a_new_model_type_from_the_label_log(kafka_bootstrap, topic_prefix, tmp_path, capsys):
    from stream_al.cli import main as cli_main

    settings = engine_settings(kafka_bootstrap, topic_prefix, tmp_path, budget={"fraction": 0.2})
    truth = produce_events(settings, 0, 600, seed=21)
    with Analyst(settings, truth) as analyst:
        engine = EngineProcess(write_config(settings, tmp_path / "lr.yaml"), tmp_path / "lr.json")
        wait_for(lambda: len(analyst.answered) >= 110, 60, "too few requests answered")
        wait_for(lambda: len(read_all(settings, settings.topics.labels, idle_seconds=0.3)) >= len(analyst.answered), 30, "labels")
        assert engine.terminate() == 0
    labels = len(read_all(settings, settings.topics.labels))
    tree = settings.model_copy(update={
        "model": settings.model.model_copy(update={"name": "hoeffding_tree"}),
        "snapshots": settings.snapshots.model_copy(update={"dir": tmp_path / "tree"}),
    })
    tree_config = write_config(tree, tmp_path / "tree.yaml")
    assert cli_main(["rebuild", "--config", str(tree_config)]) == 0
    assert f"labels applied       {labels}" in capsys.readouterr().out
    rebuilt = engine_from_snapshot(tree)
    assert rebuilt.model_version == labels and type(rebuilt.model).__name__ == "HoeffdingTreeClassifier"
    engine = EngineProcess(tree_config, tmp_path / "tree.json", "--idle-exit-seconds", "2")
    assert engine.process.wait(60) == 0
    stats = engine.read_stats()
    assert stats["labels_applied"] == labels and stats["events_this_run"] == 0  # starts from it; nothing twice
