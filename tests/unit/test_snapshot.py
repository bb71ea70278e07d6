"""Signed, atomic snapshot files."""

from __future__ import annotations

import os
import pickle
import stat
from pathlib import Path

import pytest

from stream_al.config import Settings
from stream_al.engine import Engine
from stream_al.messages import Event, LabelMessage
from stream_al.snapshot import MAGIC, SnapshotError, SnapshotStore, load_or_create_key

KEY = b"k" * 32
STATE = {"n": 1, "nested": [1, 2.5, {"bytes": b"\x00\xff", "none": None}], "text": "é"}


def test_write_read_round_trip(tmp_path):
    store = SnapshotStore(tmp_path, key=KEY)
    path = store.write(STATE)
    assert path == tmp_path / "snapshot-000000000001.pkl"
    assert path.read_bytes().startswith(MAGIC)
    assert store.read(path) == STATE
    assert store.load_latest() == (path, STATE)
    assert not list(tmp_path.glob("*.tmp"))


def test_empty_directory_has_no_snapshot(tmp_path):
    store = SnapshotStore(tmp_path / "new" / "dir", key=KEY)
    assert store.directory.is_dir()
    assert store.files() == [] and store.load_latest() is None


def test_keep_prunes_the_oldest(tmp_path):
    store = SnapshotStore(tmp_path, key=KEY, keep=2)
    paths = [store.write({"n": n}) for n in range(5)]
    assert store.files() == paths[3:]
    assert [p.name for p in store.files()] == ["snapshot-000000000004.pkl", "snapshot-000000000005.pkl"]
    assert store.load_latest() == (paths[4], {"n": 4})


def test_sequence_continues_in_a_new_store(tmp_path):
    SnapshotStore(tmp_path, key=KEY, keep=3).write({"n": 0})
    SnapshotStore(tmp_path, key=KEY, keep=3).write({"n": 1})
    store = SnapshotStore(tmp_path, key=KEY, keep=3)
    path = store.write({"n": 2})
    assert path.name == "snapshot-000000000003.pkl"
    assert [store.read(p)["n"] for p in store.files()] == [0, 1, 2]


def test_ordering_is_numeric_not_lexical(tmp_path):
    store = SnapshotStore(tmp_path, key=KEY, keep=20)
    for n in range(12):
        store.write({"n": n})
    assert store.load_latest()[1] == {"n": 11}


def flip(path: Path, index: int) -> None:
    data = bytearray(path.read_bytes())
    data[index] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["magic", "signature", "payload_start", "payload_end"])
def test_flipped_byte_is_refused_and_the_previous_snapshot_is_used(tmp_path, where):
    store = SnapshotStore(tmp_path, key=KEY)
    older = store.write({"n": 1})
    newest = store.write({"n": 2})
    index = {"magic": 3, "signature": len(MAGIC) + 5, "payload_start": len(MAGIC) + 32, "payload_end": -1}[where]
    flip(newest, index)
    with pytest.raises(SnapshotError):
        store.read(newest)
    assert store.load_latest() == (older, {"n": 1})


@pytest.mark.parametrize("content", [b"", MAGIC, MAGIC + b"\x00" * 10, b"not a snapshot at all, but long enough" * 3])
def test_truncated_or_foreign_files_are_refused(tmp_path, content):
    store = SnapshotStore(tmp_path, key=KEY)
    older = store.write({"n": 1})
    newest = store.write({"n": 2})
    newest.write_bytes(content)
    with pytest.raises(SnapshotError):
        store.read(newest)
    assert store.load_latest() == (older, {"n": 1})


def test_file_signed_with_another_key_is_refused(tmp_path):
    store = SnapshotStore(tmp_path, key=KEY)
    older = store.write({"n": 1})
    intruder = SnapshotStore(tmp_path, key=b"x" * 32)
    forged = intruder.write({"n": 666})
    assert intruder.read(forged) == {"n": 666}  # a valid file, for its own key
    with pytest.raises(SnapshotError, match="bad signature"):
        store.read(forged)
    assert store.load_latest() == (older, {"n": 1})


def test_signature_is_checked_before_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.remove, (str(tmp_path / "canary"),))

    (tmp_path / "canary").write_text("alive")
    SnapshotStore(tmp_path, key=b"x" * 32).write({"evil": Boom()})
    store = SnapshotStore(tmp_path, key=KEY)
    assert store.load_latest() is None
    assert (tmp_path / "canary").exists()


def test_all_bad_means_no_snapshot(tmp_path):
    store = SnapshotStore(tmp_path, key=KEY)
    for n in range(3):
        flip(store.write({"n": n}), -1)
    assert store.load_latest() is None


def test_key_file_is_created_private_and_reused(tmp_path):
    old_umask = os.umask(0)  # the mode must come from the code, not from a strict umask
    try:
        store = SnapshotStore(tmp_path / "snaps")
    finally:
        os.umask(old_umask)
    key_file = tmp_path / "snaps" / ".key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(store.key) == 32 and key_file.read_bytes() == store.key
    path = store.write(STATE)
    again = SnapshotStore(tmp_path / "snaps")
    assert again.key == store.key and again.read(path) == STATE
    assert load_or_create_key(tmp_path / "snaps") == store.key
    assert SnapshotStore(tmp_path / "other").key != store.key  # random per directory


def test_leftover_temp_file_is_ignored(tmp_path):
    store = SnapshotStore(tmp_path, key=KEY)
    good = store.write({"n": 1})
    leftover = tmp_path / "snapshot-000000000009.tmp"
    leftover.write_bytes(MAGIC + b"half a snapsh")
    store = SnapshotStore(tmp_path, key=KEY)
    assert store.files() == [good]
    assert store.load_latest() == (good, {"n": 1})
    assert store.write({"n": 2}).name == "snapshot-000000000002.pkl"


def test_stray_file_matching_the_pattern_is_ignored(tmp_path):
    store = SnapshotStore(tmp_path, key=KEY)
    good = store.write({"n": 1})
    (tmp_path / "snapshot-backup.pkl").write_bytes(good.read_bytes())
    assert SnapshotStore(tmp_path, key=KEY).load_latest() == (good, {"n": 1})


def test_engine_state_survives_a_snapshot_file(tmp_path):
    settings = Settings(classes=["legit", "fraud"], budget={"fraction": 0.5}, sampler={"random_share": 0.2})
    engine = Engine(settings)
    for i in range(200):
        x = {"x1": (i % 7) - 3.0, "x2": (i % 5) - 2.0}
        decision = engine.on_event(Event(f"e{i}", None, x), now=float(i))
        if decision.request is not None and i % 4:
            engine.on_label(LabelMessage(request_id=decision.request.request_id, label="fraud" if x["x1"] > 0 else "legit"), now=float(i))
    store = SnapshotStore(tmp_path, key=KEY)
    store.write(engine.state())
    _, state = SnapshotStore(tmp_path, key=KEY).load_latest()
    restored = Engine(settings)
    assert restored.restore(state) == []
    probes = [{"x1": a / 2, "x2": b / 2} for a in range(-6, 7) for b in range(-4, 5)]
    assert [restored.model.predict_proba_one(p) for p in probes] == [engine.model.predict_proba_one(p) for p in probes]
    assert restored.model_version == engine.model_version > 0
    assert list(restored.pending) == list(engine.pending)
    assert pickle.dumps(restored.counters) == pickle.dumps(engine.counters)
