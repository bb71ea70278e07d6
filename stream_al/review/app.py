"""The review web app: FastAPI (on Starlette, served by uvicorn) over :class:`ReviewStore`.

Why FastAPI: it is a well-kept, widely used framework whose request and response bodies are
pydantic models, like every contract in stream-al; it is async, so each analyst's live stream
(server-sent events) is a cheap coroutine rather than a thread; and its ``TestClient`` makes API
tests plain function calls. The page itself is static HTML, CSS and plain JavaScript (EventSource),
so there is no front-end build.

Auth: every ``/api`` route needs an analyst, identified by a token from ``review.analysts`` given
either once at sign-in (``POST /api/session``, which sets an HttpOnly, SameSite=Strict session
cookie) or on each call as ``Authorization: Bearer <token>``. Tokens are compared in constant time
and never logged. There are no anonymous writes.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, AsyncIterator, Callable

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from stream_al.config import Settings
from stream_al.messages import LabelRequest
from stream_al.review.bridge import KafkaBridge
from stream_al.review.metrics import ReviewMetrics
from stream_al.review.store import ReviewError, ReviewStore

log = logging.getLogger(__name__)

COOKIE = "stream_al_review"
STATIC = resources.files("stream_al.review") / "static"


class SignIn(BaseModel):
    token: str = Field(min_length=1, max_length=500)


class AnswerBody(BaseModel):
    """An answer: ``label`` (one of the classes) or ``cant_tell: true``, and an optional note."""

    label: str | None = None
    cant_tell: bool = False
    note: str | None = Field(None, max_length=2000)


class ReviewApp:
    """Holds the store, metrics, sessions and (optionally) the Kafka bridge behind one FastAPI app."""

    def __init__(self, settings: Settings, store: ReviewStore, metrics: ReviewMetrics | None = None,
                 bridge: KafkaBridge | None = None, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.store = store
        self.metrics = metrics or ReviewMetrics()
        self.metrics.watch(store.totals, store.outbox_backlog)
        self.bridge = bridge
        self.clock = clock
        self.tokens = {name: token.get_secret_value().encode() for name, token in settings.review.analysts.items()}
        self.sessions: dict[str, str] = {}  # session id -> analyst (in memory: a restart asks to sign in again)
        self.stopping = False
        if not self.tokens:
            log.warning("no analysts configured (review.analysts): nobody can sign in")

    # -- auth ------------------------------------------------------------------------------------

    def analyst_for_token(self, token: str) -> str | None:
        given = token.encode()
        found = None
        for name, expected in self.tokens.items():  # compare against all: timing says nothing about which
            if hmac.compare_digest(given, expected):
                found = name
        return found

    def current_analyst(self, request: Request) -> str:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            analyst = self.analyst_for_token(auth[7:].strip())
            if analyst is None:
                raise HTTPException(401, "unknown token")
            return analyst
        session = request.cookies.get(COOKIE)
        if session and session in self.sessions:
            return self.sessions[session]
        raise HTTPException(401, "sign in with your analyst token")

    # -- the app ---------------------------------------------------------------------------------

    def build(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            if self.bridge is not None and not self.bridge.alive:
                self.bridge.start()
            yield
            self.stopping = True
            if self.bridge is not None:
                await run_in_threadpool(self.bridge.stop)

        app = FastAPI(title="stream-al review queue", lifespan=lifespan, docs_url="/api/docs", redoc_url=None)
        app.state.review = self
        me = Depends(self.current_analyst)
        store, metrics, clock, cfg = self.store, self.metrics, self.clock, self.settings.review

        @app.exception_handler(ReviewError)
        async def review_error(_: Request, exc: ReviewError) -> JSONResponse:
            return JSONResponse({"detail": exc.message}, status_code=exc.status)

        # pages
        @app.get("/", include_in_schema=False)
        def index() -> FileResponse:
            return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-store"})

        @app.get("/audit", include_in_schema=False)
        def audit_page() -> FileResponse:
            return FileResponse(str(STATIC / "audit.html"), headers={"Cache-Control": "no-store"})

        app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

        # health and metrics, on the engine's conventions
        @app.get("/metrics", include_in_schema=False)
        def prometheus() -> Response:
            return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

        @app.get("/livez", include_in_schema=False)
        def livez() -> PlainTextResponse:
            return PlainTextResponse("ok\n")

        @app.get("/readyz", include_in_schema=False)
        def readyz() -> PlainTextResponse:
            bridge = self.bridge
            if bridge is None:
                return PlainTextResponse("ready: no Kafka bridge (store only)\n")
            if bridge.error:
                return PlainTextResponse(f"not ready: Kafka bridge failed: {bridge.error}\n", status_code=503)
            if not bridge.caught_up.is_set():
                return PlainTextResponse("not ready: catching up with the topics\n", status_code=503)
            return PlainTextResponse("ready\n")

        # session
        @app.post("/api/session")
        def sign_in(body: SignIn, response: Response) -> dict[str, Any]:
            analyst = self.analyst_for_token(body.token)
            if analyst is None:
                raise HTTPException(401, "unknown token")
            session = secrets.token_urlsafe(32)
            self.sessions[session] = analyst
            response.set_cookie(COOKIE, session, httponly=True, samesite="strict", path="/")
            return {"analyst": analyst}

        @app.delete("/api/session")
        def sign_out(request: Request, response: Response) -> dict[str, Any]:
            self.sessions.pop(request.cookies.get(COOKIE, ""), None)
            response.delete_cookie(COOKIE, path="/")
            return {"signed_out": True}

        @app.get("/api/me")
        def whoami(analyst: str = me) -> dict[str, Any]:
            return {"analyst": analyst, "classes": list(self.settings.classes), "positive_class": self.settings.positive_class,
                    "claim_ttl_seconds": cfg.claim_ttl_seconds, "amend_window_seconds": cfg.amend_window_seconds}

        # the queue
        @app.get("/api/queue")
        def queue(analyst: str = me) -> dict[str, Any]:
            return store.queue_view(analyst, clock())

        @app.get("/api/stream")
        async def stream(request: Request, analyst: str = me) -> StreamingResponse:
            return StreamingResponse(self._events(request, analyst), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

        @app.post("/api/next")
        def claim_next(analyst: str = me) -> Response:
            card = store.claim_next(analyst, clock())
            if card is None:
                return Response(status_code=204)
            metrics.claims.inc()
            return JSONResponse(card)

        @app.post("/api/items/{request_id}/claim")
        def claim(request_id: str, analyst: str = me) -> dict[str, Any]:
            card = store.claim(analyst, request_id, clock())
            metrics.claims.inc()
            return card

        @app.post("/api/items/{request_id}/renew")
        def renew(request_id: str, analyst: str = me) -> dict[str, Any]:
            return {"claim_expires_at": store.renew(analyst, request_id, clock())}

        @app.post("/api/items/{request_id}/release")
        def release(request_id: str, analyst: str = me) -> dict[str, Any]:
            return {"released": store.release(analyst, request_id)}

        @app.post("/api/items/{request_id}/skip")
        def skip(request_id: str, analyst: str = me) -> dict[str, Any]:
            store.skip(analyst, request_id, clock())
            metrics.skips.inc()
            return {"skipped": request_id}

        @app.post("/api/items/{request_id}/answer")
        def answer(request_id: str, body: AnswerBody, analyst: str = me) -> dict[str, Any]:
            record = store.answer(analyst, request_id, body.label, body.cant_tell, body.note, clock())
            kind = "cant_tell" if body.cant_tell else ("label" if record["role"] == "training" else "agreement")
            metrics.answers.labels(kind).inc()
            metrics.answer_latency.observe(record["latency"])
            metrics.time_to_answer.observe(record["time_to_answer"])
            return record

        @app.get("/api/answers/recent")
        def recent(analyst: str = me) -> list[dict[str, Any]]:
            return store.recent_answers(analyst, clock())

        @app.get("/api/answers/{answer_id}")
        def answered_card(answer_id: str, analyst: str = me) -> dict[str, Any]:
            return store.card_for_answer(analyst, answer_id)

        @app.post("/api/answers/{answer_id}/amend")
        def amend(answer_id: str, body: AnswerBody, analyst: str = me) -> dict[str, Any]:
            record = store.amend(analyst, answer_id, body.label, body.cant_tell, body.note, clock())
            metrics.amendments.inc()
            return record

        @app.get("/api/stats")
        def stats(analyst: str = me) -> dict[str, Any]:
            return store.stats(clock())

        @app.get("/login", include_in_schema=False)
        def login_redirect() -> RedirectResponse:
            return RedirectResponse("/")

        return app

    async def _events(self, request: Request, analyst: str) -> AsyncIterator[bytes]:
        """Server-sent events: the analyst's queue view whenever the store changes (and every 10 s)."""
        last_version, last_sent = -1, 0.0
        yield b"retry: 2000\n\n"
        while not self.stopping:
            if await request.is_disconnected():
                break
            version, now = self.store.version, time.monotonic()
            if version != last_version or now - last_sent > 10.0:
                view = await run_in_threadpool(self.store.queue_view, analyst, self.clock())
                last_version, last_sent = version, now
                yield b"event: queue\ndata: " + orjson.dumps(view) + b"\n\n"
            await asyncio.sleep(0.25)


def create_app(settings: Settings, store: ReviewStore | None = None, bridge: bool = True,
               clock: Callable[[], float] = time.time, accept: Callable[[LabelRequest], bool] | None = None) -> FastAPI:
    """The app factory: a store at ``review.db_path`` (unless given) and, by default, the Kafka bridge.

    ``accept`` picks the requests this queue serves (default: all of them).
    """
    store = store or ReviewStore(settings.review.db_path, settings.classes, settings.positive_class, settings.review)
    metrics = ReviewMetrics()
    kafka_bridge = KafkaBridge(settings, store, metrics, clock=clock, accept=accept) if bridge else None
    return ReviewApp(settings, store, metrics, kafka_bridge, clock).build()
