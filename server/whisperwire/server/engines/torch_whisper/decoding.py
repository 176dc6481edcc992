"""Batched Whisper decoding over a static cache.

Prompts of different lengths are left-padded so every row writes the same cache slot at each
step; a row's padding offset keeps its positions and attention right. Greedy decoding (the
common case) runs one decode step per token: all layers, Whisper's logit rules, argmax and
the state update, captured once per batch-size bucket as a CUDA graph on GPU. The host reads
back "all finished?" only every few steps. Sampling (temperature fallback) and beam search
reuse the same step eagerly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from whisperwire.server.engines.torch_whisper.logit_rules import (
    LogitRules,
    RuleState,
    SpecialTokens,
)
from whisperwire.server.engines.torch_whisper.model import (
    DecoderCache,
    Whisper,
    decode_tokens,
    logits,
)

FINISHED_CHECK_EVERY = 8  # steps between host reads of "every row finished?"
# Self-attention reads only the first L cache slots; a graph is captured per L. Most windows
# (prompt + text) fit in 64 slots, so attention rarely reads the whole 448.
LENGTH_BUCKETS = (64, 128, 256)


@dataclass(frozen=True)
class Decoded:
    tokens: list[int]  # sampled tokens, end-of-text excluded
    sum_logprob: float
    no_speech_prob: float | None


def buckets(max_rows: int) -> list[int]:
    """Batch sizes a graph is captured for: powers of two up to max_rows, and max_rows."""
    sizes = [1 << i for i in range(max_rows.bit_length()) if 1 << i < max_rows]
    return [*sizes, max_rows]


class _State:
    """Static per-row decode state (fixed addresses: the captured graphs read and write it)."""

    def __init__(self, rows: int, out_len: int, device: torch.device) -> None:
        def longs(fill: int = 0) -> Tensor:
            return torch.full((rows,), fill, dtype=torch.long, device=device)

        self.step = torch.zeros((), dtype=torch.long, device=device)  # cache slot written next
        self.sampled = torch.zeros((), dtype=torch.long, device=device)
        self.token = longs()  # the token fed at `step`
        self.pad = longs()
        self.last, self.penultimate, self.last_timestamp = longs(), longs(), longs(-1)
        self.timestamp_mode = torch.zeros(rows, dtype=torch.bool, device=device)
        self.finished = torch.ones(rows, dtype=torch.bool, device=device)
        self.sum_logprob = torch.zeros(rows, dtype=torch.float32, device=device)
        self.out = torch.zeros(rows, out_len, dtype=torch.long, device=device)

    def rules(self, rows: int) -> RuleState:
        return RuleState(
            self.sampled,
            self.last[:rows],
            self.penultimate[:rows],
            self.last_timestamp[:rows],
            self.timestamp_mode[:rows],
        )


class WhisperDecoder:
    """Encoder + decoder of one model on one device, with buffers for `max_rows` rows."""

    def __init__(
        self,
        model: Whisper,
        special: SpecialTokens,
        *,
        max_rows: int,
        use_cuda_graphs: bool,
        compile_encoder: bool = False,
    ) -> None:
        model.fuse()
        param = next(model.parameters())
        self.model, self.special, self.max_rows = model, special, max_rows
        self.device, self.dtype = param.device, param.dtype
        dims = model.dims
        self.text_ctx = dims.n_text_ctx
        self.cache = DecoderCache(model, max_rows, device=self.device, dtype=self.dtype)
        self.rules = LogitRules(special, dims.n_vocab, self.device)
        self.state = _State(max_rows, dims.n_text_ctx, self.device)
        self._slots = torch.arange(dims.n_text_ctx, device=self.device)
        self._language_ids = torch.tensor(
            special.language_ids, dtype=torch.long, device=self.device
        )
        # dynamic=True: one compiled graph for every batch size (a recompile per size would
        # cost tens of seconds each).
        self._encoder = (
            torch.compile(model.encoder, dynamic=True) if compile_encoder else model.encoder
        )
        self._graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.lengths = [n for n in LENGTH_BUCKETS if n < dims.n_text_ctx] + [dims.n_text_ctx]
        # The prefill's last-position logits: the first selection's (beam search reads them).
        self.first_logits: Tensor | None = None
        if use_cuda_graphs:
            self._capture_graphs()

    # ---- encoder --------------------------------------------------------------------------

    @torch.inference_mode()
    def encode(self, mel: Tensor) -> Tensor:
        """[B, n_mels, 3000] float32 log-mel (any device) → [B, 1500, state]."""
        return self._encoder(mel.to(self.device, self.dtype, non_blocking=True))  # type: ignore[no-any-return]

    # ---- language -------------------------------------------------------------------------

    @torch.inference_mode()
    def language_probs(self, audio: Tensor) -> Tensor:
        """[B, n_languages] probabilities: softmax over the language tokens after <|sot|>."""
        rows = audio.shape[0]
        self.cache.fill_cross(self.model, audio, slice(0, rows))
        hidden = self._prefill([[self.special.sot]] * rows)
        scores = logits(self.model, hidden[:, -1])[:, self._language_ids]
        return torch.softmax(scores, dim=-1)

    # ---- generation -----------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self,
        audio: Tensor,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        temperature: float,
        beam_size: int,
        suppress_tokens: tuple[int, ...],
        suppress_blank: bool,
        no_speech: bool,
    ) -> list[Decoded]:
        self.rules.configure(suppress_tokens, suppress_blank)
        if beam_size > 1:
            return self._beam_search(audio, prompts, max_new_tokens, beam_size, no_speech)
        rows = len(prompts)
        bucket = self._bucket(rows)
        self.cache.fill_cross(self.model, audio, slice(0, rows))
        no_speech_probs = self.prefill_prompts(prompts, bucket, no_speech)
        steps = self.step_budget(prompts, max_new_tokens)
        prompt_length = max(len(p) for p in prompts)
        self._select(rows=bucket, temperature=temperature)
        for done in range(1, steps):
            if done % FINISHED_CHECK_EVERY == 0 and bool(self.state.finished[:bucket].all()):
                break
            self._step(bucket, temperature, self.cache_length(prompt_length + done))
        return self._collect(rows, no_speech_probs)

    def cache_length(self, slots_needed: int) -> int:
        """The cache-length bucket (attention span) that covers `slots_needed` slots."""
        return next(n for n in self.lengths if n >= slots_needed)

    def step_budget(self, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> int:
        """Most tokens these prompts' rows may sample: the request's limit, within the context."""
        return max(1, min(max_new_tokens, self.text_ctx - max(len(p) for p in prompts)))

    def _bucket(self, rows: int) -> int:
        return next(size for size in buckets(self.max_rows) if size >= rows)

    def prefill_prompts(
        self, prompts: Sequence[Sequence[int]], bucket: int, no_speech: bool
    ) -> Tensor | None:
        """Prefill the prompts, reset the per-row state, and leave the last prompt position's
        logits for the first selection. Rows past len(prompts) up to `bucket` are idle."""
        rows, st = len(prompts), self.state
        hidden = self._prefill(prompts)
        length = hidden.shape[1]
        st.pad[:rows] = torch.tensor([length - len(p) for p in prompts], device=self.device)
        st.pad[rows:bucket] = 0
        st.step.fill_(length)
        st.sampled.zero_()
        st.last.zero_()
        st.penultimate.zero_()
        st.last_timestamp.fill_(-1)
        st.sum_logprob.zero_()
        st.finished.fill_(True)
        st.finished[:rows] = False
        st.timestamp_mode[:bucket] = False
        st.timestamp_mode[:rows] = torch.tensor(
            [self.special.no_timestamps not in p for p in prompts], device=self.device
        )
        self.first_logits = torch.zeros(bucket, self.rules.suppress.shape[0], device=self.device)
        self.first_logits[:rows] = logits(self.model, hidden[:, -1])
        return self._no_speech(hidden, prompts) if no_speech else None

    def _no_speech(self, hidden: Tensor, prompts: Sequence[Sequence[int]]) -> Tensor | None:
        """P(<|nospeech|>) at the <|startoftranscript|> position, over the whole vocabulary."""
        length = hidden.shape[1]
        positions = [
            length - len(p) + list(p).index(self.special.sot)
            for p in prompts
            if self.special.sot in p
        ]
        if len(positions) != len(prompts):
            return None
        at_sot = hidden[
            torch.arange(len(prompts), device=self.device),
            torch.tensor(positions, device=self.device),
        ]
        return torch.softmax(logits(self.model, at_sot), dim=-1)[:, self.special.no_speech]

    def _prefill(self, prompts: Sequence[Sequence[int]]) -> Tensor:
        """Run the left-padded prompts through the decoder; hidden states [rows, length, state]."""
        length = max(len(p) for p in prompts)
        padded = [[self.special.eot] * (length - len(p)) + list(p) for p in prompts]
        tokens = torch.tensor(padded, device=self.device)
        pad = torch.tensor([length - len(p) for p in prompts], device=self.device)
        slots = self._slots[:length]
        positions = (slots[None, :] - pad[:, None]).clamp(min=0)
        keys = slots[None, None, :]
        queries = slots[None, :, None]
        # Causal over the row's own tokens; a padding position attends only to itself.
        allowed = (keys <= queries) & ((keys >= pad[:, None, None]) | (keys == queries))
        return decode_tokens(self.model, self.cache, tokens, positions, slots, allowed[:, None])

    def _step(self, rows: int, temperature: float, length: int) -> None:
        graph = self._graphs.get((rows, length))
        if graph is not None and temperature == 0:
            graph.replay()
            return
        self._decode_step(rows, length, temperature)

    def _decode_step(self, rows: int, length: int, temperature: float = 0.0) -> None:
        """Feed each row's current token, then select the next one."""
        self.first_logits = None
        self._choose(self.feed(rows, length), rows, temperature)

    def feed(self, rows: int, length: int) -> Tensor:
        """Each row's current token at slot `step` (< length) through the decoder; the
        next-token logits [rows, vocab]."""
        st = self.state
        pad = st.pad[:rows]
        slots = self._slots[:length]
        allowed = (slots[None, :] >= pad[:, None]) & (slots[None, :] <= st.step)
        hidden = decode_tokens(
            self.model,
            self.cache,
            st.token[:rows, None],
            (st.step - pad)[:, None],
            st.step.view(1),
            allowed[:, None, None, :],
        )
        st.step.add_(1)
        return logits(self.model, hidden[:, 0])

    def _select(self, rows: int, temperature: float) -> None:
        """The first sampled token, from the prefill's logits."""
        assert self.first_logits is not None
        self._choose(self.first_logits, rows, temperature)

    def _choose(self, scores: Tensor, rows: int, temperature: float) -> None:
        st = self.state
        masked = self.rules.apply(scores, st.rules(rows))
        logprobs = torch.log_softmax(masked, dim=-1)
        if temperature > 0:
            chosen = torch.multinomial(torch.softmax(masked / temperature, dim=-1), 1)[:, 0]
        else:
            chosen = masked.argmax(dim=-1)
        finished = st.finished[:rows]
        chosen = torch.where(finished, self.special.eot, chosen)
        picked = logprobs.gather(1, chosen[:, None])[:, 0]
        st.sum_logprob[:rows] += torch.where(finished, 0.0, picked)
        st.out[:rows].index_copy_(1, st.sampled.view(1), chosen[:, None])
        is_timestamp = chosen >= self.special.timestamp_begin
        st.last_timestamp[:rows] = torch.where(is_timestamp, chosen, st.last_timestamp[:rows])
        st.penultimate[:rows] = st.last[:rows]
        st.last[:rows] = chosen
        st.finished[:rows] |= chosen == self.special.eot
        st.token[:rows] = chosen
        st.sampled.add_(1)

    def _collect(self, rows: int, no_speech: Tensor | None) -> list[Decoded]:
        st = self.state
        sampled = int(st.sampled)
        out = st.out[:rows, :sampled].tolist()
        sums = st.sum_logprob[:rows].tolist()
        probs: list[float | None] = [None] * rows if no_speech is None else no_speech.tolist()
        return [
            Decoded(until_eot(tokens, self.special.eot), total, prob)
            for tokens, total, prob in zip(out, sums, probs, strict=True)
        ]

    # ---- CUDA graphs ----------------------------------------------------------------------

    def _capture_graphs(self) -> None:
        """One graph per bucket, all in one memory pool. Capture runs the step on dummy state
        (finished rows, padding 0): what matters is the buffers' addresses, not their values."""
        st = self.state
        st.step.fill_(1)
        st.pad.zero_()
        pool = None
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(side):
            for rows in buckets(self.max_rows):
                for length in self.lengths:
                    for _ in range(2):  # warm-up: lazy kernel init must not happen in capture
                        st.sampled.zero_()
                        self._decode_step(rows, length)
                    st.sampled.zero_()
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=pool, stream=side):
                        self._decode_step(rows, length)
                    pool = graph.pool()
                    self._graphs[rows, length] = graph
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()

    # ---- beam search (eager) --------------------------------------------------------------

    def _beam_search(
        self,
        audio: Tensor,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int,
        beam_size: int,
        no_speech: bool,
    ) -> list[Decoded]:
        per_chunk = max(1, self.max_rows // beam_size)
        results: list[Decoded] = []
        for first in range(0, len(prompts), per_chunk):
            chunk = slice(first, first + per_chunk)
            results += _BeamSearch(self, beam_size).run(
                audio[chunk], prompts[chunk], max_new_tokens, no_speech
            )
        return results


class _BeamSearch:
    """OpenAI's beam search: per item keep `beam_size` live sequences, collect up to
    `beam_size` finished ones, rank by mean log-probability."""

    def __init__(self, decoder: WhisperDecoder, beam_size: int) -> None:
        self.d, self.k = decoder, beam_size

    def run(
        self, audio: Tensor, prompts: Sequence[Sequence[int]], max_new_tokens: int, no_speech: bool
    ) -> list[Decoded]:
        d, k = self.d, self.k
        items = len(prompts)
        rows = items * k
        d.cache.fill_cross(d.model, audio.repeat_interleave(k, dim=0), slice(0, rows))
        expanded = [p for p in prompts for _ in range(k)]
        no_speech_probs = d.prefill_prompts(expanded, rows, no_speech)
        scores = [0.0] * rows
        sequences: list[list[int]] = [[] for _ in range(rows)]
        finished: list[dict[tuple[int, ...], float]] = [{} for _ in range(items)]
        steps = d.step_budget(prompts, max_new_tokens)
        logits_now = d.first_logits
        for step in range(steps):
            assert logits_now is not None
            logprobs = torch.log_softmax(d.rules.apply(logits_now, d.state.rules(rows)), dim=-1)
            if step == 0:  # all beams of an item are identical: expand the first one only
                logprobs[torch.arange(rows) % k != 0] = float("-inf")
            sources, tokens = self._advance(logprobs, scores, sequences, finished)
            if all(len(done) >= k for done in finished) or not sources:
                break
            self._reorder(sources, tokens)
            logits_now = d.feed(rows, d.cache_length(max(len(p) for p in prompts) + step + 1))
        probs = no_speech_probs.tolist() if no_speech_probs is not None else None
        return [
            self._best(
                finished[i],
                sequences[i * k : (i + 1) * k],
                scores[i * k : (i + 1) * k],
                None if probs is None else probs[i * k],
            )
            for i in range(items)
        ]

    def _advance(
        self,
        logprobs: Tensor,
        scores: list[float],
        sequences: list[list[int]],
        finished: list[dict[tuple[int, ...], float]],
    ) -> tuple[list[int], list[int]]:
        """Choose each item's next beams; returns (source row, token) per new row."""
        k, eot = self.k, self.d.special.eot
        top = logprobs.topk(k + 1, dim=-1)
        top_lp: list[list[float]] = top.values.tolist()
        top_ids: list[list[int]] = top.indices.tolist()
        sources: list[int] = []
        tokens: list[int] = []
        new_scores: list[float] = []
        new_sequences: list[list[int]] = []
        for item in range(len(finished)):
            candidates = sorted(
                (
                    (scores[row] + lp, row, token)
                    for row in range(item * k, (item + 1) * k)
                    for lp, token in zip(top_lp[row], top_ids[row], strict=True)
                    if lp != float("-inf")
                ),
                reverse=True,
            )
            chosen = 0
            for score, row, token in candidates:
                if token == eot:
                    if len(finished[item]) < k:
                        finished[item].setdefault(tuple(sequences[row]), score)
                    continue
                sources.append(row)
                tokens.append(token)
                new_scores.append(score)
                new_sequences.append([*sequences[row], token])
                chosen += 1
                if chosen == k:
                    break
            while chosen < k:  # pad with a dead beam so rows stay aligned
                sources.append(item * k)
                tokens.append(eot)
                new_scores.append(float("-inf"))
                new_sequences.append(list(sequences[item * k]))
                chosen += 1
        scores[:] = new_scores
        sequences[:] = new_sequences
        return sources, tokens

    def _reorder(self, sources: list[int], tokens: list[int]) -> None:
        d, st = self.d, self.d.state
        rows = len(sources)
        index = torch.tensor(sources, device=d.device)
        d.cache.reorder(index)
        for buffer in (st.last, st.penultimate, st.last_timestamp, st.pad, st.timestamp_mode):
            buffer[:rows] = buffer[index]
        chosen = torch.tensor(tokens, device=d.device)
        st.penultimate[:rows] = st.last[:rows]
        st.last[:rows] = chosen
        is_timestamp = chosen >= d.special.timestamp_begin
        st.last_timestamp[:rows] = torch.where(is_timestamp, chosen, st.last_timestamp[:rows])
        st.token[:rows] = chosen
        st.sampled.add_(1)

    def _best(
        self,
        done: dict[tuple[int, ...], float],
        live: list[list[int]],
        live_scores: list[float],
        no_speech: float | None,
    ) -> Decoded:
        pool = done or {
            tuple(seq): s for seq, s in zip(live, live_scores, strict=True) if s > float("-inf")
        }
        if not pool:
            return Decoded([], 0.0, no_speech)
        # Finished sequences' lengths count their end-of-text token, as OpenAI's ranker does.
        tokens, score = max(pool.items(), key=lambda kv: kv[1] / (len(kv[0]) + 1))
        return Decoded(list(tokens), score, no_speech)


def until_eot(tokens: list[int], eot: int) -> list[int]:
    return tokens[: tokens.index(eot)] if eot in tokens else tokens
