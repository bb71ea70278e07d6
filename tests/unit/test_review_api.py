"""The review app's HTTP API (no Kafka: the store is fed directly, as the bridge would)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from stream_al.config import Settings
from stream_al.review.app import ReviewApp
from stream_al.review.server import ReviewServer
from stream_al.review.store import ReviewStore

from .test_review_store import request

TOKENS = {"ana": "ana-secret-token", "bob": "bob-secret-token"}


@pytest.fixture
def review(tmp_path) -> ReviewApp:
    settings = Settings(classes=["legit", "fraud"], positive_class="fraud",
                        review={"analysts": TOKENS, "db_path": str(tmp_path / "q.sqlite3"), "double_annotation_share": 0.0})
    store = ReviewStore(settings.review.db_path, settings.classes, settings.positive_class, settings.review)
    return ReviewApp(settings, store)


def add(review: ReviewApp, n: int, **kw: Any) -> None:
    review.store.add_request(request(n, created=time.time(), **kw), time.time())


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def test_no_anonymous_access_and_sign_in_sets_a_session_cookie(review, caplog):
    with TestClient(review.build()) as client:
        assert client.get("/api/queue").status_code == 401
        assert client.post("/api/next").status_code == 401
        assert client.post("/api/items/rq-1/answer", json={"label": "fraud"}).status_code == 401
        assert client.get("/api/queue", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.post("/api/session", json={"token": "wrong-token"}).status_code == 401
        signed = client.post("/api/session", json={"token": TOKENS["ana"]})
        assert signed.status_code == 200 and signed.json() == {"analyst": "ana"}
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and TOKENS["ana"] not in cookie
        me = client.get("/api/me").json()
        assert me["analyst"] == "ana" and me["classes"] == ["legit", "fraud"] and me["positive_class"] == "fraud"
        client.delete("/api/session")
        assert client.get("/api/me").status_code == 401
        assert client.get("/").status_code == 200 and "EventSource" in client.get("/static/app.js").text
    assert all(token not in caplog.text for token in TOKENS.values())


def test_answer_flow_validation_and_conflicts(review):
    add(review, 1, priority=0.9)
    add(review, 2, priority=0.1)
    with TestClient(review.build()) as client:
        card = client.post("/api/next", headers=bearer("ana")).json()
        assert card["request_id"] == "rq-1" and card["features"] and card["scores"] and card["claim_expires_at"]
        assert client.post("/api/items/rq-1/claim", headers=bearer("bob")).status_code == 409
        assert client.post("/api/next", headers=bearer("bob")).json()["request_id"] == "rq-2"
        bad = client.post("/api/items/rq-1/answer", headers=bearer("ana"), json={"label": "maybe"})
        assert bad.status_code == 422 and "not one of" in bad.json()["detail"]
        assert client.post("/api/items/rq-1/answer", headers=bearer("ana"), json={}).status_code == 422
        assert client.post("/api/items/rq-2/answer", headers=bearer("ana"), json={"label": "fraud"}).status_code == 409
        ok = client.post("/api/items/rq-1/answer", headers=bearer("ana"), json={"label": "fraud", "note": "odd merchant"})
        assert ok.status_code == 200 and ok.json()["sent"] and ok.json()["note"] == "odd merchant"
        assert client.post("/api/items/rq-1/renew", headers=bearer("ana")).status_code == 409
        assert client.post("/api/next", headers=bearer("ana")).status_code == 204
        assert client.post("/api/items/rq-2/skip", headers=bearer("bob")).status_code == 200
        assert client.post("/api/items/rq-2/claim", headers=bearer("ana")).json()["request_id"] == "rq-2"
        assert client.post("/api/items/rq-2/answer", headers=bearer("ana"), json={"cant_tell": True}).json()["role"] == "cant_tell"
        recent = client.get("/api/answers/recent", headers=bearer("ana")).json()
        assert [a["request_id"] for a in recent] == ["rq-2", "rq-1"]
        amended = client.post(f"/api/answers/{recent[1]['answer_id']}/amend", headers=bearer("ana"), json={"label": "legit"})
        assert amended.status_code == 200 and amended.json()["sent"]
        assert client.get(f"/api/answers/{recent[0]['answer_id']}", headers=bearer("bob")).status_code == 404
        stats = client.get("/api/stats", headers=bearer("bob")).json()
        assert {a["analyst"]: a["answers"] for a in stats["analysts"]} == {"ana": 2, "bob": 0}
        assert stats["answers"] == 2 and stats["queue_depth"] == 0
        payloads = [orjson.loads(p) for _, _, p in review.store.pending_labels()]
        assert [(p["request_id"], p["label"]) for p in payloads] == [("rq-1", "fraud"), ("rq-1", "legit")]
        metrics = client.get("/metrics").text
        for series in ("stream_al_review_queue_depth 0.0", "stream_al_review_open_claims 0.0",
                       'stream_al_review_answers_total{kind="label"} 1.0', 'stream_al_review_answers_total{kind="cant_tell"} 1.0',
                       "stream_al_review_amendments_total 1.0", "stream_al_review_skips_total 1.0",
                       "stream_al_review_answer_latency_seconds_bucket", "stream_al_review_time_to_answer_seconds_count 2.0",
                       "stream_al_review_expired_total 0.0"):
            assert series in metrics, series
        assert client.get("/readyz").status_code == 200 and client.get("/livez").text == "ok\n"


def test_live_stream_pushes_new_requests(review):
    server = ReviewServer(review.build(), port=0).start()
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            client.post("/api/session", json={"token": TOKENS["bob"]})
            with client.stream("GET", "/api/stream") as stream:
                events = stream.iter_lines()
                first = _next_queue_event(events)
                assert first["items"] == [] and first["queue_depth"] == 0
                add(review, 42)
                pushed = _next_queue_event(events)
                assert [i["request_id"] for i in pushed["items"]] == ["rq-42"] and pushed["queue_depth"] == 1
    finally:
        server.stop()


def _next_queue_event(lines: Any) -> dict[str, Any]:
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "queue":
            return orjson.loads(line[6:])
    raise AssertionError("stream ended")
