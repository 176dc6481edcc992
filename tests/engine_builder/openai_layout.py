"""OpenAI Whisper checkpoint layout, written from openai/whisper's module structure.

Independent of engine_builder's converter so the tests can check it against this.
"""

from __future__ import annotations

import torch

TINY_DIMS = {
    "n_mels": 80,
    "n_vocab": 51865,
    "n_audio_ctx": 1500,
    "n_audio_state": 384,
    "n_audio_head": 6,
    "n_audio_layer": 4,
    "n_text_ctx": 448,
    "n_text_state": 384,
    "n_text_head": 6,
    "n_text_layer": 4,
}
LARGE_V3_DIMS = {
    "n_mels": 128,
    "n_vocab": 51866,
    "n_audio_ctx": 1500,
    "n_audio_state": 1280,
    "n_audio_head": 20,
    "n_audio_layer": 32,
    "n_text_ctx": 448,
    "n_text_state": 1280,
    "n_text_head": 20,
    "n_text_layer": 32,
}


def _attention_shapes(prefix: str, width: int) -> dict[str, tuple[int, ...]]:
    # OpenAI's MultiHeadAttention: key has no bias.
    return {
        f"{prefix}.query.weight": (width, width),
        f"{prefix}.query.bias": (width,),
        f"{prefix}.key.weight": (width, width),
        f"{prefix}.value.weight": (width, width),
        f"{prefix}.value.bias": (width,),
        f"{prefix}.out.weight": (width, width),
        f"{prefix}.out.bias": (width,),
    }


def _block_shapes(prefix: str, width: int, cross: bool) -> dict[str, tuple[int, ...]]:
    shapes = {
        **_attention_shapes(f"{prefix}.attn", width),
        f"{prefix}.attn_ln.weight": (width,),
        f"{prefix}.attn_ln.bias": (width,),
        f"{prefix}.mlp.0.weight": (4 * width, width),
        f"{prefix}.mlp.0.bias": (4 * width,),
        f"{prefix}.mlp.2.weight": (width, 4 * width),
        f"{prefix}.mlp.2.bias": (width,),
        f"{prefix}.mlp_ln.weight": (width,),
        f"{prefix}.mlp_ln.bias": (width,),
    }
    if cross:
        shapes |= _attention_shapes(f"{prefix}.cross_attn", width)
        shapes |= {
            f"{prefix}.cross_attn_ln.weight": (width,),
            f"{prefix}.cross_attn_ln.bias": (width,),
        }
    return shapes


def openai_state_shapes(dims: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """The persistent state_dict entries of openai/whisper's `Whisper` module."""
    audio, text = dims["n_audio_state"], dims["n_text_state"]
    shapes: dict[str, tuple[int, ...]] = {
        "encoder.conv1.weight": (audio, dims["n_mels"], 3),
        "encoder.conv1.bias": (audio,),
        "encoder.conv2.weight": (audio, audio, 3),
        "encoder.conv2.bias": (audio,),
        "encoder.positional_embedding": (dims["n_audio_ctx"], audio),
        "encoder.ln_post.weight": (audio,),
        "encoder.ln_post.bias": (audio,),
        "decoder.token_embedding.weight": (dims["n_vocab"], text),
        "decoder.positional_embedding": (dims["n_text_ctx"], text),
        "decoder.ln.weight": (text,),
        "decoder.ln.bias": (text,),
    }
    for i in range(dims["n_audio_layer"]):
        shapes |= _block_shapes(f"encoder.blocks.{i}", audio, cross=False)
    for i in range(dims["n_text_layer"]):
        shapes |= _block_shapes(f"decoder.blocks.{i}", text, cross=True)
    return shapes


def random_state(dims: dict[str, int], *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float16 weights (OpenAI publishes float16 checkpoints)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        name: torch.randn(shape, generator=generator).to(torch.float16)
        for name, shape in openai_state_shapes(dims).items()
    }


def meta_state(dims: dict[str, int]) -> dict[str, torch.Tensor]:
    """Shape-only float16 tensors: no memory, so large-v3 can be checked cheaply."""
    return {
        name: torch.empty(shape, dtype=torch.float16, device="meta")
        for name, shape in openai_state_shapes(dims).items()
    }
