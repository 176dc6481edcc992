"""What the engines are built for: the TensorRT-LLM version and the GPU model.

TensorRT engines only load on the GPU architecture and TensorRT(-LLM) version that built them,
so both are part of an engine directory's key and checked again when the server starts.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
import shutil
import subprocess

from engine_builder.errors import GpuNotFoundError, VersionMismatchError

DEFAULT_TRTLLM_VERSION = "1.2.1"

_LOGGER = logging.getLogger(__name__)
_NVIDIA_SMI_TIMEOUT_S = 30


def installed_trtllm_version() -> str | None:
    try:
        return importlib.metadata.version("tensorrt_llm")
    except importlib.metadata.PackageNotFoundError:
        return None


def choose_trtllm_version(explicit: str | None, installed: str | None) -> str:
    """The installed version when there is one (it is what builds), else `explicit` or the pin."""
    if installed is None:
        return explicit or DEFAULT_TRTLLM_VERSION
    if explicit is not None and explicit != installed:
        raise VersionMismatchError(
            f"asked to build for TensorRT-LLM {explicit} but {installed} is installed"
        )
    return installed


def detect_gpu_name() -> str | None:
    """The first GPU's name as nvidia-smi reports it (e.g. "NVIDIA A10G"), or None."""
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi is None:
        return None
    try:
        completed = subprocess.run(
            [nvidia_smi, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=_NVIDIA_SMI_TIMEOUT_S,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as error:
        _LOGGER.warning("nvidia-smi failed: %s", error)
        return None
    names = [line.strip() for line in completed.stdout.splitlines() if line.strip()]
    return names[0] if names else None


def choose_gpu_name(explicit: str | None, detected: str | None) -> str:
    """The detected GPU when nvidia-smi answers (it is what builds), else the explicit name."""
    if detected is None:
        if explicit is None:
            raise GpuNotFoundError("nvidia-smi reports no GPU; pass the GPU name (e.g. --gpu A10G)")
        return explicit
    if explicit is not None and gpu_slug(explicit) != gpu_slug(detected):
        _LOGGER.warning(
            "GPU %r was requested but nvidia-smi reports %r; using the latter", explicit, detected
        )
    return detected


def gpu_slug(name: str) -> str:
    """A path-safe, comparable GPU name: "NVIDIA A100-SXM4-80GB" → "a100-sxm4-80gb"."""
    slug = re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")
    return re.sub(r"^nvidia-", "", slug) or "unknown-gpu"
