"""WHISPERWIRE_ENGINE=torch on Modal: the container serves the OpenAI checkpoint straight from
the Volume (downloaded and verified once, as engine_builder downloads it), with no engine build."""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

import pytest
import torch

import whisperwire_modal as app
from engine_builder import volume as engine_volume
from engine_builder.catalog import WhisperModel
from tests.engine_builder.builder_support import serve_files
from tests.engine_builder.openai_layout import TINY_DIMS, random_state
from whisperwire.server.engines.torch import load_torch_engine


class VolumeStandIn:
    commits = 0

    def commit(self) -> None:
        self.commits += 1


def test_torch_engine_serves_the_checkpoint_from_the_volume_without_a_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whisper_assets_dir: Path
) -> None:
    saved = tmp_path / "tiny.pt"
    torch.save({"dims": dict(TINY_DIMS), "model_state_dict": random_state(TINY_DIMS)}, saved)
    checkpoint = saved.read_bytes()
    volume_root, volume = tmp_path / "volume", VolumeStandIn()
    with serve_files() as server:
        tiny = WhisperModel(
            name="tiny",
            checkpoint=server.publish(
                f"/models/{hashlib.sha256(checkpoint).hexdigest()}/tiny.pt", checkpoint
            ),
            mel_filters=server.publish(
                "/assets/mel_filters.npz", (whisper_assets_dir / "mel_filters.npz").read_bytes()
            ),
            tokenizer=server.publish(
                "/assets/multilingual.tiktoken",
                (whisper_assets_dir / "multilingual.tiktoken").read_bytes(),
            ),
        )
        monkeypatch.setattr(engine_volume, "resolve_model", lambda name: tiny)
        monkeypatch.setattr(app, "VOLUME_PATH", PurePosixPath(volume_root))
        monkeypatch.setattr(app, "volume", volume)
        monkeypatch.setattr(app, "ENGINE", "torch")
        monkeypatch.setattr(app, "MODEL", "tiny")

        settings = app.serving_settings()
        again = app.serving_settings()

    assert volume.commits == 1  # downloaded and committed once, reused after
    assert again == settings
    assert (settings.engine.name, settings.engine.device) == ("torch", "cuda")
    assert settings.engine.engine_dir is None
    served = Path(settings.engine.model)
    assert served == volume_root / "checkpoints" / "tiny.pt"
    # What the container then loads (here on the CPU): the checkpoint with its tokenizer beside it.
    engine, tokenizer = load_torch_engine(str(served), device="cpu", dtype=None, max_batch_size=1)
    assert (engine.info.name, engine.info.model, engine.info.n_mels) == ("torch", "tiny", 80)
    assert tokenizer.multilingual and tokenizer.num_languages == 99
