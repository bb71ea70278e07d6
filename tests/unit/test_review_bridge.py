"""The Kafka bridge's record handling, driven with plain records (no broker)."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from stream_al.config import Settings
from stream_al.review.bridge import KafkaBridge
from stream_al.review.metrics import ReviewMetrics
from stream_al.review.store import ReviewStore

from .test_review_store import T0, request


def bridge(tmp_path, **kw) -> KafkaBridge:
    settings = Settings(classes=["legit", "fraud"], positive_class="fraud", review={"double_annotation_share": 0.0})
    store = ReviewStore(tmp_path / "q.sqlite3", settings.classes, settings.positive_class, settings.review)
    return KafkaBridge(settings, store, ReviewMetrics(), clock=lambda: T0, **kw)


def record(topic: str, offset: int, value: bytes) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=0, offset=offset, value=value)


def test_bad_requests_are_counted_and_skipped_and_accept_filters(tmp_path):
    b = bridge(tmp_path, accept=lambda r: r.request_id != "rq-2")
    for offset, value in enumerate([b"not json", b'{"request_id": "x"}', request(1).model_dump_json().encode(),
                                    request(2).model_dump_json().encode()]):
        b.on_request_record(record("label-requests", offset, value))
    assert b.metrics.bad_messages.labels("invalid_request")._value.get() == 2
    assert b.metrics.requests._value.get() == 1
    assert [i["request_id"] for i in b.store.queue_view("ana", T0)["items"]] == ["rq-1"]
    assert b.store.offsets() == {("label-requests", 0): 4}  # nothing is read twice after a restart


def test_a_label_read_before_its_request_is_applied_when_the_request_arrives(tmp_path):
    b = bridge(tmp_path)
    b.on_label_record(record("labels", 0, orjson.dumps({"request_id": "rq-1", "label": "fraud", "annotator": "ana"})))
    b.on_label_record(record("labels", 1, b"{broken"))
    assert b.metrics.bad_messages.labels("invalid_label")._value.get() == 1
    b.on_request_record(record("label-requests", 0, request(1).model_dump_json().encode()))
    assert b.store.queue_view("bob", T0)["queue_depth"] == 0
    assert b.store.stats(T0)["analysts"][0]["analyst"] == "ana"


def test_sweep_counts_expiries_and_abandoned_claims(tmp_path):
    b = bridge(tmp_path)
    b.store.add_request(request(1, ttl=10), T0)
    b.store.add_request(request(2, ttl=1000), T0)
    b.store.claim("ana", "rq-2", T0)
    b.sweep(T0 + 100)
    assert b.metrics.expired._value.get() == 1 and b.metrics.claims_abandoned._value.get() == 1
