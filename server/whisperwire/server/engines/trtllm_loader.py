"""Loading TensorRT-LLM engines written by engine_builder: checks, configs, ModelRunnerCpp.

`tensorrt_llm` is imported only here and only when an engine loads. The runtime facts are in
docs/trtllm.md (cited as `docs/trtllm.md#<anchor>`).
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

# docs/trtllm.md#install: torch and torchvision come from PyTorch's CUDA 13 index first, or pip
# keeps PyPI's CUDA 12 builds beside a wheel that needs CUDA 13.
INSTALL_HINT = (
    "pip install torch==2.9.1 torchvision --index-url https://download.pytorch.org/whl/cu130 "
    "&& pip install tensorrt-llm==1.2.1 --extra-index-url https://pypi.nvidia.com "
    "&& pip install 'whisperwire[server,builder]' && pip check (see docs/trtllm.md#install)"
)
# docs/trtllm.md#from-dir, TensorRT-LLM#2419: encoder-decoder engines need a cross-KV share.
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
    # docs/trtllm.md#from-dir: the KV cache is sized for the beam width the server decodes with.
    max_beam_width = min(settings.defaults.default_beam_size, config.max_beam_width)

    def make_runner() -> Any:
        return runner_class.from_dir(
            str(engine_dir),
            is_enc_dec=True,
            max_batch_size=max_batch_size,
            max_beam_width=max_beam_width,
            kv_cache_free_gpu_memory_fraction=settings.engine.kv_cache_free_gpu_memory_fraction,
            cross_kv_cache_fraction=CROSS_KV_CACHE_FRACTION,
            # docs/trtllm.md#probe: language and no-speech probabilities come from logits.
            gather_generation_logits=True,
        )

    engine = TrtLlmEngine(
        make_runner,
        config,
        tokenizer,
        model_name=manifest.model,
        max_batch_size=max_batch_size,
        max_beam_width=max_beam_width,
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
    _require_cuda13_torch()
    return ModelRunnerCpp, str(tensorrt_llm.__version__)


def _require_cuda13_torch() -> None:
    """TensorRT-LLM 1.2.1 is built for CUDA 13; PyPI's default torch is a CUDA 12 build, and the
    mix fails deep inside the runtime (docs/trtllm.md#install). A CPU-only torch passes."""
    import torch

    cuda = torch.version.cuda
    if cuda is not None and not str(cuda).startswith("13"):
        raise ConfigurationError(
            f"TensorRT-LLM 1.2.1 needs torch built for CUDA 13, but this torch {torch.__version__} "
            f"is built for CUDA {cuda}: {INSTALL_HINT}"
        )


def _checked_manifest(engine_dir: Path, trtllm_version: str) -> Manifest:
    """The manifest, if the engines were built for this TensorRT-LLM and GPU
    (docs/trtllm.md#engine-dir)."""
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
