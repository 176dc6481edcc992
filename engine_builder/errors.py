"""Typed errors of the engine builder; the CLI prints their message and exits non-zero."""

from __future__ import annotations

TRTLLM_INSTALL_HINT = "pip install tensorrt-llm==1.2.1 --extra-index-url https://pypi.nvidia.com"


class EngineBuilderError(Exception):
    """Base class of every error this package raises on purpose."""


class UnknownModelError(EngineBuilderError, ValueError):
    """A model name that is not in the OpenAI checkpoint table."""


class InvalidOptionsError(EngineBuilderError, ValueError):
    """Build options that no engine could satisfy (e.g. max_seq_len above n_text_ctx)."""


class DownloadError(EngineBuilderError):
    """A download failed after its retries."""


class ChecksumMismatchError(DownloadError):
    """The downloaded bytes do not have the expected SHA-256; the file was discarded."""


class CheckpointFormatError(EngineBuilderError):
    """The .pt file is not in OpenAI's Whisper layout (`dims` + `model_state_dict`)."""


class QuantizationUnavailableError(EngineBuilderError):
    """Weight-only int8/int4 was requested but tensorrt_llm (and a GPU) is not available."""


class TrtllmNotFoundError(EngineBuilderError):
    """`trtllm-build` is not on PATH."""


class TrtllmBuildError(EngineBuilderError):
    """`trtllm-build` exited non-zero."""


class VersionMismatchError(EngineBuilderError):
    """The requested TensorRT-LLM version differs from the installed one."""


class GpuNotFoundError(EngineBuilderError):
    """No GPU name was given and `nvidia-smi` could not report one."""


class EngineDirError(EngineBuilderError):
    """An engine directory is missing, incomplete, or built for another GPU/TensorRT-LLM."""
