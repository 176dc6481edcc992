"""Weights for the PyTorch Whisper: OpenAI `.pt` checkpoints or CTranslate2 model directories.

Both come out as OpenAI's parameter names and `ModelDimensions`. CTranslate2 stores fused
projections (self-attention Q|K|V, cross-attention K|V, with a zero key bias) and calls layer
norms gamma/beta; the mapping below undoes exactly that. Each also may name the model's
alignment heads (the decoder cross-attention heads that word timing reads).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final

import numpy as np
import torch
from torch import Tensor

from whisperwire.server.engines.torch_whisper.ct2_format import Ct2Tensor, read_model_bin
from whisperwire.server.engines.torch_whisper.model import ModelDimensions
from whisperwire.server.errors import ModelNotFoundError

StateDict = dict[str, Tensor]
AlignmentHeads = tuple[tuple[int, int], ...]  # (decoder layer, head) pairs
_TEXT_CTX: Final = 448
_AUDIO_CTX: Final = 1500


def load_checkpoint(path: Path) -> tuple[ModelDimensions, StateDict]:
    """An OpenAI checkpoint file, or a CTranslate2 Whisper model directory."""
    if path.is_dir():
        return load_ct2_dir(path)
    if path.is_file():
        return load_openai_checkpoint(path)
    raise ModelNotFoundError(f"Whisper checkpoint {path} does not exist")


def load_openai_checkpoint(path: Path) -> tuple[ModelDimensions, StateDict]:
    """OpenAI's `{"dims": {...}, "model_state_dict": {...}}` file, loaded without pickle code."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        raise ModelNotFoundError(
            f"{path} is not a readable OpenAI Whisper checkpoint: {type(error).__name__}: {error}"
        ) from error
    if not isinstance(checkpoint, dict) or not {"dims", "model_state_dict"} <= checkpoint.keys():
        raise ModelNotFoundError(
            f"{path} has no 'dims' and 'model_state_dict': not a Whisper checkpoint"
        )
    try:
        dims = ModelDimensions(**checkpoint["dims"])
    except TypeError as error:
        raise ModelNotFoundError(f"{path}: unexpected 'dims' {checkpoint['dims']}") from error
    return dims, dict(checkpoint["model_state_dict"])


def load_alignment_heads(
    checkpoint: Path, dims: ModelDimensions, state: StateDict
) -> AlignmentHeads:
    """The model's alignment heads: a checkpoint's `alignment_heads` mask ([n_text_layer,
    n_text_head] booleans, dense or sparse), else a CTranslate2 directory's config.json list,
    else Whisper's default for a model that names none: every head of the second half of the
    decoder layers."""
    if "alignment_heads" in state:
        heads = _heads_of_mask(checkpoint, dims, state["alignment_heads"])
    elif checkpoint.is_dir():
        heads = _heads_of_config(checkpoint / "config.json")
    else:
        heads = ()
    if not heads:
        layers = range(dims.n_text_layer // 2, dims.n_text_layer)
        return tuple((layer, head) for layer in layers for head in range(dims.n_text_head))
    if any(
        not (0 <= layer < dims.n_text_layer and 0 <= head < dims.n_text_head)
        for layer, head in heads
    ):
        raise ModelNotFoundError(
            f"{checkpoint}: alignment heads {list(heads)} lie outside the decoder's "
            f"{dims.n_text_layer} layers of {dims.n_text_head} heads"
        )
    return heads


def _heads_of_mask(checkpoint: Path, dims: ModelDimensions, mask: Tensor) -> AlignmentHeads:
    if tuple(mask.shape) != (dims.n_text_layer, dims.n_text_head):
        raise ModelNotFoundError(
            f"{checkpoint}: alignment_heads is {list(mask.shape)}, not the decoder's "
            f"[{dims.n_text_layer}, {dims.n_text_head}] layers by heads"
        )
    dense = mask.to_dense() if mask.is_sparse else mask
    return tuple((int(layer), int(head)) for layer, head in dense.nonzero().tolist())


def _heads_of_config(config: Path) -> AlignmentHeads:
    if not config.is_file():
        return ()
    try:
        pairs = json.loads(config.read_text()).get("alignment_heads") or []
        return tuple((int(layer), int(head)) for layer, head in pairs)
    except (ValueError, TypeError, AttributeError) as error:
        raise ModelNotFoundError(f"{config}: unreadable alignment_heads ({error})") from error


def load_ct2_dir(directory: Path) -> tuple[ModelDimensions, StateDict]:
    model_bin = directory / "model.bin"
    if not model_bin.is_file():
        raise ModelNotFoundError(f"{model_bin} does not exist (not a CTranslate2 model directory)")
    spec, variables = read_model_bin(model_bin)
    if spec != "WhisperSpec":
        raise ModelNotFoundError(f"{model_bin} holds a {spec}, not a Whisper model")
    try:
        return _ct2_dims(variables), _ct2_state_dict(variables)
    except (KeyError, ValueError) as error:
        raise ModelNotFoundError(f"{model_bin}: unexpected Whisper layout ({error})") from error


def _ct2_dims(variables: Mapping[str, Ct2Tensor]) -> ModelDimensions:
    def layers(side: str) -> int:
        pattern = re.compile(rf"{side}/layer_(\d+)/")
        return 1 + max(int(m.group(1)) for name in variables if (m := pattern.match(name)))

    vocab, text_state = variables["decoder/embeddings/weight"].array.shape
    audio_state, n_mels, _ = variables["encoder/conv1/weight"].array.shape
    return ModelDimensions(
        n_mels=n_mels,
        n_audio_ctx=variables["encoder/position_encodings/encodings"].array.shape[0],
        n_audio_state=audio_state,
        n_audio_head=int(variables["encoder/num_heads"].array),
        n_audio_layer=layers("encoder"),
        n_vocab=vocab,
        n_text_ctx=variables["decoder/position_encodings/encodings"].array.shape[0],
        n_text_state=text_state,
        n_text_head=int(variables["decoder/num_heads"].array),
        n_text_layer=layers("decoder"),
    )


def _tensor(variable: Ct2Tensor) -> Tensor:
    if variable.dtype == "bfloat16":  # raw 16-bit words: reinterpret
        return torch.from_numpy(variable.array.copy()).view(torch.bfloat16)
    if variable.dtype not in ("float16", "float32"):
        raise ValueError(f"quantized weights ({variable.dtype}) are not supported")
    return torch.from_numpy(np.array(variable.array))


def _ct2_state_dict(variables: Mapping[str, Ct2Tensor]) -> StateDict:
    get: Callable[[str], Tensor] = lambda name: _tensor(variables[name])  # noqa: E731
    state: StateDict = {}
    for side in ("encoder", "decoder"):
        dims_layers = sorted(
            {int(m.group(1)) for n in variables if (m := re.match(rf"{side}/layer_(\d+)/", n))}
        )
        for i in dims_layers:
            src, dst = f"{side}/layer_{i}", f"{side}.blocks.{i}"
            _norm(state, get, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
            _fused(
                state,
                get,
                f"{src}/self_attention/linear_0",
                f"{dst}.attn",
                ("query", "key", "value"),
            )
            _linear(state, get, f"{src}/self_attention/linear_1", f"{dst}.attn.out")
            if side == "decoder":
                _norm(state, get, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
                _linear(state, get, f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
                _fused(
                    state, get, f"{src}/attention/linear_1", f"{dst}.cross_attn", ("key", "value")
                )
                _linear(state, get, f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
            _norm(state, get, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")
            _linear(state, get, f"{src}/ffn/linear_0", f"{dst}.mlp.0")
            _linear(state, get, f"{src}/ffn/linear_1", f"{dst}.mlp.2")
    for conv in ("conv1", "conv2"):
        _linear(state, get, f"encoder/{conv}", f"encoder.{conv}")
    state["encoder.positional_embedding"] = get("encoder/position_encodings/encodings")
    _norm(state, get, "encoder/layer_norm", "encoder.ln_post")
    state["decoder.token_embedding.weight"] = get("decoder/embeddings/weight")
    state["decoder.positional_embedding"] = get("decoder/position_encodings/encodings")
    _norm(state, get, "decoder/layer_norm", "decoder.ln")
    return state


def _norm(state: StateDict, get: Callable[[str], Tensor], src: str, dst: str) -> None:
    state[f"{dst}.weight"], state[f"{dst}.bias"] = get(f"{src}/gamma"), get(f"{src}/beta")


def _linear(state: StateDict, get: Callable[[str], Tensor], src: str, dst: str) -> None:
    state[f"{dst}.weight"], state[f"{dst}.bias"] = get(f"{src}/weight"), get(f"{src}/bias")


def _fused(
    state: StateDict,
    get: Callable[[str], Tensor],
    src: str,
    dst: str,
    parts: tuple[str, ...],
) -> None:
    """Split a fused projection; the key part has no bias in Whisper (CTranslate2 stores 0)."""
    weights = get(f"{src}/weight").chunk(len(parts))
    biases = get(f"{src}/bias").chunk(len(parts))
    for part, weight, bias in zip(parts, weights, biases, strict=True):
        state[f"{dst}.{part}.weight"] = weight.contiguous()
        if part != "key":
            state[f"{dst}.{part}.bias"] = bias.contiguous()
