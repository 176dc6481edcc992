"""Whisper's logit rules as tensor masks: no host synchronisation, so they run inside a
CUDA graph.

The rules are OpenAI's: suppress the given tokens (and the control tokens that can never be
output); at the first sampled position suppress blank and end-of-text (suppress_blank); and
in timestamp mode apply the timestamp-token grammar: timestamps come in pairs, never
decrease, the first token is a timestamp no later than 1 s, and text is suppressed where the
timestamp tokens together are likelier than any single text token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

MAX_INITIAL_TIMESTAMP_INDEX = 50  # 1.0 s at 20 ms per timestamp token


@dataclass(frozen=True)
class SpecialTokens:
    eot: int
    sot: int
    no_speech: int
    no_timestamps: int
    timestamp_begin: int
    language_ids: tuple[int, ...]
    # Tokens no transcript may contain (task, start and no-speech markers).
    control_ids: tuple[int, ...]
    # What suppress_blank forbids at the first position: the space token(s) and end-of-text.
    blank_ids: tuple[int, ...]


@dataclass
class RuleState:
    """Per-row history the timestamp rules need; every tensor is [rows] except `sampled`."""

    sampled: Tensor  # long, tokens sampled so far: 0-dim (the same for every row) or [rows]
    last: Tensor  # last sampled token (any value before the first)
    penultimate: Tensor  # the one before it
    last_timestamp: Tensor  # latest timestamp token sampled, or -1
    timestamp_mode: Tensor  # bool: the prompt asked for timestamps


class LogitRules:
    """Masks built once per vocabulary; `suppress` is refilled per engine call."""

    def __init__(self, special: SpecialTokens, n_vocab: int, device: torch.device) -> None:
        self.special = special
        ids = torch.arange(n_vocab, device=device)
        self.token_ids = ids
        self.is_timestamp = ids >= special.timestamp_begin
        self.is_text = ids < special.eot
        self.before_timestamps = ids < special.timestamp_begin
        self.too_late_first = ids > special.timestamp_begin + MAX_INITIAL_TIMESTAMP_INDEX
        self.blank = _mask(n_vocab, special.blank_ids, device)
        self.no_timestamps = _mask(n_vocab, (special.no_timestamps,), device)
        self.suppress = torch.zeros(n_vocab, dtype=torch.bool, device=device)
        self.suppress_blank = torch.zeros((), dtype=torch.bool, device=device)

    def configure(self, suppress_tokens: tuple[int, ...], suppress_blank: bool) -> None:
        """Set the per-call switches in place (the captured graphs read these buffers)."""
        wanted = tuple(t for t in (*suppress_tokens, *self.special.control_ids) if t >= 0)
        self.suppress.zero_()
        if wanted:
            index = torch.tensor(wanted, device=self.suppress.device)
            self.suppress.index_fill_(0, index.clamp(max=len(self.suppress) - 1), True)
        self.suppress_blank.fill_(suppress_blank)

    def apply(self, logits: Tensor, state: RuleState) -> Tensor:
        """Masked float logits [rows, vocab]: forbidden tokens are -inf."""
        first = (state.sampled == 0).reshape(-1, 1)  # [1 or rows, 1]
        forbidden = self.suppress | (self.blank & first & self.suppress_blank)
        logits = logits.masked_fill(forbidden, float("-inf"))
        timestamp_rules = self._timestamp_mask(state, first)
        logits = logits.masked_fill(timestamp_rules & state.timestamp_mode[:, None], float("-inf"))
        # Where all timestamps together outweigh the best text token, a timestamp comes next.
        logprobs = torch.log_softmax(logits, dim=-1)
        timestamp_mass = torch.logsumexp(
            logprobs.masked_fill(~self.is_timestamp, float("-inf")), -1
        )
        best_text = logprobs.masked_fill(~self.before_timestamps, float("-inf")).amax(-1)
        prefer_timestamp = state.timestamp_mode & (timestamp_mass > best_text)
        return logits.masked_fill(prefer_timestamp[:, None] & self.before_timestamps, float("-inf"))

    def _timestamp_mask(self, state: RuleState, first: Tensor) -> Tensor:
        begin = self.special.timestamp_begin
        last_was = (state.sampled >= 1) & (state.last >= begin)
        penultimate_was = (state.sampled < 2) | (state.penultimate >= begin)
        # A pair closes a segment: text (or the end) must follow; after one timestamp of a
        # pair, its partner or the end must follow.
        rows = (last_was & penultimate_was)[:, None] & self.is_timestamp
        rows |= (last_was & ~penultimate_was)[:, None] & self.is_text
        # Never decrease, and give every segment a nonzero length.
        seen = state.last_timestamp >= 0
        floor = torch.where(
            last_was & ~penultimate_was, state.last_timestamp, state.last_timestamp + 1
        )
        floor = torch.where(seen, floor, torch.full_like(floor, begin))
        rows |= self.is_timestamp & (self.token_ids[None, :] < floor[:, None])
        opening = first & (self.before_timestamps | self.too_late_first)
        return rows | opening | self.no_timestamps


def _mask(n_vocab: int, ids: tuple[int, ...], device: torch.device) -> Tensor:
    mask = torch.zeros(n_vocab, dtype=torch.bool, device=device)
    if ids:
        mask[list(ids)] = True
    return mask
