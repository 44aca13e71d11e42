"""The control API's answers (``/localserve/v1``), typed once for the daemon and its clients.

The daemon's routes return these models, ``DaemonClient`` parses every answer into them, and the
CLI, the tray and the tests read their attributes, so a change of shape fails type checking and
validation instead of a string key somewhere. Field names are the JSON's: the wire format is
exactly what these models dump (``model_dump(mode="json")``).

Answers are frozen: a snapshot says how things were when it was taken.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_serializer,
    field_validator,
)

# Status shows each loaded model's runner info, as the runner's ready line carries it.
from localserve.api.runner import RunnerInfo as RunnerInfo

# A loaded model's runner: starting -> ready (-> restarting -> ready ...), or failed; stopped
# once unloaded. "unloaded" is a library model with no runner (the models list only).
RunnerStateName = Literal["stopped", "starting", "ready", "restarting", "failed"]
ModelState = RunnerStateName | Literal["unloaded"]
FitVerdictName = Literal["gpu", "partial", "cpu", "too_large"]


class ControlAnswer(BaseModel):
    # Built at first use, not at import: the daemon starts without building the ~30 answers
    # its control API, imported at its first request, will need.
    model_config = ConfigDict(frozen=True, defer_build=True)


ItemT = TypeVar("ItemT", bound=ControlAnswer)


class ListAnswer(ControlAnswer, Generic[ItemT]):
    """A list, OpenAI style: ``{"object": "list", "data": [...]}``."""

    object: Literal["list"] = "list"
    data: list[ItemT]


# -- status ----------------------------------------------------------------------------------
class ModelStatus(ControlAnswer):
    """A model in the pool: its runner's state (``POST /models/{name}/load``, status' models)."""

    model_id: str
    state: ModelState
    restarts: int = 0
    last_error: str | None = None
    pid: int | None = None
    info: RunnerInfo | None = Field(None, description="None until the runner was first ready.")

    @field_validator("info", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return value or None  # the wire says {} before the runner's first ready line

    @field_serializer("info", mode="wrap")
    def _none_is_empty(
        self, info: RunnerInfo | None, handler: SerializerFunctionWrapHandler
    ) -> object:
        return {} if info is None else handler(info)


class RemoteStatus(ControlAnswer):
    """Remote access (``GET``/``POST /remote``): the TLS listener, when it is on."""

    enabled: bool
    url: str | None = None
    address: str | None = None
    port: int | None = None
    fingerprint: str | None = None  # the certificate's SHA-256, for clients to pin
    self_signed: bool | None = None
    cert_file: str | None = None


class EngineBuild(ControlAnswer):
    """The llama.cpp build the runners use."""

    build: Literal["portable", "native"]
    cpu_variants: list[str]
    gpu_backends: list[str]
    gpu_offload: bool


class DaemonStatus(ControlAnswer):
    """``GET /status``."""

    version: str
    pid: int
    url: str
    default_model: str
    max_loaded_models: int
    local_only: bool
    providers: list[str]
    remote: RemoteStatus
    engine: EngineBuild
    models: list[ModelStatus]

    def model(self, model_id: str) -> ModelStatus | None:
        return next((m for m in self.models if m.model_id == model_id), None)


class LocalOnlyStatus(ControlAnswer):
    """``POST /local-only``."""

    local_only: bool


# -- live figures (GET /stats, /stats/events) ------------------------------------------------
class LiveRates(ControlAnswer):
    generation_tps: float
    prompt_tps: float
    active_requests: int
    window_s: float


class RecentRequests(ControlAnswer):
    window_s: float
    requests: int
    ttft_p50_s: float | None
    ttft_max_s: float | None
    generation_tps_mean: float | None


class ModelTotals(ControlAnswer):
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Totals(ModelTotals):
    """Since the daemon started."""

    by_model: dict[str, ModelTotals]


class RequestRecord(ControlAnswer):
    """One finished generation, as its runner reported it."""

    model: str
    finished_at: float  # wall clock
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    ttft_s: float | None
    prompt_tps: float | None
    generation_tps: float | None
    duration_s: float
    finish_reason: str


class GpuMemory(ControlAnswer):
    index: int
    name: str
    total_bytes: int
    used_bytes: int


class KvCacheUse(ControlAnswer):
    """A runner's KV cache: what its requests hold now, and what it has reserved."""

    used_bytes: int
    reserved_bytes: int


class MemoryStats(ControlAnswer):
    ram_total_bytes: int
    ram_used_bytes: int
    runners_rss_bytes: int
    runner_rss_bytes: dict[str, int]  # model id -> its runner's RSS
    gpus: list[GpuMemory]
    unified_memory: bool  # Apple Silicon: the GPU shares RAM
    kv_cache: dict[str, KvCacheUse] = {}  # model id -> its KV cache, as of its latest step

    @property
    def vram_used_bytes(self) -> int:
        return sum(gpu.used_bytes for gpu in self.gpus)


class HistoryPoint(ControlAnswer):
    time: float
    generation_tps: float
    prompt_tps: float
    active_requests: int
    ram_used_bytes: int
    runners_rss_bytes: int
    vram_used_bytes: int


class StatsSnapshot(ControlAnswer):
    """``GET /stats`` and each event of ``/stats/events``; ``history`` only when asked for."""

    time: float
    uptime_s: float
    live: LiveRates
    recent: RecentRequests
    totals: Totals
    last_request: RequestRecord | None
    memory: MemoryStats
    history: list[HistoryPoint] | None = Field(None, exclude_if=lambda value: value is None)


# -- the model library -----------------------------------------------------------------------
class FitSummary(ControlAnswer):
    """Whether a model fits this machine's free memory now, and how."""

    verdict: FitVerdictName
    description: str
    total_bytes: int
    gpu_layers: int
    context_length: int


# What a model can do beyond chat, in words, by capability name (``ModelRecord.capabilities``).
FEATURE_WORDS = {
    "vision": "sees",
    "tools": "tools",
    "thinking": "thinks",
    "insert": "code completion",
}


def feature_words(capabilities: list[str]) -> str:
    """``sees, tools, thinks``, as `models list` and the tray's Models window say it; "" for a
    model that only chats."""
    return ", ".join(FEATURE_WORDS[name] for name in capabilities if name in FEATURE_WORDS)


class LibraryModel(ControlAnswer):
    """An installed model (``GET /models``)."""

    name: str
    size_bytes: int
    architecture: str
    parameter_count: int
    quant_type: str
    context_length: int
    has_chat_template: bool
    supports_fim: bool
    capabilities: list[str] = []  # in Ollama's words: completion, insert, tools, thinking
    source_repo: str | None
    default: bool  # the model the daemon serves by default
    state: ModelState
    fit: FitSummary


class RemovedModel(ControlAnswer):
    """``DELETE /models/{name}``."""

    removed: str


class ModelSettings(ControlAnswer):
    """``GET`` / ``PUT /models/{name}/preset``: the model's own settings (``values``), the keys
    a change touched, and what happens next (``applies``: a sentence)."""

    model: str
    values: dict[str, Any]
    changed: list[str] = Field(default_factory=list)
    applies: str = ""


class UnloadResult(ControlAnswer):
    """``POST /models/{name}/unload``; ``unloaded`` is False when it was not loaded."""

    model: str
    unloaded: bool


# -- the Hub ---------------------------------------------------------------------------------
class HubRepo(ControlAnswer):
    """A GGUF repo found on the Hub (``GET /hub/search``)."""

    repo_id: str
    downloads: int
    likes: int
    updated: str | None  # ISO 8601


class HubQuant(ControlAnswer):
    """One quant of a Hub repo with its fit here (``GET /hub/files``)."""

    repo_id: str
    quant: str
    files: list[str]  # more than one for a split model
    size_bytes: int
    fit: FitSummary | None  # None when the model's header could not be read
    fit_problem: str | None  # why fit is None


# -- pulls -----------------------------------------------------------------------------------
class PullState(str, Enum):
    RUNNING = "running"
    WAITING = "waiting"  # for the network to come back; still running
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_PULL_STATES = frozenset({PullState.RUNNING, PullState.WAITING})


class PullSnapshot(ControlAnswer):
    """A download run by the daemon, as it stands (``GET /pulls/{id}``, each pull event)."""

    id: str
    repo_id: str
    files: list[str]
    state: PullState
    total_bytes: int
    done_bytes: int
    bytes_per_second: float
    eta_seconds: float | None
    model: str | None  # the library name, once installed
    error: str | None
    error_type: str | None  # the exception's class name, when it failed
    waiting_reason: str | None  # why it waits for the network
    started_at: float
    finished_at: float | None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_PULL_STATES


class StartedPull(PullSnapshot):
    """``POST /pulls``: the job, and whether it joined a download already running."""

    joined: bool


ModelList = ListAnswer[LibraryModel]
HubRepoList = ListAnswer[HubRepo]
HubQuantList = ListAnswer[HubQuant]
PullList = ListAnswer[PullSnapshot]
