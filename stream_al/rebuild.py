"""``stream-al rebuild``: a fresh model from the whole label log, as a snapshot the engine starts from.

Use it after changing the model type (or its parameters, or the class set): the engine refuses a
snapshot built for another model, and labels are too scarce to start from nothing. Every label on
the ``labels`` topic is applied, in log order, with the features of its request on the
``label-requests`` topic (or its own, for late ground truth), exactly as a running engine would.
The snapshot's control offsets are the ends that were read, so the engine carries on from there
without applying any label twice; its events offsets are left empty, so the engine continues from
the consumer group's committed offsets. Stop the engines that use the snapshot directory first.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from stream_al.config import Settings
from stream_al.engine import Engine, request_id_for
from stream_al.kafka_io import TopicReader
from stream_al.messages import InvalidInput, LabelRequest, ModelControl, parse_label_log, parse_label_request
from stream_al.runner import snapshot_payload
from stream_al.snapshot import SnapshotStore

log = logging.getLogger(__name__)


@dataclass
class RebuildReport:
    requests: int
    labels_read: int
    labels_applied: int
    labels_rejected: dict[str, int]
    open_requests: int
    snapshot: Path


def rebuild(settings: Settings, snapshots_dir: Path | None = None) -> RebuildReport:
    """Replay the label log into a fresh engine and write its snapshot."""
    topics = settings.topics
    reader = TopicReader(settings.kafka, [topics.label_requests, topics.labels])
    try:
        records, ends = reader.read_to_end()
    finally:
        reader.close()
    requests: dict[str, LabelRequest] = {}
    labels = []
    for record in records:
        try:
            if record.topic == topics.label_requests:
                request = parse_label_request(record.value)
                requests.setdefault(request.request_id, request)
            else:
                labels.append(parse_label_log(record.value))
        except InvalidInput as exc:
            log.warning("skipping %s:%d:%d (%s)", record.topic, record.partition, record.offset, exc)
    engine = Engine(settings)
    now = time.time()
    for label in labels:  # log order: the labels topic has one partition
        if isinstance(label, ModelControl):  # a background model started or swapped in, at this point of the log
            engine.on_control(label)
            continue
        request = requests.get(label.request_id or request_id_for(label.event_id))  # type: ignore[arg-type]
        if request is not None:
            engine.on_request(request, now=request.created_at)
            engine.on_label(label, now=request.created_at)
        else:
            engine.on_label(label, now=now)
    for request in requests.values():  # still open: the analysts may yet answer them
        if request.request_id not in engine.answered and request.expires_at > now:
            engine.on_request(request, now=now)
    engine.tick(now + settings.requests.label_wait_seconds)  # labels with no request and no features
    directory = snapshots_dir or settings.snapshots.dir
    key = settings.snapshots.key.get_secret_value().encode() if settings.snapshots.key else None
    path = SnapshotStore(directory, key=key, keep=settings.snapshots.keep).write(snapshot_payload(engine, {}, ends))
    return RebuildReport(
        requests=len(requests), labels_read=len(labels), labels_applied=engine.counters.labels_applied,
        labels_rejected=dict(engine.counters.labels_rejected), open_requests=len(engine.pending), snapshot=path,
    )
