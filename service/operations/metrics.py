"""Prometheus metrics of our own, exposed on /metrics (BentoML aggregates every worker's in multiprocess mode).

Requests are counted by the front door (service/operations/frontdoor.py) per endpoint template, so a path a
client makes up cannot grow the label set; batches, client errors, rejections, explanations and model loads by
the code that knows them.
"""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LATENCIES = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
REQUEST_LATENCIES = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

requests_total = Counter(
    "modelserver_requests_total", "HTTP requests answered, by endpoint template, model, method and status",
    ["endpoint", "model", "method", "http_response_code"],
)
request_seconds = Histogram(
    "modelserver_request_duration_seconds", "Time from a request's arrival to its answer, by endpoint template and model",
    ["endpoint", "model"], buckets=REQUEST_LATENCIES,
)
requests_in_progress = Gauge(
    "modelserver_requests_in_progress", "Requests being answered now, by endpoint template (what the autoscaler reads)",
    ["endpoint"], multiprocess_mode="livesum",
)
batch_size = Histogram(
    "modelserver_batch_size", "Rows per inference call, after adaptive batching", ["model", "version"],
    buckets=BATCH_SIZES,
)
inference_seconds = Histogram(
    "modelserver_inference_seconds", "Wall time of one batched inference call", ["model", "version"], buckets=LATENCIES,
)
# Per model version: what a canary or a shadow is judged on, beside the version that takes the traffic.
version_requests = Counter(
    "modelserver_version_requests_total", "Requests a model version answered, by outcome (success, client_error, "
    "server_error)", ["model", "version", "outcome"],
)
version_seconds = Histogram(
    "modelserver_version_request_seconds", "Time a model version took to decode, predict and encode one request",
    ["model", "version"], buckets=REQUEST_LATENCIES,
)
version_items = Counter("modelserver_version_items_total", "Items (images, texts) a model version answered",
                        ["model", "version"])
version_flagged = Counter(
    "modelserver_version_flagged_total", "Items a model version answered as out of distribution (digits: not a digit)",
    ["model", "version"],
)
version_last_request = Gauge("modelserver_version_last_request_timestamp_seconds",
                             "When a model version last answered a request", ["model", "version"], multiprocess_mode="max")
shadow_compared = Counter("modelserver_shadow_compared_total", "Items a shadow version answered beside the default",
                          ["model", "version"])
shadow_agreed = Counter("modelserver_shadow_agreed_total", "Items where a shadow version's label equals the default's",
                        ["model", "version"])
shadow_distance = Counter("modelserver_shadow_distance_sum", "Sum over compared items of the mean absolute difference "
                          "between a shadow version's output and the default's", ["model", "version"])
shadow_skipped = Counter("modelserver_shadow_skipped_total", "Request copies not sent to a shadow version: too many "
                         "already in flight", ["model", "version"])
model_loads = Counter("modelserver_model_loads_total", "Model versions loaded or refused, by outcome", ["model", "outcome"])
client_errors = Counter(
    "modelserver_client_errors_total",
    "Requests answered with a 4xx because of what they sent (schema, decoding, size, content), by model and status",
    ["model", "status"],
)
server_errors = Counter(
    "modelserver_server_errors_total", "Requests a model failed on (answered 500 naming the model), by model", ["model"],
)
rejected_requests = Counter(
    "modelserver_rejected_requests_total",
    "Requests refused before any model work, by reason (overloaded, shutting_down, unauthorised)", ["reason"],
)
explanations = Counter("modelserver_explanations_total", "Explanations served, by model", ["model"])


@functools.lru_cache(maxsize=4096)
def _request_series(endpoint: str, model: str, method: str, status: int) -> tuple:
    """The label children of one (endpoint, model, method, status), looked up once (labels() costs microseconds)."""
    return requests_total.labels(endpoint, model, method, str(status)), request_seconds.labels(endpoint, model)


def observe_request(endpoint: str, model: str, method: str, status: int, seconds: float) -> None:
    counter, histogram = _request_series(endpoint, model, method, status)
    counter.inc()
    histogram.observe(seconds)


@functools.lru_cache(maxsize=1024)
def in_progress(endpoint: str) -> Gauge:
    return requests_in_progress.labels(endpoint)


def observe_batch(model: str, version: str, rows: int, seconds: float) -> None:
    batch_size.labels(model=model, version=version).observe(rows)
    inference_seconds.labels(model=model, version=version).observe(seconds)


def observe_version(model: str, version: str, outcome: str, seconds: float, items: int, flagged: int) -> None:
    """One request a model version answered (or failed on)."""
    version_requests.labels(model, version, outcome).inc()
    version_seconds.labels(model, version).observe(seconds)
    if outcome == "success":
        version_items.labels(model, version).inc(items)
        version_flagged.labels(model, version).inc(flagged)  # 0 too: the dashboard's share needs the series
    version_last_request.labels(model, version).set_to_current_time()


def observe_shadow(model: str, version: str, compared: int, agreed: int, distance: float) -> None:
    shadow_compared.labels(model, version).inc(compared)
    shadow_agreed.labels(model, version).inc(agreed)
    shadow_distance.labels(model, version).inc(distance * compared)


def count_model_load(model: str, outcome: str) -> None:
    model_loads.labels(model, outcome).inc()


def count_client_error(model: str, status: int) -> None:
    client_errors.labels(model=model, status=str(status)).inc()


def count_server_error(model: str) -> None:
    server_errors.labels(model=model).inc()


def count_rejection(reason: str) -> None:
    rejected_requests.labels(reason=reason).inc()


def count_explanation(model: str) -> None:
    explanations.labels(model=model).inc()
