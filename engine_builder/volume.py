"""A volume of engine builds (the Modal app's Volume): build into it unless present, find one.

Layout: `<root>/engines/<build key>/` holds finished builds (engines, assets, manifest), hidden
entries beside them are builds in progress, and `<root>/checkpoints/` caches the downloaded
OpenAI checkpoints for rebuilds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine_builder.build import build_engines, fetch_inputs
from engine_builder.catalog import resolve_model
from engine_builder.errors import EngineDirError
from engine_builder.manifest import MANIFEST_NAME, check_engine_dir, load_manifest

log = logging.getLogger(__name__)

ENGINES_DIR = "engines"
CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class EngineBuild:
    engine_dir: Path
    built: bool
    """False when a build with the same key was already on the Volume (nothing was done)."""


def build_into_volume(
    volume_root: Path,
    model: str,
    precision: str,
    *,
    gpu: str,
    commit: Callable[[], None],
) -> EngineBuild:
    """Build engines into `<volume_root>/engines/<key>/` unless that key exists; commit if built.

    `gpu` names the GPU type when nvidia-smi cannot (engine_builder prefers nvidia-smi's name).
    Checkpoints are cached in `<volume_root>/checkpoints/` for rebuilds.
    """
    engines_root = volume_root / ENGINES_DIR
    before = _build_names(engines_root)
    engine_dir = build_engines(
        model, precision, engines_root, gpu=gpu, download_dir=volume_root / CHECKPOINTS_DIR
    )
    built = engine_dir.name not in before
    if built:
        # Serving containers see the Volume as last committed when they start.
        commit()
    return EngineBuild(engine_dir, built)


def fetch_checkpoint(volume_root: Path, model: str, *, commit: Callable[[], None]) -> Path:
    """The verified OpenAI checkpoint of `model` in `<volume_root>/checkpoints/`, with its
    tokenizer beside it (what `--engine torch` serves from): downloaded and committed the first
    time, reused after."""
    whisper = resolve_model(model)
    download_dir = volume_root / CHECKPOINTS_DIR
    missing = not all((download_dir / remote.name).is_file() for remote in whisper.files)
    files = fetch_inputs(whisper, download_dir)
    if missing:
        commit()
    return files[whisper.checkpoint.name]


def _build_names(engines_root: Path) -> set[str]:
    if not engines_root.is_dir():
        return set()
    return {p.name for p in engines_root.iterdir() if (p / MANIFEST_NAME).is_file()}


def find_engine_dir(
    engines_root: Path,
    model: str,
    precision: str,
    *,
    trtllm_version: str,
    gpu_name: str | None,
) -> Path:
    """The newest complete build of `model` at `precision` usable with this TensorRT-LLM and GPU.

    `gpu_name` None (no nvidia-smi) skips the GPU check; the engine loader checks again.
    Raises EngineDirError saying how to build one when there is none.
    """
    canonical = resolve_model(model).name
    usable: list[tuple[float, Path]] = []
    for directory in _build_dirs(engines_root):
        try:
            manifest = load_manifest(directory)
            if (manifest.model, manifest.precision) != (canonical, precision):
                continue
            check_engine_dir(
                directory, trtllm_version=trtllm_version, gpu=gpu_name or manifest.gpu_name
            )
        except EngineDirError as error:
            log.info("not using %s: %s", directory.name, error)
            continue
        usable.append((manifest.build_time.timestamp(), directory))
    if not usable:
        raise EngineDirError(
            f"no {canonical} {precision} engines for TensorRT-LLM {trtllm_version} on "
            f"{gpu_name or 'this GPU'} under {engines_root}; build them first "
            f"(`modal run whisperwire_modal.py::build_engines --model {model} "
            f"--precision {precision}`)"
        )
    return max(usable)[1]


def _build_dirs(engines_root: Path) -> list[Path]:
    if not engines_root.is_dir():
        return []
    # Hidden entries are engine_builder's staging directories, never finished builds.
    return sorted(
        p
        for p in engines_root.iterdir()
        if not p.name.startswith(".") and (p / MANIFEST_NAME).is_file()
    )
