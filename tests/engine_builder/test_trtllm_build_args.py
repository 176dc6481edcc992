"""The trtllm-build command lines (pure) and the engine limits they encode."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from engine_builder.build import BuildPlan, resolve_precision
from engine_builder.catalog import resolve_model
from engine_builder.errors import InvalidOptionsError
from engine_builder.trtllm_build import BuildOptions, decoder_build_args, encoder_build_args


def test_encoder_args_for_the_cpp_runtime() -> None:
    args = encoder_build_args(
        Path("ckpt/encoder"), Path("out/encoder"), plugin_dtype="float16", options=BuildOptions()
    )
    assert args == [
        "--checkpoint_dir", "ckpt/encoder",
        "--output_dir", "out/encoder",
        "--kv_cache_type", "paged",
        "--remove_input_padding", "enable",
        "--moe_plugin", "disable",
        "--gemm_plugin", "disable",
        "--bert_attention_plugin", "float16",
        "--max_batch_size", "8",
        "--max_input_len", "3000",
        "--max_seq_len", "3000",
    ]  # fmt: skip


def test_decoder_args_for_the_cpp_runtime() -> None:
    options = BuildOptions(max_batch_size=16, max_beam_width=5, max_seq_len=400, max_input_len=100)
    args = decoder_build_args(
        Path("ckpt/decoder"), Path("out/decoder"), plugin_dtype="bfloat16", options=options
    )
    assert args == [
        "--checkpoint_dir", "ckpt/decoder",
        "--output_dir", "out/decoder",
        "--kv_cache_type", "paged",
        "--remove_input_padding", "enable",
        "--moe_plugin", "disable",
        "--gemm_plugin", "disable",
        "--bert_attention_plugin", "bfloat16",
        "--gpt_attention_plugin", "bfloat16",
        "--max_beam_width", "5",
        "--max_batch_size", "16",
        "--max_seq_len", "400",
        "--max_input_len", "100",
        "--max_encoder_input_len", "3000",
    ]  # fmt: skip


def test_deprecated_paged_kv_cache_flag_is_never_passed() -> None:
    for build_args in (encoder_build_args, decoder_build_args):
        args = build_args(Path("c"), Path("o"), plugin_dtype="float16", options=BuildOptions())
        assert "--paged_kv_cache" not in args


def test_defaults_fit_long_utterances_with_previous_text_context() -> None:
    options = BuildOptions()
    assert options.max_seq_len == 448  # Whisper's whole decoder context
    assert options.max_input_len == 228  # <|startofprev|> + 223 tokens + 4-token start sequence


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be positive"),
        ({"max_beam_width": -1}, "max_beam_width must be positive"),
        ({"max_seq_len": 449}, "exceeds Whisper's 448 positions"),
        ({"max_input_len": 448}, "leaves no room to generate"),
    ],
)
def test_impossible_limits_are_rejected(overrides: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidOptionsError, match=message):
        BuildOptions(**overrides)


def _plan(**changes: Any) -> BuildPlan:
    plan = BuildPlan(
        model=resolve_model("tiny"),
        precision=resolve_precision("float16"),
        options=BuildOptions(),
        trtllm_version="1.2.1",
        gpu_name="NVIDIA L4",
    )
    return dataclasses.replace(plan, **changes)


def test_weight_only_precisions_use_float16_plugins() -> None:
    plan = _plan(precision=resolve_precision("int4"))
    decoder = plan.build_args()["decoder"]
    assert decoder[decoder.index("--gpt_attention_plugin") + 1] == "float16"
    assert plan.precision.quant_algo == "W4A16"
    assert re.fullmatch(r"tiny-int4-trtllm1\.2\.1-l4-[0-9a-f]{8}", plan.key)


def test_build_args_use_paths_relative_to_the_staging_dir() -> None:
    encoder = _plan().build_args()["encoder"]
    assert encoder[:4] == ["--checkpoint_dir", "checkpoint/encoder", "--output_dir", "encoder"]


def test_key_is_stable_and_changes_with_every_input() -> None:
    base = _plan().key
    assert _plan().key == base
    variants = [
        _plan(options=BuildOptions(max_beam_width=1)),
        _plan(precision=resolve_precision("int8")),
        _plan(trtllm_version="1.2.0"),
        _plan(gpu_name="NVIDIA A10G"),
        _plan(model=resolve_model("tiny.en")),
    ]
    keys = {plan.key for plan in variants}
    assert len(keys) == len(variants) and base not in keys
    # Spelling variants of one GPU are one GPU.
    assert _plan(gpu_name="L4").key == base


@pytest.mark.parametrize("name", ["fp8", "bfloat16", "float32"])
def test_only_the_precisions_upstream_whisper_supports_are_offered(name: str) -> None:
    """docs/trtllm.md#precision: float16, and int8/int4 weight-only; no build that cannot serve."""
    with pytest.raises(InvalidOptionsError, match=r"choose one of: float16, int8, int4$"):
        resolve_precision(name)
