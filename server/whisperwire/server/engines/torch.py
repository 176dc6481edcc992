"""PyTorch adapter: Whisper on a CUDA GPU (float16/bfloat16) or the CPU (float32).

Needs nothing but torch. Weights come from an OpenAI checkpoint (`.pt`, as engine_builder
downloads it) or a CTranslate2 model directory (the bundled offline models).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import torch

from whisperwire.server.engine import (
    Alignment,
    EngineInfo,
    Features,
    Generation,
    GenerationParams,
    LanguageRanking,
    StepWork,
    WindowRequest,
    never,
)
from whisperwire.server.engines.torch_whisper import alignment
from whisperwire.server.engines.torch_whisper.checkpoints import (
    load_alignment_heads,
    load_checkpoint,
)
from whisperwire.server.engines.torch_whisper.decoding import Decoded, WhisperDecoder
from whisperwire.server.engines.torch_whisper.inflight import Admission, InflightDecoder
from whisperwire.server.engines.torch_whisper.logit_rules import SpecialTokens
from whisperwire.server.engines.torch_whisper.model import ModelDimensions, Whisper
from whisperwire.server.errors import ConfigurationError, ModelNotFoundError
from whisperwire.server.tokenizer import WhisperTokenizer

DTYPES: Final = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def default_dtype(device: str) -> str:
    return "float16" if device == "cuda" else "float32"


class TorchEngine:
    def __init__(
        self,
        checkpoint: Path,
        tokenizer: WhisperTokenizer,
        *,
        weights: tuple[ModelDimensions, dict[str, torch.Tensor]] | None = None,
        model_name: str,
        device: str = "cpu",
        dtype: str | None = None,
        max_batch_size: int = 8,
        cuda_graphs: bool = True,
        compile_encoder: bool = False,
    ) -> None:
        dtype = dtype or default_dtype(device)
        _check_device(device, dtype)
        dims, state = weights or load_checkpoint(checkpoint)
        _check_vocabulary(checkpoint, dims, tokenizer)
        model = _build(checkpoint, dims, state).to(torch.device(device), DTYPES[dtype]).eval()
        self._alignment_heads = load_alignment_heads(checkpoint, dims, state)
        self._tokenizer = tokenizer
        self._special = special_tokens(tokenizer)
        self._language_codes = [tokenizer.language_code(t) for t in self._special.language_ids]
        self._on_cuda = device == "cuda"
        self._decoder = WhisperDecoder(
            model,
            self._special,
            max_rows=max_batch_size,
            use_cuda_graphs=cuda_graphs and device == "cuda",
            compile_encoder=compile_encoder,
        )
        # Greedy windows decode in flight (own cache and state); beam search, sampling,
        # language detection and alignment run whole batches on the decoder above.
        self._inflight = InflightDecoder(
            model,
            self._special,
            self._decoder.encode,
            rows=max_batch_size,
            lengths=self._decoder.lengths,
            use_cuda_graphs=cuda_graphs and device == "cuda",
            capture_encoder=not compile_encoder,  # a compiled encoder runs as compiled
        )
        self.info = EngineInfo(
            name="torch",
            model=model_name,
            n_mels=dims.n_mels,
            multilingual=tokenizer.multilingual,
            num_languages=tokenizer.num_languages if tokenizer.multilingual else 0,
            max_batch_size=max_batch_size,
            supports_timestamps=True,
            supports_word_timestamps=True,
            device=f"{device}/{dtype}",
        )

    def generate(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        params: GenerationParams,
    ) -> list[Generation]:
        decoded = self._decoder.generate(
            self._decoder.encode(_mel(features)),
            prompts,
            max_new_tokens=params.max_new_tokens,
            temperature=params.temperature,
            beam_size=params.beam_size,
            suppress_tokens=params.suppress_tokens,
            suppress_blank=params.suppress_blank,
            no_speech=params.return_no_speech_prob,
        )
        return [_generation(d) for d in decoded]

    # ---- in-flight batching (StepBatcher) ---------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self._inflight.in_flight

    def steppable(self, params: StepWork) -> bool:
        if not isinstance(params, GenerationParams):  # language detection
            return self.info.multilingual
        return params.beam_size == 1 and params.temperature == 0

    def free_slots(self, params: StepWork) -> int:
        return self._inflight.free_slots(_rule_config(params))

    def advance(
        self,
        admit: Sequence[WindowRequest],
        cancel: Sequence[int],
        interrupted: Callable[[], bool] = never,
    ) -> dict[int, Generation | LanguageRanking]:
        self._inflight.cancel(cancel)
        configs = {_rule_config(w.params) for w in admit} - {None}
        assert len(configs) <= 1, "one admission, one set of logit rules"
        try:
            if admit:
                self._inflight.admit(
                    _mel([w.features for w in admit], pinned=self._on_cuda),
                    [self._admission(w) for w in admit],
                    configs.pop() if configs else None,
                )
            finished = self._inflight.advance(interrupted)
        except BaseException:
            self._inflight.reset()  # the scheduler fails every window in flight
            raise
        return {
            ticket: _generation(d) if isinstance(d, Decoded) else self._ranking(d)
            for ticket, d in finished.items()
        }

    def _admission(self, window: WindowRequest) -> Admission:
        params = window.params
        if not isinstance(params, GenerationParams):  # fed <|startoftranscript|> alone
            return Admission(
                window.ticket, [self._special.sot], 1, False, True, urgent=window.urgent
            )
        return Admission(
            window.ticket,
            window.prompt,
            params.max_new_tokens,
            params.return_no_speech_prob,
            urgent=window.urgent,
        )

    def detect_language(self, features: Sequence[Features]) -> list[LanguageRanking]:
        probs = self._decoder.language_probs(self._decoder.encode(_mel(features))).tolist()
        return [self._ranking(row) for row in probs]

    def _ranking(self, probs: Sequence[float]) -> LanguageRanking:
        return sorted(zip(self._language_codes, probs, strict=True), key=lambda pair: -pair[1])

    def align(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        text_tokens: Sequence[Sequence[int]],
        num_frames: Sequence[int],
    ) -> list[Alignment]:
        out: list[Alignment] = []
        size = self.info.max_batch_size  # the pass holds every item's attention scores at once
        for i in range(0, len(features), size):
            out += alignment.align(
                self._decoder.model,
                self._decoder.encode(_mel(features[i : i + size])),
                prompts[i : i + size],
                text_tokens[i : i + size],
                num_frames[i : i + size],
                heads=self._alignment_heads,
                no_timestamps=self._special.no_timestamps,
                eot=self._special.eot,
            )
        return out


def special_tokens(tokenizer: WhisperTokenizer) -> SpecialTokens:
    t = tokenizer
    return SpecialTokens(
        eot=t.eot,
        sot=t.sot,
        no_speech=t.no_speech,
        no_timestamps=t.no_timestamps,
        timestamp_begin=t.timestamp_begin,
        language_ids=t.language_token_ids if t.multilingual else (),
        control_ids=(t.transcribe, t.translate, t.sot, t.sot_prev, t.sot_lm, t.no_speech),
        blank_ids=(*t.encode(" "), t.eot),
    )


def _rule_config(params: StepWork) -> tuple[tuple[int, ...], bool] | None:
    """The logit rules a window decodes under (None: detection, which no rule touches)."""
    if not isinstance(params, GenerationParams):
        return None
    return params.suppress_tokens, params.suppress_blank


def _generation(decoded: Decoded) -> Generation:
    return Generation(decoded.tokens, decoded.sum_logprob, decoded.no_speech_prob)


def _mel(features: Sequence[Features], *, pinned: bool = False) -> torch.Tensor:
    """The windows' log-mel as one [B, n_mels, 3000] tensor; `pinned`: stacked straight into
    page-locked memory, so the copy to the GPU is one asynchronous transfer."""
    if not pinned:
        return torch.from_numpy(np.stack(features))
    out = torch.empty((len(features), *features[0].shape), dtype=torch.float32, pin_memory=True)
    np.stack(features, out=out.numpy())
    return out


def _check_device(device: str, dtype: str) -> None:
    if dtype not in DTYPES:
        raise ConfigurationError(f"the torch engine runs in {', '.join(DTYPES)}, not {dtype!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError("--device cuda: torch sees no CUDA GPU")
    if device == "cpu" and dtype != "float32":
        raise ConfigurationError("the torch engine runs float32 on the CPU")


def _check_vocabulary(checkpoint: Path, dims: ModelDimensions, tokenizer: WhisperTokenizer) -> None:
    if dims.n_vocab != tokenizer.n_vocab:
        raise ModelNotFoundError(
            f"{checkpoint}: the model has {dims.n_vocab} output tokens, its tokenizer "
            f"{tokenizer.n_vocab}: they are not one model's"
        )


def _build(checkpoint: Path, dims: ModelDimensions, state: dict[str, torch.Tensor]) -> Whisper:
    model = Whisper(dims)
    result = model.load_state_dict(state, strict=False)
    # OpenAI checkpoints may carry alignment heads; nothing else may be missing or extra.
    unexpected = [k for k in result.unexpected_keys if k != "alignment_heads"]
    if result.missing_keys or unexpected:
        raise ModelNotFoundError(
            f"{checkpoint}: not a Whisper checkpoint of the expected layout "
            f"(missing {result.missing_keys[:5]}, unexpected {unexpected[:5]})"
        )
    return model


def load_torch_engine(
    model: str,
    *,
    device: str,
    dtype: str | None,
    max_batch_size: int,
    compile_encoder: bool = False,
) -> tuple[TorchEngine, WhisperTokenizer]:
    """`model`: an OpenAI checkpoint file (tokenizer beside it or in assets/), or anything
    `resolve_model` finds (a CTranslate2 directory, an offline package, the hub)."""
    from whisperwire.server.models import resolve_model

    path = Path(model).expanduser()
    if path.suffix == ".pt":
        if not path.is_file():
            raise ModelNotFoundError(f"OpenAI checkpoint {path} does not exist")
        weights = load_checkpoint(path)  # validated before the tokenizer is looked for
        dims = weights[0]
        multilingual = dims.n_vocab >= 51865
        tokenizer = WhisperTokenizer.from_dir(
            path.parent,
            multilingual=multilingual,
            num_languages=dims.n_vocab - 51765 - int(multilingual) if multilingual else None,
        )
        name = path.stem
    else:
        path = resolve_model(model)
        weights = None
        tokenizer = WhisperTokenizer.from_dir(path)
        name = Path(model).name
    engine = TorchEngine(
        path,
        tokenizer,
        weights=weights,
        model_name=name,
        device=device,
        dtype=dtype,
        max_batch_size=max_batch_size,
        compile_encoder=compile_encoder,
    )
    return engine, tokenizer
