"""A strict contract double of TensorRT-LLM 1.2.1's `ModelRunnerCpp`, for Whisper engines.

Every call is checked against the documented contract (/work/shared/reference/trtllm.md, cited
as §n); a violation raises `ContractViolation` (or TypeError for a wrong signature, as Python
does for the real one). Answers come in TensorRT-LLM's output layout (§2), with tokens computed
by the real CTranslate2 model that the engine directory's `double.json` names.

Where the double knowingly differs from the real runtime:
- it is stricter: `generate` rejects keyword arguments outside §2's sampling list (the real one
  silently ignores them, so a typo would go unnoticed);
- tensors come back on the CPU (the real runtime returns CUDA tensors);
- per-token `log_probs` of a decoded sequence are its mean (CTranslate2 reports only the total);
- CTranslate2 applies Whisper's timestamp rules to prompts that do not end in <|notimestamps|>,
  and TensorRT-LLM has none (§3), so only such prompts and the language probe (a bare
  <|startoftranscript|>, answered from CTranslate2's language detection over language tokens)
  can be emulated; other prompts raise NotImplementedError;
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

# Side file in the engine dir: {"ct2_model_dir": ..., "compute_type": ..., "threads": ...}.
DOUBLE_CONFIG = "double.json"

# §3, §5: the encoder engine's profile accepts 10..3000 frames per request, an even count.
MIN_FRAMES, MAX_FRAMES = 10, 3000
# §2: the sampling keyword arguments `generate` takes when sampling_config is None.
SAMPLING_KWARGS = frozenset(
    {
        "num_beams", "top_k", "top_p", "top_p_min", "top_p_reset_ids", "top_p_decay",
        "temperature", "min_tokens", "beam_search_diversity_rate", "repetition_penalty",
        "presence_penalty", "frequency_penalty", "length_penalty", "early_stopping",
        "no_repeat_ngram_size", "random_seed", "num_return_sequences", "min_p",
        "beam_width_array",
    }
)  # fmt: skip
# CTranslate2 decodes at most half its text context (Whisper's sample_len).
_CT2_TEXT_CTX = 448

Mel = npt.NDArray[np.float32]


class ContractViolation(ValueError):
    """A call that breaks the documented ModelRunnerCpp contract for Whisper."""


class _DefaultOne:
    """`max_new_tokens`'s default: 1, and a trap for Whisper (§2), so omitting it fails."""

    def __repr__(self) -> str:
        return "1"


_DEFAULT_MAX_NEW_TOKENS: Any = _DefaultOne()


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ContractViolation(message)


@dataclass(frozen=True)
class _EngineLimits:
    """What `from_dir` reads from encoder/ and decoder/config.json (§5 layout)."""

    n_mels: int
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
            vocab_size=int(decoder["pretrained_config"]["vocab_size"]),
            encoder_max_batch_size=int(encoder["build_config"]["max_batch_size"]),
            max_batch_size=int(decoder["build_config"]["max_batch_size"]),
            # §5: trtllm-build's default max_beam_width is 1.
            max_beam_width=int(decoder["build_config"].get("max_beam_width", 1)),
            max_input_len=int(decoder["build_config"]["max_input_len"]),
            max_seq_len=int(decoder["build_config"]["max_seq_len"]),
        )


def _engine_config(engine_dir: Path, part: str) -> dict[str, Any]:
    # §1: is_enc_dec reads engine_dir/encoder/config.json and engine_dir/decoder/config.json;
    # §5: each beside its rank0.engine.
    folder = engine_dir / part
    for name in ("config.json", "rank0.engine"):
        _require((folder / name).is_file(), f"{folder / name} is missing (§1, §5 engine layout)")
    config: dict[str, Any] = json.loads((folder / "config.json").read_text())
    for section in ("pretrained_config", "build_config"):
        _require(section in config, f"{folder}/config.json lacks {section} (§5)")
    return config


@dataclass(frozen=True)
class _Hypothesis:
    generated: list[int]  # new tokens, end_id included when the sequence ended
    log_probs: list[float]  # one per generated token


class ModelRunnerCpp:
    """Create with `from_dir`; `generate` decodes one batch at a time (§2 concurrency)."""

    def __init__(self, limits: _EngineLimits, model_dir: Path, compute_type: str, threads: int):
        self.limits = limits
        self._model = ctranslate2.models.Whisper(
            str(model_dir), device="cpu", compute_type=compute_type, intra_threads=threads
        )
        self._vocabulary = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._sot = self._token_id("<|startoftranscript|>")
        self._no_timestamps = self._token_id("<|notimestamps|>")
        self._busy = threading.Lock()
        self.max_batch_size = limits.max_batch_size
        self.max_beam_width = limits.max_beam_width

    def _token_id(self, token: str) -> int:
        found = self._vocabulary.token_to_id(token)
        if found is None:
            raise ValueError(f"{token} is not in the CTranslate2 model's vocabulary")
        return found

    # --- construction (§1) --------------------------------------------------------------

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
        # §1: without is_enc_dec the directory is read as a decoder-only engine.
        _require(is_enc_dec is True, "Whisper engines need is_enc_dec=True (§1)")
        # §1, TensorRT-LLM#2419: "Must set crossKvCacheFraction for encoder-decoder model".
        _require(
            cross_kv_cache_fraction is not None and 0 < cross_kv_cache_fraction < 1,
            f"cross_kv_cache_fraction must be set within (0, 1), got {cross_kv_cache_fraction} "
            "(§1, TensorRT-LLM#2419)",
        )
        _require(
            kv_cache_free_gpu_memory_fraction is None or 0 < kv_cache_free_gpu_memory_fraction <= 1,
            "kv_cache_free_gpu_memory_fraction is a fraction of free GPU memory (§1)",
        )
        # §1: the world config comes from MPI; rank must equal the MPI rank, 0.
        _require(rank == 0, f"rank must be 0 (the MPI rank), got {rank} (§1)")
        limits = _EngineLimits.read(Path(engine_dir))
        engine_batch = min(limits.max_batch_size, limits.encoder_max_batch_size)
        # §1: max_batch_size and max_beam_width are asserted <= the engine's; None -> engine's.
        _require(
            max_batch_size is None or 1 <= max_batch_size <= engine_batch,
            f"max_batch_size {max_batch_size} exceeds the engine's {engine_batch} (§1)",
        )
        _require(
            max_beam_width is None or 1 <= max_beam_width <= limits.max_beam_width,
            f"max_beam_width {max_beam_width} exceeds the engine's {limits.max_beam_width} (§1)",
        )
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
        )

    # --- decoding (§2) ------------------------------------------------------------------

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
            raise TypeError(f"generate() got unexpected keyword arguments {unknown} (§2)")
        # §2 concurrency caveat: two threads on one runner consume each other's responses.
        if not self._busy.acquire(blocking=False):
            raise ContractViolation("generate re-entered while another call runs (§2)")
        try:
            prompts = self._check_prompts(batch_input_ids)
            mels = self._check_features(encoder_input_features, encoder_output_lengths, prompts)
            self._check_call(
                prompts, max_new_tokens, end_id, pad_id, stopping_criteria, encoder_input_ids
            )
            _require(not streaming, "the double does not stream")
            num_beams = int(kwargs.get("num_beams", 1))
            # §1: the beam width is bounded by the runner's (hence the engine's) max_beam_width.
            _require(
                1 <= num_beams <= self.limits.max_beam_width,
                f"num_beams {num_beams} exceeds max_beam_width {self.limits.max_beam_width} (§1)",
            )
            hypotheses = self._decode(mels, prompts, max_new_tokens, num_beams, kwargs, end_id)
        finally:
            self._busy.release()
        outputs = self._outputs(prompts, hypotheses, num_beams, end_id)
        if not return_dict:
            return outputs["output_ids"]
        if not output_sequence_lengths:
            del outputs["sequence_lengths"]
        if not output_log_probs:
            del outputs["log_probs"]
        if not output_cum_log_probs:
            del outputs["cum_log_probs"]
        return outputs

    def _check_prompts(self, batch_input_ids: list[torch.Tensor] | torch.Tensor) -> list[list[int]]:
        # §2: one 1-D int tensor per request (a 2-D [B, P] tensor also works).
        rows = list(batch_input_ids)
        _require(bool(rows), "batch_input_ids is empty")
        for row in rows:
            _require(
                isinstance(row, torch.Tensor) and row.ndim == 1 and not row.is_floating_point(),
                "batch_input_ids must be 1-D integer tensors, one per request (§2)",
            )
        prompts = [[int(t) for t in row.tolist()] for row in rows]
        # sherpa#606: a batch above the engine's max_batch_size fails ("Could not set shape").
        _require(
            len(prompts) <= self.limits.max_batch_size,
            f"batch of {len(prompts)} exceeds max_batch_size {self.limits.max_batch_size} "
            "(§7, sherpa#606)",
        )
        for prompt in prompts:
            # §5: the decoder engine's max_input_len caps the prompt.
            _require(
                1 <= len(prompt) <= self.limits.max_input_len,
                f"prompt of {len(prompt)} tokens exceeds max_input_len "
                f"{self.limits.max_input_len} (§5)",
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
            "encoder_input_features must be a list with one tensor per request (§2)",
        )
        assert features is not None  # narrowed by the check above
        for mel in features:
            self._check_mel(mel)
        _require(
            output_lengths is not None and len(output_lengths) == len(features),
            "encoder_output_lengths must give one length per request (§2)",
        )
        assert output_lengths is not None  # narrowed by the check above
        for mel, length in zip(features, output_lengths, strict=True):
            # §2, §3: the encoder's stride-2 convolution halves the frames.
            _require(
                int(length) == mel.shape[0] // 2,
                f"encoder_output_lengths {int(length)} != frames {mel.shape[0]} // 2 (§2)",
            )
        return [_to_ct2_mel(mel) for mel in features]

    def _check_mel(self, mel: torch.Tensor) -> None:
        # §2: one tensor per request, [n_frames, n_mels], time-major, float16 (engine dtype).
        _require(isinstance(mel, torch.Tensor), "encoder_input_features items must be tensors")
        _require(mel.dtype == torch.float16, f"features must be float16, got {mel.dtype} (§2)")
        _require(
            mel.ndim == 2 and mel.shape[1] == self.limits.n_mels,
            f"features must be [frames, {self.limits.n_mels}] (encoder n_mels), "
            f"got {list(mel.shape)} (§2, §3)",
        )
        frames = mel.shape[0]
        # §3: frames are padded to an even count; §5: the engine profile spans 10..3000.
        _require(frames % 2 == 0, f"frame count {frames} must be even (§3)")
        _require(
            MIN_FRAMES <= frames <= MAX_FRAMES,
            f"frame count {frames} outside {MIN_FRAMES}..{MAX_FRAMES} (§3, §5)",
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
        # §2: max_new_tokens defaults to 1; always pass it.
        _require(
            not isinstance(max_new_tokens, _DefaultOne),
            "max_new_tokens not passed: it defaults to 1 (§2)",
        )
        _require(max_new_tokens >= 1, f"max_new_tokens must be >= 1, got {max_new_tokens}")
        longest = max(len(p) for p in prompts)
        # §1: max_seq_len is the decoder engine's; §5: it caps prompt + generated tokens.
        _require(
            longest + max_new_tokens <= self.limits.max_seq_len,
            f"prompt {longest} + max_new_tokens {max_new_tokens} exceeds max_seq_len "
            f"{self.limits.max_seq_len} (§1, §5)",
        )
        # §2: pass end_id and pad_id (Whisper uses <|endoftext|> for both).
        for name, value in (("end_id", end_id), ("pad_id", pad_id)):
            _require(
                value is not None and 0 <= value < self.limits.vocab_size,
                f"{name} must be a token id (§2)",
            )
        # §2: stopping_criteria is not supported (raises).
        _require(stopping_criteria is None, "stopping_criteria is not supported (§2)")
        # §2: encoder_input_ids stays None for Whisper.
        _require(encoder_input_ids is None, "encoder_input_ids must be None for Whisper (§2)")

    # --- computing the answer with CTranslate2 ------------------------------------------

    def _decode(
        self,
        mels: list[Mel],
        prompts: list[list[int]],
        max_new_tokens: int,
        num_beams: int,
        sampling: dict[str, Any],
        end_id: int | None,
    ) -> list[list[_Hypothesis]]:
        assert end_id is not None  # checked by _check_call
        top_k, temperature = _sampling(sampling)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, prompt in enumerate(prompts):
            groups.setdefault(tuple(prompt), []).append(index)
        answers: dict[int, list[_Hypothesis]] = {}
        for prompt_key, indices in groups.items():
            prompt = list(prompt_key)
            group_mels = [mels[i] for i in indices]
            if prompt == [self._sot]:
                _require(max_new_tokens == 1, "the double answers a bare <|sot|> with 1 token")
                found = self._language_probe(group_mels)
            else:
                found = self._ct2_generate(
                    group_mels, prompt, max_new_tokens, num_beams, top_k, temperature, end_id
                )
            answers.update(zip(indices, found, strict=True))
        return [answers[i] for i in range(len(prompts))]

    def _language_probe(self, mels: list[Mel]) -> list[list[_Hypothesis]]:
        ranked = self._model.detect_language(_storage(mels))
        hypotheses = []
        for item in ranked:
            token, probability = item[0]
            log_prob = math.log(max(probability, 1e-30))
            hypotheses.append([_Hypothesis([self._token_id(token)], [log_prob])])
        return hypotheses

    def _ct2_generate(
        self,
        mels: list[Mel],
        prompt: list[int],
        max_new_tokens: int,
        num_beams: int,
        top_k: int,
        temperature: float,
        end_id: int,
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
            # TensorRT-LLM applies no Whisper logit rules (§3): no blank or symbol suppression.
            suppress_blank=False,
            suppress_tokens=[],
            sampling_topk=top_k,
            sampling_temperature=temperature,
        )
        limit = min(max_new_tokens, capacity)
        return [
            [
                _hypothesis(list(ids)[:max_new_tokens], float(score), limit, end_id)
                for ids, score in zip(result.sequences_ids, result.scores, strict=True)
            ]
            for result in results
        ]

    def _outputs(
        self,
        prompts: list[list[int]],
        hypotheses: list[list[_Hypothesis]],
        num_beams: int,
        end_id: int | None,
    ) -> dict[str, torch.Tensor]:
        # §2: output_ids [batch, beams, max_seq_len] int32, prompt + generated, right-padded
        # with end_id; sequence_lengths [batch, beams] = prompt + generated.
        batch = len(prompts)
        shape = (batch, num_beams)
        output_ids = torch.full((*shape, self.limits.max_seq_len), end_id or 0, dtype=torch.int32)
        lengths = torch.zeros(shape, dtype=torch.int32)
        cum_log_probs = torch.zeros(shape, dtype=torch.float32)
        longest = max(len(h.generated) for beams in hypotheses for h in beams)
        log_probs = torch.zeros((*shape, longest), dtype=torch.float32)
        for i, (prompt, beams) in enumerate(zip(prompts, hypotheses, strict=True)):
            for beam, hypothesis in enumerate(beams):
                row = prompt + hypothesis.generated
                output_ids[i, beam, : len(row)] = torch.tensor(row, dtype=torch.int32)
                lengths[i, beam] = len(row)
                cum_log_probs[i, beam] = sum(hypothesis.log_probs)
                log_probs[i, beam, : len(hypothesis.log_probs)] = torch.tensor(hypothesis.log_probs)
        return {
            "output_ids": output_ids,
            "sequence_lengths": lengths,
            "cum_log_probs": cum_log_probs,
            "log_probs": log_probs,
        }


def _sampling(kwargs: dict[str, Any]) -> tuple[int, float]:
    """(CTranslate2 top-k, temperature) for §2's sampling kwargs; top_k 1 is greedy."""
    top_p = kwargs.get("top_p")
    if top_p not in (None, 0.0, 1.0):
        raise NotImplementedError("the double cannot emulate nucleus sampling")
    top_k = int(kwargs.get("top_k") or 0)
    temperature = float(kwargs.get("temperature", 1.0))
    if top_k == 0 and not top_p:
        # Inference: top_k and top_p both unset/0 means greedy in TensorRT-LLM's sampling layer.
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


def _hypothesis(ids: list[int], mean_log_prob: float, limit: int, end_id: int) -> _Hypothesis:
    # Fewer tokens than allowed means the model emitted <|endoftext|>, which TensorRT-LLM keeps.
    generated = [*ids, end_id] if len(ids) < limit else ids
    return _Hypothesis(generated, [mean_log_prob] * len(generated))


def _to_ct2_mel(mel: torch.Tensor) -> Mel:
    """[frames, n_mels] float16 back to CTranslate2's [n_mels, 3000] float32."""
    array = mel.detach().to(device="cpu", dtype=torch.float32).numpy().T
    missing = MAX_FRAMES - array.shape[1]
    # Log-mel of padded silence sits at the spectrogram's floor: pad with its minimum.
    return np.pad(array, ((0, 0), (0, missing)), constant_values=float(array.min()))


def _storage(mels: Sequence[Mel]) -> ctranslate2.StorageView:
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(mels)))
