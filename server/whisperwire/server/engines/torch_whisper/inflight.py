"""In-flight batching: greedy decoding where windows join and leave at step boundaries.

Each of `rows` fixed slots holds one window: its own cache row, position and rule state.
A window admitted between steps is encoded (all arrivals as one batch), its prompt is run
into its slot, and from the next step it decodes beside every other window; a window that
finished or was cancelled frees its slot at the next boundary. Rows sit at different
positions, so each writes its keys and values to its own slot and attends up to its own
position. The step itself (decoder, logit rules, argmax, state update) is captured as a CUDA
graph per slot-count bucket × attention-length bucket, as in whole-batch decoding; the host
reads back which rows finished once per `advance`.

Memory is fixed at construction (cache and state for `rows` slots): a full engine refuses
admissions (free_slots is 0), it never allocates more.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from whisperwire.server.engines.torch_whisper.decoding import Decoded, buckets, until_eot
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
    prefill_rows,
)

STEPS_PER_ADVANCE = 8  # decode steps between host reads of which rows finished
RuleConfig = tuple[tuple[int, ...], bool]  # (suppress_tokens, suppress_blank)


@dataclass(frozen=True)
class Admission:
    ticket: int
    prompt: Sequence[int]
    max_new_tokens: int
    no_speech: bool  # report P(<|nospeech|>) at the start-of-transcript position


class _Rows:
    """Per-slot decode state at fixed addresses (the captured graphs read and write it)."""

    def __init__(self, rows: int, text_ctx: int, device: torch.device) -> None:
        def longs(fill: int = 0) -> Tensor:
            return torch.full((rows,), fill, dtype=torch.long, device=device)

        self.position = longs()  # the cache slot the row's next token is written to
        self.token = longs()  # the token fed next
        self.sampled = longs()  # tokens chosen so far
        self.budget = longs(1)  # most tokens the row may choose
        self.last, self.penultimate, self.last_timestamp = longs(), longs(), longs(-1)
        self.timestamp_mode = torch.zeros(rows, dtype=torch.bool, device=device)
        self.finished = torch.ones(rows, dtype=torch.bool, device=device)
        self.sum_logprob = torch.zeros(rows, dtype=torch.float32, device=device)
        self.no_speech = torch.full((rows,), float("nan"), dtype=torch.float32, device=device)
        self.out = torch.zeros(rows, text_ctx, dtype=torch.long, device=device)

    def rules(self, where: slice | Tensor) -> RuleState:
        return RuleState(
            self.sampled[where],
            self.last[where],
            self.penultimate[where],
            self.last_timestamp[where],
            self.timestamp_mode[where],
        )


class InflightDecoder:
    """Greedy in-flight decoding over `rows` slots, sharing a model (and its encoder)."""

    def __init__(
        self,
        model: Whisper,
        special: SpecialTokens,
        encode: Callable[[Tensor], Tensor],
        *,
        rows: int,
        lengths: Sequence[int],
        use_cuda_graphs: bool,
        steps_per_advance: int = STEPS_PER_ADVANCE,
    ) -> None:
        param = next(model.parameters())
        self.model, self.special, self.encode, self.rows = model, special, encode, rows
        self.steps_per_advance = steps_per_advance
        self.device = param.device
        self.text_ctx = model.dims.n_text_ctx
        self.cache = DecoderCache(model, rows, device=self.device, dtype=param.dtype)
        self.rules = LogitRules(special, model.dims.n_vocab, self.device)
        self.state = _Rows(rows, self.text_ctx, self.device)
        self._slots = torch.arange(self.text_ctx, device=self.device)
        self._row_ids = torch.arange(rows, device=self.device)
        self._lengths = list(lengths)
        self._tickets: list[int | None] = [None] * rows
        self._reach: list[int] = [0] * rows  # upper bound of each row's position
        self._config: RuleConfig | None = None
        self._graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        if use_cuda_graphs:
            self._capture_graphs()
            self._warm_up()

    def _warm_up(self) -> None:
        """Admit and finish a window group of every bucket size once, so kernels load and
        pick their algorithms now rather than on live traffic's first admissions."""
        mel = torch.zeros(1, self.model.dims.n_mels, 3000)
        prompt = [self.special.sot]
        for size in buckets(self.rows):
            windows = [Admission(-1 - i, prompt, 2, no_speech=True) for i in range(size)]
            self.admit(mel.expand(size, -1, -1), windows, ((), True))
            while self.in_flight:
                self.advance()

    # ---- occupancy ------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return sum(t is not None for t in self._tickets)

    def free_slots(self, config: RuleConfig) -> int:
        """Windows decoded under other logit rules must finish before these may join."""
        if self.in_flight and config != self._config:
            return 0
        return self.rows - self.in_flight

    def cancel(self, tickets: Sequence[int]) -> None:
        wanted = set(tickets)
        for slot, ticket in enumerate(self._tickets):
            if ticket in wanted:
                self._release(slot)

    def reset(self) -> None:
        """Drop every window (after a failed step the rows' state is unknown)."""
        for slot in range(self.rows):
            self._release(slot)

    def _release(self, slot: int) -> None:
        """Idle rows still run in their bucket's step: finished, and writing slot 0."""
        self._tickets[slot] = None
        self.state.finished[slot] = True
        self.state.position[slot] = 0

    # ---- admission ------------------------------------------------------------------------

    @torch.inference_mode()
    def admit(self, mel: Tensor, windows: Sequence[Admission], config: RuleConfig) -> None:
        """Encode the windows' log-mel [B, n_mels, 3000] as one batch and start each in a
        free slot; its first token is chosen here, the rest by `advance`."""
        if len(windows) > self.free_slots(config):
            raise RuntimeError(f"{len(windows)} windows admitted, {self.free_slots(config)} free")
        if self.in_flight == 0 or self._config != config:
            self._config = config
            self.rules.configure(*config)
        free = [slot for slot, ticket in enumerate(self._tickets) if ticket is None]
        slots = free[: len(windows)]
        index = torch.tensor(slots, device=self.device)
        self.cache.fill_cross(self.model, self.encode(mel), index)
        hidden = self._prefill(index, [w.prompt for w in windows])
        self._start_rows(index, windows)
        lengths = torch.tensor([len(w.prompt) for w in windows], device=self.device)
        last = hidden[torch.arange(len(windows), device=self.device), lengths - 1]
        self._store_no_speech(index, hidden, windows)
        self._choose(logits(self.model, last), index)
        for slot, window in zip(slots, windows, strict=True):
            self._tickets[slot] = window.ticket
            self._reach[slot] = len(window.prompt)

    def _prefill(self, index: Tensor, prompts: Sequence[Sequence[int]]) -> Tensor:
        length = max(len(p) for p in prompts)
        padded = [list(p) + [self.special.eot] * (length - len(p)) for p in prompts]
        tokens = torch.tensor(padded, device=self.device)
        return prefill_rows(self.model, self.cache, index, tokens)

    def _start_rows(self, index: Tensor, windows: Sequence[Admission]) -> None:
        st = self.state

        def per_row(values: list[int] | list[bool]) -> Tensor:
            return torch.tensor(values, device=self.device)

        prompt_lengths = [len(w.prompt) for w in windows]
        st.position[index] = per_row(prompt_lengths)
        st.budget[index] = per_row(
            [
                max(1, min(w.max_new_tokens, self.text_ctx - n))
                for w, n in zip(windows, prompt_lengths, strict=True)
            ]
        )
        st.timestamp_mode[index] = per_row(
            [self.special.no_timestamps not in w.prompt for w in windows]
        )
        for buffer, fill in (
            (st.sampled, 0),
            (st.last, 0),
            (st.penultimate, 0),
            (st.last_timestamp, -1),
            (st.sum_logprob, 0),
            (st.no_speech, float("nan")),
        ):
            buffer[index] = fill
        st.finished[index] = False

    def _store_no_speech(self, index: Tensor, hidden: Tensor, windows: Sequence[Admission]) -> None:
        """P(<|nospeech|>) at each asking row's <|startoftranscript|> position."""
        sot = self.special.sot
        asking = [i for i, w in enumerate(windows) if w.no_speech and sot in w.prompt]
        if not asking:
            return
        rows = torch.tensor(asking, device=self.device)
        positions = torch.tensor([list(windows[i].prompt).index(sot) for i in asking])
        at_sot = hidden[rows, positions.to(self.device)]
        probs = torch.softmax(logits(self.model, at_sot), dim=-1)[:, self.special.no_speech]
        self.state.no_speech[index[rows]] = probs

    # ---- decoding -------------------------------------------------------------------------

    @torch.inference_mode()
    def advance(self) -> dict[int, Decoded]:
        """Run `steps_per_advance` decode steps over the occupied slots; return (and free)
        the windows that finished, by ticket."""
        occupied = [slot for slot, ticket in enumerate(self._tickets) if ticket is not None]
        if not occupied:
            return {}
        rows = next(size for size in buckets(self.rows) if size > max(occupied))
        for _ in range(self.steps_per_advance):
            reach = max(self._reach[slot] for slot in occupied)
            self._step(rows, self._length(reach + 1))
            for slot in occupied:
                self._reach[slot] = min(self._reach[slot] + 1, self.text_ctx - 1)
        return self._collect_finished(occupied)

    def _length(self, slots_needed: int) -> int:
        return next(n for n in self._lengths if n >= min(slots_needed, self.text_ctx))

    def _step(self, rows: int, length: int) -> None:
        graph = self._graphs.get((rows, length))
        if graph is not None:
            graph.replay()
        else:
            self._decode_step(rows, length)

    def _decode_step(self, rows: int, length: int) -> None:
        """Feed each row's token at its own position, then choose its next one."""
        st = self.state
        position = st.position[:rows]
        allowed = self._slots[None, :length] <= position[:, None]
        hidden = decode_tokens(
            self.model,
            self.cache,
            st.token[:rows, None],
            position[:, None],
            position[:, None],
            allowed[:, None, None, :],
        )
        st.position[:rows] += (~st.finished[:rows]).long()
        self._choose(logits(self.model, hidden[:, 0]), slice(0, rows))

    def _choose(self, scores: Tensor, where: slice | Tensor) -> None:
        """Greedy choice under Whisper's rules for the rows `where`; finished rows stay put."""
        st = self.state
        sampled, finished = st.sampled[where], st.finished[where]
        masked = self.rules.apply(scores, st.rules(where))
        logprobs = torch.log_softmax(masked, dim=-1)
        chosen = torch.where(finished, self.special.eot, masked.argmax(dim=-1))
        picked = logprobs.gather(1, chosen[:, None])[:, 0]
        st.sum_logprob[where] = st.sum_logprob[where] + torch.where(finished, 0.0, picked)
        st.out[self._row_ids[where], sampled.clamp(max=self.text_ctx - 1)] = chosen
        is_timestamp = chosen >= self.special.timestamp_begin
        st.last_timestamp[where] = torch.where(is_timestamp, chosen, st.last_timestamp[where])
        st.penultimate[where] = st.last[where]
        st.last[where] = chosen
        st.token[where] = chosen
        st.sampled[where] = sampled + (~finished).long()
        st.finished[where] = (
            finished | (chosen == self.special.eot) | (sampled + 1 >= st.budget[where])
        )

    def _collect_finished(self, occupied: list[int]) -> dict[int, Decoded]:
        st = self.state
        finished = st.finished.tolist()
        done = [slot for slot in occupied if finished[slot]]
        if not done:
            return {}
        index = torch.tensor(done, device=self.device)
        counts = st.sampled[index].tolist()
        out = st.out[index, : max(counts)].tolist()
        sums = st.sum_logprob[index].tolist()
        no_speech = [None if p != p else p for p in st.no_speech[index].tolist()]  # NaN: not asked
        rows = zip(done, out, counts, sums, no_speech, strict=True)
        results: dict[int, Decoded] = {}
        for slot, tokens, count, total, prob in rows:
            ticket = self._tickets[slot]
            assert ticket is not None
            results[ticket] = Decoded(until_eot(tokens[:count], self.special.eot), total, prob)
            self._release(slot)
        return results

    # ---- CUDA graphs ----------------------------------------------------------------------

    def _capture_graphs(self) -> None:
        """One graph per (slot bucket, length bucket), on idle rows (all finished): what the
        graphs keep is the buffers' addresses, not their values."""
        pool = None
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(side):
            for rows in buckets(self.rows):
                for length in self._lengths:
                    for _ in range(2):  # warm-up: lazy kernel init must not happen in capture
                        self._decode_step(rows, length)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=pool, stream=side):
                        self._decode_step(rows, length)
                    pool = graph.pool()
                    self._graphs[rows, length] = graph
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
