"""In-flight batching: greedy decoding where windows join and leave at step boundaries.

Each of `rows` fixed slots holds one window: its own cache row, position and rule state.
A window admitted between steps is encoded (all arrivals as one batch) and its
cross-attention keys and values are written to its slot; from the next step it decodes beside
every other window, and a window that finished or was cancelled frees its slot at the next
boundary. Rows sit at different positions, so each writes its keys and values to its own slot
and attends up to its own position. The step itself (decoder, logit rules, argmax, state
update) is captured as a CUDA graph per slot-count bucket × attention-length bucket, as in
whole-batch decoding; the host reads back which rows finished once per `advance`.

A prompt's start-of-transcript sequence (<|startoftranscript|> [<|lang|> <|task|>]
[<|notimestamps|>]: at most four tokens) is fed through those captured steps, one token per
step, the step's choice overridden by the prompt's next token, rather than run eagerly at
admission: an eager prefill of a few tokens costs hundreds of kernel launches and host
round trips for little GPU work, and it stopped every window in flight while it ran. Only
previous text (an initial prompt, before <|startoftranscript|>) is prefilled at admission.

Language detection rides the same steps: a detecting window is fed <|startoftranscript|>
alone, the step that feeds it keeps the softmax over the language tokens, and the window
leaves at the next boundary, so a file's detection never stops the windows in flight.

Urgent windows (push-to-talk finals) decode ahead of the rest: they take the lowest slots,
the others from `rows // 16` up, and while an urgent window is in flight an advance steps only
the smallest bucket of slots that holds the urgent ones. The other rows wait, untouched, a
step costs what a few rows cost rather than what the whole engine costs, and no bulk window's
step lengthens a final's. Windows other than urgent ones admitted meanwhile keep their slot
but are encoded at the next advance that steps every row, as one batch, so their encoder
batch does not lengthen the final's either. At most LANE_ADVANCES of any LANE_WINDOW
advances step only urgent slots, so urgent work arriving back to back cannot stall the rest.

Memory is fixed at construction (cache and state for `rows` slots): a full engine refuses
admissions (free_slots is 0), it never allocates more.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
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

STEPS_PER_ADVANCE = 16  # decode steps between host reads of which rows finished
CHECK_EVERY = 4  # steps between looks at whether an advance should end early
LANE_WINDOW, LANE_ADVANCES = 10, 8  # most advances of any 10 that step only urgent slots
RuleConfig = tuple[tuple[int, ...], bool]  # (suppress_tokens, suppress_blank)


@dataclass(frozen=True)
class Admission:
    ticket: int
    prompt: Sequence[int]
    max_new_tokens: int
    no_speech: bool  # report P(<|nospeech|>) at the start-of-transcript position
    detect_language: bool = False  # only the language probabilities at that position
    urgent: bool = False  # an advance ends early once this window finished


Finished = Decoded | list[float]  # a window's decode, or a detecting window's probabilities


class _Rows:
    """Per-slot decode state at fixed addresses (the captured graphs read and write it)."""

    def __init__(self, rows: int, text_ctx: int, languages: int, device: torch.device) -> None:
        def longs(fill: int = 0) -> Tensor:
            return torch.full((rows,), fill, dtype=torch.long, device=device)

        self.position = longs()  # the cache slot the row's next token is written to
        self.token = longs()  # the token fed next
        self.sampled = longs()  # tokens chosen so far
        self.budget = longs(1)  # most tokens the row may choose
        # The prompt's tokens still to feed: forced[r, forced_next[r]:forced_end[r]].
        self.forced = torch.zeros(rows, text_ctx, dtype=torch.long, device=device)
        self.forced_next, self.forced_end = longs(), longs()
        self.asks_no_speech = torch.zeros(rows, dtype=torch.bool, device=device)
        self.detects = torch.zeros(rows, dtype=torch.bool, device=device)
        self.language_probs = torch.zeros(rows, languages, dtype=torch.float32, device=device)
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
        capture_encoder: bool = True,
        steps_per_advance: int = STEPS_PER_ADVANCE,
    ) -> None:
        param = next(model.parameters())
        self.model, self.special, self.encode, self.rows = model, special, encode, rows
        self.steps_per_advance = steps_per_advance
        self.device = param.device
        self.text_ctx = model.dims.n_text_ctx
        # One row more than the slots: where a captured admission's padding rows write.
        self.cache = DecoderCache(model, rows + 1, device=self.device, dtype=param.dtype)
        self.rules = LogitRules(special, model.dims.n_vocab, self.device)
        self.state = _Rows(rows, self.text_ctx, len(special.language_ids), self.device)
        self._language_ids = torch.tensor(special.language_ids, dtype=torch.long).to(self.device)
        self._slots = torch.arange(self.text_ctx, device=self.device)
        self._row_ids = torch.arange(rows, device=self.device)
        self._lengths = list(lengths)
        self._tickets: list[int | None] = [None] * rows
        self._detecting: list[bool] = [False] * rows
        self._urgent: list[bool] = [False] * rows
        self._reach: list[int] = [0] * rows  # upper bound of each row's position
        self._urgent_slots = max(1, rows // 16)  # the slots other windows take last
        self._lanes: deque[bool] = deque(maxlen=LANE_WINDOW)  # recent advances: urgent only?
        # Admitted while urgent windows step alone: slot -> (log-mel, window), encoded later.
        self._waiting: dict[int, tuple[Tensor, Admission]] = {}
        self._config: RuleConfig | None = None
        self._graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self._admission: _CapturedAdmission | None = None
        if use_cuda_graphs:
            pool = self._capture_graphs()
            if capture_encoder:
                self._admission = _CapturedAdmission(self, pool)
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

    def free_slots(self, config: RuleConfig | None) -> int:
        """Windows decoded under other logit rules must finish before these may join (None:
        language detection, which no rule touches)."""
        if config is not None and self._decoding() and config != self._config:
            return 0
        return self.rows - self.in_flight

    def _decoding(self) -> bool:
        """Whether windows other than detecting ones are in flight."""
        pairs = zip(self._tickets, self._detecting, strict=True)
        return any(ticket is not None and not detecting for ticket, detecting in pairs)

    def cancel(self, tickets: Sequence[int]) -> None:
        wanted = set(tickets)
        self._release([slot for slot, ticket in enumerate(self._tickets) if ticket in wanted])

    def reset(self) -> None:
        """Drop every window (after a failed step the rows' state is unknown)."""
        self._release(list(range(self.rows)))

    def _release(self, slots: list[int]) -> None:
        """Idle rows still run in their bucket's step: finished, and writing slot 0."""
        if not slots:
            return
        for slot in slots:
            self._tickets[slot] = None
            self._detecting[slot] = self._urgent[slot] = False
            self._waiting.pop(slot, None)
        index = self._to_device(torch.tensor(slots))
        self.state.finished[index] = True
        self.state.position[index] = 0

    # ---- admission ------------------------------------------------------------------------

    @torch.inference_mode()
    def admit(self, mel: Tensor, windows: Sequence[Admission], config: RuleConfig | None) -> None:
        """Encode the windows' log-mel [B, n_mels, 3000] as one batch and start each in a
        free slot (beside an urgent window, the others keep their slot and wait: see the
        module's docstring); its prompt's start-of-transcript sequence is fed by `advance`.
        `config`: the decoding windows' logit rules (None when every window only detects)."""
        if len(windows) > self.free_slots(config):
            raise RuntimeError(f"{len(windows)} windows admitted, {self.free_slots(config)} free")
        if config is not None and (not self._decoding() or self._config != config):
            self._config = config
            self.rules.configure(*config)
        slots = self._place(windows)
        for slot, window in zip(slots, windows, strict=True):
            self._tickets[slot] = window.ticket
            self._detecting[slot] = window.detect_language
            self._urgent[slot] = window.urgent
        if self._lane_open():  # the others wait for the next advance that steps every row
            for i, window in enumerate(windows):
                if not window.urgent:
                    self._waiting[slots[i]] = (mel[i], window)
        now = [i for i, slot in enumerate(slots) if slot not in self._waiting]
        if len(now) == len(windows):
            self._start(mel, windows, slots)
        elif now:
            self._start(mel[now], [windows[i] for i in now], [slots[i] for i in now])

    def _start_waiting(self) -> None:
        """Encode and start the windows admitted while urgent ones stepped alone."""
        if not self._waiting:
            return
        slots = list(self._waiting)
        mels, windows = zip(*(self._waiting.pop(slot) for slot in slots), strict=True)
        self._start(torch.stack(mels), windows, slots)

    def _start(self, mel: Tensor, windows: Sequence[Admission], slots: list[int]) -> None:
        """Encode `mel` into the slots' cache rows and start the windows there."""
        index = self._to_device(torch.tensor(slots))
        if self._admission is not None:
            self._admission.encode(self._to_device(mel), index)
        else:
            self.cache.fill_cross(self.model, self.encode(self._to_device(mel)), index)
        starts = [_split_prompt(w.prompt, self.special.sot) for w in windows]
        self._prefill_previous_text(index, [head for head, _ in starts])
        self._start_rows(index, windows, starts)
        for slot, (head, _) in zip(slots, starts, strict=True):
            self._reach[slot] = len(head)

    def _place(self, windows: Sequence[Admission]) -> list[int]:
        """Free slots for `windows`: urgent ones the lowest, the others the lowest from
        `_urgent_slots` up (below it only when nothing above is free)."""
        free = [slot for slot, ticket in enumerate(self._tickets) if ticket is None]
        low = [slot for slot in free if slot < self._urgent_slots]
        high = [slot for slot in free if slot >= self._urgent_slots]
        return [((low or high) if w.urgent else (high or low)).pop(0) for w in windows]

    def _prefill_previous_text(self, index: Tensor, heads: Sequence[Sequence[int]]) -> None:
        """Run the prompts' previous text (where there is any) into the rows' first slots."""
        rows = [i for i, head in enumerate(heads) if head]
        if not rows:
            return
        length = max(len(heads[i]) for i in rows)
        padded = [list(heads[i]) + [self.special.eot] * (length - len(heads[i])) for i in rows]
        tokens = self._to_device(torch.tensor(padded))
        prefill_rows(self.model, self.cache, index[self._to_device(torch.tensor(rows))], tokens)

    def _start_rows(
        self,
        index: Tensor,
        windows: Sequence[Admission],
        starts: Sequence[tuple[Sequence[int], Sequence[int]]],
    ) -> None:
        """Every row's state in one host-to-device copy (no synchronisation with the steps
        still queued on the GPU)."""
        st = self.state
        columns = [
            (
                len(head),  # position
                max(1, min(w.max_new_tokens, self.text_ctx - len(head) - len(tail))),  # budget
                self.special.no_timestamps not in w.prompt,  # timestamp_mode
                w.no_speech and tail[0] == self.special.sot,  # asks_no_speech
                w.detect_language and tail[0] == self.special.sot,  # detects
                tail[0],  # token
                len(tail),  # forced_end: the tail's remaining tokens sit at 1..len-1
            )
            for w, (head, tail) in zip(windows, starts, strict=True)
        ]
        values = self._to_device(torch.tensor(columns, dtype=torch.long)).T
        st.position[index], st.budget[index] = values[0], values[1]
        st.timestamp_mode[index], st.asks_no_speech[index] = values[2].bool(), values[3].bool()
        st.detects[index] = values[4].bool()
        st.token[index], st.forced_end[index] = values[5], values[6]
        width = max(len(tail) for _, tail in starts)
        tails = [list(tail) + [0] * (width - len(tail)) for _, tail in starts]
        st.forced[index, :width] = self._to_device(torch.tensor(tails))
        for buffer, fill in (
            (st.forced_next, 1),
            (st.sampled, 0),
            (st.last, 0),
            (st.penultimate, 0),
            (st.last_timestamp, -1),
            (st.sum_logprob, 0),
            (st.no_speech, float("nan")),
        ):
            buffer[index] = fill
        st.finished[index] = False

    def _to_device(self, host: Tensor) -> Tensor:
        """Pinned and asynchronous on CUDA: a pageable copy would wait for the queued steps."""
        if self.device.type != "cuda":
            return host
        if not host.is_pinned():
            host = host.contiguous().pin_memory()
        return host.to(self.device, non_blocking=True)

    # ---- decoding -------------------------------------------------------------------------

    @torch.inference_mode()
    def advance(self, interrupted: Callable[[], bool] = lambda: False) -> dict[int, Finished]:
        """Run up to `steps_per_advance` decode steps over the occupied slots (only the
        urgent windows' bucket while one is in flight); return (and free) the windows that
        finished, by ticket. Every CHECK_EVERY steps the advance may end early: once an
        urgent window finished, or `interrupted()`."""
        lane = self._lane_open()
        self._lanes.append(lane)
        if not lane:
            self._start_waiting()
        occupied = [
            slot
            for slot, ticket in enumerate(self._tickets)
            if ticket is not None and slot not in self._waiting
        ]
        if not occupied:
            return {}
        urgent = [slot for slot in occupied if self._urgent[slot]]
        top = max(urgent if lane else occupied)
        rows = next(size for size in buckets(self.rows) if size > top)
        occupied = [slot for slot in occupied if slot < rows]  # the others wait
        reach = max(self._reach[slot] for slot in occupied)  # every row moves one a step
        watch = _EarlyEnd(self, urgent, interrupted)
        steps = 0
        while steps < self.steps_per_advance:
            chunk = min(CHECK_EVERY, self.steps_per_advance - steps)
            self._steps(rows, reach + steps, chunk)
            steps += chunk
            if steps < self.steps_per_advance and watch.ends_after_queued_steps():
                break
        for slot in occupied:
            self._reach[slot] = min(self._reach[slot] + steps, self.text_ctx - 1)
        return self._collect_finished(occupied)

    def _lane_open(self) -> bool:
        """Whether the next advance steps only the urgent windows' slots: one is in flight,
        and fewer than LANE_ADVANCES of the last LANE_WINDOW advances did."""
        urgent = any(t is not None and u for t, u in zip(self._tickets, self._urgent, strict=True))
        return urgent and sum(self._lanes) < LANE_ADVANCES

    def _length(self, slots_needed: int) -> int:
        return next(n for n in self._lengths if n >= min(slots_needed, self.text_ctx))

    def _steps(self, rows: int, reach: int, count: int) -> None:
        """`count` decode steps for rows that reach at most position `reach` so far: a
        whole chunk of CHECK_EVERY steps is one captured graph (one host call, and so one
        wait for the interpreter lock, where each step would be one)."""
        graph = self._graphs.get((rows, self._length(reach + count)))
        if graph is not None and count == CHECK_EVERY:
            graph.replay()
            return
        for step in range(1, count + 1):
            self._decode_step(rows, self._length(reach + step))

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
        scores = logits(self.model, hidden[:, 0])
        self._note_no_speech(scores, rows)
        self._note_languages(scores, rows)
        self._choose(scores, rows)

    def _note_no_speech(self, scores: Tensor, rows: int) -> None:
        """P(<|nospeech|>) where a row that asks for it was fed <|startoftranscript|>."""
        st = self.state
        at_sot = st.asks_no_speech[:rows] & (st.token[:rows] == self.special.sot)
        probability = torch.exp(scores[:, self.special.no_speech] - torch.logsumexp(scores, dim=-1))
        st.no_speech[:rows] = torch.where(at_sot, probability, st.no_speech[:rows])

    def _note_languages(self, scores: Tensor, rows: int) -> None:
        """The language probabilities where a detecting row was fed <|startoftranscript|>."""
        if not len(self._language_ids):
            return  # an English-only model detects nothing
        st = self.state
        at_sot = st.detects[:rows] & (st.token[:rows] == self.special.sot)
        probs = torch.softmax(scores[:, self._language_ids], dim=-1)
        st.language_probs[:rows] = torch.where(at_sot[:, None], probs, st.language_probs[:rows])

    def _choose(self, scores: Tensor, rows: int) -> None:
        """The rows' next tokens: the prompt's next token while one is left, else the greedy
        choice under Whisper's rules; finished rows stay put."""
        st = self.state
        where = slice(0, rows)
        sampled, finished = st.sampled[where], st.finished[where]
        forcing = st.forced_next[where] < st.forced_end[where]
        sampling = ~finished & ~forcing
        masked = self.rules.apply(scores, st.rules(where))
        logprobs = torch.log_softmax(masked, dim=-1)
        next_forced = st.forced_next[where].clamp(max=self.text_ctx - 1)
        prompted = st.forced[self._row_ids[where], next_forced]
        chosen = torch.where(forcing, prompted, masked.argmax(dim=-1))
        chosen = torch.where(finished, self.special.eot, chosen)
        picked = logprobs.gather(1, chosen[:, None])[:, 0]
        st.sum_logprob[where] = st.sum_logprob[where] + torch.where(sampling, picked, 0.0)
        out_at = (self._row_ids[where], sampled.clamp(max=self.text_ctx - 1))
        st.out[out_at] = torch.where(sampling, chosen, st.out[out_at])
        is_timestamp = sampling & (chosen >= self.special.timestamp_begin)
        st.last_timestamp[where] = torch.where(is_timestamp, chosen, st.last_timestamp[where])
        st.penultimate[where] = torch.where(sampling, st.last[where], st.penultimate[where])
        st.last[where] = torch.where(sampling, chosen, st.last[where])
        st.token[where] = chosen
        st.forced_next[where] += forcing.long()
        st.sampled[where] = sampled + sampling.long()
        ends = (chosen == self.special.eot) | (sampled + 1 >= st.budget[where])
        st.finished[where] = finished | (sampling & ends)

    def _collect_finished(self, occupied: list[int]) -> dict[int, Finished]:
        """Every occupied row's state in one device-to-host copy: each extra read is another
        wait for this thread to get the interpreter back from the server's other threads."""
        st, rows = self.state, max(occupied) + 1
        columns = (st.finished, st.sampled, st.sum_logprob, st.no_speech)
        host = (
            torch.cat(
                [
                    *(c[:rows, None].double() for c in columns),
                    st.language_probs[:rows].double(),
                    st.out[:rows].double(),  # token ids are exact in float64
                ],
                dim=1,
            )
            .cpu()
            .numpy()
        )
        done = [slot for slot in occupied if host[slot, 0]]
        results = {self._ticket(slot): self._finished(slot, host[slot]) for slot in done}
        self._release(done)
        return results

    def _ticket(self, slot: int) -> int:
        ticket = self._tickets[slot]
        assert ticket is not None
        return ticket

    def _finished(self, slot: int, row: npt.NDArray[np.float64]) -> Finished:
        """A finished row's result from its host copy (see `_collect_finished`)."""
        _, count, total, no_speech = row[:4].tolist()
        languages = self.state.language_probs.shape[1]
        if self._detecting[slot]:
            return row[4 : 4 + languages].tolist()  # type: ignore[no-any-return]
        tokens = row[4 + languages : 4 + languages + int(count)].astype(np.int64).tolist()
        probability = None if no_speech != no_speech else no_speech  # NaN: not asked
        return Decoded(until_eot(tokens, self.special.eot), total, probability)

    # ---- CUDA graphs ----------------------------------------------------------------------

    def _capture_graphs(self) -> _Pool:
        """One graph of CHECK_EVERY steps per (slot bucket, length bucket), on idle rows (all
        finished): what the graphs keep is the buffers' addresses, not their values. Returns
        their memory pool."""
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
                        for _ in range(CHECK_EVERY):
                            self._decode_step(rows, length)
                    pool = graph.pool()
                    self._graphs[rows, length] = graph
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        return pool


_Pool = Any  # a CUDA graph memory pool handle (torch's is untyped)
ADMISSION_SIZES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192)


class _CapturedAdmission:
    """An admission's encoder and cross-attention key/value writes as one CUDA graph per
    batch size: a few host calls instead of hundreds of kernel launches, each of which, in a
    busy server, first waits for the interpreter lock. A batch runs in the smallest captured
    size that holds it; its padding rows encode stale input into the cache's spare row."""

    def __init__(self, decoder: InflightDecoder, pool: _Pool) -> None:
        self.decoder = decoder
        rows, device = decoder.rows, decoder.device
        self.sizes = [size for size in ADMISSION_SIZES if size < rows] + [rows]
        self.mel = torch.zeros(rows, decoder.model.dims.n_mels, 3000, device=device)
        self.index = torch.full((rows,), rows, dtype=torch.long, device=device)  # spare row
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        side = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(side):
            for size in self.sizes:
                for _ in range(2):  # warm-up: lazy kernel init must not happen in capture
                    self._fill(size)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool, stream=side):
                    self._fill(size)
                self.graphs[size] = graph
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()

    def _fill(self, size: int) -> None:
        d = self.decoder
        d.cache.fill_cross(d.model, d.encode(self.mel[:size]), self.index[:size])

    def encode(self, mel: Tensor, index: Tensor) -> None:
        """Encode `mel` [B, n_mels, 3000] (on the device) into cache rows `index` [B]."""
        count = len(index)
        size = next(s for s in self.sizes if s >= count)
        self.mel[:count].copy_(mel)
        self.index[:count].copy_(index)
        self.index[count:size].fill_(self.decoder.rows)
        self.graphs[size].replay()


class _EarlyEnd:
    """Whether an advance should stop queueing steps: work waits to be admitted, or an urgent
    window finished. On CUDA the host stays one chunk of steps ahead of the GPU (an event,
    and an asynchronous copy of the urgent rows' state, per chunk): it looks as each chunk
    ends, and the GPU never idles while it looks."""

    def __init__(
        self, decoder: InflightDecoder, urgent: list[int], interrupted: Callable[[], bool]
    ) -> None:
        self.decoder, self.interrupted = decoder, interrupted
        self.urgent = decoder._to_device(torch.tensor(urgent)) if urgent else None
        self.behind: tuple[torch.cuda.Event, Tensor | None] | None = None

    def ends_after_queued_steps(self) -> bool:
        finished = None if self.urgent is None else self.decoder.state.finished[self.urgent].any()
        if self.decoder.device.type != "cuda":
            return self.interrupted() or bool(finished)
        flag = None
        if finished is not None:
            flag = torch.empty((), dtype=torch.bool, pin_memory=True)
            flag.copy_(finished, non_blocking=True)
        event = torch.cuda.Event()  # type: ignore[no-untyped-call]
        event.record()
        behind, self.behind = self.behind, (event, flag)
        if behind is not None:
            behind[0].synchronize()  # the chunk before the one just queued is done
            if behind[1] is not None and bool(behind[1]):
                return True
        return self.interrupted()


def _split_prompt(prompt: Sequence[int], sot: int) -> tuple[Sequence[int], Sequence[int]]:
    """(previous text, start-of-transcript sequence): the part prefilled at admission and
    the part fed through the decode steps (the last token where there is no
    <|startoftranscript|>)."""
    start = list(prompt).index(sot) if sot in prompt else len(prompt) - 1
    return prompt[:start], prompt[start:]
