"""Build TensorRT-LLM Whisper engines from OpenAI checkpoints (see README.md here).

`build_engines` is what the Modal build function calls; the server calls `check_engine_dir`
at startup. `python -m engine_builder --help` is the command-line face of both. Importing this
package does not import torch; `engine_builder.convert` (the checkpoint conversion) does.
"""

from engine_builder.build import BUILDER_VERSION, PRECISIONS, build_engines
from engine_builder.catalog import model_names, resolve_model
from engine_builder.download import download_file
from engine_builder.environment import (
    DEFAULT_TRTLLM_VERSION,
    detect_gpu_name,
    gpu_slug,
    installed_trtllm_version,
)
from engine_builder.errors import (
    ChecksumMismatchError,
    DownloadError,
    EngineBuilderError,
    EngineDirError,
    QuantizationUnavailableError,
    TrtllmBuildError,
    TrtllmNotFoundError,
)
from engine_builder.manifest import Manifest, check_engine_dir, load_manifest
from engine_builder.trtllm_build import BuildOptions

__all__ = [
    "BUILDER_VERSION",
    "DEFAULT_TRTLLM_VERSION",
    "PRECISIONS",
    "BuildOptions",
    "ChecksumMismatchError",
    "DownloadError",
    "EngineBuilderError",
    "EngineDirError",
    "Manifest",
    "QuantizationUnavailableError",
    "TrtllmBuildError",
    "TrtllmNotFoundError",
    "build_engines",
    "check_engine_dir",
    "detect_gpu_name",
    "download_file",
    "gpu_slug",
    "installed_trtllm_version",
    "load_manifest",
    "model_names",
    "resolve_model",
]
