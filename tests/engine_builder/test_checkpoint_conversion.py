"""OpenAI checkpoint → TensorRT-LLM checkpoint: names, shapes, dtypes, values and configs."""

from __future__ import annotations

import importlib.machinery
import json
import math
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from openai_layout import LARGE_V3_DIMS, TINY_DIMS, meta_state
from safetensors.torch import load_file

from engine_builder.convert import (
    ModelDims,
    cast_weights,
    convert_decoder,
    convert_encoder,
    decoder_config,
    encoder_config,
    write_trtllm_checkpoint,
)
from engine_builder.errors import (
    TRTLLM_INSTALL_HINT,
    CheckpointFormatError,
    QuantizationUnavailableError,
)

Shapes = dict[str, tuple[int, ...]]


def expected_encoder_shapes(dims: dict[str, int]) -> Shapes:
    width = dims["n_audio_state"]
    shapes: Shapes = {
        "transformer.position_embedding.weight": (dims["n_audio_ctx"], width),
        "transformer.conv1.weight": (width, dims["n_mels"], 3, 1),
        "transformer.conv1.bias": (width,),
        "transformer.conv2.weight": (width, width, 3, 1),
        "transformer.conv2.bias": (width,),
        "transformer.ln_f.weight": (width,),
        "transformer.ln_f.bias": (width,),
    }
    for i in range(dims["n_audio_layer"]):
        layer = f"transformer.layers.{i}"
        shapes |= _norm_shapes(f"{layer}.attention_layernorm", width)
        shapes |= _attention_shapes(f"{layer}.attention", width)
        shapes |= _norm_shapes(f"{layer}.mlp_layernorm", width)
        shapes |= _mlp_shapes(f"{layer}.mlp", width)
    return shapes


def expected_decoder_shapes(dims: dict[str, int]) -> Shapes:
    width = dims["n_text_state"]
    shapes: Shapes = {
        "transformer.vocab_embedding.weight": (dims["n_vocab"], width),
        "transformer.position_embedding.weight": (dims["n_text_ctx"], width),
        "lm_head.weight": (dims["n_vocab"], width),
        "transformer.ln_f.weight": (width,),
        "transformer.ln_f.bias": (width,),
    }
    for i in range(dims["n_text_layer"]):
        layer = f"transformer.layers.{i}"
        shapes |= _norm_shapes(f"{layer}.self_attention_layernorm", width)
        shapes |= _attention_shapes(f"{layer}.self_attention", width)
        shapes |= _norm_shapes(f"{layer}.cross_attention_layernorm", width)
        shapes |= _attention_shapes(f"{layer}.cross_attention", width)
        shapes |= _norm_shapes(f"{layer}.mlp_layernorm", width)
        shapes |= _mlp_shapes(f"{layer}.mlp", width)
    return shapes


def _norm_shapes(prefix: str, width: int) -> Shapes:
    return {f"{prefix}.weight": (width,), f"{prefix}.bias": (width,)}


def _attention_shapes(prefix: str, width: int) -> Shapes:
    return {
        f"{prefix}.qkv.weight": (3 * width, width),
        f"{prefix}.qkv.bias": (3 * width,),
        f"{prefix}.dense.weight": (width, width),
        f"{prefix}.dense.bias": (width,),
    }


def _mlp_shapes(prefix: str, width: int) -> Shapes:
    return {
        f"{prefix}.fc.weight": (4 * width, width),
        f"{prefix}.fc.bias": (4 * width,),
        f"{prefix}.proj.weight": (width, 4 * width),
        f"{prefix}.proj.bias": (width,),
    }


def direct_copies(dims: dict[str, int], component: str) -> dict[str, str]:
    """TRT-LLM name → OpenAI name for tensors that are copied unchanged."""
    copies: dict[str, str] = {}
    if component == "encoder":
        copies |= _norm_copy("transformer.ln_f", "encoder.ln_post")
        for i in range(dims["n_audio_layer"]):
            layer, block = f"transformer.layers.{i}", f"encoder.blocks.{i}"
            copies |= _norm_copy(f"{layer}.attention_layernorm", f"{block}.attn_ln")
            copies |= _dense_copy(f"{layer}.attention", f"{block}.attn")
            copies |= _norm_copy(f"{layer}.mlp_layernorm", f"{block}.mlp_ln")
            copies |= _mlp_copy(f"{layer}.mlp", f"{block}.mlp")
        return copies
    copies |= _norm_copy("transformer.ln_f", "decoder.ln")
    copies["transformer.vocab_embedding.weight"] = "decoder.token_embedding.weight"
    copies["lm_head.weight"] = "decoder.token_embedding.weight"
    copies["transformer.position_embedding.weight"] = "decoder.positional_embedding"
    for i in range(dims["n_text_layer"]):
        layer, block = f"transformer.layers.{i}", f"decoder.blocks.{i}"
        copies |= _norm_copy(f"{layer}.self_attention_layernorm", f"{block}.attn_ln")
        copies |= _dense_copy(f"{layer}.self_attention", f"{block}.attn")
        copies |= _norm_copy(f"{layer}.cross_attention_layernorm", f"{block}.cross_attn_ln")
        copies |= _dense_copy(f"{layer}.cross_attention", f"{block}.cross_attn")
        copies |= _norm_copy(f"{layer}.mlp_layernorm", f"{block}.mlp_ln")
        copies |= _mlp_copy(f"{layer}.mlp", f"{block}.mlp")
    return copies


def _norm_copy(target: str, source: str) -> dict[str, str]:
    return {f"{target}.weight": f"{source}.weight", f"{target}.bias": f"{source}.bias"}


def _dense_copy(target: str, source: str) -> dict[str, str]:
    return {
        f"{target}.dense.weight": f"{source}.out.weight",
        f"{target}.dense.bias": f"{source}.out.bias",
    }


def _mlp_copy(target: str, source: str) -> dict[str, str]:
    return {
        f"{target}.fc.weight": f"{source}.0.weight",
        f"{target}.fc.bias": f"{source}.0.bias",
        f"{target}.proj.weight": f"{source}.2.weight",
        f"{target}.proj.bias": f"{source}.2.bias",
    }


def reference_sinusoids(length: int, channels: int) -> np.ndarray:
    """Whisper's encoder positions, element by element: sin in the first half, cos after."""
    half = channels // 2
    increment = math.log(10000) / (half - 1)
    table = np.empty((length, channels), dtype=np.float64)
    for channel in range(half):
        timescale = math.exp(-increment * channel)
        for position in range(length):
            table[position, channel] = math.sin(position * timescale)
            table[position, half + channel] = math.cos(position * timescale)
    return table


@pytest.fixture(scope="module")
def converted_tiny(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Path:
    out = tmp_path_factory.mktemp("trtllm_ckpt")
    dims = write_trtllm_checkpoint(tiny_checkpoint, out)
    assert dims == ModelDims(**TINY_DIMS)
    return out


def _load(converted: Path, component: str) -> dict[str, torch.Tensor]:
    return load_file(str(converted / component / "rank0.safetensors"))


@pytest.mark.parametrize(
    ("component", "expected"),
    [("encoder", expected_encoder_shapes), ("decoder", expected_decoder_shapes)],
)
def test_every_tensor_name_shape_and_dtype(
    converted_tiny: Path, component: str, expected: Callable[[dict[str, int]], Shapes]
) -> None:
    weights = _load(converted_tiny, component)
    assert {name: tuple(t.shape) for name, t in weights.items()} == expected(TINY_DIMS)
    assert {t.dtype for t in weights.values()} == {torch.float16}
    assert sorted(p.name for p in (converted_tiny / component).iterdir()) == [
        "config.json",
        "rank0.safetensors",
    ]


@pytest.mark.parametrize("component", ["encoder", "decoder"])
def test_unchanged_tensors_are_copied_exactly(
    converted_tiny: Path, tiny_state: dict[str, torch.Tensor], component: str
) -> None:
    weights = _load(converted_tiny, component)
    copies = direct_copies(TINY_DIMS, component)
    assert copies  # the table covers something
    for target, source in copies.items():
        assert torch.equal(weights[target], tiny_state[source]), target


@pytest.mark.parametrize(
    ("component", "target", "source"),
    [
        ("encoder", "attention", "attn"),
        ("decoder", "self_attention", "attn"),
        ("decoder", "cross_attention", "cross_attn"),
    ],
)
def test_qkv_is_fused_in_q_k_v_order_with_zero_key_bias(
    converted_tiny: Path,
    tiny_state: dict[str, torch.Tensor],
    component: str,
    target: str,
    source: str,
) -> None:
    weights = _load(converted_tiny, component)
    # tiny's encoder and decoder share width (384) and depth (4).
    width = TINY_DIMS["n_audio_state"]
    for i in range(TINY_DIMS["n_audio_layer"]):
        block = f"{component}.blocks.{i}.{source}"
        qkv_weight = weights[f"transformer.layers.{i}.{target}.qkv.weight"]
        qkv_bias = weights[f"transformer.layers.{i}.{target}.qkv.bias"]
        q, k, v = qkv_weight[:width], qkv_weight[width : 2 * width], qkv_weight[2 * width :]
        assert torch.equal(q, tiny_state[f"{block}.query.weight"])
        assert torch.equal(k, tiny_state[f"{block}.key.weight"])
        assert torch.equal(v, tiny_state[f"{block}.value.weight"])
        assert torch.equal(qkv_bias[:width], tiny_state[f"{block}.query.bias"])
        assert torch.count_nonzero(qkv_bias[width : 2 * width]) == 0
        assert torch.equal(qkv_bias[2 * width :], tiny_state[f"{block}.value.bias"])


def test_encoder_positions_are_regenerated_sinusoids(
    converted_tiny: Path, tiny_state: dict[str, torch.Tensor]
) -> None:
    positions = _load(converted_tiny, "encoder")["transformer.position_embedding.weight"]
    reference = reference_sinusoids(TINY_DIMS["n_audio_ctx"], TINY_DIMS["n_audio_state"])
    np.testing.assert_allclose(positions.float().numpy(), reference, atol=1e-3)
    # Regenerated, not copied from the checkpoint's (here random) buffer.
    assert not torch.equal(positions, tiny_state["encoder.positional_embedding"])


def test_conv_weights_get_a_trailing_unit_dimension(
    converted_tiny: Path, tiny_state: dict[str, torch.Tensor]
) -> None:
    weights = _load(converted_tiny, "encoder")
    for conv in ("conv1", "conv2"):
        converted = weights[f"transformer.{conv}.weight"]
        assert converted.shape[-1] == 1
        assert torch.equal(converted[..., 0], tiny_state[f"encoder.{conv}.weight"])
        assert torch.equal(weights[f"transformer.{conv}.bias"], tiny_state[f"encoder.{conv}.bias"])


def test_configs_have_the_trtllm_fields(converted_tiny: Path) -> None:
    encoder = json.loads((converted_tiny / "encoder" / "config.json").read_text())
    decoder = json.loads((converted_tiny / "decoder" / "config.json").read_text())
    assert encoder == {
        "architecture": "WhisperEncoder",
        "dtype": "float16",
        "num_hidden_layers": 4,
        "num_attention_heads": 6,
        "hidden_size": 384,
        "max_position_embeddings": 1500,
        "has_position_embedding": True,
        "n_mels": 80,
        "vocab_size": 51865,
        "hidden_act": "gelu",
        "num_languages": 99,
        "quantization": {"quant_algo": None},
    }
    assert decoder == {
        "architecture": "DecoderModel",
        "dtype": "float16",
        "logits_dtype": "float16",
        "num_hidden_layers": 4,
        "num_attention_heads": 6,
        "hidden_size": 384,
        "norm_epsilon": 1e-5,
        "vocab_size": 51865,
        "hidden_act": "gelu",
        "use_parallel_embedding": False,
        "embedding_sharding_dim": 0,
        "max_position_embeddings": 448,
        "use_prompt_tuning": False,
        "head_size": 64,
        "has_position_embedding": True,
        "layernorm_type": 0,
        "has_attention_qkvo_bias": True,
        "has_mlp_bias": True,
        "has_model_final_layernorm": True,
        "has_embedding_layernorm": False,
        "has_embedding_scale": False,
        "ffn_hidden_size": 1536,
        "q_scaling": 1.0,
        "layernorm_position": 0,
        "relative_attention": False,
        "max_distance": 0,
        "num_buckets": 0,
        "model_type": "whisper",
        "rescale_before_lm_head": False,
        "encoder_hidden_size": 384,
        "encoder_num_heads": 6,
        "encoder_head_size": None,
        "skip_cross_kv": False,
        "quantization": {"quant_algo": None},
    }


@pytest.mark.parametrize(
    ("name", "dtype"), [("bfloat16", torch.bfloat16), ("float32", torch.float32)]
)
def test_dtype_cast_applies_to_every_tensor(
    tiny_state: dict[str, torch.Tensor], name: str, dtype: torch.dtype
) -> None:
    dims = ModelDims(**TINY_DIMS)
    weights = cast_weights(convert_encoder(dims, tiny_state), dtype)
    assert {t.dtype for t in weights.values()} == {dtype}
    assert all(t.is_contiguous() for t in weights.values())
    assert encoder_config(dims, name, None)["dtype"] == name


def test_large_v3_shape_plan_without_real_weights() -> None:
    dims = ModelDims(**LARGE_V3_DIMS)
    state = meta_state(LARGE_V3_DIMS)
    encoder = cast_weights(convert_encoder(dims, state), torch.float16)
    decoder = cast_weights(convert_decoder(dims, state), torch.float16)
    assert {n: tuple(t.shape) for n, t in encoder.items()} == expected_encoder_shapes(LARGE_V3_DIMS)
    assert {n: tuple(t.shape) for n, t in decoder.items()} == expected_decoder_shapes(LARGE_V3_DIMS)
    assert {t.dtype for t in [*encoder.values(), *decoder.values()]} == {torch.float16}
    # Only the regenerated positions hold data; everything else stayed shape-only.
    real = [n for n, t in [*encoder.items(), *decoder.items()] if t.device.type != "meta"]
    assert real == ["transformer.position_embedding.weight"]
    enc_config = encoder_config(dims, "float16", None)
    assert (enc_config["n_mels"], enc_config["num_languages"]) == (128, 100)
    dec_config = decoder_config(dims, "float16", "float16", None)
    assert (dec_config["num_hidden_layers"], dec_config["head_size"]) == (32, 64)


def test_english_only_vocabulary_has_99_languages_and_is_not_multilingual() -> None:
    dims = ModelDims(**(TINY_DIMS | {"n_vocab": 51864}))
    assert not dims.multilingual
    assert dims.num_languages == 99


def test_checkpoint_without_dims_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    torch.save({"model_state_dict": {}}, path)
    with pytest.raises(CheckpointFormatError, match="dims"):
        write_trtllm_checkpoint(path, tmp_path / "out")


def test_missing_tensor_is_named(tmp_path: Path, tiny_state: dict[str, torch.Tensor]) -> None:
    state = {n: t for n, t in tiny_state.items() if n != "encoder.blocks.2.attn.key.weight"}
    path = tmp_path / "incomplete.pt"
    torch.save({"dims": TINY_DIMS, "model_state_dict": state}, path)
    with pytest.raises(CheckpointFormatError, match=r"encoder\.blocks\.2\.attn\.key\.weight"):
        write_trtllm_checkpoint(path, tmp_path / "out")


def test_file_that_is_not_a_checkpoint_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointFormatError, match="cannot load"):
        write_trtllm_checkpoint(path, tmp_path / "out")


@pytest.mark.usefixtures("no_tensorrt_llm")
def test_weight_only_without_tensorrt_llm_is_a_clear_error(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    with pytest.raises(QuantizationUnavailableError, match=re.escape(TRTLLM_INSTALL_HINT)):
        write_trtllm_checkpoint(tiny_checkpoint, tmp_path / "out", quant_algo="W8A16")


class _FakeTrtllmQuantizer:
    """Stands in for tensorrt_llm's GPU-only quantize op; checks how it is called."""

    GEMMS = ("qkv.weight", "dense.weight", "fc.weight", "proj.weight")

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(
        self, weights: dict[str, torch.Tensor], *, quant_algo: str, plugin: bool
    ) -> dict[str, torch.Tensor]:
        assert plugin is True
        assert quant_algo == "W8A16"
        assert {t.dtype for t in weights.values()} == {torch.float16}
        self.calls.append(quant_algo)
        for name in [n for n in weights if n.endswith(self.GEMMS)]:
            tensor = weights[name]
            weights[name] = torch.zeros(tensor.shape[::-1], dtype=torch.int8)
            weights[name.replace(".weight", ".per_channel_scale")] = torch.ones(tensor.shape[0])
        return weights


def _install_fake_tensorrt_llm(
    monkeypatch: pytest.MonkeyPatch, quantizer: _FakeTrtllmQuantizer
) -> None:
    modules = {
        name: types.ModuleType(name)
        for name in ("tensorrt_llm", "tensorrt_llm.models", "tensorrt_llm.models.convert_utils",
                     "tensorrt_llm.quantization")
    }  # fmt: skip
    for name, module in modules.items():
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, module)
    modules["tensorrt_llm.models.convert_utils"].weight_only_quantize_dict = quantizer  # type: ignore[attr-defined]
    modules["tensorrt_llm.quantization"].QuantAlgo = str  # type: ignore[attr-defined]


def test_weight_only_quantization_goes_through_tensorrt_llm(
    monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    quantizer = _FakeTrtllmQuantizer()
    _install_fake_tensorrt_llm(monkeypatch, quantizer)
    out = tmp_path / "int8"
    write_trtllm_checkpoint(tiny_checkpoint, out, quant_algo="W8A16")
    assert quantizer.calls == ["W8A16", "W8A16"]  # encoder, then decoder
    for component in ("encoder", "decoder"):
        config = json.loads((out / component / "config.json").read_text())
        assert config["quantization"] == {"quant_algo": "W8A16"}
        weights = _load(out, component)
        qkv = "transformer.layers.0." + (
            "attention" if component == "encoder" else "self_attention"
        )
        assert weights[f"{qkv}.qkv.weight"].dtype == torch.int8
        assert f"{qkv}.qkv.per_channel_scale" in weights
