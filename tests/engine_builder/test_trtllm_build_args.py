"""The trtllm-build command lines (pure) and the engine limits they encode."""

from __future__ import annotations

from pathlib import Path

import pytest

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
