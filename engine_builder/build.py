"""Build (or find) the TensorRT-LLM engine directory for a Whisper model.

download (resumable, hash-checked) → convert to a TRT-LLM checkpoint → trtllm-build encoder and
decoder → copy the assets → write manifest.json. Everything happens in a hidden staging
directory beside the final one, which is renamed into place only when complete, so a directory
under its final name is always a finished build.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from engine_builder.catalog import WhisperModel, resolve_model
from engine_builder.download import LogProgress, download_file
from engine_builder.environment import (
    choose_gpu_name,
    choose_trtllm_version,
    detect_gpu_name,
    gpu_slug,
    installed_trtllm_version,
)
from engine_builder.errors import EngineDirError, InvalidOptionsError
from engine_builder.manifest import ASSETS_DIR, MANIFEST_NAME, InputFile, Manifest
from engine_builder.quantize import require_quantization_support
from engine_builder.trtllm_build import (
    TRTLLM_BUILD,
    BuildOptions,
    decoder_build_args,
    encoder_build_args,
    find_trtllm_build,
    run_trtllm_build,
)

if TYPE_CHECKING:
    from engine_builder.convert import ModelDims

BUILDER_VERSION = "0.1.0"
# Bump when the produced directory changes in a way old builds should not satisfy.
LAYOUT_VERSION = 1
DOWNLOADS_DIR = "downloads"
_CHECKPOINT_DIR = "checkpoint"

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    """A weight precision: the engine's compute dtype plus an optional weight-only scheme."""

    name: str
    dtype: str
    quant_algo: str | None = None


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("float16", "float16"),
        Precision("bfloat16", "bfloat16"),
        Precision("float32", "float32"),
        # Weight-only: int8/int4 weights, float16 activations (needs tensorrt_llm on a GPU).
        Precision("int8", "float16", "W8A16"),
        Precision("int4", "float16", "W4A16"),
    )
}


def resolve_precision(name: str) -> Precision:
    try:
        return PRECISIONS[name]
    except KeyError:
        raise InvalidOptionsError(
            f"unknown precision {name!r}; choose one of: {', '.join(PRECISIONS)}"
        ) from None


@dataclass(frozen=True)
class BuildPlan:
    """Everything that determines the engines, hence the build directory's name."""

    model: WhisperModel
    precision: Precision
    options: BuildOptions
    trtllm_version: str
    gpu_name: str

    @property
    def key(self) -> str:
        """`<model>-<precision>-trtllm<version>-<gpu>-<hash8>`, the hash covering all inputs."""
        identity = {
            "layout": LAYOUT_VERSION,
            "model": self.model.name,
            "files": {f.name: f.sha256 for f in self.model.files},
            "precision": self.precision.name,
            "trtllm": self.trtllm_version,
            "gpu": gpu_slug(self.gpu_name),
            "options": self.options.as_dict(),
        }
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return (
            f"{self.model.name}-{self.precision.name}-trtllm{self.trtllm_version}-"
            f"{gpu_slug(self.gpu_name)}-{digest[:8]}"
        )

    def build_args(self) -> dict[str, list[str]]:
        """trtllm-build arguments per component, relative to the staging directory."""
        return {
            "encoder": encoder_build_args(
                Path(_CHECKPOINT_DIR, "encoder"),
                Path("encoder"),
                plugin_dtype=self.precision.dtype,
                options=self.options,
            ),
            "decoder": decoder_build_args(
                Path(_CHECKPOINT_DIR, "decoder"),
                Path("decoder"),
                plugin_dtype=self.precision.dtype,
                options=self.options,
            ),
        }


def build_engines(
    model: str,
    precision: str = "float16",
    out_root: Path = Path("engines"),
    *,
    gpu: str | None = None,
    max_batch_size: int = BuildOptions.max_batch_size,
    max_beam_width: int = BuildOptions.max_beam_width,
    max_seq_len: int = BuildOptions.max_seq_len,
    max_input_len: int = BuildOptions.max_input_len,
    force: bool = False,
    trtllm_version: str | None = None,
    download_dir: Path | None = None,
    source: WhisperModel | None = None,
) -> Path:
    """Return the engine directory for `model` at `precision`, building it unless it exists.

    `gpu` names the GPU when nvidia-smi cannot (nvidia-smi wins when it answers).
    `trtllm_version` defaults to the installed tensorrt_llm, else the 1.2.1 pin.
    `download_dir` caches downloads (default `<out_root>/downloads`); `source` replaces the
    catalog entry for `model`, e.g. to fetch from a mirror. `force` rebuilds and replaces.
    """
    plan = BuildPlan(
        model=source or resolve_model(model),
        precision=resolve_precision(precision),
        options=BuildOptions(max_batch_size, max_beam_width, max_seq_len, max_input_len),
        trtllm_version=choose_trtllm_version(trtllm_version, installed_trtllm_version()),
        gpu_name=choose_gpu_name(gpu, detect_gpu_name()),
    )
    final_dir = out_root / plan.key
    if not force and _is_finished_build(final_dir):
        _LOGGER.info("engines already built at %s; nothing to do", final_dir)
        return final_dir
    trtllm_build = _preflight(plan)
    inputs = fetch_inputs(plan.model, download_dir or out_root / DOWNLOADS_DIR)
    out_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{plan.key}.", suffix=".tmp", dir=out_root))
    try:
        _build_into(staging, plan, inputs, trtllm_build)
        return _publish(staging, final_dir, replace=force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _is_finished_build(final_dir: Path) -> bool:
    if not final_dir.exists():
        return False
    if not (final_dir / MANIFEST_NAME).is_file():
        raise EngineDirError(f"{final_dir} exists but has no {MANIFEST_NAME}; rebuild with force")
    return True


def _preflight(plan: BuildPlan) -> str:
    """Fail on a missing tool before spending time on downloads."""
    trtllm_build = find_trtllm_build()
    if plan.precision.quant_algo is not None:
        require_quantization_support(plan.precision.quant_algo)
    return trtllm_build


def fetch_inputs(model: WhisperModel, download_dir: Path) -> dict[str, Path]:
    """Download (or reuse verified copies of) the checkpoint and assets; by file name."""
    return {
        remote.name: download_file(
            remote.url,
            download_dir / remote.name,
            sha256=remote.sha256,
            progress=LogProgress(remote.name),
        )
        for remote in model.files
    }


def _build_into(staging: Path, plan: BuildPlan, inputs: dict[str, Path], trtllm_build: str) -> None:
    # Imported here so that importing the build (e.g. `python -m engine_builder --help`) stays
    # free of torch.
    from engine_builder.convert import write_trtllm_checkpoint

    started, built_at = time.monotonic(), datetime.now(timezone.utc)
    checkpoint_dir = staging / _CHECKPOINT_DIR
    dims = write_trtllm_checkpoint(
        inputs[plan.model.checkpoint.name],
        checkpoint_dir,
        dtype=plan.precision.dtype,
        quant_algo=plan.precision.quant_algo,
    )
    _check_fits(plan.options, dims)
    commands = plan.build_args()
    for args in commands.values():
        run_trtllm_build(trtllm_build, args, cwd=staging)
    # The converted weights are as large as the engines and no longer needed.
    shutil.rmtree(checkpoint_dir)
    _copy_assets(plan.model, inputs, staging / ASSETS_DIR)
    manifest = Manifest(
        key=plan.key,
        model=plan.model.name,
        precision=plan.precision.name,
        dtype=plan.precision.dtype,
        quant_algo=plan.precision.quant_algo,
        tensorrt_llm_version=plan.trtllm_version,
        gpu_name=plan.gpu_name,
        builder_version=BUILDER_VERSION,
        build_time=built_at,
        build_seconds=round(time.monotonic() - started, 3),
        dims=dims.as_dict(),
        tokenizer=plan.model.tokenizer.name,
        inputs=[InputFile(name=f.name, url=f.url, sha256=f.sha256) for f in plan.model.files],
        options=plan.options.as_dict(),
        trtllm_build={name: [TRTLLM_BUILD, *args] for name, args in commands.items()},
    )
    (staging / MANIFEST_NAME).write_text(manifest.to_json())


def _check_fits(options: BuildOptions, dims: ModelDims) -> None:
    if options.max_seq_len > dims.n_text_ctx:
        raise InvalidOptionsError(
            f"max_seq_len {options.max_seq_len} exceeds the model's {dims.n_text_ctx} positions"
        )


def _copy_assets(model: WhisperModel, inputs: dict[str, Path], assets_dir: Path) -> None:
    assets_dir.mkdir()
    for asset in (model.mel_filters, model.tokenizer):
        shutil.copyfile(inputs[asset.name], assets_dir / asset.name)


def _publish(staging: Path, final_dir: Path, *, replace: bool) -> Path:
    """Rename the finished staging directory to `final_dir` (swapping out an old build)."""
    if replace and final_dir.exists():
        retired = final_dir.with_name(f".{final_dir.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(final_dir, retired)
        try:
            os.replace(staging, final_dir)
        except OSError:
            os.replace(retired, final_dir)
            raise
        shutil.rmtree(retired, ignore_errors=True)
        _LOGGER.info("rebuilt engines at %s", final_dir)
        return final_dir
    try:
        os.replace(staging, final_dir)
    except OSError:
        if not _is_finished_build(final_dir):
            raise
        # Another builder published the same key first; its result is equivalent.
        shutil.rmtree(staging, ignore_errors=True)
        _LOGGER.info("engines were built concurrently at %s; keeping those", final_dir)
        return final_dir
    _LOGGER.info("built engines at %s", final_dir)
    return final_dir
