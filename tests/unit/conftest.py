"""Shared fixtures of the core unit tests (no Kafka, real classes only)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _clean_stream_al_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read ``STREAM_AL_*`` variables: a developer's shell must not change test results."""
    for name in list(os.environ):
        if name.upper().startswith("STREAM_AL_"):
            monkeypatch.delenv(name)
