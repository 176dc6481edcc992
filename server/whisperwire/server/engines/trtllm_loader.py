"""Loading TensorRT-LLM engines written by engine_builder: checks, configs, ModelRunnerCpp.

`tensorrt_llm` is imported only here and only when an engine loads (trtllm.md §n cited).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from engine_builder.errors import EngineDirError
from engine_builder.manifest import Manifest, check_engine_dir, load_manifest
from whisperwire.server.config import ServerSettings
from whisperwire.server.engines.trtllm import EngineConfig, TrtLlmEngine
from whisperwire.server.errors import ConfigurationError, ModelNotFoundError
from whisperwire.server.tokenizer import WhisperTokenizer

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'whisperwire[trtllm]' --extra-index-url https://pypi.nvidia.com"
# §1, TensorRT-LLM#2419: encoder-decoder engines must be given a cross-attention KV share.
CROSS_KV_CACHE_FRACTION = 0.5


def load_trtllm_engine(settings: ServerSettings) -> tuple[TrtLlmEngine, WhisperTokenizer]:
    """The engine in `settings.engine.engine_dir`, checked against this TensorRT-LLM and GPU."""
    if settings.engine.engine_dir is None:
        raise ConfigurationError(
            "engine=trtllm needs --engine-dir (WHISPERWIRE_ENGINE_DIR): a directory written by "
            "`python -m engine_builder`"
        )
    engine_dir = settings.engine.engine_dir
    runner_class, trtllm_version = _import_trtllm()
    manifest = _checked_manifest(engine_dir, trtllm_version)
    config = EngineConfig.read(engine_dir)
    tokenizer = WhisperTokenizer.from_dir(
        engine_dir / "assets", multilingual=config.multilingual, num_languages=config.num_languages
    )
    max_batch_size = min(settings.batching.max_batch_size, config.max_batch_size)
    runner = runner_class.from_dir(
        str(engine_dir),
        is_enc_dec=True,
        max_batch_size=max_batch_size,
        max_beam_width=config.max_beam_width,
        kv_cache_free_gpu_memory_fraction=settings.engine.kv_cache_free_gpu_memory_fraction,
        cross_kv_cache_fraction=CROSS_KV_CACHE_FRACTION,
    )
    engine = TrtLlmEngine(
        runner,
        config,
        tokenizer,
        model_name=manifest.model,
        max_batch_size=max_batch_size,
        feature_device="cuda" if _cuda_available() else "cpu",
    )
    return engine, tokenizer


def _import_trtllm() -> tuple[Any, str]:
    """ModelRunnerCpp and the installed TensorRT-LLM version."""
    try:
        import tensorrt_llm
        from tensorrt_llm.runtime import ModelRunnerCpp
    except ImportError as error:
        raise ConfigurationError(
            f"engine=trtllm needs TensorRT-LLM 1.2.1 (CUDA 13) on an NVIDIA GPU: {INSTALL_HINT} "
            f"({error})"
        ) from error
    return ModelRunnerCpp, str(tensorrt_llm.__version__)


def _checked_manifest(engine_dir: Path, trtllm_version: str) -> Manifest:
    """The manifest, if the engines were built for this TensorRT-LLM and GPU (§5)."""
    gpu = current_gpu_name()
    try:
        if gpu is None:
            log.warning(
                "cannot determine the GPU (torch sees no CUDA device); not checking that %s "
                "was built for it",
                engine_dir,
            )
            # Comparing with the manifest's own GPU leaves only the other checks.
            gpu = load_manifest(engine_dir).gpu_name if engine_dir.is_dir() else "unknown"
        return check_engine_dir(engine_dir, trtllm_version=trtllm_version, gpu=gpu)
    except EngineDirError as error:
        raise ModelNotFoundError(str(error)) from error


def current_gpu_name() -> str | None:
    """The first CUDA device's name as torch reports it, or None when there is none."""
    if not _cuda_available():
        return None
    import torch

    return str(torch.cuda.get_device_name(0))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
