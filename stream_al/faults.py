"""Crash points for fault-injection tests: ``STREAM_AL_CRASH_AT=name[:n]`` kills the process with
SIGKILL the n-th time (default first) the runner passes the point ``name``.

Points: ``before_snapshot`` (sends flushed, snapshot not written), ``after_snapshot`` (snapshot
written, offsets not committed), ``mid_batch`` (half of an events chunk processed), ``label``
(right after a label is applied). Unset, a crash point costs one dictionary lookup.

>>> crash_point("after_snapshot")  # nothing happens unless the variable names this point
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("STREAM_AL_CRASH_AT", "")
_NAME, _, _COUNT = _SPEC.partition(":")
_remaining = {_NAME: int(_COUNT or 1)} if _NAME else {}


def crash_point(name: str) -> None:
    """SIGKILL this process if ``STREAM_AL_CRASH_AT`` names this point and its count is reached."""
    if name in _remaining:
        _remaining[name] -= 1
        if _remaining[name] <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
