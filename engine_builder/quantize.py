"""Weight-only int8/int4 quantization, delegated to TensorRT-LLM's own op.

The op (`torch.ops.trtllm.symmetric_quantize_last_axis_of_batched_matrix`) ships inside the
tensorrt_llm wheel, which needs CUDA libraries to import, so this only runs on a GPU machine.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from engine_builder.errors import TRTLLM_INSTALL_HINT, QuantizationUnavailableError

if TYPE_CHECKING:
    import torch

WEIGHT_ONLY_ALGOS = ("W8A16", "W4A16")


def require_quantization_support(quant_algo: str) -> None:
    """Fail before any download when weight-only quantization cannot run here."""
    if quant_algo not in WEIGHT_ONLY_ALGOS:
        raise ValueError(f"unsupported weight-only algorithm {quant_algo!r}")
    if importlib.util.find_spec("tensorrt_llm") is None:
        raise QuantizationUnavailableError(
            f"{quant_algo} weight-only quantization uses tensorrt_llm's quantize op, which is "
            f"not installed (it needs an NVIDIA GPU): {TRTLLM_INSTALL_HINT}"
        )


def quantize_weight_only(
    weights: dict[str, torch.Tensor], quant_algo: str
) -> dict[str, torch.Tensor]:
    """Quantize the GEMM weights (qkv/dense/fc/proj) and add their `per_channel_scale`s."""
    require_quantization_support(quant_algo)
    try:
        from tensorrt_llm.models.convert_utils import weight_only_quantize_dict
        from tensorrt_llm.quantization import QuantAlgo
    except ImportError as error:  # installed but unusable, e.g. no CUDA driver
        raise QuantizationUnavailableError(
            f"tensorrt_llm is installed but cannot be imported: {error}"
        ) from error
    quantized = weight_only_quantize_dict(weights, quant_algo=QuantAlgo(quant_algo), plugin=True)
    return dict(quantized)
