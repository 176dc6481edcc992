"""The `trtllm-build` command lines for Whisper's encoder and decoder, and running them.

Flags target the C++ runtime (ModelRunnerCpp / Executor with in-flight batching): paged KV
cache and packed (padding-free) inputs, attention plugins on, GEMM plugin off (the only
combination NVIDIA's C++-runtime Whisper CI exercises).
"""

from __future__ import annotations

import collections
import logging
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from engine_builder.errors import (
    TRTLLM_INSTALL_HINT,
    InvalidOptionsError,
    TrtllmBuildError,
    TrtllmNotFoundError,
)

TRTLLM_BUILD = "trtllm-build"

# Mel frames of a 30 s window. The encoder engine must accept a whole window and the decoder's
# cross-attention must accept its encoder input length (1500 is a known trap: TensorRT-LLM#2338).
ENCODER_MAX_INPUT_LEN = 3000
# Every published Whisper model has 448 decoder positions (n_text_ctx).
WHISPER_TEXT_CTX = 448
# <|startofprev|> + up to 223 context tokens (OpenAI keeps n_text_ctx // 2 - 1) + the 4-token
# start sequence <|startoftranscript|><|lang|><|task|><|notimestamps|>.
DEFAULT_MAX_INPUT_LEN = 228

_OUTPUT_TAIL_LINES = 40
_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildOptions:
    """Engine limits; the runtime may use less but never more than these."""

    max_batch_size: int = 8
    max_beam_width: int = 4
    # Prompt + generated tokens per request; the full decoder context suits long utterances.
    max_seq_len: int = WHISPER_TEXT_CTX
    # Prompt tokens per request.
    max_input_len: int = DEFAULT_MAX_INPUT_LEN

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 1:
                raise InvalidOptionsError(f"{name} must be positive, got {value}")
        if self.max_seq_len > WHISPER_TEXT_CTX:
            raise InvalidOptionsError(
                f"max_seq_len {self.max_seq_len} exceeds Whisper's {WHISPER_TEXT_CTX} positions"
            )
        if self.max_input_len >= self.max_seq_len:
            raise InvalidOptionsError(
                f"max_input_len {self.max_input_len} leaves no room to generate within "
                f"max_seq_len {self.max_seq_len}"
            )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _common_flags(checkpoint_dir: Path, output_dir: Path) -> list[str]:
    return [
        "--checkpoint_dir", str(checkpoint_dir),
        "--output_dir", str(output_dir),
        # --kv_cache_type replaces the deprecated --paged_kv_cache; passing both can conflict.
        "--kv_cache_type", "paged",
        "--remove_input_padding", "enable",
        "--moe_plugin", "disable",
        "--gemm_plugin", "disable",
    ]  # fmt: skip


def encoder_build_args(
    checkpoint_dir: Path, output_dir: Path, *, plugin_dtype: str, options: BuildOptions
) -> list[str]:
    """trtllm-build arguments (without the program name) for the encoder engine."""
    return [
        *_common_flags(checkpoint_dir, output_dir),
        "--bert_attention_plugin", plugin_dtype,
        "--max_batch_size", str(options.max_batch_size),
        # The C++ runtime checks real feature lengths against these: allow a full window.
        "--max_input_len", str(ENCODER_MAX_INPUT_LEN),
        "--max_seq_len", str(ENCODER_MAX_INPUT_LEN),
    ]  # fmt: skip


def decoder_build_args(
    checkpoint_dir: Path, output_dir: Path, *, plugin_dtype: str, options: BuildOptions
) -> list[str]:
    """trtllm-build arguments (without the program name) for the decoder engine."""
    return [
        *_common_flags(checkpoint_dir, output_dir),
        "--bert_attention_plugin", plugin_dtype,
        "--gpt_attention_plugin", plugin_dtype,
        "--max_beam_width", str(options.max_beam_width),
        "--max_batch_size", str(options.max_batch_size),
        "--max_seq_len", str(options.max_seq_len),
        "--max_input_len", str(options.max_input_len),
        "--max_encoder_input_len", str(ENCODER_MAX_INPUT_LEN),
    ]  # fmt: skip


def find_trtllm_build() -> str:
    """The path of `trtllm-build`, or a `TrtllmNotFoundError` telling how to install it."""
    path = shutil.which(TRTLLM_BUILD)
    if path is None:
        raise TrtllmNotFoundError(
            f"{TRTLLM_BUILD} is not on PATH; install TensorRT-LLM on a machine with an NVIDIA "
            f"GPU: {TRTLLM_INSTALL_HINT}"
        )
    return path


def run_trtllm_build(executable: str, args: Sequence[str], *, cwd: Path) -> None:
    """Run trtllm-build, streaming its output to the log; raise with its tail on failure."""
    _LOGGER.info("running %s %s", TRTLLM_BUILD, " ".join(args))
    tail: collections.deque[str] = collections.deque(maxlen=_OUTPUT_TAIL_LINES)
    with subprocess.Popen(
        [executable, *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        assert process.stdout is not None  # guaranteed by stdout=PIPE
        for line in process.stdout:
            tail.append(line.rstrip("\n"))
            _LOGGER.info("%s: %s", TRTLLM_BUILD, tail[-1])
    if process.returncode != 0:
        output = "\n".join(tail)
        raise TrtllmBuildError(
            f"{TRTLLM_BUILD} exited with status {process.returncode}; last output:\n{output}"
        )
