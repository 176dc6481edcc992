"""The CTranslate2 adapter's encoder reuse: one encoder pass per window while the window is
alive (language detection, decode and fallback re-decodes), nothing kept once it is freed."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from tests.speech import JFK, load_pcm16k, wer
from whisperwire.server.domain import Task
from whisperwire.server.engine import GenerationParams
from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
from whisperwire.server.features import window_features
from whisperwire.server.tokenizer import WhisperTokenizer


class CountingModel:
    """The real CTranslate2 model, counting encoder passes."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.encodes = inner, 0

    def encode(self, *args: Any, **kwargs: Any) -> Any:
        self.encodes += 1
        return self.inner.encode(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_one_encoder_pass_per_live_window_and_none_kept_after(
    base_engine: tuple[CTranslate2Engine, WhisperTokenizer], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, tokenizer = base_engine
    model = CountingModel(engine._model)
    monkeypatch.setattr(engine, "_model", model)
    features = window_features(load_pcm16k(JFK), engine.info.n_mels)
    prompt = tokenizer.prompt(language="en", task=Task.TRANSCRIBE, timestamps=False)

    [ranked] = engine.detect_language([features])
    greedy, sampled = (
        engine.generate([features], [prompt], GenerationParams(max_new_tokens=96, temperature=t))
        for t in (0.0, 0.4)  # a fallback re-decode of the same window
    )
    assert ranked[0][0] == "en"
    assert wer(JFK.reference, tokenizer.decode(greedy[0].token_ids)) <= 0.1
    assert sampled[0].token_ids
    assert model.encodes == 1

    del features
    gc.collect()
    assert len(engine._cache or ()) == 0
