"""Run the review app with uvicorn: in the foreground (``stream-al review``) or in a thread (demo, tests)."""

from __future__ import annotations

import logging
import socket
import threading
import time

import uvicorn
from fastapi import FastAPI

from stream_al.config import Settings
from stream_al.review.app import ReviewApp, create_app

log = logging.getLogger(__name__)


class ReviewServer:
    """uvicorn serving one app on a socket bound at construction (so ``port=0`` is known at once)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 8088):
        self.app = app
        self.socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.host = host
        self.port = self.socket.getsockname()[1]
        # access_log off: URLs carry no secrets, but the log would drown the demo's progress line
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2, lifespan="on")
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def review(self) -> ReviewApp:
        return self.app.state.review

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM (uvicorn's handlers, main thread only)."""
        self.server.run(sockets=[self.socket])

    def start(self, timeout: float = 15.0) -> ReviewServer:
        """Serve from a daemon thread; returns once the server accepts connections."""
        self._thread = threading.Thread(target=self.run, name="review-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the review app did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.review.stopping = True  # live streams end now instead of holding the shutdown
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self.socket.close()


def build_server(settings: Settings, host: str | None = None, port: int | None = None) -> ReviewServer:
    """The review app of ``settings`` (store at ``review.db_path``, Kafka bridge on) ready to serve."""
    app = create_app(settings)
    return ReviewServer(app, host or settings.review.host, settings.review.port if port is None else port)
