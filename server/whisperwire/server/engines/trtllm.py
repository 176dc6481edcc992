"""TensorRT-LLM adapter: ModelRunnerCpp (GPU) behind the engine seam.

The runtime facts this relies on are in docs/trtllm.md, cited as `docs/trtllm.md#<anchor>`.
torch is imported only when the engine runs; loading and checking engine directories lives in
trtllm_loader.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from whisperwire.server.engine import EngineInfo, Features, Generation, GenerationParams
from whisperwire.server.errors import EngineError, EngineLostError, ModelNotFoundError
from whisperwire.server.tokenizer import WhisperTokenizer

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# docs/trtllm.md#engine-dir: run.py's test for a multilingual vocabulary.
_MULTILINGUAL_MIN_VOCAB = 51865
# docs/trtllm.md#precision: the feature dtypes an encoder engine may be built with.
_FEATURE_DTYPES = ("float16", "bfloat16", "float32")


class _Runner(Protocol):
    """The part of tensorrt_llm.runtime.ModelRunnerCpp this adapter uses (docs/trtllm.md)."""

    def generate(self, batch_input_ids: list[torch.Tensor], **kwargs: Any) -> dict[str, Any]: ...

    @property
    def session(self) -> Any:
        """The executor: `shutdown()` releases its GPU memory and threads."""
        ...


RunnerFactory = Callable[[], _Runner]


@dataclass(frozen=True)
class EngineConfig:
    """What the adapter needs from encoder/ and decoder/config.json (docs/trtllm.md#engine-dir)."""

    n_mels: int
    num_languages: int
    vocab_size: int
    dtype: str
    """The encoder's dtype, which its input features must have (docs/trtllm.md#precision)."""
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
            config = cls(
                n_mels=int(encoder["pretrained_config"]["n_mels"]),
                num_languages=int(encoder["pretrained_config"]["num_languages"]),
                vocab_size=int(decoder["pretrained_config"]["vocab_size"]),
                dtype=str(encoder["pretrained_config"]["dtype"]),
                max_batch_size=int(build["max_batch_size"]),
                max_beam_width=int(build.get("max_beam_width", 1)),  # trtllm-build's default
                max_input_len=int(build["max_input_len"]),
                max_seq_len=int(build["max_seq_len"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ModelNotFoundError(
                f"unexpected engine config in {engine_dir}: {error}"
            ) from error
        if config.dtype not in _FEATURE_DTYPES:
            raise ModelNotFoundError(
                f"the encoder engine in {engine_dir} has dtype {config.dtype!r}; "
                f"expected one of {', '.join(_FEATURE_DTYPES)}"
            )
        return config


def _read_json(path: Path) -> dict[str, Any]:
    try:
        config: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelNotFoundError(f"cannot read engine config {path}: {error}") from error
    return config


class TrtLlmEngine:
    """Whisper on ModelRunnerCpp. `make_runner` builds a runner; it is called again whenever
    a call fails, because a failed call leaves the runner wedged (docs/trtllm.md#errors)."""

    def __init__(
        self,
        make_runner: RunnerFactory,
        config: EngineConfig,
        tokenizer: WhisperTokenizer,
        *,
        model_name: str,
        max_batch_size: int,
        max_beam_width: int = 1,
        feature_device: str = "cpu",
    ) -> None:
        self._make_runner = make_runner
        self._runner: _Runner | None = make_runner()
        self._config = config
        self._tokenizer = tokenizer
        self._feature_device = feature_device
        # The runner's KV cache is sized for this many beams; wider asks are narrowed to it.
        self._max_beam_width = max(1, min(max_beam_width, config.max_beam_width))
        self.info = EngineInfo(
            name="trtllm",
            model=model_name,
            n_mels=config.n_mels,
            multilingual=config.multilingual,
            num_languages=config.num_languages if config.multilingual else 0,
            max_batch_size=min(max_batch_size, config.max_batch_size),
            # docs/trtllm.md#generate: no timestamp rules in TensorRT-LLM, so no timestamps.
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
        fitted = [self._fit_prompt(prompt) for prompt in prompts]
        no_speech: list[float | None] = [None] * len(fitted)
        if params.return_no_speech_prob:
            up_to_sot = [_through_sot(prompt, self._tokenizer.sot) for prompt in fitted]
            no_speech = [p for p, _ in self._probe(features, up_to_sot)]
        outputs = self._run(
            features,
            fitted,
            max_new_tokens=self._max_new_tokens(fitted, params.max_new_tokens),
            num_beams=min(params.beam_size, self._max_beam_width),
            output_cum_log_probs=True,
            **self._suppression(params, len(fitted)),
            **_sampling(params.temperature),
        )
        return [
            self._generation(outputs, i, len(prompt), no_speech[i])
            for i, prompt in enumerate(fitted)
        ]

    def detect_language(self, features: Sequence[Features]) -> list[list[tuple[str, float]]]:
        probes = self._probe(features, [[self._tokenizer.sot]] * len(features))
        return [ranked for _, ranked in probes]

    # --- the step after <|startoftranscript|> (docs/trtllm.md#probe) ---------------------

    def _probe(
        self, features: Sequence[Features], prompts: list[list[int]]
    ) -> list[tuple[float, list[tuple[str, float]]]]:
        """Per item: no_speech_prob and the language ranking, from one step's logits."""
        import torch

        outputs = self._run(
            features,
            prompts,
            max_new_tokens=1,
            num_beams=1,
            output_generation_logits=True,
            **_sampling(0.0),
        )
        # [batch, beams, steps, vocab]: beam 0, the one step; softmax on the device.
        logits = outputs["generation_logits"][:, 0, 0, :].float()
        probabilities = torch.softmax(logits, dim=-1)[:, self._tokenizer.no_speech]
        languages = torch.tensor(self._tokenizer.language_token_ids, device=logits.device)
        language_probabilities = torch.softmax(logits[:, languages], dim=-1)
        return [
            (float(p), self._ranked_languages(row))
            for p, row in zip(probabilities.tolist(), language_probabilities.tolist(), strict=True)
        ]

    def _ranked_languages(self, probabilities: list[float]) -> list[tuple[str, float]]:
        pairs = zip(self._tokenizer.languages, probabilities, strict=True)
        return sorted(pairs, key=lambda pair: pair[1], reverse=True)

    # --- calling the runner -------------------------------------------------------------

    def _run(
        self, features: Sequence[Features], prompts: list[list[int]], **options: Any
    ) -> dict[str, Any]:
        import torch

        runner = self._live_runner()
        # docs/trtllm.md#generate: one [frames, n_mels] tensor per request, frames // 2 outputs.
        mels = [self._encoder_input(f) for f in features]
        try:
            outputs = runner.generate(
                [torch.tensor(prompt, dtype=torch.int32) for prompt in prompts],
                encoder_input_features=mels,
                encoder_output_lengths=[mel.shape[0] // 2 for mel in mels],
                # Whisper uses <|endoftext|> as both end and padding.
                end_id=self._tokenizer.eot,
                pad_id=self._tokenizer.eot,
                return_dict=True,
                output_sequence_lengths=True,
                **options,
            )
        except Exception as error:
            self._replace_runner(runner)
            raise EngineError(
                f"TensorRT-LLM failed on a batch of {len(prompts)}: {error}"
            ) from error
        # One device-to-host copy per output instead of one per element; logits stay on the GPU.
        return {
            k: v if k == "generation_logits" or not hasattr(v, "tolist") else v.tolist()
            for k, v in outputs.items()
        }

    def _live_runner(self) -> _Runner:
        if self._runner is None:
            raise EngineLostError("the TensorRT-LLM runner could not be rebuilt after a failure")
        return self._runner

    def _replace_runner(self, wedged: _Runner) -> None:
        """A failed call leaves stale responses in the executor (docs/trtllm.md#errors): shut it
        down and build a fresh runner. If that fails the engine is lost for good."""
        self._runner = None
        try:
            wedged.session.shutdown()
        except Exception:
            log.warning("shutting down the failed TensorRT-LLM executor failed", exc_info=True)
        try:
            self._runner = self._make_runner()
        except Exception:
            log.critical("cannot rebuild the TensorRT-LLM runner", exc_info=True)
            return
        log.warning("rebuilt the TensorRT-LLM runner after a failed call")

    def _encoder_input(self, features: Features) -> torch.Tensor:
        import torch

        # Our [n_mels, 3000] windows are time-major for the engine; 3000 frames is even and the
        # full window OpenAI's checkpoints need. The dtype is the engine's (#precision).
        mel = torch.from_numpy(np.ascontiguousarray(features.T))
        return mel.to(device=self._feature_device, dtype=getattr(torch, self._config.dtype))

    def _suppression(self, params: GenerationParams, batch: int) -> dict[str, Any]:
        """Whisper's suppress_tokens as banned words; suppress_blank's end-of-text half as
        `min_tokens=1` (docs/trtllm.md#generate)."""
        options: dict[str, Any] = {}
        if params.suppress_tokens:
            banned = [[token] for token in sorted(set(params.suppress_tokens))]
            options["bad_words_list"] = [banned] * batch
        if params.suppress_blank:
            options["min_tokens"] = 1
        return options

    def _fit_prompt(self, prompt: Sequence[int]) -> list[int]:
        """The prompt, its previous-text context trimmed to the decoder's max_input_len."""
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
        # docs/trtllm.md#engine-dir: the decoder's max_seq_len caps prompt + generated tokens.
        room = self._config.max_seq_len - max(len(prompt) for prompt in prompts)
        return max(1, min(requested, room))

    # --- reading the answer (docs/trtllm.md#outputs) ------------------------------------

    def _generation(
        self, outputs: dict[str, Any], index: int, prompt_length: int, no_speech: float | None
    ) -> Generation:
        # Beam 0 is the best; sequence_lengths counts prompt + generated, end-of-text excluded.
        length = outputs["sequence_lengths"][index][0]
        ids: list[int] = outputs["output_ids"][index][0][prompt_length:length]
        cum = float(outputs["cum_log_probs"][index][0])
        return Generation(token_ids=ids, cum_logprob=cum, no_speech_prob=no_speech)


def _through_sot(prompt: list[int], sot: int) -> list[int]:
    """The prompt up to <|startoftranscript|>: its last logits are Whisper's no-speech step."""
    return prompt[: prompt.index(sot) + 1]


def _sampling(temperature: float) -> dict[str, Any]:
    if temperature == 0:
        return {"top_k": 1}  # greedy
    # Sample the whole distribution (top_k 0 with top_p 0 would mean greedy).
    return {"top_k": 0, "top_p": 1.0, "temperature": temperature}
