"""TensorRT-LLM adapter: ModelRunnerCpp (GPU) behind the engine seam.

Runtime facts cite /work/shared/reference/trtllm.md by section (§n). torch is imported only
when the engine runs; loading and checking engine directories lives in trtllm_loader.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from whisperwire.server.engine import EngineInfo, Features, Generation, GenerationParams
from whisperwire.server.errors import EngineError, ModelNotFoundError
from whisperwire.server.tokenizer import WhisperTokenizer

if TYPE_CHECKING:
    import torch

# §3: run.py's test for a multilingual vocabulary (English-only ones are one token shorter).
_MULTILINGUAL_MIN_VOCAB = 51865


class _Runner(Protocol):
    """The part of tensorrt_llm.runtime.ModelRunnerCpp this adapter uses (§2)."""

    def generate(self, batch_input_ids: list[torch.Tensor], **kwargs: Any) -> dict[str, Any]: ...


@dataclass(frozen=True)
class EngineConfig:
    """What the adapter needs from encoder/ and decoder/config.json (§5)."""

    n_mels: int
    num_languages: int
    vocab_size: int
    max_batch_size: int
    max_beam_width: int
    max_input_len: int
    max_seq_len: int

    @property
    def multilingual(self) -> bool:
        return self.vocab_size >= _MULTILINGUAL_MIN_VOCAB

    @classmethod
    def read(cls, engine_dir: Path) -> EngineConfig:
        encoder = _read_json(engine_dir / "encoder" / "config.json")
        decoder = _read_json(engine_dir / "decoder" / "config.json")
        try:
            build = decoder["build_config"]
            return cls(
                # §3: n_mels and num_languages come from the encoder config.
                n_mels=int(encoder["pretrained_config"]["n_mels"]),
                num_languages=int(encoder["pretrained_config"]["num_languages"]),
                vocab_size=int(decoder["pretrained_config"]["vocab_size"]),
                max_batch_size=int(build["max_batch_size"]),
                # §5: trtllm-build's default max_beam_width is 1.
                max_beam_width=int(build.get("max_beam_width", 1)),
                max_input_len=int(build["max_input_len"]),
                max_seq_len=int(build["max_seq_len"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ModelNotFoundError(
                f"unexpected engine config in {engine_dir}: {error}"
            ) from error


def _read_json(path: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelNotFoundError(f"cannot read engine config {path}: {error}") from error
    return config


class TrtLlmEngine:
    def __init__(
        self,
        runner: _Runner,
        config: EngineConfig,
        tokenizer: WhisperTokenizer,
        *,
        model_name: str,
        max_batch_size: int,
        feature_device: str = "cpu",
    ) -> None:
        self._runner = runner
        self._config = config
        self._tokenizer = tokenizer
        self._feature_device = feature_device
        self.info = EngineInfo(
            name="trtllm",
            model=model_name,
            n_mels=config.n_mels,
            multilingual=config.multilingual,
            num_languages=config.num_languages if config.multilingual else 0,
            max_batch_size=min(max_batch_size, config.max_batch_size),
            # §3: TensorRT-LLM has no Whisper timestamp rules, so no timestamps of any kind.
            supports_timestamps=False,
            supports_word_timestamps=False,
            device="cuda",
        )

    def generate(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        params: GenerationParams,
    ) -> list[Generation]:
        # Suppress tokens (and suppress_blank) are not applied: ModelRunnerCpp has no such
        # option, and no_speech_prob is not available from it either.
        fitted = [self._fit_prompt(prompt) for prompt in prompts]
        outputs = self._run(
            features,
            fitted,
            max_new_tokens=self._max_new_tokens(fitted, params.max_new_tokens),
            # §1: beams beyond the engine's max_beam_width are refused; use the widest allowed.
            num_beams=min(params.beam_size, self._config.max_beam_width),
            output_cum_log_probs=True,
            **_sampling(params.temperature),
        )
        return [self._generation(outputs, i, len(prompt)) for i, prompt in enumerate(fitted)]

    def detect_language(self, features: Sequence[Features]) -> list[list[tuple[str, float]]]:
        # One greedy step after <|startoftranscript|> is the language token (no helper in §3).
        outputs = self._run(
            features,
            [[self._tokenizer.sot]] * len(features),
            max_new_tokens=1,
            num_beams=1,
            output_log_probs=True,
            **_sampling(0.0),
        )
        return [[self._language(outputs, i)] for i in range(len(features))]

    # --- calling the runner -------------------------------------------------------------

    def _run(
        self, features: Sequence[Features], prompts: list[list[int]], **options: Any
    ) -> dict[str, Any]:
        import torch

        # §2: one float16 [frames, n_mels] tensor per request, frames // 2 encoder outputs.
        mels = [self._encoder_input(f) for f in features]
        outputs = self._runner.generate(
            [torch.tensor(prompt, dtype=torch.int32) for prompt in prompts],
            encoder_input_features=mels,
            encoder_output_lengths=[mel.shape[0] // 2 for mel in mels],
            # §2: end_id and pad_id are always passed; Whisper uses <|endoftext|> for both.
            end_id=self._tokenizer.eot,
            pad_id=self._tokenizer.eot,
            return_dict=True,
            output_sequence_lengths=True,
            **options,
        )
        # One device-to-host copy per output instead of one per element.
        return {k: v.tolist() if hasattr(v, "tolist") else v for k, v in outputs.items()}

    def _encoder_input(self, features: Features) -> torch.Tensor:
        import torch

        # Our [n_mels, 3000] windows are time-major for the engine (§2); 3000 frames is even
        # and the full window the OpenAI checkpoints need (§3 padding strategy "max").
        mel = torch.from_numpy(np.ascontiguousarray(features.T))
        return mel.to(device=self._feature_device, dtype=torch.float16)

    def _fit_prompt(self, prompt: Sequence[int]) -> list[int]:
        """The prompt, its previous-text context trimmed to the decoder's max_input_len (§5)."""
        limit = self._config.max_input_len
        if len(prompt) <= limit:
            return list(prompt)
        tokens = list(prompt)
        sot_sequence = tokens[tokens.index(self._tokenizer.sot) :]
        if len(sot_sequence) > limit:
            raise EngineError(f"prompt of {len(sot_sequence)} tokens exceeds the engine's {limit}")
        # Keep the most recent context, as OpenAI truncates it; <|startofprev|> takes one slot.
        room = limit - len(sot_sequence) - 1
        context = tokens[1 : len(tokens) - len(sot_sequence)]
        return [tokens[0], *context[-room:], *sot_sequence] if room > 0 else sot_sequence

    def _max_new_tokens(self, prompts: list[list[int]], requested: int) -> int:
        # §1, §5: the decoder engine's max_seq_len caps prompt + generated tokens.
        room = self._config.max_seq_len - max(len(prompt) for prompt in prompts)
        return max(1, min(requested, room))

    # --- reading the answer (§2 output layout) ------------------------------------------

    def _generation(self, outputs: dict[str, Any], index: int, prompt_length: int) -> Generation:
        # output_ids[i][beam] holds the prompt then the generated tokens, end_id-padded; beam 0
        # is the best. sequence_lengths counts prompt + generated.
        length = outputs["sequence_lengths"][index][0]
        ids: list[int] = outputs["output_ids"][index][0][prompt_length:length]
        if ids and ids[-1] == self._tokenizer.eot:
            ids = ids[:-1]
        cum_log_probs = outputs.get("cum_log_probs")
        cum = None if cum_log_probs is None else float(cum_log_probs[index][0])
        return Generation(token_ids=ids, cum_logprob=cum, no_speech_prob=None)

    def _language(self, outputs: dict[str, Any], index: int) -> tuple[str, float]:
        token = outputs["output_ids"][index][0][1]  # the one token after <|startoftranscript|>
        try:
            code = self._tokenizer.language_code(token)
        except ValueError:
            raise EngineError(f"language detection: the engine chose token {token}") from None
        log_probs = outputs.get("log_probs")
        probability = math.exp(log_probs[index][0][0]) if log_probs is not None else 1.0
        return code, probability


def _sampling(temperature: float) -> dict[str, Any]:
    if temperature == 0:
        return {"top_k": 1}  # greedy
    # Sample the whole distribution (inference: top_k 0 with top_p 0 would mean greedy).
    return {"top_k": 0, "top_p": 1.0, "temperature": temperature}
