"""Server settings from CLI flags and WHISPERWIRE_* environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MiB = 1024 * 1024


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WHISPERWIRE_", extra="ignore")

    host: str = "127.0.0.1"
    """Address to bind; anything but loopback requires a token."""
    port: int = 50051
    """gRPC port; 0 picks a free one."""
    metrics_port: int | None = None
    """Prometheus /metrics HTTP port; unset disables it."""
    http_port: int | None = None
    """OpenAI-compatible HTTP API port (same host, token and limits); unset disables it,
    0 picks a free one."""

    model: str = "base"
    """Model name (tiny.en, base, small, ...) or a CTranslate2 model directory."""
    engine: Literal["ctranslate2", "trtllm"] = "ctranslate2"
    engine_dir: Path | None = None
    """TensorRT-LLM engine directory written by engine_builder (engine=trtllm)."""
    kv_cache_free_gpu_memory_fraction: float = Field(0.9, gt=0, le=1)
    """TensorRT-LLM: share of free GPU memory for the KV cache (the runtime's default)."""
    device: Literal["cpu", "cuda"] = "cpu"
    compute_type: str | None = None
    """CTranslate2 compute type; unset picks int8 on CPU where it is faster."""
    threads: int = 0
    """Engine threads (CTranslate2 intra_threads); 0 = one per core."""

    max_batch_size: int = Field(8, ge=1, le=256)
    batch_wait_ms: float = Field(0.0, ge=0)
    """Extra wait for a batch to fill when the engine is idle. Work that arrives while the
    engine is busy is batched anyway, so the default adds no latency."""
    max_queue: int = Field(512, ge=1)
    """Queued engine work items beyond which calls get RESOURCE_EXHAUSTED."""

    max_streams: int = Field(256, ge=1)
    max_streams_per_client: int = Field(64, ge=0)
    """Concurrent StreamAudio calls from one client IP address; 0 = no per-client limit.
    Behind a proxy or tunnel that hides client addresses every client shares one count."""
    max_stream_seconds: float = 3600.0
    idle_timeout_seconds: float = 300.0
    max_chunk_bytes: int = 64 * 1024
    max_request_bytes: int = 32 * MiB
    """gRPC receive limit; raised above the 4 MiB default for unary files."""
    max_audio_seconds: float = 3 * 3600.0
    max_utterance_seconds: float = 600.0
    default_beam_size: int = Field(1, ge=1, le=8)
    default_partial_interval: float = 0.5

    token: SecretStr | None = None
    """Bearer token required on every call when set."""
    grace_seconds: float = 30.0
    """On SIGTERM: how long in-flight work may take before the server exits."""
    log_format: Literal["json", "text"] = "text"
