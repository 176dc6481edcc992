"""Test support for the TensorRT-LLM double: putting it on sys.path, and fake engine dirs.

A fake engine directory has engine_builder's layout (§5 of trtllm.md) with TRT-LLM-style
configs, placeholder `rank0.engine` files, OpenAI's assets and a real manifest, plus the
double's `double.json` naming the CTranslate2 model that computes the answers.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from engine_builder.build import BUILDER_VERSION
from engine_builder.convert import ModelDims, decoder_config, encoder_config
from engine_builder.manifest import Manifest
from engine_builder.trtllm_build import BuildOptions

DOUBLE_DIR = Path(__file__).resolve().parent
DOUBLE_CONFIG = "double.json"
ENCODER_MAX_FRAMES = 3000


@dataclass(frozen=True)
class DoubleModel:
    name: str
    dims: ModelDims
    compute_type: str  # what CTranslate2 runs underneath (int8 is faster for base on CPU)

    @property
    def tokenizer_file(self) -> str:
        return "multilingual.tiktoken" if self.dims.multilingual else "gpt2.tiktoken"


def _dims(n_vocab: int, width: int, heads: int, layers: int) -> ModelDims:
    return ModelDims(
        n_mels=80,
        n_vocab=n_vocab,
        n_audio_ctx=1500,
        n_audio_state=width,
        n_audio_head=heads,
        n_audio_layer=layers,
        n_text_ctx=448,
        n_text_state=width,
        n_text_head=heads,
        n_text_layer=layers,
    )


TINY_EN = DoubleModel("tiny.en", _dims(51864, 384, 6, 4), "float32")
BASE = DoubleModel("base", _dims(51865, 512, 8, 6), "int8")


@contextmanager
def double_importable() -> Iterator[None]:
    """`import tensorrt_llm` finds the double (and its dist-info) while the block runs."""
    _forget_tensorrt_llm()
    sys.path.insert(0, str(DOUBLE_DIR))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path.remove(str(DOUBLE_DIR))
        _forget_tensorrt_llm()


def _forget_tensorrt_llm() -> None:
    for name in [n for n in sys.modules if n == "tensorrt_llm" or n.startswith("tensorrt_llm.")]:
        del sys.modules[name]


def write_engine_dir(
    root: Path,
    model: DoubleModel,
    *,
    ct2_model_dir: Path,
    assets_dir: Path,
    trtllm_version: str = "1.2.1",
    gpu_name: str = "NVIDIA A10G",
    options: BuildOptions | None = None,
    threads: int = 2,
) -> Path:
    """A complete fake engine directory for `model` under `root`; returns its path."""
    options = options or BuildOptions()
    engine_dir = root / f"{model.name}-float16-trtllm{trtllm_version}"
    _write_component(
        engine_dir / "encoder",
        encoder_config(model.dims, "float16", None),
        _encoder_build_config(options),
    )
    _write_component(
        engine_dir / "decoder",
        decoder_config(model.dims, "float16", "float16", None),
        _decoder_build_config(options),
    )
    (engine_dir / "assets").mkdir()
    for name in ("mel_filters.npz", model.tokenizer_file):
        shutil.copyfile(assets_dir / name, engine_dir / "assets" / name)
    manifest = _manifest(model, trtllm_version, gpu_name, options, engine_dir.name)
    (engine_dir / "manifest.json").write_text(manifest.to_json())
    side = {"ct2_model_dir": str(ct2_model_dir), "compute_type": model.compute_type}
    (engine_dir / DOUBLE_CONFIG).write_text(json.dumps({**side, "threads": threads}))
    return engine_dir


def _write_component(folder: Path, pretrained: dict[str, object], build: dict[str, object]) -> None:
    folder.mkdir(parents=True)
    config = {"version": "1.2.1", "pretrained_config": pretrained, "build_config": build}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "rank0.engine").write_bytes(b"placeholder: the double never reads it")


def _encoder_build_config(options: BuildOptions) -> dict[str, object]:
    return {
        "max_batch_size": options.max_batch_size,
        "max_input_len": ENCODER_MAX_FRAMES,
        "max_seq_len": ENCODER_MAX_FRAMES,
        "max_beam_width": 1,
        "max_num_tokens": 8192,
        "kv_cache_type": "PAGED",
        "plugin_config": {"bert_attention_plugin": "float16", "remove_input_padding": True},
    }


def _decoder_build_config(options: BuildOptions) -> dict[str, object]:
    return {
        "max_batch_size": options.max_batch_size,
        "max_input_len": options.max_input_len,
        "max_seq_len": options.max_seq_len,
        "max_beam_width": options.max_beam_width,
        "max_num_tokens": 8192,
        "max_encoder_input_len": ENCODER_MAX_FRAMES,
        "kv_cache_type": "PAGED",
        "plugin_config": {
            "bert_attention_plugin": "float16",
            "gpt_attention_plugin": "float16",
            "remove_input_padding": True,
            "paged_kv_cache": True,
        },
    }


def _manifest(
    model: DoubleModel, trtllm_version: str, gpu_name: str, options: BuildOptions, key: str
) -> Manifest:
    return Manifest(
        key=key,
        model=model.name,
        precision="float16",
        dtype="float16",
        quant_algo=None,
        tensorrt_llm_version=trtllm_version,
        gpu_name=gpu_name,
        builder_version=BUILDER_VERSION,
        build_time=datetime.now(timezone.utc),
        build_seconds=0.0,
        dims=model.dims.as_dict(),
        tokenizer=model.tokenizer_file,
        inputs=[],
        options=options.as_dict(),
        trtllm_build={},
    )
