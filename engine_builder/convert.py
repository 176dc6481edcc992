"""OpenAI Whisper checkpoint (.pt) → TensorRT-LLM 1.2.x checkpoint (encoder/ + decoder/).

Output layout per component: `config.json` + `rank0.safetensors`, with the `transformer.*` /
`lm_head.weight` name scheme that TensorRT-LLM uses since ~0.19 (the older flat names such as
`encoder_layers.N.*` make trtllm-build fail with "Required but not provided tensors").
The names, the config fields and the tensor transforms follow the facts recorded for NVIDIA's
`examples/models/core/whisper/convert_checkpoint.py` (the v1.2-era copy); nothing here imports
tensorrt_llm except the optional weight-only quantization.
"""

from __future__ import annotations

import json
import logging
import math
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors.torch import save_file

from engine_builder.errors import CheckpointFormatError
from engine_builder.quantize import quantize_weight_only

_LOGGER = logging.getLogger(__name__)

StateDict = Mapping[str, torch.Tensor]
Weights = dict[str, torch.Tensor]

DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
}
LOGITS_DTYPES = ("float16", "float32")

# Multilingual vocabularies are 51865 (99 languages) or 51866 (100, large-v3) tokens;
# the English-only GPT-2 one is 51864. The language count follows from the vocabulary size.
_MULTILINGUAL_MIN_VOCAB = 51865
_VOCAB_WITHOUT_LANGUAGES = 51765

# TensorRT-LLM serialises these IntEnums of tensorrt_llm.functional by value.
_LAYERNORM_TYPE_LAYERNORM = 0  # LayerNormType.LayerNorm
_LAYERNORM_POSITION_PRE = 0  # LayerNormPositionType.pre_layernorm


@dataclass(frozen=True)
class ModelDims:
    """The `dims` entry of an OpenAI checkpoint."""

    n_mels: int
    n_vocab: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int

    @classmethod
    def from_mapping(cls, raw: Mapping[str, object]) -> ModelDims:
        values: dict[str, int] = {}
        for field in fields(cls):
            value = raw.get(field.name)
            if not isinstance(value, int) or value <= 0:
                raise CheckpointFormatError(f"checkpoint dims: {field.name}={value!r} is invalid")
            values[field.name] = value
        return cls(**values)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def multilingual(self) -> bool:
        return self.n_vocab >= _MULTILINGUAL_MIN_VOCAB

    @property
    def num_languages(self) -> int:
        return self.n_vocab - _VOCAB_WITHOUT_LANGUAGES - int(self.multilingual)


@dataclass(frozen=True)
class OpenAICheckpoint:
    dims: ModelDims
    state: StateDict


def load_openai_checkpoint(path: Path) -> OpenAICheckpoint:
    """Read an OpenAI .pt file without executing pickled code; memory-maps zip checkpoints."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as error:  # torch raises many kinds for a file it cannot read
        raise CheckpointFormatError(f"cannot load {path}: {error}") from error
    if not isinstance(raw, Mapping) or "dims" not in raw or "model_state_dict" not in raw:
        raise CheckpointFormatError(f"{path} lacks the OpenAI `dims`/`model_state_dict` entries")
    return OpenAICheckpoint(ModelDims.from_mapping(raw["dims"]), raw["model_state_dict"])


# --- configs -------------------------------------------------------------------------------


def encoder_config(dims: ModelDims, dtype: str, quant_algo: str | None) -> dict[str, object]:
    return {
        "architecture": "WhisperEncoder",
        "dtype": dtype,
        "num_hidden_layers": dims.n_audio_layer,
        "num_attention_heads": dims.n_audio_head,
        "hidden_size": dims.n_audio_state,
        "max_position_embeddings": dims.n_audio_ctx,
        "has_position_embedding": True,
        "n_mels": dims.n_mels,
        "vocab_size": dims.n_vocab,
        "hidden_act": "gelu",
        "num_languages": dims.num_languages,
        "quantization": {"quant_algo": quant_algo},
    }


def decoder_config(
    dims: ModelDims, dtype: str, logits_dtype: str, quant_algo: str | None
) -> dict[str, object]:
    return {
        "architecture": "DecoderModel",
        "dtype": dtype,
        "logits_dtype": logits_dtype,
        "num_hidden_layers": dims.n_text_layer,
        "num_attention_heads": dims.n_text_head,
        "hidden_size": dims.n_text_state,
        "norm_epsilon": 1e-5,
        "vocab_size": dims.n_vocab,
        "hidden_act": "gelu",
        "use_parallel_embedding": False,
        "embedding_sharding_dim": 0,
        "max_position_embeddings": dims.n_text_ctx,
        "use_prompt_tuning": False,
        "head_size": dims.n_text_state // dims.n_text_head,
        "has_position_embedding": True,
        "layernorm_type": _LAYERNORM_TYPE_LAYERNORM,
        "has_attention_qkvo_bias": True,
        "has_mlp_bias": True,
        "has_model_final_layernorm": True,
        "has_embedding_layernorm": False,
        "has_embedding_scale": False,
        "ffn_hidden_size": 4 * dims.n_text_state,
        "q_scaling": 1.0,
        "layernorm_position": _LAYERNORM_POSITION_PRE,
        "relative_attention": False,
        "max_distance": 0,
        "num_buckets": 0,
        "model_type": "whisper",
        "rescale_before_lm_head": False,
        # Whisper's cross-attention reads encoder states of the same width and head count.
        "encoder_hidden_size": dims.n_text_state,
        "encoder_num_heads": dims.n_text_head,
        "encoder_head_size": None,
        "skip_cross_kv": False,
        "quantization": {"quant_algo": quant_algo},
    }


# --- weights -------------------------------------------------------------------------------


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's fixed encoder positions: [sin | cos] of geometrically spaced timescales."""
    if channels % 2:
        raise ValueError(f"sinusoid channels must be even, got {channels}")
    half = channels // 2
    log_increment = math.log(max_timescale) / (half - 1)
    inv_timescales = torch.exp(-log_increment * torch.arange(half, dtype=torch.float32))
    scaled_time = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)


def convert_encoder(dims: ModelDims, state: StateDict) -> Weights:
    """Encoder tensors under TensorRT-LLM names, in the checkpoint's dtype (positions float32)."""
    weights: Weights = {
        # OpenAI stores these as a buffer too, but recomputing them needs no trust in it.
        "transformer.position_embedding.weight": sinusoids(dims.n_audio_ctx, dims.n_audio_state),
        **_conv(state, "encoder.conv1", "transformer.conv1"),
        **_conv(state, "encoder.conv2", "transformer.conv2"),
    }
    for i in range(dims.n_audio_layer):
        source, target = f"encoder.blocks.{i}", f"transformer.layers.{i}"
        weights |= _layer_norm(state, f"{source}.attn_ln", f"{target}.attention_layernorm")
        weights |= _attention(state, f"{source}.attn", f"{target}.attention")
        weights |= _layer_norm(state, f"{source}.mlp_ln", f"{target}.mlp_layernorm")
        weights |= _mlp(state, f"{source}.mlp", f"{target}.mlp")
    weights |= _layer_norm(state, "encoder.ln_post", "transformer.ln_f")
    return weights


def convert_decoder(dims: ModelDims, state: StateDict) -> Weights:
    """Decoder tensors under TensorRT-LLM names, in the checkpoint's dtype."""
    token_embedding = _tensor(state, "decoder.token_embedding.weight")
    weights: Weights = {
        "transformer.vocab_embedding.weight": token_embedding,
        "transformer.position_embedding.weight": _tensor(state, "decoder.positional_embedding"),
        # Whisper ties the output projection to the token embedding; TRT-LLM wants its own copy.
        "lm_head.weight": token_embedding.clone(),
    }
    for i in range(dims.n_text_layer):
        source, target = f"decoder.blocks.{i}", f"transformer.layers.{i}"
        weights |= _layer_norm(state, f"{source}.attn_ln", f"{target}.self_attention_layernorm")
        weights |= _attention(state, f"{source}.attn", f"{target}.self_attention")
        weights |= _layer_norm(
            state, f"{source}.cross_attn_ln", f"{target}.cross_attention_layernorm"
        )
        weights |= _attention(state, f"{source}.cross_attn", f"{target}.cross_attention")
        weights |= _layer_norm(state, f"{source}.mlp_ln", f"{target}.mlp_layernorm")
        weights |= _mlp(state, f"{source}.mlp", f"{target}.mlp")
    weights |= _layer_norm(state, "decoder.ln", "transformer.ln_f")
    return weights


def cast_weights(weights: Weights, dtype: torch.dtype) -> Weights:
    """Every tensor in `dtype`, contiguous (safetensors stores dense row-major data)."""
    return {name: tensor.to(dtype).contiguous() for name, tensor in weights.items()}


def _tensor(state: StateDict, name: str) -> torch.Tensor:
    try:
        return state[name]
    except KeyError:
        raise CheckpointFormatError(f"checkpoint has no tensor {name!r}") from None


def _conv(state: StateDict, source: str, target: str) -> Weights:
    # TRT-LLM runs Whisper's Conv1d as a Conv2d, hence the trailing unit kernel dimension.
    return {
        f"{target}.weight": _tensor(state, f"{source}.weight").unsqueeze(-1),
        f"{target}.bias": _tensor(state, f"{source}.bias"),
    }


def _layer_norm(state: StateDict, source: str, target: str) -> Weights:
    return {
        f"{target}.weight": _tensor(state, f"{source}.weight"),
        f"{target}.bias": _tensor(state, f"{source}.bias"),
    }


def _attention(state: StateDict, source: str, target: str) -> Weights:
    query_bias = _tensor(state, f"{source}.query.bias")
    return {
        f"{target}.qkv.weight": torch.cat(
            [_tensor(state, f"{source}.{part}.weight") for part in ("query", "key", "value")]
        ),
        # Whisper's key projection has no bias; the fused layer needs zeros in its slot.
        f"{target}.qkv.bias": torch.cat(
            [query_bias, torch.zeros_like(query_bias), _tensor(state, f"{source}.value.bias")]
        ),
        f"{target}.dense.weight": _tensor(state, f"{source}.out.weight"),
        f"{target}.dense.bias": _tensor(state, f"{source}.out.bias"),
    }


def _mlp(state: StateDict, source: str, target: str) -> Weights:
    # OpenAI's MLP is Sequential(Linear, GELU, Linear): indices 0 and 2.
    return {
        f"{target}.fc.weight": _tensor(state, f"{source}.0.weight"),
        f"{target}.fc.bias": _tensor(state, f"{source}.0.bias"),
        f"{target}.proj.weight": _tensor(state, f"{source}.2.weight"),
        f"{target}.proj.bias": _tensor(state, f"{source}.2.bias"),
    }


# --- writing -------------------------------------------------------------------------------


def write_trtllm_checkpoint(
    checkpoint_path: Path,
    out_dir: Path,
    *,
    dtype: str = "float16",
    logits_dtype: str = "float16",
    quant_algo: str | None = None,
) -> ModelDims:
    """Convert `checkpoint_path` into `out_dir/{encoder,decoder}/{config.json,rank0.safetensors}`.

    `quant_algo` "W8A16"/"W4A16" quantizes the GEMM weights with tensorrt_llm (GPU only).
    One component at a time is held in memory.
    """
    if dtype not in DTYPES or logits_dtype not in LOGITS_DTYPES:
        raise ValueError(f"unsupported dtype {dtype!r} / logits dtype {logits_dtype!r}")
    checkpoint = load_openai_checkpoint(checkpoint_path)
    dims = checkpoint.dims
    _write_component(
        out_dir / "encoder",
        encoder_config(dims, dtype, quant_algo),
        lambda: convert_encoder(dims, checkpoint.state),
        DTYPES[dtype],
        quant_algo,
    )
    _write_component(
        out_dir / "decoder",
        decoder_config(dims, dtype, logits_dtype, quant_algo),
        lambda: convert_decoder(dims, checkpoint.state),
        DTYPES[dtype],
        quant_algo,
    )
    return dims


def _write_component(
    component_dir: Path,
    config: dict[str, object],
    convert: Callable[[], Weights],
    dtype: torch.dtype,
    quant_algo: str | None,
) -> None:
    _LOGGER.info("converting %s", component_dir.name)
    component_dir.mkdir(parents=True, exist_ok=True)
    (component_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    weights = cast_weights(convert(), dtype)
    if quant_algo is not None:
        weights = quantize_weight_only(weights, quant_algo)
    save_file(weights, str(component_dir / "rank0.safetensors"))
