"""Prometheus metrics and the health endpoint: one registry, one prefix, base units.

Counters end in ``_total``; times are seconds; labels are low-cardinality reasons only. The HTTP
server (``/metrics``, ``/livez``, ``/readyz``) binds to 127.0.0.1 unless configured otherwise.

>>> metrics = Metrics()
>>> metrics.events.inc(3)
>>> b"stream_al_events_total 3.0" in metrics.render()
True
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "stream_al"

# Analysts answer in seconds to a day; a default latency histogram (up to 10 s) would say nothing.
HUMAN_LATENCY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400)
UPDATE_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """Every series the engine exports, on a registry of its own."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        p = PREFIX
        self.events = Counter(f"{p}_events", "Events scored.", registry=r)
        self.label_requests = Counter(f"{p}_label_requests", "Label requests made.", ["reason"], registry=r)
        self.labels_applied = Counter(f"{p}_labels_applied", "Labels the model learned from.", ["kind"], registry=r)
        self.labels_rejected = Counter(f"{p}_labels_rejected", "Labels not learned, by reason.", ["reason"], registry=r)
        self.dead_letters = Counter(f"{p}_dead_letters", "Messages sent to the dead-letter topic, by reason.", ["reason"], registry=r)
        self.requests_expired = Counter(f"{p}_requests_expired", "Label requests that expired unanswered.", registry=r)
        self.replayed_requests_charged = Counter(
            f"{p}_replayed_requests_charged",
            "Labels charged to the budget for requests already made for events about to be replayed (after a crash or a rebalance).",
            registry=r,
        )
        self.snapshots = Counter(f"{p}_snapshots", "Snapshots written.", registry=r)
        self.pending_requests = Gauge(f"{p}_pending_requests", "Open label requests.", registry=r)
        self.budget_used_ratio = Gauge(f"{p}_budget_used_ratio", "Labels asked for over labels the budget allowed so far.", registry=r)
        self.model_version = Gauge(f"{p}_model_version", "Labels applied to the model (its version).", registry=r)
        self.owned_partitions = Gauge(f"{p}_owned_partitions", "Events partitions this replica owns.", registry=r)
        self.ready = Gauge(f"{p}_ready", "1 when the engine is connected and consuming.", registry=r)
        self.label_latency = Histogram(
            f"{p}_label_latency_seconds", "Time from label request to the analyst's answer.",
            buckets=HUMAN_LATENCY_BUCKETS, registry=r,
        )
        self.label_to_update = Histogram(
            f"{p}_label_to_update_seconds", "Time from a label reaching Kafka to the model learning it.",
            buckets=UPDATE_LATENCY_BUCKETS, registry=r,
        )
        self.drift_detected = Counter(f"{p}_drift_detected", "Drifts detected, by signal.", ["signal"], registry=r)
        self.drift_state = Gauge(f"{p}_drift_state", "Each drift signal's level: 0 stable, 1 warning, 2 drift.", ["signal"], registry=r)
        self.audit_accuracy = Gauge(
            f"{p}_audit_accuracy", "Accuracy of the predictions on the latest random audit labels (unbiased).", registry=r,
        )
        self.model_swaps = Counter(f"{p}_model_swaps", "Background models swapped in after a drift.", registry=r)
        self.background_model_labels = Gauge(
            f"{p}_background_model_labels", "Labels the background model has learned (0: none training).", registry=r,
        )
        self.batch_seconds = Histogram(f"{p}_poll_batch_seconds", "Time to process one poll batch.", buckets=UPDATE_LATENCY_BUCKETS, registry=r)
        for reason in ("uncertainty", "random", "cold_start"):
            self.label_requests.labels(reason)
        for kind in ("answer", "late_ground_truth", "correction"):
            self.labels_applied.labels(kind)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """Serves ``/metrics``, ``/livez`` and ``/readyz`` from a daemon thread."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 9108):
        self.metrics = metrics
        self.live = True
        self.ready = False
        self.ready_detail = "starting"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.startswith("/metrics"):
                    self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
                elif self.path.startswith("/livez"):
                    self._send(200 if server.live else 503, b"ok\n" if server.live else b"stopping\n")
                elif self.path.startswith("/readyz"):
                    body = f"{'ready' if server.ready else 'not ready'}: {server.ready_detail}\n".encode()
                    self._send(200 if server.ready else 503, body)
                else:
                    self._send(404, b"not found: try /metrics, /livez, /readyz\n")

            def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:  # scrapes every few seconds: not worth a log line
                pass

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="stream-al-health", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def set_ready(self, ready: bool, detail: str) -> None:
        self.ready = ready
        self.ready_detail = detail
        self.metrics.ready.set(1 if ready else 0)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
