"""Word alignment for the PyTorch Whisper: text tokens matched to encoder frames.

Whisper's method (openai/whisper `timing.py`): the decoder reads the window's text once more,
teacher-forced, and the cross-attention of the model's alignment heads (the heads whose
attention follows the speech) says which 20 ms frame each token listens to. Per head, the
attention over the window's real frames is standardised across tokens and median-filtered
along time; the heads' mean is a token-by-frame similarity, and dynamic time warping finds the
monotonic path through it that the pipeline's `words.py` turns into word times. The same pass's
logits give each text token's probability.

The normal decode path uses `scaled_dot_product_attention`, which returns no weights, so this
pass runs the decoder eagerly and computes softmax(QK^T) explicitly, for the alignment heads
only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

from whisperwire.server.engine import Alignment
from whisperwire.server.engines.torch_whisper.checkpoints import AlignmentHeads
from whisperwire.server.engines.torch_whisper.model import Whisper, logits

MEDIAN_FILTER_WIDTH = 7  # encoder frames (140 ms), as Whisper smooths the attention


@torch.inference_mode()
def align(
    model: Whisper,
    audio: Tensor,
    prompts: Sequence[Sequence[int]],
    text_tokens: Sequence[Sequence[int]],
    num_frames: Sequence[int],
    *,
    heads: AlignmentHeads,
    no_timestamps: int,
    eot: int,
) -> list[Alignment]:
    """Align each item's text tokens to its window, the batch in one decoder pass.

    `audio` [B, 1500, state] is the encoder output; `prompts` the start-of-transcript
    sequences; `num_frames` each window's log-mel frames that hold audio (two per encoder
    frame). Each item's path runs from its first text token to the end-of-text after its last.
    """
    sequences = [[*p, no_timestamps, *t, eot] for p, t in zip(prompts, text_tokens, strict=True)]
    tokens = _right_padded(sequences, fill=eot, device=audio.device)
    hidden, scores = forced_pass(model, audio, tokens, heads)
    out = []
    for row, (prompt, text, frames) in enumerate(
        zip(prompts, text_tokens, num_frames, strict=True)
    ):
        # Position len(prompt) holds <|notimestamps|>, whose output predicts the first text
        # token; the last text token's output predicts end-of-text.
        first, length = len(prompt), len(prompt) + len(text) + 2
        audio_frames = max(1, frames // 2)
        matrix = attention_matrix(scores[row, :, :length, :audio_frames])
        text_indices, time_indices = dtw_path(-matrix[first : length - 1].double().cpu().numpy())
        probs = text_token_probs(model, hidden[row, first : first + len(text)], text, eot)
        out.append(Alignment(text_indices, time_indices, probs))
    return out


def _right_padded(sequences: Sequence[Sequence[int]], *, fill: int, device: torch.device) -> Tensor:
    """[B, S] tokens; causal attention keeps each row's padding from affecting its tokens."""
    length = max(len(s) for s in sequences)
    return torch.tensor([[*s, *[fill] * (length - len(s))] for s in sequences], device=device)


def forced_pass(
    model: Whisper, audio: Tensor, tokens: Tensor, heads: AlignmentHeads
) -> tuple[Tensor, Tensor]:
    """One eager decoder pass over whole token sequences [B, S].

    Returns the final hidden states [B, S, state] and the alignment heads' scaled
    cross-attention scores QK^T/sqrt(d) [B, len(heads), S, 1500] in float32, before softmax
    (each window's softmax covers only its real frames).
    """
    decoder = model.decoder
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    x = decoder.token_embedding(tokens) + decoder.positional_embedding[positions]
    scores: list[Tensor] = []
    for layer, block in enumerate(decoder.layers()):
        q, k, v = block.attn.project_qkv(block.attn_ln(x))
        x = x + block.attn.merge(F.scaled_dot_product_attention(q, k, v, is_causal=True))
        cross = block.cross_attn
        q = cross.heads(cross.query(block.cross_attn_ln(x)))
        k, v = cross.heads(cross.key(audio)), cross.heads(cross.value(audio))
        x = x + cross.merge(F.scaled_dot_product_attention(q, k, v))
        chosen = [head for at, head in heads if at == layer]
        if chosen:
            scores.append(_attention_scores(q[:, chosen], k[:, chosen]))
        x = x + block.mlp(block.mlp_ln(x))
    return decoder.ln(x), torch.cat(scores, dim=1)


def _attention_scores(q: Tensor, k: Tensor) -> Tensor:
    """QK^T/sqrt(d) [B, H, S, frames], in float32 whatever the model runs in."""
    scale: float = q.shape[-1] ** -0.5
    return (q.float() @ k.float().transpose(-1, -2)) * scale


def attention_matrix(scores: Tensor) -> Tensor:
    """[heads, tokens, frames] scores of one window → [tokens, frames] token-frame similarity:
    per head, softmax over the frames, standardised across the tokens, median-filtered along
    time; then the mean over heads."""
    weights = scores.softmax(dim=-1)
    std, mean = torch.std_mean(weights, dim=-2, keepdim=True, correction=0)
    # A frame every token attends to alike (a one-frame window) carries no timing: 0, not NaN.
    weights = (weights - mean) / std.clamp_min(1e-8)
    return median_filter(weights, MEDIAN_FILTER_WIDTH).mean(dim=0)


def median_filter(x: Tensor, width: int) -> Tensor:
    """Median of each `width`-wide (odd) window along the last dimension, edges reflected."""
    pad = width // 2
    if x.shape[-1] <= pad:  # too short to reflect: nothing to smooth
        return x
    padded = F.pad(x, (pad, pad), mode="reflect")
    return padded.unfold(-1, width, 1).median(dim=-1).values


def text_token_probs(model: Whisper, hidden: Tensor, text: Sequence[int], eot: int) -> list[float]:
    """Each text token's probability given the ones before it, over the text vocabulary (the
    tokens below end-of-text), as Whisper reports word probabilities."""
    probs = logits(model, hidden)[:, :eot].softmax(dim=-1)
    index = torch.tensor(list(text), device=probs.device, dtype=torch.long)
    chosen: list[float] = probs.gather(-1, index[:, None])[:, 0].tolist()
    return chosen


def dtw_path(cost: npt.NDArray[np.float64]) -> tuple[list[int], list[int]]:
    """The cheapest monotonic path through `cost` [N, M] from (0, 0) to (N-1, M-1), as
    (row indices, column indices): Whisper's dynamic time warping, where each step moves one
    row down, one column right, or both, and

        total[i, j] = cost[i, j] + min(total[i-1, j-1], total[i-1, j], total[i, j-1]).

    Rows are filled one at a time, each with whole-array operations: with
    a[j] = min(total[i-1, j-1], total[i-1, j]) the row's recurrence
    t[j] = c[j] + min(a[j], t[j-1]) unrolls to t[j] = S[j] + min over k <= j of
    (a[k] - S[k-1]), S being the running sum of the row's costs: one cumulative minimum.
    """
    rows, columns = cost.shape
    # total[i + 1, j + 1] is the cheapest path to cell (i, j); row and column 0 are the start.
    total = np.full((rows + 1, columns + 1), np.inf)
    total[0, 0] = 0.0
    for i in range(1, rows + 1):
        above = total[i - 1]
        reach = np.minimum(above[:-1], above[1:])
        running = np.cumsum(cost[i - 1])
        before = np.concatenate(([0.0], running[:-1]))
        total[i, 1:] = running + np.minimum.accumulate(reach - before)
    return _backtrace(total)


def _backtrace(total: npt.NDArray[np.float64]) -> tuple[list[int], list[int]]:
    """Walk back from the last cell to the first along the cheapest predecessors (Whisper's
    order on ties: diagonal only when strictly cheapest, then up, else left)."""
    diagonal, up, left = total[:-1, :-1], total[:-1, 1:], total[1:, :-1]
    moves = np.where(
        (diagonal < up) & (diagonal < left), 0, np.where((up < diagonal) & (up < left), 1, 2)
    )
    i, j = moves.shape
    path: list[tuple[int, int]] = []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        move = moves[i - 1, j - 1]
        i -= int(move != 2)  # diagonal or up
        j -= int(move != 1)  # diagonal or left
    path.reverse()
    return [i for i, _ in path], [j for _, j in path]
