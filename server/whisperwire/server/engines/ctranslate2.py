"""CTranslate2 adapter: the embedded CPU engine (CUDA when asked)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import ctranslate2
import numpy as np

from whisperwire.server.engine import EngineInfo, Features, Generation, GenerationParams


def default_compute_type(model_name: str, device: str) -> str:
    """int8 where it measures faster on CPU (base and larger); tiny gains nothing from it."""
    if device == "cuda":
        return "float16"
    return "float32" if "tiny" in model_name else "int8"


class CTranslate2Engine:
    def __init__(
        self,
        model_dir: Path,
        *,
        model_name: str,
        device: str = "cpu",
        compute_type: str | None = None,
        threads: int = 0,
        max_batch_size: int = 8,
    ) -> None:
        compute = compute_type or default_compute_type(model_name, device)
        self._model = ctranslate2.models.Whisper(
            str(model_dir), device=device, compute_type=compute, intra_threads=threads
        )
        self.info = EngineInfo(
            name="ctranslate2",
            model=model_name,
            n_mels=self._model.n_mels,
            multilingual=self._model.is_multilingual,
            num_languages=self._model.num_languages if self._model.is_multilingual else 0,
            max_batch_size=max_batch_size,
            supports_timestamps=True,
            supports_word_timestamps=False,
            device=f"{device}/{compute}",
        )

    def generate(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        params: GenerationParams,
    ) -> list[Generation]:
        results = self._model.generate(
            _storage(features),
            [list(p) for p in prompts],
            beam_size=params.beam_size,
            max_length=min(448, max(len(p) for p in prompts) + params.max_new_tokens),
            return_scores=True,
            return_no_speech_prob=params.return_no_speech_prob,
            suppress_blank=params.suppress_blank,
            suppress_tokens=list(params.suppress_tokens),
            sampling_topk=1 if params.temperature == 0 else 0,
            sampling_temperature=params.temperature or 1.0,
        )
        return [_generation(r) for r in results]

    def detect_language(self, features: Sequence[Features]) -> list[list[tuple[str, float]]]:
        return [
            [(token.strip("<|>"), prob) for token, prob in ranked]
            for ranked in self._model.detect_language(_storage(features))
        ]


def _storage(features: Sequence[Features]) -> ctranslate2.StorageView:
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(features)))


def _generation(result: ctranslate2.models.WhisperGenerationResult) -> Generation:
    ids = list(result.sequences_ids[0])
    # CTranslate2 scores are cumulative log-probs divided by length**length_penalty (1.0).
    cum = float(result.scores[0]) * max(1, len(ids)) if result.scores else None
    return Generation(token_ids=ids, cum_logprob=cum, no_speech_prob=result.no_speech_prob)
