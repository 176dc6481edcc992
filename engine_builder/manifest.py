"""`manifest.json` of an engine directory, and the startup check the server runs on it.

An engine directory looks like:

    <model>-<precision>-trtllm<version>-<gpu>-<hash8>/
        manifest.json
        encoder/{config.json, rank0.engine}
        decoder/{config.json, rank0.engine}
        assets/{mel_filters.npz, multilingual.tiktoken | gpt2.tiktoken}
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

import pydantic

from engine_builder.environment import gpu_slug
from engine_builder.errors import EngineDirError

MANIFEST_NAME = "manifest.json"
ASSETS_DIR = "assets"
COMPONENTS = ("encoder", "decoder")
ENGINE_FILES = ("config.json", "rank0.engine")


class InputFile(pydantic.BaseModel):
    """A downloaded input and the SHA-256 it was verified against."""

    model_config = pydantic.ConfigDict(frozen=True)

    name: str
    url: str
    sha256: str


class Manifest(pydantic.BaseModel):
    """What was built, from what, with what, for which GPU."""

    model_config = pydantic.ConfigDict(frozen=True)

    format_version: Literal[1] = 1
    key: str
    model: str
    precision: str
    dtype: str
    quant_algo: str | None
    tensorrt_llm_version: str
    gpu_name: str
    builder_version: str
    build_time: datetime
    build_seconds: float
    dims: dict[str, int]
    """The OpenAI checkpoint's `dims` (n_mels, n_vocab, n_text_ctx, ...)."""
    tokenizer: str
    """File name of the tiktoken vocabulary in `assets/`."""
    inputs: list[InputFile]
    options: dict[str, int]
    """Engine limits: max_batch_size, max_beam_width, max_seq_len, max_input_len."""
    trtllm_build: dict[str, list[str]]
    """Per component, the trtllm-build command as run (paths relative to the build directory)."""

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def load_manifest(path: Path) -> Manifest:
    """Read `path` (a manifest.json, or an engine directory containing one)."""
    manifest_path = path / MANIFEST_NAME if path.is_dir() else path
    try:
        return Manifest.model_validate_json(manifest_path.read_bytes())
    except OSError as error:
        raise EngineDirError(f"cannot read {manifest_path}: {error}") from error
    except pydantic.ValidationError as error:
        raise EngineDirError(f"{manifest_path} is not a valid engine manifest: {error}") from error


def required_files(manifest: Manifest) -> list[Path]:
    """Paths, relative to an engine directory, that the runtime needs."""
    engines = [Path(component, name) for component in COMPONENTS for name in ENGINE_FILES]
    assets = [Path(ASSETS_DIR, "mel_filters.npz"), Path(ASSETS_DIR, manifest.tokenizer)]
    return [*engines, *assets]


def check_engine_dir(engine_dir: Path, *, trtllm_version: str, gpu: str) -> Manifest:
    """Return the manifest if `engine_dir` is complete and built for this TRT-LLM and GPU.

    Raises `EngineDirError` naming what is missing or mismatched, so the server can refuse to
    start with a message that says how to fix it (rebuild with `python -m engine_builder`).
    """
    if not engine_dir.is_dir():
        raise EngineDirError(f"engine directory {engine_dir} does not exist; build it first")
    manifest = load_manifest(engine_dir)
    missing = [str(p) for p in required_files(manifest) if not (engine_dir / p).is_file()]
    if missing:
        raise EngineDirError(f"engine directory {engine_dir} is incomplete: missing {missing}")
    if manifest.tensorrt_llm_version != trtllm_version:
        raise EngineDirError(
            f"{engine_dir} was built with TensorRT-LLM {manifest.tensorrt_llm_version} but "
            f"{trtllm_version} is running; rebuild the engines"
        )
    if gpu_slug(manifest.gpu_name) != gpu_slug(gpu):
        raise EngineDirError(
            f"{engine_dir} was built on {manifest.gpu_name!r} but this is {gpu!r}; TensorRT "
            f"engines only run on the GPU type that built them: rebuild on this GPU"
        )
    return manifest
