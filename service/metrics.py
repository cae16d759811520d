"""Prometheus metrics of our own, exposed on /metrics beside BentoML's request metrics."""

from __future__ import annotations

import bentoml

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LATENCIES = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

batch_size = bentoml.metrics.Histogram(
    name="modelserver_batch_size",
    documentation="Rows per inference call, after adaptive batching",
    labelnames=["model"],
    buckets=BATCH_SIZES,
)
inference_seconds = bentoml.metrics.Histogram(
    name="modelserver_inference_seconds",
    documentation="Wall time of one batched inference call",
    labelnames=["model"],
    buckets=LATENCIES,
)
client_errors = bentoml.metrics.Counter(
    name="modelserver_client_errors_total",
    documentation="Inputs the model's own checks rejected (decoding, size, content), by model and 4xx status; "
    "schema errors are counted by bentoml_service_request_total",
    labelnames=["model", "status"],
)


def observe_batch(model: str, rows: int, seconds: float) -> None:
    batch_size.labels(model=model).observe(rows)
    inference_seconds.labels(model=model).observe(seconds)


def count_client_error(model: str, status: int) -> None:
    client_errors.labels(model=model, status=str(status)).inc()


rejected_requests = bentoml.metrics.Counter(
    name="modelserver_rejected_requests_total",
    documentation="Requests refused before any model work, by reason (overloaded, shutting_down, unauthorised)",
    labelnames=["reason"],
)


def count_rejection(reason: str) -> None:
    rejected_requests.labels(reason=reason).inc()
