"""The review queue's state in SQLite: items, claims, answers, skips, the label outbox, offsets.

Every rule of the queue is a method here, with the clock passed in (``now``), so the rules are
plain, testable functions of the database; the web app and the Kafka bridge only call them.

- **Items** come from the ``label-requests`` topic (:meth:`ReviewStore.add_request`). An item wants
  one answer, or two when it is picked for double annotation (a deterministic share of request ids,
  so a rebuild picks the same items). It is ``open`` until it has enough answers (``done``) or its
  request expires unanswered (``expired``, counted).
- **Rank**: ``priority + score_weight * score + age_weight * min(1, age / age_horizon)``, where
  ``priority`` is the engine's normalised uncertainty and ``score`` the positive class's
  probability: uncertain and likely-fraud items first, and old items rise so nothing starves.
- **Claims**: an analyst holds at most one claim; a claim lasts ``claim_ttl_seconds`` and is renewed
  while the card is open. Claims are taken inside one ``BEGIN IMMEDIATE`` transaction, so two
  analysts never hold the same item. An expired claim is dropped by :meth:`sweep` (abandoned) and
  the item is back in the queue.
- **Answers**: a class label or "can't tell", with an optional note, by the analyst who holds the
  claim. The first label of an item is its *training* label: it goes to the outbox, and the bridge
  produces it to ``labels``. A second analyst's answer on a double-annotated item is recorded for
  agreement only (sending it would be a correction or a dead-lettered duplicate to the engine).
  "Can't tell" closes the analyst's part without a training label.
- **Amend/undo**: an analyst may replace a recent answer of theirs (within ``amend_window_seconds``).
  The new answer supersedes the old one; if it changes the item's training label, a new label with
  the same ``request_id`` is queued, which the engine applies as a correction. A label equal to the
  last one sent is never queued again (the engine would dead-letter it as a duplicate).
- **Rebuild**: labels read back from the topic are matched to their answers by ``answer_id``; a
  label the store does not know (a replay into an empty database, or a label from another tool) is
  recorded as a training answer by its ``annotator``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import sqlite3
import statistics
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import orjson

from stream_al.config import ReviewSettings
from stream_al.messages import LabelRequest

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    request_id TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    received_at REAL NOT NULL,
    priority REAL NOT NULL,
    uncertainty REAL NOT NULL,
    score REAL NOT NULL,
    reason TEXT NOT NULL,
    model_version INTEGER NOT NULL,
    predicted TEXT,
    needed INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'open',
    closed_at REAL,
    last_label TEXT,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS items_status ON items(status, created_at);
CREATE TABLE IF NOT EXISTS claims (
    request_id TEXT PRIMARY KEY,
    analyst TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS claims_analyst ON claims(analyst);
CREATE TABLE IF NOT EXISTS answers (
    answer_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    analyst TEXT NOT NULL,
    label TEXT,
    note TEXT,
    role TEXT NOT NULL,
    answered_at REAL NOT NULL,
    claimed_at REAL,
    score_at_request REAL NOT NULL,
    latency REAL,
    time_to_answer REAL,
    supersedes TEXT,
    superseded_by TEXT,
    source TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS answers_request ON answers(request_id);
CREATE INDEX IF NOT EXISTS answers_analyst ON answers(analyst, answered_at);
CREATE TABLE IF NOT EXISTS skips (
    request_id TEXT NOT NULL,
    analyst TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (request_id, analyst)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    answer_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL,
    sent_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE TABLE IF NOT EXISTS offsets (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

CANT_TELL = "cant_tell"


class ReviewError(Exception):
    """A request the queue refuses; ``status`` is the HTTP status the app answers with."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotFound(ReviewError):
    status = 404


class Conflict(ReviewError):
    """The item is claimed by someone else, closed, already answered, or the claim was lost."""

    status = 409


class Invalid(ReviewError):
    """The answer fails validation (e.g. a label outside the class set)."""

    status = 422


def double_annotated(request_id: str, share: float) -> bool:
    """Whether an item goes to two analysts: a fixed share of request ids, the same after a rebuild.

    >>> sum(double_annotated(f"rq-{i}", 0.25) for i in range(4000)) / 4000
    0.242
    """
    if share <= 0:
        return False
    draw = int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8, person=b"review2x").digest(), "big")
    return draw / 2**64 < share


@dataclass(frozen=True)
class SweepResult:
    """What one :meth:`ReviewStore.sweep` did."""

    claims_abandoned: int = 0
    items_expired: int = 0


class FeatureStats:
    """Running mean and variance of each feature over the requests seen (Welford).

    The review card's approximation of "which features pushed the score" for non-linear models: the
    features furthest from usual, as z-scores against the requests the queue has seen.
    """

    def __init__(self) -> None:
        self.n: dict[str, int] = {}
        self.mean: dict[str, float] = {}
        self.m2: dict[str, float] = {}

    def add(self, features: dict[str, float]) -> None:
        for name, value in features.items():
            n = self.n.get(name, 0) + 1
            mean = self.mean.get(name, 0.0)
            delta = value - mean
            mean += delta / n
            self.n[name], self.mean[name] = n, mean
            self.m2[name] = self.m2.get(name, 0.0) + delta * (value - mean)

    def zscores(self, features: dict[str, float], top: int = 5) -> dict[str, float]:
        scores = {}
        for name, value in features.items():
            n = self.n.get(name, 0)
            if n < 2:
                continue
            std = math.sqrt(self.m2[name] / (n - 1))
            if std > 0:
                scores[name] = (value - self.mean[name]) / std
        ranked = sorted(scores.items(), key=lambda item: abs(item[1]), reverse=True)[:top]
        return {name: round(z, 3) for name, z in ranked}


class ReviewStore:
    """The queue's rules over one SQLite database (thread-safe: one connection behind a lock)."""

    def __init__(self, path: str | Path, classes: Sequence[str], positive_class: str | None, config: ReviewSettings):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.classes = tuple(classes)
        self.positive_class = positive_class
        self.config = config
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self.version = 0  # bumped on every change: the live stream pushes when it moves
        self.features = FeatureStats()
        for row in self._db.execute("SELECT payload FROM items ORDER BY created_at DESC LIMIT 2000"):
            self.features.add(orjson.loads(row["payload"])["features"])

    # -- plumbing --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self.version += 1

    def _one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _all(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _bump(self, db: sqlite3.Connection, name: str, by: int = 1) -> None:
        db.execute("INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?", (name, by, by))

    def counter(self, name: str) -> int:
        row = self._one("SELECT value FROM counters WHERE name = ?", name)
        return int(row["value"]) if row else 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def is_empty(self) -> bool:
        """No offsets recorded: the bridge replays both topics from the beginning."""
        return self._one("SELECT 1 FROM offsets LIMIT 1") is None

    # -- offsets ---------------------------------------------------------------------------------

    def offsets(self) -> dict[tuple[str, int], int]:
        return {(r["topic"], r["partition"]): r["next_offset"] for r in self._all("SELECT * FROM offsets")}

    def _advance(self, db: sqlite3.Connection, position: tuple[str, int, int] | None) -> None:
        if position is not None:
            topic, partition, offset = position
            db.execute(
                "INSERT INTO offsets VALUES (?, ?, ?) ON CONFLICT(topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
                (topic, partition, offset + 1),
            )

    def skip_record(self, position: tuple[str, int, int]) -> None:
        """Record that a message was consumed without effect (bad input, unmatched label)."""
        with self._tx() as db:
            self._advance(db, position)

    # -- ingest ----------------------------------------------------------------------------------

    def score_of(self, scores: dict[str, float]) -> float:
        """The score the queue ranks by: the positive class's probability, else the top probability."""
        if not scores:
            return 0.0
        if self.positive_class is not None:
            return float(scores.get(self.positive_class, 0.0))
        return float(max(scores.values()))

    def add_request(self, request: LabelRequest, now: float, position: tuple[str, int, int] | None = None) -> bool:
        """Store a label request as a queue item; False when it was already known (a replay)."""
        with self._tx() as db:
            self._advance(db, position)
            if db.execute("SELECT 1 FROM items WHERE request_id = ?", (request.request_id,)).fetchone():
                return False
            needed = 2 if double_annotated(request.request_id, self.config.double_annotation_share) else 1
            expired = request.expires_at <= now
            db.execute(
                "INSERT INTO items (request_id, event_id, created_at, expires_at, received_at, priority, uncertainty, score,"
                " reason, model_version, predicted, needed, status, closed_at, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (request.request_id, request.event_id, request.created_at, request.expires_at, now, request.priority,
                 request.uncertainty, self.score_of(request.scores), request.reason, request.model_version,
                 request.predicted, needed, "expired" if expired else "open", now if expired else None,
                 request.model_dump_json()),
            )
            self._bump(db, "requests")
            if expired:
                self._bump(db, "expired")
        self.features.add(request.features)
        return True

    def add_topic_label(
        self, request_id: str, label: str, annotator: str | None, labeled_at: float | None,
        answer_id: str | None, note: str | None, now: float, position: tuple[str, int, int] | None = None,
    ) -> str:
        """A label read back from the ``labels`` topic. Returns what it was: ``own`` (an answer this
        store made), ``recorded`` (a replayed or foreign answer, now on record), ``duplicate``,
        ``unknown_class`` or ``unmatched`` (no such item)."""
        with self._tx() as db:
            self._advance(db, position)
            if answer_id and db.execute("SELECT 1 FROM answers WHERE answer_id = ?", (answer_id,)).fetchone():
                return "own"
            item = db.execute("SELECT * FROM items WHERE request_id = ?", (request_id,)).fetchone()
            if item is None:
                return "unmatched"
            if label not in self.classes:
                return "unknown_class"  # the engine dead-letters it; nothing for the queue
            if item["last_label"] == label:
                return "duplicate"
            analyst = annotator or "external"
            answered_at = labeled_at if labeled_at is not None else now
            previous = db.execute(
                "SELECT answer_id FROM answers WHERE request_id = ? AND analyst = ? AND superseded_by IS NULL",
                (request_id, analyst),
            ).fetchone()
            new_id = answer_id or f"topic-{uuid.uuid4().hex}"
            db.execute(
                "INSERT INTO answers (answer_id, request_id, analyst, label, note, role, answered_at, claimed_at,"
                " score_at_request, latency, time_to_answer, supersedes, source) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (new_id, request_id, analyst, label, note, "training", answered_at, None, item["score"],
                 max(0.0, answered_at - item["created_at"]), None, previous["answer_id"] if previous else None, "topic"),
            )
            if previous is not None:
                db.execute("UPDATE answers SET superseded_by = ? WHERE answer_id = ?", (new_id, previous["answer_id"]))
            db.execute("UPDATE items SET last_label = ? WHERE request_id = ?", (label, request_id))
            self._close_if_complete(db, request_id, now)
            return "recorded"

    # -- the queue -------------------------------------------------------------------------------

    _AVAILABLE = """
        FROM items i
        WHERE i.status = 'open' AND i.expires_at > :now
          AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.request_id = i.request_id AND c.expires_at > :now AND c.analyst != :analyst)
          AND NOT EXISTS (SELECT 1 FROM answers a WHERE a.request_id = i.request_id AND a.analyst = :analyst)
          AND NOT EXISTS (SELECT 1 FROM skips s WHERE s.request_id = i.request_id AND s.analyst = :analyst)
    """

    def _available(self, db: sqlite3.Connection, analyst: str, now: float, limit: int, request_id: str | None = None) -> list[sqlite3.Row]:
        c = self.config
        sql = (
            "SELECT i.*, (i.priority + :sw * i.score + :aw * MIN(1.0, MAX(0.0, :now - i.created_at) / :horizon)) AS rank "
            + self._AVAILABLE
            + (" AND i.request_id = :rid" if request_id else "")
            + " ORDER BY rank DESC, i.created_at ASC LIMIT :limit"
        )
        args = {"sw": c.score_weight, "aw": c.age_weight, "now": now, "horizon": c.age_horizon_seconds,
                "analyst": analyst, "limit": limit, "rid": request_id}
        return db.execute(sql, args).fetchall()

    def queue_view(self, analyst: str, now: float) -> dict[str, Any]:
        """What one analyst's page shows: the top of the queue they may take, their claim, totals."""
        with self._lock:
            rows = self._available(self._db, analyst, now, self.config.page_size)
            mine = self._db.execute(
                "SELECT request_id, expires_at FROM claims WHERE analyst = ? AND expires_at > ?", (analyst, now)
            ).fetchone()
            available = self._db.execute("SELECT COUNT(*) " + self._AVAILABLE, {"now": now, "analyst": analyst}).fetchone()[0]
            totals = self.totals(now)
        items = [
            {"request_id": r["request_id"], "event_id": r["event_id"], "created_at": r["created_at"], "expires_at": r["expires_at"],
             "priority": r["priority"], "score": r["score"], "uncertainty": r["uncertainty"], "reason": r["reason"],
             "predicted": r["predicted"], "double": r["needed"] > 1, "rank": round(r["rank"], 4),
             "mine": mine is not None and mine["request_id"] == r["request_id"]}
            for r in rows
        ]
        return {"items": items, "available": available, "my_claim": mine["request_id"] if mine else None,
                "server_time": now, **totals}

    def totals(self, now: float) -> dict[str, int]:
        with self._lock:
            depth = self._db.execute("SELECT COUNT(*) FROM items WHERE status = 'open' AND expires_at > ?", (now,)).fetchone()[0]
            claims = self._db.execute("SELECT COUNT(*) FROM claims WHERE expires_at > ?", (now,)).fetchone()[0]
        return {"queue_depth": depth, "open_claims": claims, "expired": self.counter("expired"),
                "answers": self.counter("answers"), "requests": self.counter("requests")}

    # -- claims ----------------------------------------------------------------------------------

    def claim_next(self, analyst: str, now: float) -> dict[str, Any] | None:
        """The item this analyst holds (a reload resumes it), else claim the best one they may take."""
        with self._tx() as db:
            held = db.execute(
                "SELECT i.* FROM claims c JOIN items i USING (request_id) WHERE c.analyst = ? AND c.expires_at > ? AND i.status = 'open'",
                (analyst, now),
            ).fetchone()
            if held is not None:
                return self._take(db, analyst, held, now)
            rows = self._available(db, analyst, now, 1)
            if not rows:
                db.execute("DELETE FROM claims WHERE analyst = ?", (analyst,))
                return None
            return self._take(db, analyst, rows[0], now)

    def claim(self, analyst: str, request_id: str, now: float) -> dict[str, Any]:
        """Claim one given item (opening it from the list); :class:`Conflict` if it cannot be had."""
        with self._tx() as db:
            rows = self._available(db, analyst, now, 1, request_id)
            if not rows:
                raise self._why_not(db, analyst, request_id, now)
            return self._take(db, analyst, rows[0], now)

    def _why_not(self, db: sqlite3.Connection, analyst: str, request_id: str, now: float) -> ReviewError:
        item = db.execute("SELECT status, expires_at FROM items WHERE request_id = ?", (request_id,)).fetchone()
        if item is None:
            return NotFound(f"no item {request_id}")
        if item["status"] != "open" or item["expires_at"] <= now:
            return Conflict(f"item {request_id} is closed ({item['status']})")
        claim = db.execute("SELECT analyst FROM claims WHERE request_id = ? AND expires_at > ?", (request_id, now)).fetchone()
        if claim is not None and claim["analyst"] != analyst:
            return Conflict(f"item {request_id} is claimed by another analyst")
        return Conflict(f"you have already answered or skipped item {request_id}")

    def _take(self, db: sqlite3.Connection, analyst: str, row: sqlite3.Row, now: float) -> dict[str, Any]:
        rid = row["request_id"]
        held = db.execute("SELECT claimed_at FROM claims WHERE request_id = ? AND analyst = ?", (rid, analyst)).fetchone()
        db.execute("DELETE FROM claims WHERE analyst = ? OR request_id = ?", (analyst, rid))
        claimed_at = held["claimed_at"] if held else now
        expires = now + self.config.claim_ttl_seconds
        db.execute("INSERT INTO claims VALUES (?, ?, ?, ?)", (rid, analyst, claimed_at, expires))
        if not held:
            self._bump(db, "claims")
        return self._card(db, row, expires, analyst)

    def _card(self, db: sqlite3.Connection, row: sqlite3.Row, claim_expires: float | None, analyst: str) -> dict[str, Any]:
        request = orjson.loads(row["payload"])
        answers = db.execute(
            "SELECT COUNT(DISTINCT analyst) FROM answers WHERE request_id = ? AND superseded_by IS NULL", (row["request_id"],)
        ).fetchone()[0]
        if request.get("contributions"):
            contributions, kind = request["contributions"], "linear"
        else:
            contributions, kind = self.features.zscores(request["features"]), "deviation"
        return {
            "request_id": row["request_id"], "event_id": row["event_id"], "features": request["features"],
            "scores": request["scores"], "predicted": request.get("predicted"), "uncertainty": request["uncertainty"],
            "reason": request["reason"], "p_query": request.get("p_query"), "priority": request["priority"],
            "model_version": request["model_version"], "created_at": row["created_at"], "expires_at": row["expires_at"],
            "score": row["score"], "contributions": contributions, "contributions_kind": kind,
            "double": row["needed"] > 1, "answers_so_far": answers, "claim_expires_at": claim_expires,
            "status": row["status"],
        }

    def renew(self, analyst: str, request_id: str, now: float) -> float:
        """Extend this analyst's claim; :class:`Conflict` when it has been lost."""
        with self._tx() as db:
            claim = db.execute("SELECT analyst, expires_at FROM claims WHERE request_id = ?", (request_id,)).fetchone()
            if claim is None or claim["analyst"] != analyst or claim["expires_at"] <= now:
                raise Conflict(f"your claim on {request_id} has expired; open the item again")
            expires = now + self.config.claim_ttl_seconds
            db.execute("UPDATE claims SET expires_at = ? WHERE request_id = ?", (expires, request_id))
            return expires

    def release(self, analyst: str, request_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM claims WHERE request_id = ? AND analyst = ?", (request_id, analyst)).rowcount > 0

    def skip(self, analyst: str, request_id: str, now: float) -> None:
        """Give the item back to the others: this analyst will not be offered it again."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM items WHERE request_id = ?", (request_id,)).fetchone() is None:
                raise NotFound(f"no item {request_id}")
            db.execute("DELETE FROM claims WHERE request_id = ? AND analyst = ?", (request_id, analyst))
            db.execute("INSERT OR IGNORE INTO skips VALUES (?, ?, ?)", (request_id, analyst, now))
            self._bump(db, "skips")

    # -- answers ---------------------------------------------------------------------------------

    def _validate(self, label: str | None, cant_tell: bool, note: str | None) -> None:
        if cant_tell == (label is not None):
            raise Invalid("give exactly one of: a label, or cant_tell")
        if label is not None and label not in self.classes:
            raise Invalid(f"label {label!r} is not one of {list(self.classes)}")
        if note is not None and len(note) > 2000:
            raise Invalid("note is longer than 2000 characters")

    def answer(
        self, analyst: str, request_id: str, label: str | None, cant_tell: bool, note: str | None, now: float,
    ) -> dict[str, Any]:
        """Answer the item this analyst holds. Returns the answer record (with ``sent`` and ``role``)."""
        self._validate(label, cant_tell, note)
        with self._tx() as db:
            item = db.execute("SELECT * FROM items WHERE request_id = ?", (request_id,)).fetchone()
            if item is None:
                raise NotFound(f"no item {request_id}")
            claim = db.execute("SELECT * FROM claims WHERE request_id = ?", (request_id,)).fetchone()
            if claim is None or claim["analyst"] != analyst:
                raise Conflict(f"you do not hold a claim on {request_id}: open it first")
            if db.execute("SELECT 1 FROM answers WHERE request_id = ? AND analyst = ?", (request_id, analyst)).fetchone():
                raise Conflict(f"you have already answered {request_id}: amend that answer instead")
            role = CANT_TELL if cant_tell else ("training" if item["last_label"] is None else "agreement")
            answer_id = uuid.uuid4().hex
            db.execute(
                "INSERT INTO answers (answer_id, request_id, analyst, label, note, role, answered_at, claimed_at,"
                " score_at_request, latency, time_to_answer, source) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (answer_id, request_id, analyst, label, note or None, role, now, claim["claimed_at"], item["score"],
                 max(0.0, now - item["created_at"]), max(0.0, now - claim["claimed_at"]), "app"),
            )
            db.execute("DELETE FROM claims WHERE request_id = ?", (request_id,))
            sent = role == "training" and self._queue_label(db, item, answer_id, analyst, label, note, now)  # type: ignore[arg-type]
            self._bump(db, "answers")
            self._close_if_complete(db, request_id, now)
            return self._answer_record(db, answer_id, sent)

    def amend(
        self, analyst: str, answer_id: str, label: str | None, cant_tell: bool, note: str | None, now: float,
    ) -> dict[str, Any]:
        """Replace a recent answer of this analyst's. A changed training label is queued as a correction."""
        self._validate(label, cant_tell, note)
        with self._tx() as db:
            old = db.execute("SELECT * FROM answers WHERE answer_id = ?", (answer_id,)).fetchone()
            if old is None or old["analyst"] != analyst:
                raise NotFound(f"no answer {answer_id} of yours")
            if old["superseded_by"] is not None:
                raise Conflict(f"answer {answer_id} was already amended: amend the newest one")
            if now - old["answered_at"] > self.config.amend_window_seconds:
                raise Conflict(f"answer {answer_id} is older than {self.config.amend_window_seconds:g} s and can no longer be amended")
            item = db.execute("SELECT * FROM items WHERE request_id = ?", (old["request_id"],)).fetchone()
            if cant_tell:
                role = CANT_TELL
            elif old["role"] == "training" or item["last_label"] is None:
                role = "training"
            else:
                role = "agreement"
            new_id = uuid.uuid4().hex
            db.execute(
                "INSERT INTO answers (answer_id, request_id, analyst, label, note, role, answered_at, claimed_at,"
                " score_at_request, latency, time_to_answer, supersedes, source) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (new_id, old["request_id"], analyst, label, note if note is not None else old["note"], role, now,
                 old["claimed_at"], old["score_at_request"], old["latency"], old["time_to_answer"], answer_id, "app"),
            )
            db.execute("UPDATE answers SET superseded_by = ? WHERE answer_id = ?", (new_id, answer_id))
            sent = False
            if role == "training" and label != item["last_label"]:
                sent = self._queue_label(db, item, new_id, analyst, label, note, now)  # type: ignore[arg-type]
            self._bump(db, "amendments")
            record = self._answer_record(db, new_id, sent)
            if old["role"] == "training" and cant_tell:
                record["warning"] = (f"the model has already learned {item['last_label']!r} for this item; "
                                     "a label cannot be withdrawn, only corrected")
            return record

    def _queue_label(
        self, db: sqlite3.Connection, item: sqlite3.Row, answer_id: str, analyst: str, label: str, note: str | None, now: float,
    ) -> bool:
        payload = {"schema_version": 1, "request_id": item["request_id"], "event_id": item["event_id"], "label": label,
                   "annotator": analyst, "labeled_at": now, "answer_id": answer_id, "source": "stream-al-review"}
        if note:
            payload["note"] = note
        db.execute("INSERT INTO outbox (request_id, answer_id, payload, created_at) VALUES (?, ?, ?, ?)",
                   (item["request_id"], answer_id, orjson.dumps(payload), now))
        db.execute("UPDATE items SET last_label = ? WHERE request_id = ?", (label, item["request_id"]))
        return True

    def _answer_record(self, db: sqlite3.Connection, answer_id: str, sent: bool) -> dict[str, Any]:
        row = db.execute("SELECT * FROM answers WHERE answer_id = ?", (answer_id,)).fetchone()
        return {**dict(row), "sent": sent}

    def _close_if_complete(self, db: sqlite3.Connection, request_id: str, now: float) -> None:
        item = db.execute("SELECT needed, status FROM items WHERE request_id = ?", (request_id,)).fetchone()
        answered = db.execute(
            "SELECT COUNT(DISTINCT analyst) FROM answers WHERE request_id = ? AND superseded_by IS NULL", (request_id,)
        ).fetchone()[0]
        if item["status"] == "open" and answered >= item["needed"]:
            db.execute("UPDATE items SET status = 'done', closed_at = ? WHERE request_id = ?", (now, request_id))
            db.execute("DELETE FROM claims WHERE request_id = ?", (request_id,))

    def recent_answers(self, analyst: str, now: float, limit: int = 10) -> list[dict[str, Any]]:
        """This analyst's latest answers that may still be amended (newest first)."""
        rows = self._all(
            "SELECT a.*, i.event_id FROM answers a JOIN items i USING (request_id) WHERE a.analyst = ? AND a.superseded_by IS NULL"
            " AND a.source = 'app' AND a.answered_at > ? ORDER BY a.answered_at DESC LIMIT ?",
            analyst, now - self.config.amend_window_seconds, limit,
        )
        return [dict(r) for r in rows]

    def card_for_answer(self, analyst: str, answer_id: str) -> dict[str, Any]:
        """The card of an answered item (for undo/amend: the analyst sees what they answered)."""
        with self._lock:
            answer = self._db.execute("SELECT * FROM answers WHERE answer_id = ?", (answer_id,)).fetchone()
            if answer is None or answer["analyst"] != analyst:
                raise NotFound(f"no answer {answer_id} of yours")
            item = self._db.execute("SELECT * FROM items WHERE request_id = ?", (answer["request_id"],)).fetchone()
            return {**self._card(self._db, item, None, analyst), "answer": dict(answer)}

    # -- the outbox (drained by the Kafka bridge) ------------------------------------------------

    def pending_labels(self, limit: int = 500) -> list[tuple[int, str, bytes]]:
        rows = self._all("SELECT seq, request_id, payload FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT ?", limit)
        return [(r["seq"], r["request_id"], bytes(r["payload"])) for r in rows]

    def mark_sent(self, results: list[tuple[int, str | None]], now: float) -> None:
        """Record each send's outcome: delivered rows leave the outbox; failed ones are retried."""
        with self._tx() as db:
            for seq, error in results:
                if error is None:
                    db.execute("UPDATE outbox SET sent_at = ?, attempts = attempts + 1 WHERE seq = ?", (now, seq))
                    self._bump(db, "labels_sent")
                else:
                    db.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE seq = ?", (error, seq))

    def outbox_backlog(self) -> int:
        return self._one("SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL")["n"]

    # -- time ------------------------------------------------------------------------------------

    def sweep(self, now: float) -> SweepResult:
        """Drop expired claims (abandoned: the item is back in the queue) and expire old requests."""
        with self._lock:
            stale = self._db.execute("SELECT COUNT(*) FROM claims WHERE expires_at <= ?", (now,)).fetchone()[0]
            due = self._db.execute(
                "SELECT COUNT(*) FROM items WHERE status = 'open' AND expires_at <= ?", (now,)
            ).fetchone()[0]
            if not stale and not due:
                return SweepResult()
            with self._tx() as db:
                abandoned = db.execute("DELETE FROM claims WHERE expires_at <= ?", (now,)).rowcount
                # An item someone is still working on stays until their claim ends: a late answer is still true.
                rows = db.execute(
                    "SELECT i.request_id, (SELECT COUNT(*) FROM answers a WHERE a.request_id = i.request_id) AS n FROM items i"
                    " WHERE i.status = 'open' AND i.expires_at <= ?"
                    " AND NOT EXISTS (SELECT 1 FROM claims c WHERE c.request_id = i.request_id)", (now,),
                ).fetchall()
                expired = 0
                for row in rows:
                    status = "done" if row["n"] else "expired"  # half of a double annotation: done, not lost
                    db.execute("UPDATE items SET status = ?, closed_at = ? WHERE request_id = ?", (status, now, row["request_id"]))
                    expired += status == "expired"
                if abandoned:
                    self._bump(db, "claims_abandoned", abandoned)
                if expired:
                    self._bump(db, "expired", expired)
            return SweepResult(abandoned, expired)

    # -- audit -----------------------------------------------------------------------------------

    def stats(self, now: float) -> dict[str, Any]:
        """Per-analyst counts and latencies, and agreement on items two analysts answered."""
        with self._lock:
            answers = self._db.execute("SELECT * FROM answers").fetchall()
            skips = self._db.execute("SELECT analyst, COUNT(*) AS n FROM skips GROUP BY analyst").fetchall()
            totals = self.totals(now)
            done = self._db.execute("SELECT status, COUNT(*) AS n FROM items GROUP BY status").fetchall()
        per: dict[str, dict[str, Any]] = {}
        latest: dict[str, dict[str, str]] = {}
        for a in answers:
            s = per.setdefault(a["analyst"], {"answers": 0, "labels": 0, "cant_tell": 0, "amendments": 0, "skips": 0,
                                              "_tta": [], "_latency": [], "agreement_items": 0, "agreed": 0})
            if a["supersedes"] is not None:
                s["amendments"] += 1
            else:
                s["answers"] += 1
                if a["time_to_answer"] is not None:
                    s["_tta"].append(a["time_to_answer"])
                if a["latency"] is not None:
                    s["_latency"].append(a["latency"])
            if a["superseded_by"] is None:
                if a["label"] is None:
                    s["cant_tell"] += 1
                else:
                    s["labels"] += 1
                    latest.setdefault(a["request_id"], {})[a["analyst"]] = a["label"]
        for row in skips:
            per.setdefault(row["analyst"], {"answers": 0, "labels": 0, "cant_tell": 0, "amendments": 0, "skips": 0,
                                            "_tta": [], "_latency": [], "agreement_items": 0, "agreed": 0})["skips"] = row["n"]
        pairs = []
        for by_analyst in latest.values():
            if len(by_analyst) >= 2:
                (a1, l1), (a2, l2) = sorted(by_analyst.items())[:2]
                pairs.append((l1, l2))
                for name in (a1, a2):
                    per[name]["agreement_items"] += 1
                    per[name]["agreed"] += l1 == l2
        analysts = []
        for name, s in sorted(per.items()):
            tta, latency = s.pop("_tta"), s.pop("_latency")
            analysts.append({
                "analyst": name, **s,
                "median_time_to_answer": statistics.median(tta) if tta else None,
                "median_latency": statistics.median(latency) if latency else None,
                "agreement": s["agreed"] / s["agreement_items"] if s["agreement_items"] else None,
            })
        agreed = sum(l1 == l2 for l1, l2 in pairs)
        return {
            "analysts": analysts,
            "agreement": {"items": len(pairs), "agreed": agreed, "rate": agreed / len(pairs) if pairs else None,
                          "kappa": cohen_kappa(pairs)},
            "items": {row["status"]: row["n"] for row in done},
            "labels_sent": self.counter("labels_sent"), "outbox_backlog": self.outbox_backlog(),
            "claims_abandoned": self.counter("claims_abandoned"), **totals,
        }


def cohen_kappa(pairs: list[tuple[str, str]]) -> float | None:
    """Cohen's kappa of paired labels: agreement corrected for chance (None when undefined).

    >>> cohen_kappa([("a", "a"), ("b", "b"), ("a", "b"), ("a", "a")])
    0.5
    """
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    labels = {x for pair in pairs for x in pair}
    expected = sum((sum(a == c for a, _ in pairs) / n) * (sum(b == c for _, b in pairs) / n) for c in labels)
    if expected >= 1.0:
        return None
    return round((observed - expected) / (1.0 - expected), 4)
