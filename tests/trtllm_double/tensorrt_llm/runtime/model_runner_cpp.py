"""A strict contract double of TensorRT-LLM 1.2.1's `ModelRunnerCpp`, for Whisper engines.

Every call is checked against the runtime contract written down in docs/trtllm.md (cited as
`docs/trtllm.md#<anchor>`); a violation raises `ContractViolation` (or TypeError for a wrong
signature, as Python does for the real one). Answers come in TensorRT-LLM's output layout, with
tokens computed by the real CTranslate2 model that the engine directory's `double.json` names.

As strict as the real runtime where it matters to the adapter:
- features must have the encoder engine's dtype (the executor's copy refuses others);
- `cum_log_probs` are zeros unless `output_log_probs=True` (the executor returns them only
  with log_probs);
- `sequence_lengths` exclude the end-of-text token; per-token `log_probs` are normalised over
  the sampled top-k, hence 0 under greedy decoding; `cum_log_probs` include the EOS step;
- `generation_logits` come back only when `from_dir(gather_generation_logits=True)` and
  `generate(output_generation_logits=True)` are both given;
- an error response (`fail_next_call`, the double's fault injection) leaves the batch's other
  responses queued in `session`, and the next `generate` on that runner fails instead of
  hanging as the real one would; `session.await_responses(timeout=...)` drains them, and
  `session.shutdown()` retires the runner; `generate` also refuses to run while requests
  enqueued on `session` directly are in flight (it would read their responses as its own);
- `session` is the double's Executor (`tensorrt_llm.bindings.executor`, documented there),
  answering requests with the same CTranslate2 model and checks as `generate`;
- options the adapter relies on (`bad_words_list`, `min_tokens`, sampling) are honoured; any
  option the double cannot emulate raises NotImplementedError rather than being ignored.

Where the double knowingly differs from the real runtime:
- it is stricter: `generate` rejects keyword arguments outside the sampling list (the real one
  silently ignores them, so a typo would go unnoticed);
- tensors come back on the CPU (the real runtime returns CUDA tensors);
- the per-token log-probabilities of a sampled sequence are its mean (CTranslate2 reports only
  the total);
- `min_tokens=1` is emulated with CTranslate2's `suppress_blank`, which also bans a leading
  space at the first step;
- `generation_logits` exist only for the one-step probe after `<|startoftranscript|>`, and
  represent only what Whisper reads from that step: the language tokens and `<|nospeech|>`
  carry their probabilities, every other token -inf;
- CTranslate2 applies Whisper's timestamp rules to prompts that do not end in
  <|notimestamps|>, and TensorRT-LLM has none, so only such prompts and probes (prompts ending
  at <|startoftranscript|>) can be emulated; other prompts raise NotImplementedError;
- CTranslate2 generates at most half the 448-token context, so at most 224 new tokens.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ctranslate2
import numpy as np
import numpy.typing as npt
import tokenizers
import torch
from tensorrt_llm.bindings.executor import (
    Answer,
    ContractViolation,
    Executor,
    FinishReason,
    Request,
    Response,
    Result,
    _require,
)

# Side file in the engine dir: {"ct2_model_dir": ..., "compute_type": ..., "threads": ...}.
DOUBLE_CONFIG = "double.json"

# docs/trtllm.md#engine-dir: the encoder profile accepts 10..3000 frames, an even count.
MIN_FRAMES, MAX_FRAMES = 10, 3000
# docs/trtllm.md#generate: the sampling keyword arguments `generate` takes.
SAMPLING_KWARGS = frozenset(
    {
        "num_beams", "top_k", "top_p", "top_p_min", "top_p_reset_ids", "top_p_decay",
        "temperature", "min_tokens", "beam_search_diversity_rate", "repetition_penalty",
        "presence_penalty", "frequency_penalty", "length_penalty", "early_stopping",
        "no_repeat_ngram_size", "random_seed", "num_return_sequences", "min_p",
        "beam_width_array",
    }
)  # fmt: skip
# The ones the double emulates; the rest raise NotImplementedError instead of being ignored.
EMULATED_SAMPLING = frozenset({"num_beams", "top_k", "top_p", "temperature", "min_tokens"})
TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# CTranslate2 decodes at most half its text context (Whisper's sample_len).
_CT2_TEXT_CTX = 448

Mel = npt.NDArray[np.float32]


class _DefaultOne:
    """`max_new_tokens`'s default: 1, and a trap for Whisper, so omitting it fails."""

    def __repr__(self) -> str:
        return "1"


_DEFAULT_MAX_NEW_TOKENS: Any = _DefaultOne()


@dataclass(frozen=True)
class _EngineLimits:
    """What `from_dir` reads from encoder/ and decoder/config.json (docs/trtllm.md#engine-dir)."""

    n_mels: int
    dtype: str
    vocab_size: int
    encoder_max_batch_size: int
    max_batch_size: int
    max_beam_width: int
    max_input_len: int
    max_seq_len: int

    @classmethod
    def read(cls, engine_dir: Path) -> _EngineLimits:
        encoder, decoder = (_engine_config(engine_dir, part) for part in ("encoder", "decoder"))
        return cls(
            n_mels=int(encoder["pretrained_config"]["n_mels"]),
            dtype=str(encoder["pretrained_config"]["dtype"]),
            vocab_size=int(decoder["pretrained_config"]["vocab_size"]),
            encoder_max_batch_size=int(encoder["build_config"]["max_batch_size"]),
            max_batch_size=int(decoder["build_config"]["max_batch_size"]),
            max_beam_width=int(decoder["build_config"].get("max_beam_width", 1)),
            max_input_len=int(decoder["build_config"]["max_input_len"]),
            max_seq_len=int(decoder["build_config"]["max_seq_len"]),
        )


def _engine_config(engine_dir: Path, part: str) -> dict[str, Any]:
    # docs/trtllm.md#from-dir: is_enc_dec reads encoder/ and decoder/config.json, each beside
    # its rank0.engine.
    folder = engine_dir / part
    for name in ("config.json", "rank0.engine"):
        _require((folder / name).is_file(), f"{folder / name} is missing (engine layout)")
    config: dict[str, Any] = json.loads((folder / "config.json").read_text())
    for section in ("pretrained_config", "build_config"):
        _require(section in config, f"{folder}/config.json lacks {section}")
    return config


@dataclass(frozen=True)
class _Hypothesis:
    generated: list[int]  # new tokens, end-of-text excluded
    ended: bool  # the model emitted end-of-text after them
    mean_log_prob: float


@dataclass(frozen=True)
class _Probe:
    token: int
    logits: torch.Tensor  # [vocab]


class ModelRunnerCpp:
    """Create with `from_dir`; `generate` decodes one batch at a time (docs/trtllm.md#serial)."""

    def __init__(
        self,
        limits: _EngineLimits,
        model_dir: Path,
        compute_type: str,
        threads: int,
        *,
        gather_generation_logits: bool,
    ) -> None:
        self.limits = limits
        self.gather_generation_logits = gather_generation_logits
        self.session = Executor(
            self, max_batch_size=limits.max_batch_size, max_beam_width=limits.max_beam_width
        )
        self._model = ctranslate2.models.Whisper(
            str(model_dir), device="cpu", compute_type=compute_type, intra_threads=threads
        )
        self._vocabulary = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._sot = self._token_id("<|startoftranscript|>")
        self._no_timestamps = self._token_id("<|notimestamps|>")
        self._no_speech = self._token_id("<|nospeech|>", "<|nocaptions|>")
        self._busy = threading.Lock()
        self._failure: str | None = None
        self.max_batch_size = limits.max_batch_size
        self.max_beam_width = limits.max_beam_width

    def _token_id(self, *names: str) -> int:
        for name in names:
            found = self._vocabulary.token_to_id(name)
            if found is not None:
                return int(found)
        raise ValueError(f"{names[0]} is not in the CTranslate2 model's vocabulary")

    def fail_next_call(self, message: str) -> None:
        """Fault injection (the double's own): the next call's first response is an error."""
        self._failure = message

    # --- construction (docs/trtllm.md#from-dir) -----------------------------------------

    @classmethod
    def from_dir(
        cls,
        engine_dir: str,
        *,
        lora_dir: str | None = None,
        rank: int = 0,
        max_batch_size: int | None = None,
        max_input_len: int | None = None,
        max_output_len: int | None = None,
        max_beam_width: int | None = None,
        max_attention_window_size: object = None,
        sink_token_length: int | None = None,
        kv_cache_free_gpu_memory_fraction: float | None = None,
        cross_kv_cache_fraction: float | None = None,
        medusa_choices: object = None,
        eagle_choices: object = None,
        eagle_posterior_threshold: float | None = None,
        eagle_use_dynamic_tree: bool = False,
        eagle_dynamic_tree_max_top_k: int | None = None,
        lookahead_config: object = None,
        debug_mode: bool = False,
        lora_ckpt_source: str = "hf",
        use_gpu_direct_storage: bool = False,
        gpu_weights_percent: float = 1,
        max_tokens_in_paged_kv_cache: int | None = None,
        kv_cache_enable_block_reuse: bool = False,
        enable_chunked_context: bool = False,
        is_enc_dec: bool = False,
        multi_block_mode: bool = True,
        enable_context_fmha_fp32_acc: bool | None = None,
        cuda_graph_mode: bool | None = None,
        logits_processor_map: object = None,
        device_ids: object = None,
        is_orchestrator_mode: bool = False,
        use_runtime_defaults: bool = True,
        gather_generation_logits: bool = False,
        use_variable_beam_width_search: bool = False,
        mm_embedding_offloading: bool = False,
        fail_fast_on_attention_window_too_large: bool = False,
    ) -> ModelRunnerCpp:
        # Without is_enc_dec the directory is read as a decoder-only engine.
        _require(is_enc_dec is True, "Whisper engines need is_enc_dec=True")
        # TensorRT-LLM#2419: "Must set crossKvCacheFraction for encoder-decoder model".
        _require(
            cross_kv_cache_fraction is not None and 0 < cross_kv_cache_fraction < 1,
            f"cross_kv_cache_fraction must be set within (0, 1), got {cross_kv_cache_fraction} "
            "(TensorRT-LLM#2419)",
        )
        _require(
            kv_cache_free_gpu_memory_fraction is None or 0 < kv_cache_free_gpu_memory_fraction <= 1,
            "kv_cache_free_gpu_memory_fraction is a fraction of free GPU memory",
        )
        # The world config comes from MPI; rank must equal the MPI rank, 0.
        _require(rank == 0, f"rank must be 0 (the MPI rank), got {rank}")
        limits = _EngineLimits.read(Path(engine_dir))
        engine_batch = min(limits.max_batch_size, limits.encoder_max_batch_size)
        # max_batch_size and max_beam_width are asserted <= the engine's; None -> engine's.
        _require(
            max_batch_size is None or 1 <= max_batch_size <= engine_batch,
            f"max_batch_size {max_batch_size} exceeds the engine's {engine_batch}",
        )
        _require(
            max_beam_width is None or 1 <= max_beam_width <= limits.max_beam_width,
            f"max_beam_width {max_beam_width} exceeds the engine's {limits.max_beam_width}",
        )
        _require(debug_mode is False, "debug_mode dumps every tensor: keep it off")
        runtime_limits = dataclasses.replace(
            limits,
            max_batch_size=max_batch_size or engine_batch,
            max_beam_width=max_beam_width or limits.max_beam_width,
        )
        side = json.loads((Path(engine_dir) / DOUBLE_CONFIG).read_text())
        return cls(
            runtime_limits,
            Path(side["ct2_model_dir"]),
            side.get("compute_type", "default"),
            int(side.get("threads", 0)),
            gather_generation_logits=gather_generation_logits,
        )

    # --- decoding (docs/trtllm.md#generate) ---------------------------------------------

    def generate(
        self,
        batch_input_ids: list[torch.Tensor] | torch.Tensor,
        *,
        position_ids: object = None,
        encoder_input_ids: object = None,
        encoder_input_features: list[torch.Tensor] | None = None,
        encoder_output_lengths: list[int] | torch.Tensor | None = None,
        cross_attention_masks: object = None,
        mrope_params: object = None,
        sampling_config: object = None,
        lora_uids: object = None,
        lookahead_config: object = None,
        streaming: bool = False,
        stopping_criteria: object = None,
        logits_processor_names: object = None,
        max_new_tokens: int = _DEFAULT_MAX_NEW_TOKENS,
        end_id: int | None = None,
        pad_id: int | None = None,
        bad_words_list: object = None,
        stop_words_list: object = None,
        return_dict: bool = False,
        output_sequence_lengths: bool = False,
        output_generation_logits: bool = False,
        output_log_probs: bool = False,
        output_cum_log_probs: bool = False,
        prompt_table: object = None,
        prompt_tasks: object = None,
        input_token_extra_ids: object = None,
        return_all_generated_tokens: bool = False,
        language_adapter_uids: object = None,
        mm_embedding_offloading: bool = False,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor] | torch.Tensor:
        unknown = sorted(set(kwargs) - SAMPLING_KWARGS)
        if unknown:
            raise TypeError(f"generate() got unexpected keyword arguments {unknown}")
        not_emulated = sorted(set(kwargs) - EMULATED_SAMPLING)
        if not_emulated:
            raise NotImplementedError(f"the double does not emulate {not_emulated}")
        # docs/trtllm.md#serial: two threads on one runner consume each other's responses.
        if not self._busy.acquire(blocking=False):
            raise ContractViolation("generate re-entered while another call runs")
        try:
            self._check_usable()
            prompts = self._check_prompts(batch_input_ids)
            mels = self._check_features(encoder_input_features, encoder_output_lengths, prompts)
            self._check_call(
                prompts, max_new_tokens, end_id, pad_id, stopping_criteria, encoder_input_ids
            )
            _require(not streaming, "the double does not stream")
            _require(
                not output_generation_logits or self.gather_generation_logits,
                "output_generation_logits needs from_dir(gather_generation_logits=True)",
            )
            num_beams = int(kwargs.get("num_beams", 1))
            # The beam width is bounded by the runner's (hence the engine's) max_beam_width.
            _require(
                1 <= num_beams <= self.limits.max_beam_width,
                f"num_beams {num_beams} exceeds max_beam_width {self.limits.max_beam_width}",
            )
            suppress = self._check_bad_words(bad_words_list, len(prompts))
            self._enqueue(len(prompts))
            decoded = self._decode(
                mels, prompts, max_new_tokens, num_beams, kwargs, suppress, end_id
            )
        finally:
            self._busy.release()
        outputs = self._outputs(prompts, decoded, num_beams, end_id, kwargs)
        if not output_log_probs:
            # docs/trtllm.md#outputs: the executor returns cum_log_probs only with log_probs.
            outputs["cum_log_probs"] = torch.zeros_like(outputs["cum_log_probs"])
        if not return_dict:
            return outputs["output_ids"]
        wanted = {
            "sequence_lengths": output_sequence_lengths,
            "log_probs": output_log_probs,
            "cum_log_probs": output_cum_log_probs,
            "generation_logits": output_generation_logits,
        }
        return {k: v for k, v in outputs.items() if wanted.get(k, True)}

    def _check_usable(self) -> None:
        _require(self.session.can_enqueue_requests(), "Session cannot enqueue new requests")
        # docs/trtllm.md#errors: the real generate would count the stale responses and hang.
        stale = self.session.get_num_responses_ready()
        _require(
            stale == 0,
            f"{stale} stale responses of a failed call are still queued: "
            "the real generate() would never return; drain or rebuild the runner first",
        )
        # docs/trtllm.md#executor: generate() reads every response, not only its own.
        _require(
            self.session.idle,
            "generate() while requests enqueued on session are in flight would read their "
            "responses as its own",
        )

    def _enqueue(self, count: int) -> None:
        """The executor answers each request; an injected error answers the first one."""
        request_ids = self.session.reserve_ids(count)
        if self._failure is not None:
            message, self._failure = self._failure, None
            # The error response is read first; the batch's others stay queued.
            for request_id in request_ids[1:]:
                stale = Result(
                    is_final=True, output_token_ids=[[]], finish_reasons=[FinishReason.END_ID]
                )
                self.session.deliver(Response(request_id, stale))
            raise RuntimeError(message)

    # --- what the Executor asks of the model (tensorrt_llm.bindings.executor) -------------

    def check_request_features(self, request: Request) -> None:
        """docs/trtllm.md#generate: one [frames, n_mels] tensor, frames // 2 encoder outputs."""
        mel = request.encoder_input_features
        _require(mel is not None, "encoder_input_features must be given for Whisper")
        assert mel is not None  # narrowed by the check above
        self._check_mel(mel)
        _require(
            request.encoder_output_length == mel.shape[0] // 2,
            f"encoder_output_length {request.encoder_output_length} != frames {mel.shape[0]} // 2",
        )

    def answer(self, requests: list[Request]) -> list[Answer]:
        """Each request's whole decode, batched per decoding parameters as `generate` does."""
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault(_decoding_key(request), []).append(index)
        answers: dict[int, Answer] = {}
        for indices in groups.values():
            first = requests[indices[0]]
            sampling = first.sampling_config.as_kwargs()
            decoded = self._decode(
                [_to_ct2_mel(requests[i].encoder_input_features) for i in indices],
                [requests[i].input_token_ids for i in indices],
                first.max_tokens,
                first.sampling_config.beam_width,
                sampling,
                [word[0] for word in first.bad_words or []],
                first.end_id,
            )
            greedy = _sampling(sampling)[0] == 1
            for index, item in zip(indices, decoded, strict=True):
                answers[index] = _answer(item, greedy)
        return [answers[i] for i in range(len(requests))]

    def _check_prompts(self, batch_input_ids: list[torch.Tensor] | torch.Tensor) -> list[list[int]]:
        # One 1-D int tensor per request (a 2-D [B, P] tensor also works).
        rows = list(batch_input_ids)
        _require(bool(rows), "batch_input_ids is empty")
        for row in rows:
            _require(
                isinstance(row, torch.Tensor) and row.ndim == 1 and not row.is_floating_point(),
                "batch_input_ids must be 1-D integer tensors, one per request",
            )
        prompts = [[int(t) for t in row.tolist()] for row in rows]
        # sherpa#606: a batch above the engine's max_batch_size fails ("Could not set shape").
        _require(
            len(prompts) <= self.limits.max_batch_size,
            f"batch of {len(prompts)} exceeds max_batch_size {self.limits.max_batch_size} "
            "(sherpa#606)",
        )
        for prompt in prompts:
            # docs/trtllm.md#engine-dir: the decoder engine's max_input_len caps the prompt.
            _require(
                1 <= len(prompt) <= self.limits.max_input_len,
                f"prompt of {len(prompt)} tokens exceeds max_input_len {self.limits.max_input_len}",
            )
        return prompts

    def _check_features(
        self,
        features: list[torch.Tensor] | None,
        output_lengths: list[int] | torch.Tensor | None,
        prompts: list[list[int]],
    ) -> list[Mel]:
        _require(
            isinstance(features, (list, tuple)) and len(features) == len(prompts),
            "encoder_input_features must be a list with one tensor per request",
        )
        assert features is not None  # narrowed by the check above
        for mel in features:
            self._check_mel(mel)
        _require(
            output_lengths is not None and len(output_lengths) == len(features),
            "encoder_output_lengths must give one length per request",
        )
        assert output_lengths is not None  # narrowed by the check above
        for mel, length in zip(features, output_lengths, strict=True):
            # The encoder's stride-2 convolution halves the frames.
            _require(
                int(length) == mel.shape[0] // 2,
                f"encoder_output_lengths {int(length)} != frames {mel.shape[0]} // 2",
            )
        return [_to_ct2_mel(mel) for mel in features]

    def _check_mel(self, mel: torch.Tensor) -> None:
        # docs/trtllm.md#generate, #precision: [n_frames, n_mels], in the encoder's dtype.
        _require(isinstance(mel, torch.Tensor), "encoder_input_features items must be tensors")
        expected = TORCH_DTYPES[self.limits.dtype]
        _require(
            mel.dtype == expected,
            f"Incompatible data types: features are {mel.dtype}, the {self.limits.dtype} "
            "encoder engine takes its own dtype",
        )
        _require(
            mel.ndim == 2 and mel.shape[1] == self.limits.n_mels,
            f"features must be [frames, {self.limits.n_mels}] (encoder n_mels), "
            f"got {list(mel.shape)}",
        )
        frames = mel.shape[0]
        # docs/trtllm.md#engine-dir: an even frame count within the profile's 10..3000.
        _require(frames % 2 == 0, f"frame count {frames} must be even")
        _require(
            MIN_FRAMES <= frames <= MAX_FRAMES,
            f"frame count {frames} outside {MIN_FRAMES}..{MAX_FRAMES}",
        )

    def _check_call(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        end_id: int | None,
        pad_id: int | None,
        stopping_criteria: object,
        encoder_input_ids: object,
    ) -> None:
        _require(
            not isinstance(max_new_tokens, _DefaultOne),
            "max_new_tokens not passed: it defaults to 1",
        )
        _require(max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {max_new_tokens}")
        longest = max(len(p) for p in prompts)
        # docs/trtllm.md#engine-dir: the decoder's max_seq_len caps prompt + generated tokens.
        _require(
            longest + max_new_tokens <= self.limits.max_seq_len,
            f"prompt {longest} + max_new_tokens {max_new_tokens} exceeds max_seq_len "
            f"{self.limits.max_seq_len}",
        )
        for name, value in (("end_id", end_id), ("pad_id", pad_id)):
            _require(
                value is not None and 0 <= value < self.limits.vocab_size,
                f"{name} must be a token id",
            )
        _require(stopping_criteria is None, "stopping_criteria is not supported")
        _require(encoder_input_ids is None, "encoder_input_ids must be None for Whisper")

    def _check_bad_words(self, bad_words_list: object, batch: int) -> list[int]:
        """docs/trtllm.md#generate: per request, a list of token sequences."""
        if bad_words_list is None:
            return []
        _require(
            isinstance(bad_words_list, list) and len(bad_words_list) == batch,
            "bad_words_list needs one list of token sequences per request",
        )
        assert isinstance(bad_words_list, list)
        for words in bad_words_list:
            _require(
                isinstance(words, list)
                and all(
                    isinstance(w, list) and w and all(isinstance(t, int) for t in w) for w in words
                ),
                "each bad_words_list entry is a list of non-empty token-id lists",
            )
        if any(words != bad_words_list[0] for words in bad_words_list):
            raise NotImplementedError("the double bans the same words for the whole batch")
        if any(len(word) != 1 for word in bad_words_list[0]):
            raise NotImplementedError("the double bans single tokens only")
        return [word[0] for word in bad_words_list[0]]

    # --- computing the answer with CTranslate2 ------------------------------------------

    def _decode(
        self,
        mels: list[Mel],
        prompts: list[list[int]],
        max_new_tokens: int,
        num_beams: int,
        sampling: dict[str, Any],
        suppress: list[int],
        end_id: int | None,
    ) -> list[list[_Hypothesis] | _Probe]:
        assert end_id is not None  # checked by _check_call
        top_k, temperature = _sampling(sampling)
        min_tokens = int(sampling.get("min_tokens") or 0)
        if min_tokens > 1:
            raise NotImplementedError("the double emulates min_tokens 0 or 1")
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, prompt in enumerate(prompts):
            groups.setdefault(tuple(prompt), []).append(index)
        answers: dict[int, list[_Hypothesis] | _Probe] = {}
        for prompt_key, indices in groups.items():
            prompt = list(prompt_key)
            group_mels = [mels[i] for i in indices]
            found: Sequence[list[_Hypothesis] | _Probe]
            if prompt[-1] == self._sot:
                _require(max_new_tokens == 1, "the double answers a probe with one token")
                found = self._probe(group_mels, prompt)
            else:
                found = self._ct2_generate(
                    group_mels, prompt, max_new_tokens, num_beams, top_k, temperature,
                    suppress, min_tokens,
                )  # fmt: skip
            answers.update(zip(indices, found, strict=True))
        return [answers[i] for i in range(len(prompts))]

    def _probe(self, mels: list[Mel], prompt: list[int]) -> list[_Probe]:
        """The step after <|startoftranscript|>: language and no-speech probabilities."""
        storage = _storage(mels)
        results = self._model.generate(
            storage, [prompt] * len(mels), max_length=len(prompt) + 1, beam_size=1,
            return_no_speech_prob=True, suppress_blank=False, suppress_tokens=[],
        )  # fmt: skip
        if self._model.is_multilingual:
            ranked = self._model.detect_language(storage)
        else:
            ranked = [[("<|en|>", 1.0)]] * len(mels)
        probes = []
        for result, languages in zip(results, ranked, strict=True):
            logits = torch.full((self.limits.vocab_size,), -math.inf)
            no_speech = float(result.no_speech_prob)
            logits[self._no_speech] = math.log(max(no_speech, 1e-30))
            for token, probability in languages:
                share = max(probability * (1 - no_speech), 1e-30)
                logits[self._token_id(token)] = math.log(share)
            probes.append(_Probe(int(torch.argmax(logits)), logits))
        return probes

    def _ct2_generate(
        self,
        mels: list[Mel],
        prompt: list[int],
        max_new_tokens: int,
        num_beams: int,
        top_k: int,
        temperature: float,
        suppress: list[int],
        min_tokens: int,
    ) -> list[list[_Hypothesis]]:
        if prompt[-1] != self._no_timestamps:
            raise NotImplementedError("the double only emulates prompts ending <|notimestamps|>")
        max_length, capacity = _ct2_length(len(prompt), max_new_tokens)
        results = self._model.generate(
            _storage(mels),
            [prompt] * len(mels),
            beam_size=num_beams,
            num_hypotheses=num_beams,
            max_length=max_length,
            return_scores=True,
            # TensorRT-LLM applies no Whisper logit rules: only what the caller asked for.
            suppress_blank=min_tokens == 1,
            suppress_tokens=suppress,
            sampling_topk=top_k,
            sampling_temperature=temperature,
        )
        limit = min(max_new_tokens, capacity)
        return [
            [
                _hypothesis(list(ids)[:max_new_tokens], float(score), limit)
                for ids, score in zip(result.sequences_ids, result.scores, strict=True)
            ]
            for result in results
        ]

    def _outputs(
        self,
        prompts: list[list[int]],
        decoded: list[list[_Hypothesis] | _Probe],
        num_beams: int,
        end_id: int | None,
        sampling: dict[str, Any],
    ) -> dict[str, torch.Tensor]:
        # docs/trtllm.md#outputs: output_ids [batch, beams, max_seq_len] int32, prompt +
        # generated, end_id-padded; sequence_lengths exclude the end-of-text token.
        beams = [
            [_Hypothesis([item.token], False, 0.0)] if isinstance(item, _Probe) else item
            for item in decoded
        ]
        shape = (len(prompts), num_beams)
        output_ids = torch.full((*shape, self.limits.max_seq_len), end_id or 0, dtype=torch.int32)
        lengths = torch.zeros(shape, dtype=torch.int32)
        cum_log_probs = torch.zeros(shape, dtype=torch.float32)
        longest = max(len(h.generated) for row in beams for h in row)
        log_probs = torch.zeros((*shape, longest), dtype=torch.float32)
        # Normalised over the sampled top-k: a greedy step's only candidate has probability 1.
        greedy = _sampling(sampling)[0] == 1
        for i, (prompt, row) in enumerate(zip(prompts, beams, strict=True)):
            for beam, hypothesis in enumerate(row):
                tokens = prompt + hypothesis.generated
                output_ids[i, beam, : len(tokens)] = torch.tensor(tokens, dtype=torch.int32)
                lengths[i, beam] = len(tokens)
                steps = len(hypothesis.generated) + int(hypothesis.ended)  # EOS step included
                cum_log_probs[i, beam] = hypothesis.mean_log_prob * steps
                if not greedy:
                    log_probs[i, beam, : len(hypothesis.generated)] = hypothesis.mean_log_prob
        outputs = {
            "output_ids": output_ids,
            "sequence_lengths": lengths,
            "cum_log_probs": cum_log_probs,
            "log_probs": log_probs,
        }
        if all(isinstance(item, _Probe) for item in decoded):
            probes = [item for item in decoded if isinstance(item, _Probe)]
            # [batch, beams, steps, vocab]
            outputs["generation_logits"] = torch.stack([p.logits for p in probes])[:, None, None]
        return outputs


def _decoding_key(request: Request) -> tuple[Any, ...]:
    """Requests that CTranslate2 can decode in one call share this."""
    sampling = request.sampling_config.as_kwargs()
    bad_words = tuple(tuple(word) for word in request.bad_words or [])
    return (request.max_tokens, tuple(sorted(sampling.items())), bad_words, request.end_id)


def _answer(item: list[_Hypothesis] | _Probe, greedy: bool) -> Answer:
    if isinstance(item, _Probe):
        log_prob = float(item.logits[item.token])
        return Answer([[item.token]], False, [log_prob], greedy=True, logits=item.logits)
    return Answer(
        beams=[h.generated for h in item],
        ended=item[0].ended,
        mean_log_probs=[h.mean_log_prob for h in item],
        greedy=greedy,
    )


def _sampling(kwargs: dict[str, Any]) -> tuple[int, float]:
    """(CTranslate2 top-k, temperature) for the sampling kwargs; top_k 1 is greedy."""
    top_p = kwargs.get("top_p")
    if top_p not in (None, 0.0, 1.0):
        raise NotImplementedError("the double cannot emulate nucleus sampling")
    top_k = int(kwargs.get("top_k") or 0)
    temperature = float(kwargs.get("temperature", 1.0))
    if top_k == 0 and not top_p:
        # top_k and top_p both unset/0 means greedy in TensorRT-LLM's sampling layer.
        return 1, 1.0
    return top_k, temperature


def _ct2_length(prompt_length: int, max_new_tokens: int) -> tuple[int, int]:
    """CTranslate2's `max_length` giving >= max_new_tokens, and the tokens it then allows.

    CTranslate2 decodes min(max_length // 2, max_length - (prompt_length - 1)) steps.
    """
    start_step = max(0, prompt_length - 1)
    wanted = max(2 * max_new_tokens, max_new_tokens + start_step)
    max_length = min(_CT2_TEXT_CTX, wanted)
    return max_length, min(max_length // 2, max_length - start_step)


def _hypothesis(ids: list[int], mean_log_prob: float, limit: int) -> _Hypothesis:
    # Fewer tokens than allowed means the model emitted <|endoftext|> after them.
    return _Hypothesis(ids, ended=len(ids) < limit, mean_log_prob=mean_log_prob)


def _to_ct2_mel(mel: torch.Tensor) -> Mel:
    """[frames, n_mels] back to CTranslate2's [n_mels, 3000] float32."""
    array = mel.detach().to(device="cpu", dtype=torch.float32).numpy().T
    missing = MAX_FRAMES - array.shape[1]
    # Log-mel of padded silence sits at the spectrogram's floor: pad with its minimum.
    return np.pad(array, ((0, 0), (0, missing)), constant_values=float(array.min()))


def _storage(mels: Sequence[Mel]) -> ctranslate2.StorageView:
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(mels)))
