"""Deployment settings: read once from the environment (prefix MODEL_SERVER_), validated at start-up.

The settings every model shares live here; a model's own knobs (an image size limit, a text length limit) live in
its module as a `ModelSettings` subclass with the same prefix, validated the same way (`load`). README's
configuration table lists both.
"""

from __future__ import annotations

import logging
import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger("bentoml.modelserver")

ENV_PREFIX = "MODEL_SERVER_"
# BentoML's probe and metrics paths: never refused for capacity, and exempt from the API key by default.
OPERATIONS_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics", "/v2/health/live", "/v2/health/ready"})
# The demo page and its files: they hold no data, and the page asks for the API key itself when one is needed.
PAGE_PATHS = frozenset({"/demo", "/demo/config.json", "/demo/demo.js", "/demo/demo.css"})


def usable_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPU cores this process may use: its affinity, capped by a container's CPU quota (cgroup v2 or v1).

    os.cpu_count() inside a container limited to 2 CPUs reports every core of the host; sizing onnxruntime's
    thread pools from it oversubscribes the quota and throttles the whole process.
    """
    cores = len(os.sched_getaffinity(0))
    quota = _cgroup_cpu_quota(cgroup_root)
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def _cgroup_cpu_quota(root: Path) -> float | None:
    """CPUs allowed by the cgroup CPU quota, or None when there is none."""
    try:
        quota, period = (root / "cpu.max").read_text().split()  # v2: "max 100000" or "200000 100000"
    except (OSError, ValueError):
        try:  # v1
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or int(period) <= 0:
        return None
    return int(quota) / int(period)


class SettingsError(RuntimeError):
    """A setting is invalid; the message names the variable and what it accepts."""


class Settings(BaseSettings):
    """Every knob of a deployment. Each field is the environment variable MODEL_SERVER_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    host: str = Field("127.0.0.1", description="interface the HTTP server binds")
    port: int = Field(3000, ge=1, le=65535, description="HTTP port")
    grpc_port: int = Field(
        3001, ge=0, le=65535, description="port of the Open Inference Protocol over gRPC, on the same interface; every "
        "worker serves it (0 turns gRPC off)",
    )
    workers: int = Field(
        0, ge=0, le=64, description="server worker processes, each with its own model sessions; 0 = one per usable CPU "
        "core (a container CPU quota counts): measured best on 2 cores (docs/performance.md, change 12)",
    )
    ort_threads: int = Field(
        0, ge=0, le=256,
        description="onnxruntime intra-op threads per model session; 0 = usable CPU cores (a container CPU quota "
        "counts) / workers, so 1 with the default workers",
    )
    ort_threads_per_model: dict[str, Annotated[int, Field(ge=1, le=256)]] = Field(
        default_factory=dict, description='JSON map overriding ort_threads for some models, e.g. {"digits": 1}'
    )
    ort_spinning: bool = Field(
        False, description="let onnxruntime threads spin-wait between runs (onnxruntime's default); off, the cores "
        "go to the HTTP server between batches: faster here and a tighter p99 (docs/performance.md, change 11)"
    )
    provider: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="execution provider: cuda falls back to cpu when no GPU is usable; auto picks cuda if present"
    )
    max_batch_size: int = Field(64, ge=1, le=4096, description="most items the batcher runs through a model at once")
    max_batch_wait_ms: float = Field(
        0.0, ge=0, le=1000, description="longest the batcher holds a batch that is not full for more requests to join; "
        "0: none (a lone request runs at once, and requests arriving while a batch runs form the next one)"
    )
    max_batch_ms: float = Field(
        50.0, gt=0, le=60_000, description="a batch stops growing once its expected time (measured time per input "
        "value x its values) reaches this: bigger batches of slow inputs only make every request wait for all"
    )
    inline_budget_ms: float = Field(
        5.0, ge=0, le=1000, description="a batch expected to take less (measured time per row x rows) runs on the event "
        "loop itself instead of the inference thread: no hand-off for small inputs; 0: always the thread"
    )
    max_request_bytes: int = Field(10 * 2**20, ge=1024, description="largest accepted request body; larger gets 413")
    max_run_elements: int = Field(
        2**20, ge=1024, description="most input values one inference call takes; bigger batches run in chunks (bounds memory)"
    )
    max_items_per_request: int = Field(256, ge=1, le=4096, description="most items (arrays, texts) in one request")
    request_timeout_s: float = Field(
        25.0, gt=0, le=3600,
        description="server-side deadline of one request (later gets 504); also the longest a shutdown drain waits. "
        "Keep it under the supervisor's 30 s stop timeout so a drain always completes. A model load, unload or traffic "
        "change has its own: this plus 2 x (model_load_timeout_s + 0.5 s), as it answers once every worker serves it",
    )
    max_concurrent_requests: int = Field(
        64, ge=1, le=100_000, description="requests in progress per worker; more get 503 with Retry-After at once"
    )
    retry_after_s: int = Field(1, ge=1, le=3600, description="Retry-After (seconds) sent with 503 when at capacity")
    api_key: SecretStr | None = Field(
        None, description="when set, every path except auth_exempt_paths needs 'Authorization: Bearer <key>' or 'X-API-Key'"
    )
    auth_exempt_paths: frozenset[str] = Field(
        OPERATIONS_PATHS | PAGE_PATHS,
        description='JSON list of paths answered without the API key, e.g. ["/livez", "/readyz"]',
    )
    cors_origins: list[str] = Field(
        default_factory=list, description='JSON list of origins allowed by CORS, e.g. ["https://app.example"]; empty = CORS off'
    )
    access_log: bool = Field(
        True, description="log one line per request (BentoML's access log); off saves CPU on the request path "
        "(docs/performance.md) - the metrics still count every request"
    )
    diagnostics: bool = Field(False, description="serve the no-op /diagnostics/* endpoints the benchmark measures")
    model_control: Literal["none", "explicit"] = Field(
        "none", description="explicit: models can be loaded, unloaded and their traffic changed through the repository "
        "API (Triton's model control mode; then the API key is required, or only loopback may when none is set); "
        "none: the API only lists them"
    )
    repository: str | None = Field(
        None, description="folder of the models loaded at run time and their state.json; default repository/ inside "
        "BENTOML_HOME (the project's .bentoml when unset)"
    )
    max_model_bytes: int = Field(
        128 * 2**20, ge=1024, description="largest model a load request may send (its files together); larger gets 413"
    )
    max_model_memory_mb: int = Field(
        2048, ge=64, description="memory bound of the child process that proves a new model loads and runs"
    )
    model_load_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="deadline for proving a new model loads and runs on its example"
    )
    model_tags: dict[str, str] = Field(
        default_factory=dict,
        description='JSON map of model name to BentoML model tag, e.g. {"digits": "digits:3f2a9c1b07de"}; default <name>:latest',
    )

    @field_validator("api_key")
    @classmethod
    def _key_long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and len(key.get_secret_value()) < 16:
            raise ValueError("an API key needs at least 16 characters (e.g. `openssl rand -hex 32`)")
        return key

    @property
    def worker_count(self) -> int:
        """Server worker processes: the setting, or one per usable core."""
        return self.workers or usable_cores()

    @property
    def session_threads(self) -> int:
        """Intra-op threads each session gets: the setting, or an even share of the usable cores per worker."""
        return self.ort_threads or max(1, usable_cores() // self.worker_count)

    def threads_for(self, model: str) -> int:
        """Intra-op threads for one model's session: its override, else session_threads."""
        return self.ort_threads_per_model.get(model, self.session_threads)

    def model_tag(self, name: str) -> str:
        """The BentoML model-store tag serving `name`."""
        return self.model_tags.get(name, f"{name}:latest")


class ModelSettings(BaseSettings):
    """Base of a model's own settings: environment variables MODEL_SERVER_<FIELD>, like the shared ones."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")


SettingsType = TypeVar("SettingsType", bound=BaseSettings)


def load(settings_class: type[SettingsType]) -> SettingsType:
    """Settings read from the environment; a bad value raises SettingsError naming the variable."""
    try:
        return settings_class()
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        raise SettingsError(f"Invalid settings: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; a bad value stops start-up with one clear message."""
    settings = load(Settings)
    cores = usable_cores()
    if settings.worker_count * settings.session_threads > cores:
        log.warning(
            "workers (%d) x ort_threads (%d) exceeds the %d CPU cores: expect oversubscription",
            settings.worker_count, settings.session_threads, cores,
        )
    return settings
