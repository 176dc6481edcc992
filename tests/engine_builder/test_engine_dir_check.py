"""check_engine_dir / load_manifest: what the server runs at startup."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from engine_builder.errors import EngineDirError
from engine_builder.manifest import InputFile, Manifest, check_engine_dir, load_manifest

MANIFEST = Manifest(
    key="base.en-float16-trtllm1.2.1-l4-0123abcd",
    model="base.en",
    precision="float16",
    dtype="float16",
    quant_algo=None,
    tensorrt_llm_version="1.2.1",
    gpu_name="NVIDIA L4",
    builder_version="0.1.0",
    build_time=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
    build_seconds=12.5,
    dims={"n_mels": 80, "n_vocab": 51864},
    tokenizer="gpt2.tiktoken",
    inputs=[
        InputFile(name="base.en.pt", url="https://example.invalid/base.en.pt", sha256="ab" * 32)
    ],
    options={"max_batch_size": 8, "max_beam_width": 4, "max_seq_len": 448, "max_input_len": 228},
    trtllm_build={"encoder": ["trtllm-build", "--checkpoint_dir", "checkpoint/encoder"]},
)
FILES = [
    "encoder/config.json",
    "encoder/rank0.engine",
    "decoder/config.json",
    "decoder/rank0.engine",
    "assets/mel_filters.npz",
    "assets/gpt2.tiktoken",
]


@pytest.fixture
def engine_dir(tmp_path: Path) -> Path:
    directory = tmp_path / MANIFEST.key
    for name in FILES:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(b"x")
    (directory / "manifest.json").write_text(MANIFEST.to_json())
    return directory


def test_complete_matching_directory_passes(engine_dir: Path) -> None:
    assert check_engine_dir(engine_dir, trtllm_version="1.2.1", gpu="NVIDIA L4") == MANIFEST


def test_gpu_names_compare_without_vendor_prefix_or_case(engine_dir: Path) -> None:
    assert check_engine_dir(engine_dir, trtllm_version="1.2.1", gpu="l4").model == "base.en"


def test_load_manifest_accepts_the_directory_or_the_file(engine_dir: Path) -> None:
    assert load_manifest(engine_dir) == load_manifest(engine_dir / "manifest.json") == MANIFEST


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(EngineDirError, match="does not exist"):
        check_engine_dir(tmp_path / "nope", trtllm_version="1.2.1", gpu="L4")


@pytest.mark.parametrize("missing", ["decoder/rank0.engine", "assets/gpt2.tiktoken"])
def test_missing_file_is_named(engine_dir: Path, missing: str) -> None:
    (engine_dir / missing).unlink()
    with pytest.raises(EngineDirError, match=f"incomplete: missing \\['{missing}'\\]"):
        check_engine_dir(engine_dir, trtllm_version="1.2.1", gpu="L4")


def test_missing_manifest(engine_dir: Path) -> None:
    (engine_dir / "manifest.json").unlink()
    with pytest.raises(EngineDirError, match="cannot read"):
        check_engine_dir(engine_dir, trtllm_version="1.2.1", gpu="L4")


def test_invalid_manifest(engine_dir: Path) -> None:
    (engine_dir / "manifest.json").write_text('{"model": "tiny"}')
    with pytest.raises(EngineDirError, match="not a valid engine manifest"):
        check_engine_dir(engine_dir, trtllm_version="1.2.1", gpu="L4")


def test_other_tensorrt_llm_version(engine_dir: Path) -> None:
    with pytest.raises(EngineDirError, match=r"built with TensorRT-LLM 1\.2\.1 but 1\.3\.0"):
        check_engine_dir(engine_dir, trtllm_version="1.3.0", gpu="L4")


def test_other_gpu(engine_dir: Path) -> None:
    with pytest.raises(EngineDirError, match="built on 'NVIDIA L4' but this is 'NVIDIA A10G'"):
        check_engine_dir(engine_dir, trtllm_version="1.2.1", gpu="NVIDIA A10G")
