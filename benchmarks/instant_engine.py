"""An engine that answers at once, to measure everything around the engine.

It implements the engine seam (whisperwire.server.engine.Engine) with an empty Generation per
window and English for language detection, so the pipeline does all its own work (VAD, log-mel,
prompts, segmentation) and the scheduler, session and gRPC layers run as in production.
"""

from __future__ import annotations

from collections.abc import Sequence

from whisperwire.server.engine import EngineInfo, Features, Generation, GenerationParams
from whisperwire.server.tokenizer import WhisperTokenizer

MODEL = "tiny.en"  # whose tokenizer (and mel count) the instant engine borrows


class InstantEngine:
    def __init__(self, model: str = MODEL, max_batch_size: int = 8) -> None:
        self.info = EngineInfo(
            name="instant",
            model=model,
            n_mels=80,
            multilingual=not model.endswith(".en"),
            num_languages=0 if model.endswith(".en") else 99,
            max_batch_size=max_batch_size,
            supports_timestamps=True,
            supports_word_timestamps=False,
            device="none",
        )

    def generate(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        params: GenerationParams,
    ) -> list[Generation]:
        return [Generation(token_ids=[], cum_logprob=0.0, no_speech_prob=0.0) for _ in features]

    def detect_language(self, features: Sequence[Features]) -> list[list[tuple[str, float]]]:
        return [[("en", 1.0)] for _ in features]


def instant_engine_and_tokenizer() -> tuple[InstantEngine, WhisperTokenizer]:
    from whisperwire.server.models import resolve_model

    return InstantEngine(), WhisperTokenizer.from_dir(resolve_model(MODEL))
