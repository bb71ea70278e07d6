"""Signed, atomic snapshot files (DESIGN §4).

A snapshot is a pickle, so only files this engine wrote may be loaded: each file starts with a magic
line and an HMAC-SHA256 of the payload under a configured key, checked before unpickling. Writes go
to a temp file, are fsynced, renamed into place and the directory fsynced, so a crash leaves either
the old or the new snapshot, never half of one. The newest ``keep`` snapshots are kept; loading
falls back to an older one when the newest is corrupt or tampered with.

>>> import tempfile
>>> store = SnapshotStore(tempfile.mkdtemp(), key=b"k" * 32, keep=2)
>>> for n in range(3):
...     _ = store.write({"n": n})
>>> store.load_latest()[1]
{'n': 2}
>>> len(store.files())
2
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import pickle
import re
import secrets
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAGIC = b"stream-al-snapshot/1\n"
_DIGEST = hashlib.sha256().digest_size
_NAME = re.compile(r"snapshot-\d+\.pkl")


class SnapshotError(RuntimeError):
    """A snapshot file that cannot be trusted or read."""


def load_or_create_key(directory: Path) -> bytes:
    """The HMAC key kept beside the snapshots (mode 0600) when none is configured."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ".key"
    if path.exists():
        return path.read_bytes()
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


class SnapshotStore:
    """Writes and reads signed snapshots in one directory."""

    def __init__(self, directory: str | Path, key: bytes | None = None, keep: int = 3):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key = key if key is not None else load_or_create_key(self.directory)
        self.keep = keep
        self._sequence = max((self._sequence_of(p) for p in self.files()), default=0)

    def files(self) -> list[Path]:
        """Snapshot files, oldest first (other files in the directory are left alone)."""
        return sorted((p for p in self.directory.glob("snapshot-*.pkl") if _NAME.fullmatch(p.name)), key=self._sequence_of)

    @staticmethod
    def _sequence_of(path: Path) -> int:
        return int(path.stem.split("-")[1])

    def write(self, state: dict[str, Any]) -> Path:
        """Write ``state`` as the newest snapshot, atomically; prune old ones."""
        payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        signature = hmac.new(self.key, payload, hashlib.sha256).digest()
        self._sequence += 1
        final = self.directory / f"snapshot-{self._sequence:012d}.pkl"
        temp = final.with_suffix(".tmp")
        with open(temp, "wb") as f:
            f.write(MAGIC + signature + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, final)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        for old in self.files()[: -self.keep]:
            old.unlink(missing_ok=True)
        return final

    def read(self, path: Path) -> dict[str, Any]:
        """Verify and load one snapshot file."""
        data = path.read_bytes()
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _DIGEST:
            raise SnapshotError(f"{path} is not a stream-al snapshot")
        signature = data[len(MAGIC) : len(MAGIC) + _DIGEST]
        payload = data[len(MAGIC) + _DIGEST :]
        expected = hmac.new(self.key, payload, hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected):
            raise SnapshotError(f"{path} has a bad signature: corrupt, tampered with, or signed with another key")
        return pickle.loads(payload)  # noqa: S301 - signature checked above

    def load_latest(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest snapshot that verifies; bad ones are logged and skipped."""
        for path in reversed(self.files()):
            try:
                return path, self.read(path)
            except (SnapshotError, pickle.UnpicklingError, EOFError, OSError) as exc:
                log.error("skipping snapshot %s: %s", path.name, exc)
        return None
