"""Fixtures: OpenAI-layout checkpoints, a local HTTP file server, a fake trtllm-build on PATH."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from builder_support import FakeTrtllmBuild, FileServer, install_fake_trtllm_build, serve_files
from openai_layout import TINY_DIMS, random_state

from engine_builder.catalog import WhisperModel


@pytest.fixture(scope="session")
def tiny_state() -> dict[str, torch.Tensor]:
    return random_state(TINY_DIMS)


@pytest.fixture(scope="session")
def tiny_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, tiny_state: dict[str, torch.Tensor]
) -> Path:
    path = tmp_path_factory.mktemp("openai") / "tiny.pt"
    torch.save({"dims": dict(TINY_DIMS), "model_state_dict": tiny_state}, path)
    return path


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    with serve_files() as server:
        yield server


@pytest.fixture
def tiny_source(file_server: FileServer, tiny_checkpoint: Path) -> WhisperModel:
    """The tiny model's catalog entry, pointing at the local server."""
    checkpoint = tiny_checkpoint.read_bytes()
    sha = hashlib.sha256(checkpoint).hexdigest()
    return WhisperModel(
        name="tiny",
        checkpoint=file_server.publish(f"/models/{sha}/tiny.pt", checkpoint),
        mel_filters=file_server.publish("/assets/mel_filters.npz", b"fake mel filters"),
        tokenizer=file_server.publish("/assets/multilingual.tiktoken", b"fake vocabulary"),
    )


@pytest.fixture
def fake_trtllm_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTrtllmBuild:
    return install_fake_trtllm_build(tmp_path, monkeypatch)


@pytest.fixture
def no_tensorrt_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make tensorrt_llm unimportable even if a test double is on sys.path elsewhere."""
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
