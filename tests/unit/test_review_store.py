"""The review queue's rules (stream_al.review.store): ranking, claims, answers, amend, rebuild, audit."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest

from stream_al.config import ReviewSettings
from stream_al.messages import LabelMessage, LabelRequest
from stream_al.review.store import Conflict, Invalid, NotFound, ReviewStore, cohen_kappa, double_annotated

T0 = 1_000_000.0


def make_store(tmp_path, **review: Any) -> ReviewStore:
    config = ReviewSettings(**{"double_annotation_share": 0.0, "claim_ttl_seconds": 30, **review})
    return ReviewStore(tmp_path / "review.sqlite3", ("legit", "fraud"), "fraud", config)


def request(n: int | str, priority: float = 0.5, fraud: float = 0.5, created: float = T0, ttl: float = 3600, **kw: Any) -> LabelRequest:
    return LabelRequest(
        request_id=f"rq-{n}", event_id=f"ev-{n}", created_at=created, expires_at=created + ttl,
        features={"amount": 10.0 + (n if isinstance(n, int) else 0), "hour": 3.0},
        scores={"legit": 1 - fraud, "fraud": fraud}, predicted="fraud" if fraud >= 0.5 else "legit",
        uncertainty=min(fraud, 1 - fraud), reason=kw.pop("reason", "uncertainty"), p_query=0.5, priority=priority,
        model_version=7, **kw,
    )


def outbox(store: ReviewStore) -> list[dict[str, Any]]:
    return [orjson.loads(payload) for _, _, payload in store.pending_labels()]


def test_rank_prefers_uncertain_then_likely_fraud_and_old_items_rise(tmp_path):
    store = make_store(tmp_path, score_weight=0.5, age_weight=0.5, age_horizon_seconds=600)
    store.add_request(request(1, priority=0.2, fraud=0.1), T0)
    store.add_request(request(2, priority=0.9, fraud=0.5), T0)
    store.add_request(request(3, priority=0.6, fraud=0.9), T0)
    assert [i["request_id"] for i in store.queue_view("ana", T0)["items"]] == ["rq-2", "rq-3", "rq-1"]
    store.add_request(request(4, priority=0.2, fraud=0.1, created=T0 - 600), T0)  # ten minutes old: +0.5
    assert store.queue_view("ana", T0)["items"][2]["request_id"] == "rq-4"


def test_two_analysts_never_hold_the_same_item(tmp_path):
    store = make_store(tmp_path)
    for n in range(2):
        store.add_request(request(n), T0)
    a = store.claim_next("ana", T0)
    b = store.claim_next("bob", T0)
    assert a["request_id"] != b["request_id"]
    assert store.claim_next("cy", T0) is None
    with pytest.raises(Conflict, match="claimed by another analyst"):
        store.claim("cy", a["request_id"], T0)
    # the claimed item is hidden from the others' queue, and counted as an open claim
    view = store.queue_view("cy", T0)
    assert view["items"] == [] and view["open_claims"] == 2 and view["queue_depth"] == 2


def test_concurrent_claims_are_exclusive(tmp_path):
    store = make_store(tmp_path)
    for n in range(20):
        store.add_request(request(n), T0)
    got: list[str] = []
    lock = threading.Lock()

    def work(name: str) -> None:
        card = store.claim_next(name, T0)
        with lock:
            got.append(card["request_id"])

    threads = [threading.Thread(target=work, args=(f"a{i}",)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 16 == len(set(got))


def test_an_analyst_holds_one_claim_and_renewal_keeps_it(tmp_path):
    store = make_store(tmp_path)
    for n in range(2):
        store.add_request(request(n), T0)
    first = store.claim_next("ana", T0)
    assert store.claim_next("ana", T0 + 1)["request_id"] == first["request_id"]  # a reload resumes the open item
    other = "rq-1" if first["request_id"] == "rq-0" else "rq-0"
    second = store.claim("ana", other, T0 + 1)  # opening another releases the first
    assert store.claim_next("bob", T0 + 1)["request_id"] == first["request_id"]
    assert store.queue_view("ana", T0 + 1)["my_claim"] == second["request_id"]
    assert store.renew("ana", second["request_id"], T0 + 25) == T0 + 55
    assert store.sweep(T0 + 40).claims_abandoned == 1  # bob's, not renewed; ana's was
    assert store.queue_view("ana", T0 + 40)["my_claim"] == second["request_id"]
    with pytest.raises(Conflict):
        store.renew("bob", second["request_id"], T0 + 41)


def test_an_abandoned_claim_returns_to_the_queue(tmp_path):
    store = make_store(tmp_path)
    store.add_request(request(1), T0)
    store.claim_next("ana", T0)
    assert store.claim_next("bob", T0 + 10) is None
    assert store.sweep(T0 + 31).claims_abandoned == 1
    assert store.claim_next("bob", T0 + 31)["request_id"] == "rq-1"
    with pytest.raises(Conflict, match="expired"):
        store.renew("ana", "rq-1", T0 + 32)
    assert store.counter("claims_abandoned") == 1


def test_answer_sends_one_training_label_and_validates(tmp_path):
    store = make_store(tmp_path)
    store.add_request(request(1), T0)
    with pytest.raises(Conflict, match="open it first"):
        store.answer("ana", "rq-1", "fraud", False, None, T0)
    store.claim_next("ana", T0)
    with pytest.raises(Invalid, match="not one of"):
        store.answer("ana", "rq-1", "maybe", False, None, T0 + 5)
    with pytest.raises(Invalid, match="exactly one"):
        store.answer("ana", "rq-1", "fraud", True, None, T0 + 5)
    record = store.answer("ana", "rq-1", "fraud", False, "card used abroad", T0 + 12)
    assert record["sent"] and record["role"] == "training"
    assert record["latency"] == 12 and record["time_to_answer"] == 12 and record["score_at_request"] == 0.5
    [label] = outbox(store)
    assert label["request_id"] == "rq-1" and label["label"] == "fraud" and label["annotator"] == "ana"
    assert label["note"] == "card used abroad" and label["answer_id"] == record["answer_id"]
    LabelMessage.model_validate(label)  # the engine's contract
    assert store.queue_view("bob", T0 + 13)["queue_depth"] == 0
    with pytest.raises(Conflict):
        store.claim("bob", "rq-1", T0 + 13)


def test_cant_tell_closes_without_a_label_and_skip_leaves_it_to_others(tmp_path):
    store = make_store(tmp_path)
    store.add_request(request(1), T0)
    store.add_request(request(2, priority=0.1), T0)
    store.claim("ana", "rq-1", T0)
    store.skip("ana", "rq-1", T0 + 1)
    assert store.claim_next("ana", T0 + 1)["request_id"] == "rq-2"  # never offered rq-1 again
    assert store.claim_next("bob", T0 + 2)["request_id"] == "rq-1"
    record = store.answer("bob", "rq-1", None, True, None, T0 + 3)
    assert record["role"] == "cant_tell" and not record["sent"] and outbox(store) == []
    assert store.queue_view("cy", T0 + 3)["queue_depth"] == 1
    with pytest.raises(NotFound):
        store.skip("ana", "rq-nope", T0)


def test_double_annotation_trains_on_the_first_label_and_records_the_second_for_agreement(tmp_path):
    store = make_store(tmp_path, double_annotation_share=1.0)
    store.add_request(request(1), T0)
    store.claim_next("ana", T0)
    assert store.answer("ana", "rq-1", "fraud", False, None, T0 + 5)["sent"]
    assert store.claim_next("ana", T0 + 6) is None  # ana answered it; it waits for a second analyst
    card = store.claim_next("bob", T0 + 6)
    assert card["double"] and card["answers_so_far"] == 1
    second = store.answer("bob", "rq-1", "legit", False, None, T0 + 9)
    assert second["role"] == "agreement" and not second["sent"]
    assert len(outbox(store)) == 1  # the second answer would be a correction to the engine: not sent
    assert store.queue_view("cy", T0 + 9)["queue_depth"] == 0
    stats = store.stats(T0 + 10)
    assert stats["agreement"] == {"items": 1, "agreed": 0, "rate": 0.0, "kappa": pytest.approx(stats["agreement"]["kappa"])}
    by = {a["analyst"]: a for a in stats["analysts"]}
    assert by["ana"]["agreement_items"] == 1 and by["ana"]["agreement"] == 0.0 and by["bob"]["median_time_to_answer"] == 3


def test_double_annotation_share_is_deterministic():
    picked = [double_annotated(f"rq-{i}", 0.1) for i in range(5000)]
    assert picked == [double_annotated(f"rq-{i}", 0.1) for i in range(5000)]
    assert 0.08 < sum(picked) / 5000 < 0.12
    assert not any(double_annotated(f"rq-{i}", 0.0) for i in range(100))


def test_amend_sends_a_correction_only_when_the_label_changes(tmp_path):
    store = make_store(tmp_path, amend_window_seconds=60)
    store.add_request(request(1), T0)
    store.claim_next("ana", T0)
    first = store.answer("ana", "rq-1", "fraud", False, None, T0 + 1)
    store.mark_sent([(seq, None) for seq, _, _ in store.pending_labels()], T0 + 1)
    same = store.amend("ana", first["answer_id"], "fraud", False, "double-checked", T0 + 2)
    assert not same["sent"] and outbox(store) == []  # the engine would dead-letter a duplicate
    changed = store.amend("ana", same["answer_id"], "legit", False, None, T0 + 3)
    assert changed["sent"] and changed["supersedes"] == same["answer_id"]
    [correction] = outbox(store)
    assert correction["request_id"] == "rq-1" and correction["label"] == "legit"
    with pytest.raises(Conflict, match="already amended"):
        store.amend("ana", first["answer_id"], "fraud", False, None, T0 + 4)
    with pytest.raises(NotFound):
        store.amend("bob", changed["answer_id"], "fraud", False, None, T0 + 4)
    with pytest.raises(Conflict, match="no longer be amended"):
        store.amend("ana", changed["answer_id"], "fraud", False, None, T0 + 100)
    assert [a["answer_id"] for a in store.recent_answers("ana", T0 + 5)] == [changed["answer_id"]]
    withdrawn = store.amend("ana", changed["answer_id"], None, True, None, T0 + 6)
    assert "cannot be withdrawn" in withdrawn["warning"] and len(outbox(store)) == 1


def test_requests_expire_unanswered_and_are_counted_but_claimed_ones_wait(tmp_path):
    store = make_store(tmp_path)
    store.add_request(request(1, ttl=60), T0)
    store.add_request(request(2, ttl=60), T0)
    store.claim("ana", "rq-2", T0 + 50)
    result = store.sweep(T0 + 61)
    assert result.items_expired == 1 and store.counter("expired") == 1
    assert store.answer("ana", "rq-2", "legit", False, None, T0 + 62)["sent"]  # a late answer is still true
    assert store.add_request(request(3, created=T0 - 7200), T0) and store.counter("expired") == 2  # replayed, already old
    assert store.stats(T0 + 63)["items"] == {"done": 1, "expired": 2}


def test_labels_from_the_topic_rebuild_answers_and_close_items(tmp_path):
    store = make_store(tmp_path)
    store.add_request(request(1), T0, ("rq-topic", 0, 0))
    store.add_request(request(2), T0, ("rq-topic", 0, 1))
    assert not store.add_request(request(2), T0, ("rq-topic", 0, 2))  # a replayed request
    assert store.add_topic_label("rq-1", "fraud", "ana", T0 + 20, "a1", "note", T0 + 21, ("labels", 0, 0)) == "recorded"
    assert store.add_topic_label("rq-1", "fraud", "ana", T0 + 22, None, None, T0 + 22, ("labels", 0, 1)) == "duplicate"
    assert store.add_topic_label("rq-1", "legit", "ana", T0 + 25, "a2", None, T0 + 25, ("labels", 0, 2)) == "recorded"
    assert store.add_topic_label("rq-1", "legit", "ana", T0 + 25, "a2", None, T0 + 25, ("labels", 0, 3)) == "own"
    assert store.add_topic_label("rq-9", "fraud", None, None, None, None, T0, ("labels", 0, 4)) == "unmatched"
    assert store.add_topic_label("rq-2", "spam", None, None, None, None, T0, ("labels", 0, 5)) == "unknown_class"
    assert store.offsets() == {("rq-topic", 0): 3, ("labels", 0): 6}
    assert store.queue_view("bob", T0 + 30)["queue_depth"] == 1  # rq-1 answered, on record
    stats = store.stats(T0 + 30)
    [ana] = stats["analysts"]
    assert ana["analyst"] == "ana" and ana["labels"] == 1 and ana["amendments"] == 1
    # an answer made here and echoed back from the topic is recognised as our own
    store.claim_next("bob", T0 + 30)
    record = store.answer("bob", "rq-2", "legit", False, None, T0 + 31)
    assert store.add_topic_label("rq-2", "legit", "bob", T0 + 31, record["answer_id"], None, T0 + 32) == "own"


def test_store_survives_a_restart(tmp_path):
    store = make_store(tmp_path)
    store.add_request(request(1), T0, ("rq-topic", 0, 0))
    store.claim_next("ana", T0)
    store.answer("ana", "rq-1", "fraud", False, None, T0 + 1)
    store.close()
    again = make_store(tmp_path)
    assert not again.is_empty() and again.offsets() == {("rq-topic", 0): 1}
    assert len(again.pending_labels()) == 1 and again.counter("answers") == 1


def test_card_shows_contributions_or_a_documented_approximation(tmp_path):
    store = make_store(tmp_path)
    store.add_request(request(1, contributions={"amount": 1.5, "hour": -0.2}), T0)
    card = store.claim_next("ana", T0)
    assert card["contributions"] == {"amount": 1.5, "hour": -0.2} and card["contributions_kind"] == "linear"
    for n in range(2, 6):
        store.add_request(request(n), T0)
    card = store.claim("bob", "rq-5", T0)
    assert card["contributions_kind"] == "deviation" and card["contributions"]["amount"] > 0  # the largest amount seen
    assert card["features"] == {"amount": 15.0, "hour": 3.0} and card["model_version"] == 7 and card["reason"] == "uncertainty"


def test_cohen_kappa():
    assert cohen_kappa([]) is None
    assert cohen_kappa([("a", "a"), ("b", "b")]) == 1.0
    assert cohen_kappa([("a", "a"), ("a", "a")]) is None  # chance agreement is total: undefined
