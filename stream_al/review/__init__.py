"""The analysts' review queue: ``stream-al review`` (see README, "Review queue").

- :mod:`~stream_al.review.store`: the queue's rules over SQLite (claims, answers, audit, outbox);
- :mod:`~stream_al.review.bridge`: the Kafka thread (label-requests in, labels out, rebuild);
- :mod:`~stream_al.review.app`: the FastAPI app and its live stream;
- :mod:`~stream_al.review.server`: uvicorn in a thread, for the CLI, the demo and tests;
- ``static/``: the page (plain HTML, CSS and JavaScript with EventSource).
"""
