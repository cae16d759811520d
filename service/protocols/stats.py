"""Triton's statistics extension (what tritonclient's get_inference_statistics reads), summed over every worker.

The figures come from the server's own Prometheus metrics (service/operations/metrics.py), which BentoML keeps in
multiprocess files: reading those files sums every worker, so any worker answers for the whole server. Per model
version: items answered (inference_count), inference calls after batching (execution_count), successful and
failed requests with their time, the time spent in onnxruntime (compute_infer), the last request's time; and,
beyond Triton's fields, items flagged out of distribution and a shadow version's agreement with the default.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

NS = 1e9


def samples() -> dict[tuple[str, str, str], float]:
    """(sample name, model, version) -> value, summed over workers and over the labels not named here."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    found: dict[tuple[str, str, str], float] = defaultdict(float)
    for metric in registry.collect():
        for sample in metric.samples:
            model, version = sample.labels.get("model"), sample.labels.get("version")
            if model is None or version is None:
                continue
            suffix = f":{sample.labels['outcome']}" if "outcome" in sample.labels else ""
            if sample.name.endswith("_bucket"):
                continue
            if sample.name.endswith("timestamp_seconds"):
                found[(sample.name, model, version)] = max(found[(sample.name, model, version)], sample.value)
            else:
                found[(sample.name + suffix, model, version)] += sample.value
    return found


def model_statistics(repository: Any, name: str | None = None, version: str | None = None) -> list[dict[str, Any]]:
    """One Triton model_stats entry per served version (of one model, or one version, when named)."""
    values = samples()
    entries = []
    for model_name in ([name] if name else sorted(repository.names())):
        versions = repository.versions(model_name)
        for served in ([version] if version else list(versions.loaded)):
            entries.append(entry(values, model_name, served))
    return entries


def entry(values: dict, name: str, version: str) -> dict[str, Any]:
    def value(sample: str) -> float:
        return values.get((sample, name, version), 0.0)

    succeeded = value("modelserver_version_requests_total:success")
    failed = value("modelserver_version_requests_total:client_error") + value("modelserver_version_requests_total:server_error")
    total_seconds = value("modelserver_version_request_seconds_sum")
    compared = value("modelserver_shadow_compared_total")
    return {
        "name": name, "version": version,
        "last_inference": int(value("modelserver_version_last_request_timestamp_seconds") * 1000),
        "inference_count": int(value("modelserver_version_items_total")),
        "execution_count": int(value("modelserver_batch_size_count")),
        "inference_stats": {
            "success": {"count": int(succeeded), "ns": int(total_seconds * NS * succeeded / max(succeeded + failed, 1))},
            "fail": {"count": int(failed), "ns": int(total_seconds * NS * failed / max(succeeded + failed, 1))},
            "queue": {"count": 0, "ns": 0},
            "compute_input": {"count": 0, "ns": 0},
            "compute_infer": {"count": int(value("modelserver_inference_seconds_count")),
                              "ns": int(value("modelserver_inference_seconds_sum") * NS)},
            "compute_output": {"count": 0, "ns": 0},
            "cache_hit": {"count": 0, "ns": 0}, "cache_miss": {"count": 0, "ns": 0},
        },
        "batch_stats": [],
        "flagged_count": int(value("modelserver_version_flagged_total")),
        "shadow": {"compared": int(compared),
                   "agreement": value("modelserver_shadow_agreed_total") / compared if compared else None,
                   "mean_output_distance": value("modelserver_shadow_distance_sum") / compared if compared else None},
    }
