"""Whisper's encoder and decoder in PyTorch, parameter names as in OpenAI's checkpoints.

Differences from OpenAI's reference model are for speed, not results: attention runs through
`scaled_dot_product_attention` (flash kernels on GPU), the decoder writes its self-attention
keys and values into a preallocated cache at a position held in a tensor, and cross-attention
keys and values are computed once per window into preallocated buffers. Those fixed
addresses are what lets one decode step be captured as a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class ModelDimensions:
    """OpenAI's `dims` of a checkpoint."""

    n_mels: int
    n_audio_ctx: int
    n_audio_state: int
    n_audio_head: int
    n_audio_layer: int
    n_vocab: int
    n_text_ctx: int
    n_text_state: int
    n_text_head: int
    n_text_layer: int


class LayerNorm(nn.LayerNorm):
    """PyTorch's layer norm accumulates half-precision inputs in float32 itself, so unlike
    OpenAI's model this one needs no casts (one kernel instead of five per norm)."""


class Attention(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)
        self._qkv: tuple[Tensor, Tensor] | None = None

    def fuse_qkv(self) -> None:
        """One projection for Q|K|V (a third of the kernel launches); key bias is zero."""
        weight = torch.cat([self.query.weight, self.key.weight, self.value.weight])
        zeros = torch.zeros_like(self.value.bias)
        self._qkv = weight, torch.cat([self.query.bias, zeros, self.value.bias])

    def project_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """[B, T, n_state] → Q, K, V as [B, H, T, d]."""
        if self._qkv is None:
            return self.heads(self.query(x)), self.heads(self.key(x)), self.heads(self.value(x))
        q, k, v = F.linear(x, *self._qkv).chunk(3, dim=-1)
        return self.heads(q), self.heads(k), self.heads(v)

    def heads(self, x: Tensor) -> Tensor:
        """[B, T, n_state] → [B, H, T, d]."""
        batch, length, _ = x.shape
        return x.view(batch, length, self.n_head, -1).transpose(1, 2)

    def merge(self, x: Tensor) -> Tensor:
        """[B, H, T, d] → [B, T, n_state]."""
        batch, _, length, _ = x.shape
        merged: Tensor = self.out(x.transpose(1, 2).reshape(batch, length, -1))
        return merged


class Mlp(nn.Sequential):
    def __init__(self, n_state: int) -> None:
        super().__init__(
            nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state)
        )


class EncoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.attn = Attention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.mlp = Mlp(n_state)
        self.mlp_ln = LayerNorm(n_state)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.attn.project_qkv(self.attn_ln(x))
        x = x + self.attn.merge(F.scaled_dot_product_attention(q, k, v))
        out: Tensor = x + self.mlp(self.mlp_ln(x))
        return out


class AudioEncoder(nn.Module):
    def __init__(self, dims: ModelDimensions) -> None:
        super().__init__()
        state = dims.n_audio_state
        self.conv1 = nn.Conv1d(dims.n_mels, state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(state, state, kernel_size=3, stride=2, padding=1)
        self.positional_embedding: Tensor
        self.register_buffer("positional_embedding", torch.empty(dims.n_audio_ctx, state))
        self.blocks = nn.ModuleList(
            EncoderBlock(state, dims.n_audio_head) for _ in range(dims.n_audio_layer)
        )
        self.ln_post = LayerNorm(state)

    def forward(self, mel: Tensor) -> Tensor:
        """[B, n_mels, 3000] log-mel → [B, 1500, n_state]."""
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).permute(0, 2, 1)
        x = x + self.positional_embedding.to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)  # type: ignore[no-any-return]


class DecoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int) -> None:
        super().__init__()
        self.attn = Attention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.cross_attn = Attention(n_state, n_head)
        self.cross_attn_ln = LayerNorm(n_state)
        self.mlp = Mlp(n_state)
        self.mlp_ln = LayerNorm(n_state)


class TextDecoder(nn.Module):
    def __init__(self, dims: ModelDimensions) -> None:
        super().__init__()
        state = dims.n_text_state
        self.token_embedding = nn.Embedding(dims.n_vocab, state)
        self.positional_embedding = nn.Parameter(torch.empty(dims.n_text_ctx, state))
        self.blocks = nn.ModuleList(
            DecoderBlock(state, dims.n_text_head) for _ in range(dims.n_text_layer)
        )
        self.ln = LayerNorm(state)

    def layers(self) -> list[DecoderBlock]:
        return cast(list[DecoderBlock], list(self.blocks))


class Whisper(nn.Module):
    def __init__(self, dims: ModelDimensions) -> None:
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(dims)
        self.decoder = TextDecoder(dims)

    def fuse(self) -> None:
        """After the weights are loaded and placed: fuse every self-attention's Q|K|V."""
        for module in self.modules():
            if isinstance(module, (EncoderBlock, DecoderBlock)):
                module.attn.fuse_qkv()


class DecoderCache:
    """Preallocated decoder state for up to `rows` sequences: self-attention K/V over the
    text context and cross-attention K/V over the 1500 audio frames, one slab per layer."""

    def __init__(self, model: Whisper, rows: int, *, device: torch.device, dtype: torch.dtype):
        dims = model.dims
        heads, head_dim = dims.n_text_head, dims.n_text_state // dims.n_text_head
        layers = dims.n_text_layer
        self.rows = rows
        self.text_ctx = dims.n_text_ctx

        def slab(length: int) -> Tensor:
            return torch.zeros(layers, rows, heads, length, head_dim, device=device, dtype=dtype)

        self.self_k, self.self_v = slab(dims.n_text_ctx), slab(dims.n_text_ctx)
        self.cross_k, self.cross_v = slab(dims.n_audio_ctx), slab(dims.n_audio_ctx)

    def fill_cross(self, model: Whisper, audio: Tensor, rows: slice | Tensor) -> None:
        """Compute every layer's cross-attention K/V of `audio` [B, 1500, state] into `rows`
        (a slice, or the indices of B rows)."""
        for i, block in enumerate(model.decoder.layers()):
            attn = block.cross_attn
            self.cross_k[i, rows] = attn.heads(attn.key(audio))
            self.cross_v[i, rows] = attn.heads(attn.value(audio))

    def reorder(self, source_rows: Tensor) -> None:
        """Beam search: row r takes the self-attention history of row source_rows[r]."""
        count = len(source_rows)
        self.self_k[:, :count] = self.self_k[:, source_rows]
        self.self_v[:, :count] = self.self_v[:, source_rows]


def decode_tokens(
    model: Whisper,
    cache: DecoderCache,
    tokens: Tensor,
    positions: Tensor,
    cache_index: Tensor,
    mask: Tensor,
) -> Tensor:
    """Run the decoder over `tokens` [B, S] of rows 0..B-1 and return hidden states [B, S, state].

    `positions` [B, S] index the positional embedding; `cache_index` [S] are the cache slots
    the S tokens' keys and values are written to ([B, S]: each row's own slots); `mask`
    [B, 1, S, L] says which of the first L cache slots each token may attend to (L bounds what
    attention reads). No host synchronisation: safe inside a CUDA graph.
    """
    decoder = model.decoder
    rows, length = tokens.shape[0], mask.shape[-1]
    x = decoder.token_embedding(tokens) + decoder.positional_embedding[positions]
    for i, block in enumerate(decoder.layers()):
        attn = block.attn
        q, k, v = attn.project_qkv(block.attn_ln(x))
        self_k, self_v = cache.self_k[i, :rows, :, :length], cache.self_v[i, :rows, :, :length]
        _write_slots(self_k, cache_index, k)
        _write_slots(self_v, cache_index, v)
        x = x + attn.merge(F.scaled_dot_product_attention(q, self_k, self_v, attn_mask=mask))
        x = _cross_attention_and_mlp(block, x, cache.cross_k[i, :rows], cache.cross_v[i, :rows])
    return decoder.ln(x)  # type: ignore[no-any-return]


def prefill_rows(model: Whisper, cache: DecoderCache, rows: Tensor, tokens: Tensor) -> Tensor:
    """Start fresh sequences in cache rows `rows` [B]: run `tokens` [B, S] (right-padded
    prompts) from position 0, write their keys and values to the rows' slots 0..S-1, and
    return hidden states [B, S, state]. A row's padding is overwritten as it decodes, and
    later steps attend only up to their own position, so it is never read."""
    decoder = model.decoder
    length = tokens.shape[1]
    x = decoder.token_embedding(tokens) + decoder.positional_embedding[:length]
    for i, block in enumerate(decoder.layers()):
        attn = block.attn
        q, k, v = attn.project_qkv(block.attn_ln(x))
        cache.self_k[i, rows, :, :length] = k
        cache.self_v[i, rows, :, :length] = v
        x = x + attn.merge(F.scaled_dot_product_attention(q, k, v, is_causal=True))
        x = _cross_attention_and_mlp(block, x, cache.cross_k[i, rows], cache.cross_v[i, rows])
    return decoder.ln(x)  # type: ignore[no-any-return]


def _cross_attention_and_mlp(
    block: DecoderBlock, x: Tensor, cross_k: Tensor, cross_v: Tensor
) -> Tensor:
    """The rest of a decoder block after self-attention: attend to the audio, then the MLP."""
    cross = block.cross_attn
    q = cross.heads(cross.query(block.cross_attn_ln(x)))
    x = x + cross.merge(F.scaled_dot_product_attention(q, cross_k, cross_v))
    return x + block.mlp(block.mlp_ln(x))  # type: ignore[no-any-return]


def _write_slots(cache: Tensor, index: Tensor, values: Tensor) -> None:
    """Write `values` [B, H, S, d] into `cache` [B, H, L, d] at slots `index` ([S] shared by
    every row, or [B, S] per row)."""
    if index.dim() == 1:
        cache.index_copy_(2, index, values)
        return
    rows, heads, _, dim = values.shape
    cache.scatter_(2, index[:, None, :, None].expand(rows, heads, -1, dim), values)


def logits(model: Whisper, hidden: Tensor) -> Tensor:
    """Vocabulary logits in float32 (the output projection is the tied token embedding)."""
    return (hidden @ model.decoder.token_embedding.weight.T).float()
