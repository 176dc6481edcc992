"""CTranslate2 adapter: the embedded CPU engine (CUDA when asked)."""

from __future__ import annotations

import json
import weakref
from collections.abc import Sequence
from pathlib import Path

import ctranslate2
import numpy as np
import numpy.typing as npt

from whisperwire.server.engine import (
    Alignment,
    EngineInfo,
    Features,
    Generation,
    GenerationParams,
)


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
            # CTranslate2 reads the alignment heads from the model's config.json (written by
            # its converter); without them it would average every cross-attention head.
            supports_word_timestamps=_has_alignment_heads(model_dir),
            device=f"{device}/{compute}",
        )
        # Language detection, the decode after it and fallback re-decodes all see the same
        # window: on CPU one encoder pass serves them all.
        self._cache = _EncoderCache() if device == "cpu" else None

    def generate(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        params: GenerationParams,
    ) -> list[Generation]:
        results = self._model.generate(
            self._encoded(features),
            [list(p) for p in prompts],
            beam_size=params.beam_size,
            max_length=_max_length(params.max_new_tokens, max(len(p) for p in prompts)),
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
            for ranked in self._model.detect_language(self._encoded(features))
        ]

    def align(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        text_tokens: Sequence[Sequence[int]],
        num_frames: Sequence[int],
    ) -> list[Alignment]:
        # One call per start sequence: CTranslate2 takes a single one for the whole batch.
        out: dict[int, Alignment] = {}
        for prompt, items in _group_by_prompt(prompts).items():
            results = self._model.align(
                self._encoded([features[i] for i in items]),
                list(prompt),
                [list(text_tokens[i]) for i in items],
                [num_frames[i] for i in items],
                median_filter_width=MEDIAN_FILTER_WIDTH,
            )
            for i, result in zip(items, results, strict=True):
                out[i] = Alignment(
                    text_indices=[int(t) for t, _ in result.alignments],
                    time_indices=[int(f) for _, f in result.alignments],
                    token_probs=[float(p) for p in result.text_token_probs],
                )
        return [out[i] for i in range(len(features))]

    def _encoded(self, features: Sequence[Features]) -> ctranslate2.StorageView:
        """Encoder output for the batch, reusing rows already computed for the same windows."""
        if self._cache is None:
            return _storage(features)
        rows = [self._cache.get(f) for f in features]
        missing = [i for i, row in enumerate(rows) if row is None]
        if missing:
            fresh = self._model.encode(_storage([features[i] for i in missing]), to_cpu=True)
            for i, row in zip(missing, np.array(fresh), strict=True):
                rows[i] = row
                self._cache.put(features[i], row)
        filled = [row for row in rows if row is not None]  # every row is set by now
        return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(filled)))


MEDIAN_FILTER_WIDTH = 7  # frames; smooths the attention before DTW, as Whisper does


def _has_alignment_heads(model_dir: Path) -> bool:
    config = model_dir / "config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("alignment_heads"))


def _group_by_prompt(prompts: Sequence[Sequence[int]]) -> dict[tuple[int, ...], list[int]]:
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(tuple(prompt), []).append(i)
    return groups


def _max_length(new_tokens: int, prompt_length: int) -> int:
    """CTranslate2 decodes min(max_length // 2, max_length - prompt + 1) steps (Whisper's
    n_text_ctx // 2 rule), so asking for N new tokens needs max_length of about 2 N."""
    return min(448, max(2 * new_tokens, new_tokens + prompt_length - 1))


class _EncoderCache:
    """Encoder outputs of the feature arrays still alive, by identity. An entry goes as soon
    as its window's features are freed (the pipeline drops them once the window is done),
    so the cache holds only windows in flight; `size` bounds it if callers keep many."""

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._rows: dict[int, tuple[weakref.ref[Features], npt.NDArray[np.float32]]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, features: Features) -> npt.NDArray[np.float32] | None:
        entry = self._rows.get(id(features))
        if entry is None or entry[0]() is not features:
            return None
        return entry[1]

    def put(self, features: Features, row: npt.NDArray[np.float32]) -> None:
        key = id(features)
        self._rows[key] = (weakref.ref(features, lambda ref: self._forget(key, ref)), row)
        while len(self._rows) > self._size:  # oldest first: dicts keep insertion order
            self._rows.pop(next(iter(self._rows)), None)

    def _forget(self, key: int, ref: weakref.ref[Features]) -> None:
        entry = self._rows.get(key)
        if entry is not None and entry[0] is ref:  # not a newer array that reuses the id
            self._rows.pop(key, None)


def _storage(features: Sequence[Features]) -> ctranslate2.StorageView:
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(features)))


def _generation(result: ctranslate2.models.WhisperGenerationResult) -> Generation:
    ids = list(result.sequences_ids[0])
    # CTranslate2 scores are cumulative log-probs divided by length**length_penalty (1.0).
    cum = float(result.scores[0]) * max(1, len(ids)) if result.scores else None
    return Generation(token_ids=ids, cum_logprob=cum, no_speech_prob=result.no_speech_prob)
