"""Server settings (pydantic-settings), in groups: engine, batching, limits, network, and the
defaults a request may leave unset.

Every setting also has one flat public name: its field name, or its alias where that would
clash (the engine group's `name` is `engine`). The flat name is the `serve` flag
(`--max-batch-size`, derived by cli.py from these fields and their docstrings), the environment
variable (WHISPERWIRE_MAX_BATCH_SIZE) and a keyword of ServerSettings (`max_batch_size=8`).
Flags and keywords override variables, which override the defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

MiB = 1024 * 1024
ENV_PREFIX = "WHISPERWIRE_"

EngineName = Literal["ctranslate2", "trtllm", "torch"]


class _Group(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True, populate_by_name=True, extra="forbid")


class EngineSettings(_Group):
    name: EngineName = Field(default="ctranslate2", alias="engine")
    """Inference engine: ctranslate2 (CPU or CUDA), trtllm (TensorRT-LLM on CUDA) or torch
    (PyTorch: CUDA in float16/bfloat16, or CPU in float32)."""
    model: str = "base"
    """Model name (tiny.en, base, small, ...) or a CTranslate2 model directory; the torch
    engine also takes an OpenAI checkpoint file (large-v3.pt, its tokenizer beside it)."""
    engine_dir: Path | None = None
    """TensorRT-LLM engine directory written by engine_builder (with --engine trtllm)."""
    kv_cache_free_gpu_memory_fraction: float = Field(default=0.9, gt=0, le=1)
    """TensorRT-LLM: share of free GPU memory for the KV cache (the runtime's default)."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Device the engine runs on: cpu or cuda."""
    compute_type: str | None = None
    """CTranslate2 compute type (unset: int8 on CPU where it is faster); for the torch
    engine its dtype: float16 (the CUDA default), bfloat16, or float32 (the CPU's)."""
    torch_compile: bool = False
    """torch engine: compile the encoder with torch.compile (about a minute more at start for
    the large models; the encoder, most of a short utterance's GPU time, gets ~20 % faster)."""
    threads: int = 0
    """Engine threads (CTranslate2 intra_threads); 0 = one per core."""
    decode_processes: int = Field(default=0, ge=0)
    """Worker processes that decode uploaded audio files (at a lower CPU priority); 0 decodes
    on threads of the server process. On a GPU server under many uploads, processes keep
    decoding off the server's interpreter lock, so streams stay responsive (on a CPU engine
    the cores are its)."""
    switch_interval_ms: float = Field(default=1.0, gt=0, le=100)
    """Longest a thread of the server holds the interpreter while another waits for it
    (Python's sys.setswitchinterval; its default is 5 ms). The engine thread wants it back
    after every wait on the GPU, and the event loop is busy with streams: under load each
    of those waits could cost up to this long."""


class BatchingSettings(_Group):
    max_batch_size: int = Field(default=8, ge=1, le=256)
    """Most 30 s windows per engine call."""
    batch_wait_ms: float = Field(default=0.0, ge=0)
    """Extra wait for a batch to fill when the engine is idle. Work that arrives while the
    engine is busy is batched anyway, so the default adds no latency."""
    max_queue: int = Field(default=512, ge=1)
    """Queued engine work items beyond which calls get RESOURCE_EXHAUSTED."""
    engine_stall_seconds: float = Field(default=60.0, gt=0)
    """Watchdog: an engine call on N windows that takes longer than (N + 1) times this is
    stalled; its callers get UNAVAILABLE/ENGINE_STALLED and the server exits to be replaced."""
    interactive_first: bool = True
    """Run streams' finals and partials ahead of bulk work (Transcribe files) that arrived
    earlier; off, all work runs in arrival order."""
    bulk_batch_size: int | None = Field(default=None, ge=1)
    """Most bulk windows per engine call (unset: max_batch_size). A stream's final that
    arrives during a bulk call waits for that call: smaller bounds that wait on engines that
    run a batch whole (CTranslate2 on CPU gains little from bigger batches)."""
    step_batching: bool = True
    """On engines with in-flight batching (torch greedy decoding, TensorRT-LLM), windows join
    and leave the running decode at every step; off, every engine call is a whole batch. In
    step mode bulk_batch_size caps the slots bulk work holds, keeping the rest for streams."""
    step_joins: int | None = Field(default=None, ge=1)
    """Step mode: most windows other than finals that join the running decode at one step
    (unset: a quarter of max_batch_size, at least 8), an eighth of that while a final
    decodes. Every window in flight waits for the joining windows' encoder batch, a
    push-to-talk final's too."""
    bulk_share: float = Field(default=0.2, gt=0, lt=1)
    """Least share of engine time bulk work gets while interactive work waits too, so files
    are never starved by streams."""
    latency_target_seconds: float | None = Field(default=None, gt=0)
    """Refuse new streams and Transcribe calls with RESOURCE_EXHAUSTED (and a retry delay)
    while the engine queue would make their work wait longer than this; unset admits all
    (up to max_queue)."""


class LimitSettings(_Group):
    max_streams: int = Field(default=256, ge=1)
    """Concurrent StreamAudio calls."""
    max_streams_per_client: int = Field(default=64, ge=0)
    """Concurrent StreamAudio calls from one client IP address; 0 = no per-client limit.
    Behind a proxy or tunnel that hides client addresses every client shares one count."""
    max_stream_seconds: float = 3600.0
    """Longest stream, wall clock."""
    idle_timeout_seconds: float = 300.0
    """Streams that send nothing for this long are ended."""
    max_chunk_bytes: int = 64 * 1024
    """Largest audio chunk of a stream."""
    max_request_bytes: int = 32 * MiB
    """Largest unary request: the gRPC receive limit (raised above its 4 MiB default for
    files) and the HTTP API's upload limit."""
    max_audio_seconds: float = 3 * 3600.0
    """Longest audio of one Transcribe call."""
    max_utterance_seconds: float = 600.0
    """Longest utterance of a stream before end_utterance."""


class NetworkSettings(_Group):
    host: str = "127.0.0.1"
    """Address to bind; anything but loopback requires a token."""
    port: int = 50051
    """gRPC port; 0 picks a free one."""
    metrics_port: int | None = None
    """Prometheus /metrics HTTP port; unset disables it."""
    http_port: int | None = None
    """OpenAI-compatible HTTP API port (same host, token and limits as gRPC); unset disables
    it, 0 picks a free one."""
    token: SecretStr | None = None
    """Bearer token ('authorization: Bearer TOKEN') required on every call when set."""
    tls_cert: Path | None = None
    """PEM certificate chain: serve TLS instead of plaintext (with tls_key)."""
    tls_key: Path | None = None
    """PEM private key of tls_cert."""
    tls_client_ca: Path | None = None
    """PEM roots: require client certificates signed by them (mutual TLS)."""
    grace_seconds: float = 30.0
    """On SIGTERM: how long in-flight work may take before the server exits."""


class RequestDefaults(_Group):
    default_beam_size: int = Field(default=1, ge=1, le=8)
    """Beam size of requests that leave it unset."""
    default_partial_interval: float = 0.5
    """Seconds between partial results of streams that leave it unset."""


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", use_attribute_docstrings=True)

    engine: EngineSettings = Field(default_factory=EngineSettings)
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    network: NetworkSettings = Field(default_factory=NetworkSettings)
    defaults: RequestDefaults = Field(default_factory=RequestDefaults)
    log_format: Literal["json", "text"] = "text"
    """Log lines as text (for people) or json (for log pipelines)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return _Nested(settings_cls, init_settings), _Nested(
            settings_cls, _Environment(settings_cls)
        )


@dataclass(frozen=True)
class Setting:
    """One setting under its flat public name."""

    name: str
    group: str | None  # None for a field of ServerSettings itself
    field: str
    info: FieldInfo

    @property
    def env_var(self) -> str:
        return f"{ENV_PREFIX}{self.name.upper()}"


def _settings() -> list[Setting]:
    found: list[Setting] = []
    for attr, info in ServerSettings.model_fields.items():
        group = info.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            found += [
                Setting(field.alias or name, attr, name, field)
                for name, field in group.model_fields.items()
            ]
        else:
            found.append(Setting(attr, None, attr, info))
    return found


SETTINGS = _settings()
_BY_NAME = {setting.name: setting for setting in SETTINGS}


class _Environment(PydanticBaseSettingsSource):
    """WHISPERWIRE_<FLAT NAME> variables, matched without regard to case as pydantic-settings
    matches its own."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads every variable at once

    def __call__(self) -> dict[str, Any]:
        environ = {key.upper(): value for key, value in os.environ.items()}
        return {s.name: environ[s.env_var] for s in SETTINGS if s.env_var in environ}


class _Nested(PydanticBaseSettingsSource):
    """Another source's values with flat names filed under their groups, so sources merge
    group by group (a flag for one engine setting keeps the variable for another)."""

    def __init__(self, settings_cls: type[BaseSettings], source: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self.source = source

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values = self.source()
        nested = {
            key: dict(value) if isinstance(value, dict) else value
            for key, value in values.items()
            if not _is_flat(key, value)
        }
        for key, value in values.items():
            if _is_flat(key, value):
                setting = _BY_NAME[key]
                assert setting.group is not None
                group = nested.setdefault(setting.group, {})
                if isinstance(group, dict):  # a group given whole (a model) is complete
                    group.setdefault(setting.field, value)  # and its own values win
        return nested


def _is_flat(key: str, value: Any) -> bool:
    """Whether `key` is the flat name of a grouped setting (and not a group given whole:
    `engine` names both the engine group and the engine's name)."""
    setting = _BY_NAME.get(key)
    if setting is None or setting.group is None:
        return False
    return not (key in ServerSettings.model_fields and isinstance(value, dict | BaseModel))
