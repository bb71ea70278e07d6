"""The review queue's Kafka bridge on a real broker: requests in, answers out, corrections, rebuild."""

from __future__ import annotations

import time

import orjson
import pytest

from stream_al.config import Settings
from stream_al.kafka_io import create_topics
from stream_al.messages import LabelMessage
from stream_al.review.bridge import KafkaBridge
from stream_al.review.metrics import ReviewMetrics
from stream_al.review.store import ReviewStore

from .engine_helpers import read_all, send_raw, wait_for

pytestmark = pytest.mark.integration


def review_settings(bootstrap: str, prefix: str, db: str) -> Settings:
    settings = Settings(
        classes=["legit", "fraud"], positive_class="fraud",
        kafka={"bootstrap_servers": bootstrap},
        topics={"events": f"{prefix}events", "label_requests": f"{prefix}label-requests", "labels": f"{prefix}labels",
                "predictions": None, "dead_letters": f"{prefix}dead-letters", "label_requests_partitions": 2},
        review={"db_path": db, "double_annotation_share": 0.0, "analysts": {"ana": "ana-secret-token"}},
    )
    create_topics(settings)
    return settings


def request_bytes(n: int, now: float) -> bytes:
    return orjson.dumps({
        "schema_version": 1, "request_id": f"rq-{n}", "event_id": f"ev-{n}", "created_at": now, "expires_at": now + 600,
        "features": {"amount": float(n)}, "scores": {"legit": 0.4, "fraud": 0.6}, "predicted": "fraud",
        "uncertainty": 0.4, "reason": "uncertainty", "p_query": 1.0, "priority": 0.8, "model_version": 3,
    })


def start(settings: Settings, db: str) -> tuple[ReviewStore, KafkaBridge]:
    store = ReviewStore(db, settings.classes, settings.positive_class, settings.review)
    bridge = KafkaBridge(settings, store, ReviewMetrics()).start()
    return store, bridge


def labels_on_topic(settings: Settings, count: int) -> list[dict]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        labels = [orjson.loads(r.value) for r in read_all(settings, settings.topics.labels, idle_seconds=0.3)]
        if len(labels) >= count:
            return labels
    raise AssertionError(f"fewer than {count} labels on the topic")


def test_bridge_fills_the_queue_delivers_answers_and_the_topics_rebuild_it(kafka_bootstrap, topic_prefix, tmp_path):
    db = str(tmp_path / "review.sqlite3")
    settings = review_settings(kafka_bootstrap, topic_prefix, db)
    now = time.time()
    send_raw(settings, settings.topics.label_requests, [request_bytes(n, now) for n in range(4)] + [b'{"request_id": 1}', b"not json"])
    store, bridge = start(settings, db)
    try:
        assert bridge.caught_up.wait(20), bridge.error
        wait_for(lambda: store.totals(time.time())["queue_depth"] == 4, 10, "requests not in the queue")
        assert bridge.metrics.bad_messages.labels("invalid_request")._value.get() == 2  # counted, not fatal

        store.claim("ana", "rq-0", time.time())
        first = store.answer("ana", "rq-0", "fraud", False, "odd", time.time())
        wait_for(lambda: store.outbox_backlog() == 0, 10, "answer not delivered")
        store.amend("ana", first["answer_id"], "fraud", False, None, time.time())  # same label: nothing to send
        changed = store.amend("ana", store.recent_answers("ana", time.time())[0]["answer_id"], "legit", False, None, time.time())
        store.claim("ana", "rq-1", time.time())
        store.answer("ana", "rq-1", None, True, None, time.time())  # can't tell: no label
        labels = labels_on_topic(settings, 2)
        assert [(m["request_id"], m["label"]) for m in labels] == [("rq-0", "fraud"), ("rq-0", "legit")]
        assert labels[1]["answer_id"] == changed["answer_id"] and labels[0]["note"] == "odd"
        for message in labels:
            LabelMessage.model_validate(message)

        # a label from another tool closes its item here too
        send_raw(settings, settings.topics.labels, [orjson.dumps({"request_id": "rq-2", "label": "legit", "annotator": "chargebacks"})])
        wait_for(lambda: store.totals(time.time())["queue_depth"] == 1, 10, "foreign label did not close its item")
    finally:
        bridge.stop()
        store.close()

    # restart on the same database: resumes at its offsets, nothing counted twice
    store, bridge = start(settings, db)
    try:
        assert bridge.caught_up.wait(20)
        assert store.counter("requests") == 4 and store.totals(time.time())["queue_depth"] == 1
    finally:
        bridge.stop()
        store.close()

    # an empty database is rebuilt from the topics
    rebuilt_db = str(tmp_path / "rebuilt.sqlite3")
    store, bridge = start(settings, rebuilt_db)
    try:
        assert bridge.caught_up.wait(20)
        view = store.queue_view("bob", time.time())
        # rq-1's can't-tell lives only in the old database (no label was sent): it is open again
        assert {i["request_id"] for i in view["items"]} == {"rq-1", "rq-3"}
        answers = {(a["analyst"], a["label"]) for a in [dict(r) for r in store._all("SELECT * FROM answers WHERE superseded_by IS NULL")]}
        assert answers == {("ana", "legit"), ("chargebacks", "legit")}
        assert store.outbox_backlog() == 0  # nothing is produced again by a rebuild
    finally:
        bridge.stop()
        store.close()


def test_stream_al_review_command_serves_until_sigterm(kafka_bootstrap, topic_prefix, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    import yaml

    settings = review_settings(kafka_bootstrap, topic_prefix, str(tmp_path / "cli.sqlite3"))
    config = settings.model_dump(mode="json")
    config["review"]["analysts"] = {}  # the token comes from the environment, like a real secret
    config["review"]["port"] = 0
    path = tmp_path / "review.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "STREAM_AL_REVIEW__ANALYSTS": '{"ana": "ana-secret-token"}', "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "review.log"
    process = subprocess.Popen([sys.executable, "-m", "stream_al.cli", "review", "--config", str(path)],
                               stdout=subprocess.PIPE, stderr=log.open("w"), env=env, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("review queue on http://127.0.0.1:"), line
        url = line.split()[-1]
        wait_for(lambda: _status(url + "/readyz") == 200, 20, "stream-al review never became ready")
        request = urllib.request.Request(url + "/api/me", headers={"Authorization": "Bearer ana-secret-token"})
        assert orjson.loads(urllib.request.urlopen(request, timeout=5).read())["analyst"] == "ana"
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        output = process.stdout.read() + log.read_text()
        assert "review queue on" in output and "ana-secret-token" not in output
    finally:
        if process.poll() is None:
            process.kill()


def _status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        return urllib.request.urlopen(url, timeout=2).status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
