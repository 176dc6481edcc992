"""The batching scheduler: one loop per engine that batches every caller's windows.

All engine calls happen on one dedicated thread, in order (engines need no locking: neither
TensorRT-LLM's runner nor a CUDA graph replay is safe to drive from two threads at once).
Callers await futures; a caller that goes away cancels its futures, and cancelled work is
dropped before it reaches the engine (or, in flight, freed at the next step). Which work goes
next is the queue policy's (queue_policy.py): interactive first, bulk in a bounded share. With
a latency target, new work that would wait past it is refused at once (admit) instead of being
served late.

On an engine with in-flight batching (a StepBatcher) and `step_batching` on, greedy windows
do not wait for a whole batch: between two `advance` calls of the engine, the scheduler admits
queued windows into free slots (step_admission.py decides which: finals first and by
themselves, then partials, then bulk within its slots), passes the tickets of callers that
went away (their slots free at once), and resolves each window the moment the engine returns
it. A final's arrival ends the running advance early, and its window is returned the moment
it finishes. Language detection joins the steps too where the engine offers it. Other work
(alignment, beam search, sampling) runs as whole-batch calls between advances.

A watchdog bounds every engine call by `stall_seconds` per item of its batch, plus one more
`stall_seconds`. A call that overruns it (a hung GPU, a wedged runtime) cannot be cancelled:
its thread stays stuck. So the scheduler fails that batch's callers and every later one with
UNAVAILABLE/ENGINE_STALLED, and calls `on_engine_lost` so the server reports NOT_SERVING and
exits for the platform to replace it. An engine that reports itself lost (EngineLostError) is
treated the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from whisperwire.server.domain import EngineTime
from whisperwire.server.engine import (
    DETECT_LANGUAGE,
    Alignment,
    DetectLanguage,
    Engine,
    Features,
    Generation,
    GenerationParams,
    LanguageRanking,
    StepBatcher,
    WindowRequest,
    step_batcher,
    word_aligner,
)
from whisperwire.server.errors import BusyError, EngineError, EngineLostError
from whisperwire.server.metrics import Metrics
from whisperwire.server.queue_policy import QueuePolicy
from whisperwire.server.runner import Priority
from whisperwire.server.step_admission import StepAdmission

log = logging.getLogger(__name__)
_T = TypeVar("_T")

DETECT = DETECT_LANGUAGE
BULK_CALL_ROUNDS = 4  # step mode: least advances between bulk whole-batch calls, streams busy
ALIGN = "align-words"
_KINDS: dict[Hashable, str] = {DETECT: "detect", ALIGN: "align"}  # else "generate"


@dataclass(frozen=True)
class _Outcome:
    value: Any
    started: float
    finished: float


@dataclass(order=True)
class _Work:
    priority: Priority
    seq: int
    key: Hashable = field(compare=False)  # items with equal keys may share an engine call
    features: Features = field(compare=False)
    prompt: Sequence[int] | None = field(compare=False)
    future: asyncio.Future[_Outcome] = field(compare=False)
    enqueued: float = field(compare=False)
    # Alignment only: the item's text tokens and its count of log-mel frames with audio.
    text: tuple[Sequence[int], int] | None = field(default=None, compare=False)
    admitted: float = field(default=0.0, compare=False)  # step mode: when it joined the decode
    queued_round: int = field(default=0, compare=False)  # step mode: the advance it arrived in


class BatchScheduler:
    def __init__(
        self,
        engine: Engine,
        *,
        max_batch_size: int | None = None,
        max_wait: float = 0.0,
        max_queue: int = 512,
        bulk_batch_size: int | None = None,
        step_joins: int | None = None,
        bulk_share: float = 0.2,
        interactive_first: bool = True,
        latency_target: float | None = None,
        metrics: Metrics | None = None,
        stall_seconds: float = 60.0,
        on_engine_lost: Callable[[EngineLostError], None] | None = None,
        step_batching: bool = True,
    ) -> None:
        self.engine = engine
        self.max_batch_size = min(
            max_batch_size or engine.info.max_batch_size, engine.info.max_batch_size
        )
        self.policy = QueuePolicy(
            self.max_batch_size,
            min(bulk_batch_size or self.max_batch_size, self.max_batch_size),
            bulk_share,
            interactive_first,
        )
        self.latency_target = latency_target
        self.max_wait = max_wait
        self.max_queue = max_queue
        self.metrics = metrics or Metrics()
        self._pending: list[_Work] = []
        self._wakeup = asyncio.Event()  # work is pending
        self._arrived = asyncio.Event()  # more work arrived while a batch was forming
        self._seq = itertools.count()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._task: asyncio.Task[None] | None = None
        self._batch_seconds = 0.5  # running estimate, for RetryInfo
        self._window_seconds = 0.5  # running estimate of engine seconds per queued window
        self._running: tuple[float, float] | None = None  # the engine call's start, estimate
        self.stall_seconds = stall_seconds
        self._on_engine_lost = on_engine_lost
        self.lost: EngineLostError | None = None
        self._stepper: StepBatcher | None = step_batcher(engine) if step_batching else None
        self._in_flight: dict[int, _Work] = {}  # step mode: by ticket (the work's seq)
        self._admission = StepAdmission(self.max_batch_size, bulk_batch_size, step_joins)
        self._unresolved_seconds = 0.0  # step mode: engine time since a window last finished
        self._round = 0  # step mode: advances so far
        self._bulk_call_round = 0  # step mode: the advance of the last bulk whole-batch call
        # Set (from the loop) when a final arrives, read by the engine thread mid-advance: the
        # advance ends early, so the final joins within a few steps.
        self._final_waiting = threading.Event()

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batch-scheduler")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for work in [*self._pending, *self._in_flight.values()]:
            work.future.cancel()
        self._pending.clear()
        self._in_flight.clear()
        # A stalled engine thread never returns: waiting for it would hang the shutdown.
        self._executor.shutdown(wait=self.lost is None, cancel_futures=True)

    def set_engine_lost_handler(self, handler: Callable[[EngineLostError], None]) -> None:
        self._on_engine_lost = handler

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def in_flight(self) -> int:
        """Windows decoding in the engine right now (step mode)."""
        return len(self._in_flight)

    # ---- Runner ---------------------------------------------------------------------------
    async def generate(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        params: GenerationParams,
        *,
        priority: Priority,
    ) -> tuple[list[Generation], EngineTime]:
        items: list[tuple[Features, Sequence[int] | None]] = list(
            zip(features, prompts, strict=True)
        )
        outcomes, spent = await self._submit(params, items, priority)
        return [o.value for o in outcomes], spent

    async def detect_language(
        self, features: Sequence[Features], *, priority: Priority
    ) -> tuple[list[LanguageRanking], EngineTime]:
        outcomes, spent = await self._submit(DETECT, [(f, None) for f in features], priority)
        return [o.value for o in outcomes], spent

    async def align(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        text_tokens: Sequence[Sequence[int]],
        num_frames: Sequence[int],
        *,
        priority: Priority,
    ) -> tuple[list[Alignment], EngineTime]:
        items: list[tuple[Features, Sequence[int] | None]] = list(
            zip(features, prompts, strict=True)
        )
        texts = list(zip(text_tokens, num_frames, strict=True))
        outcomes, spent = await self._submit(ALIGN, items, priority, texts)
        return [o.value for o in outcomes], spent

    async def _submit(
        self,
        key: Hashable,
        items: list[tuple[Features, Sequence[int] | None]],
        priority: Priority,
        texts: Sequence[tuple[Sequence[int], int] | None] | None = None,
    ) -> tuple[list[_Outcome], EngineTime]:
        if self.lost is not None:
            raise self.lost
        if len(self._pending) + len(items) > self.max_queue:
            raise BusyError(
                f"engine queue is full ({len(self._pending)} items waiting)",
                retry_after=self._retry_after(),
            )
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        works = [
            _Work(
                priority,
                next(self._seq),
                key,
                f,
                p,
                loop.create_future(),
                now,
                text,
                queued_round=self._round,
            )
            for (f, p), text in zip(items, texts or [None] * len(items), strict=True)
        ]
        self._pending.extend(works)
        if priority is Priority.FINAL and self._stepper is not None:
            self._final_waiting.set()
        self.metrics.queue_depth.set(len(self._pending))
        self._wakeup.set()
        self._arrived.set()
        try:
            outcomes = await asyncio.gather(*(w.future for w in works))
        except BaseException:
            for w in works:
                w.future.cancel()  # dropped by the loop before it reaches the engine
            raise
        spent = EngineTime.between(
            now, min(o.started for o in outcomes), max(o.finished for o in outcomes)
        )
        return list(outcomes), spent

    def admit(self, priority: Priority) -> None:
        if self.lost is not None:
            raise self.lost
        wait = self.expected_wait(priority)
        if self.latency_target is not None and wait > self.latency_target:
            raise BusyError(
                f"the engine is {wait:.1f} s behind, over its latency target of "
                f"{self.latency_target:g} s",
                retry_after=max(0.1, wait - self.latency_target),
            )

    def expected_wait(self, priority: Priority) -> float:
        """Seconds new work of `priority` would wait before its engine call starts: what is
        left of the running call and the queued windows that would run first."""
        ahead = sum(
            1
            for w in self._pending
            if not w.future.done() and (w.priority.interactive or not priority.interactive)
        )
        if self._stepper is not None:  # free slots take new windows at the next step
            ahead = max(0, ahead - (self.max_batch_size - len(self._in_flight)))
        left = 0.0
        if self._running is not None:
            started, estimate = self._running
            left = max(0.0, estimate - (time.perf_counter() - started))
        return left + ahead * self._window_seconds

    def _retry_after(self) -> float:
        batches_ahead = len(self._pending) / max(1, self.max_batch_size)
        return max(0.1, batches_ahead * self._batch_seconds)

    # ---- the loop ---------------------------------------------------------------------------
    async def _loop(self) -> None:
        while self.lost is None:
            if not self._in_flight:  # windows in flight keep the loop stepping
                await self._wakeup.wait()
                await self._gather_window()
            batch = self._take_batch()
            if not self._pending:
                self._wakeup.clear()
            self.metrics.queue_depth.set(len(self._pending))
            if batch:
                await self._run(batch)
            if self.lost is None and (self._in_flight or self._admissible()):
                await self._step()

    async def _gather_window(self) -> None:
        """Give concurrent callers a moment to join the batch, unless it is already full."""
        if not self._pending:
            return
        deadline = min(w.enqueued for w in self._pending) + self.max_wait
        while len(self._pending) < self.max_batch_size:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    def _take_batch(self) -> list[_Work]:
        """The next whole-batch engine call (in step mode only work the steps cannot take)."""
        self._pending = [w for w in self._pending if not w.future.done()]
        whole = [w for w in self._pending if not self._steps(w)]
        if self._holds_bulk_calls():
            whole = [w for w in whole if w.priority.interactive]
        if not whole:
            return []
        batch = self.policy.next_batch(whole)
        self._remove_pending(batch)
        if not batch[0].priority.interactive:
            self._bulk_call_round = self._round
        return batch

    def _holds_bulk_calls(self) -> bool:
        """Step mode: a whole-batch call stops every window in flight, so while streams'
        windows decode, bulk calls (a file's language detection, fallbacks) run at most once
        per BULK_CALL_ROUNDS advances."""
        if self._stepper is None:
            return False
        interactive = any(w.priority.interactive for w in self._in_flight.values()) or any(
            w.priority.interactive and self._steps(w) for w in self._pending
        )
        return interactive and self._round - self._bulk_call_round < BULK_CALL_ROUNDS

    def _remove_pending(self, works: Sequence[_Work]) -> None:
        taken = {id(w) for w in works}
        self._pending = [w for w in self._pending if id(w) not in taken]

    def _steps(self, work: _Work) -> bool:
        """Whether this work is decoded step-level (else it runs in whole-batch calls)."""
        return (
            self._stepper is not None
            and isinstance(work.key, GenerationParams | DetectLanguage)
            and self._stepper.steppable(work.key)
        )

    # ---- step mode ----------------------------------------------------------------------------
    def _admissible(self) -> list[_Work]:
        """Queued windows that may join the decode now (step_admission.py decides)."""
        if self._stepper is None:
            return []
        waiting = self.policy.ordered(
            [w for w in self._pending if not w.future.done() and self._steps(w)]
        )
        in_flight = list(self._in_flight.values())
        return self._admission.choose(self._stepper, waiting, in_flight, self._round)

    async def _step(self) -> None:
        """Admit what may join, drop callers that went away, and run one engine advance."""
        assert self._stepper is not None
        stepper = self._stepper
        admit = self._admissible()
        self._remove_pending(admit)
        self._admission.admitted(admit, self._round)
        now = time.perf_counter()
        for work in admit:
            work.admitted = now
            self._in_flight[work.seq] = work
        gone = [t for t, w in self._in_flight.items() if w.future.done()]
        for ticket in gone:
            del self._in_flight[ticket]
        requests = [_window_request(w) for w in admit]
        self.metrics.queue_depth.set(len(self._pending))
        self._round += 1
        self._final_waiting.clear()  # finals that can join have; later ones set it again
        finished = await self._engine_round(
            lambda: stepper.advance(requests, gone, self._final_waiting.is_set),
            list(self._in_flight.values()),
        )
        if finished is None:
            return
        done = time.perf_counter()
        for ticket, result in finished.items():
            work = self._in_flight.pop(ticket)
            if work.future.done():
                continue
            if isinstance(result, EngineError):  # the engine failed this window alone
                work.future.set_exception(result)
            else:
                work.future.set_result(_Outcome(result, work.admitted, done))

    async def _engine_round(
        self,
        call: Callable[[], Mapping[int, Generation | LanguageRanking | EngineError]],
        works: list[_Work],
    ) -> Mapping[int, Generation | LanguageRanking | EngineError] | None:
        """One advance under the watchdog; on failure the windows in flight fail (the engine
        dropped them) and None is returned."""
        bound = self.stall_bound(len(works))
        try:
            finished, seconds = await self._on_engine_thread(call, bound)
        except TimeoutError:
            self._lose_engine(works, _stalled(len(works), bound))
            return None
        except EngineLostError as lost:
            self._lose_engine(works, lost)
            return None
        except Exception as exc:
            log.exception("engine step failed", extra={"batch_size": len(works)})
            error = EngineError(f"engine failed decoding {len(works)} windows: {exc}")
            for w in works:
                if not w.future.done():
                    w.future.set_exception(error)
            self._in_flight.clear()
            return None
        self._observe_step(len(works), len(finished), seconds)
        return finished

    async def _on_engine_thread(self, call: Callable[[], _T], bound: float) -> tuple[_T, float]:
        """`call` on the engine thread, and how long it ran there (not counting this loop's
        delay in noticing). TimeoutError past `bound`: the thread cannot be stopped, only
        the wait ends."""

        def timed() -> tuple[_T, float]:
            started = time.perf_counter()
            return call(), time.perf_counter() - started

        running = asyncio.get_running_loop().run_in_executor(self._executor, timed)
        async with asyncio.timeout(bound):  # not wait_for + shield: fewer hops through the loop
            return await running

    def _observe_step(self, windows: int, finished: int, seconds: float) -> None:
        self.metrics.batch_size.observe(windows)
        self.metrics.engine_seconds.labels("step").observe(seconds)
        self._unresolved_seconds += seconds
        if finished:  # engine seconds per finished window, for wait estimates
            per_window = self._unresolved_seconds / finished
            self._window_seconds = 0.8 * self._window_seconds + 0.2 * per_window
            self._unresolved_seconds = 0.0

    def stall_bound(self, batch_size: int) -> float:
        """Seconds an engine call on `batch_size` items may take before it counts as stalled."""
        return self.stall_seconds * (batch_size + 1)

    async def _run(self, batch: list[_Work]) -> None:
        call = self._engine_call(batch)
        kind = _KINDS.get(batch[0].key, "generate")
        started = time.perf_counter()
        self._running = (started, len(batch) * self._window_seconds)
        bound = self.stall_bound(len(batch))
        try:
            results, seconds = await self._on_engine_thread(call, bound)
        except TimeoutError:
            self._lose_engine(batch, _stalled(len(batch), bound))
            return
        except EngineLostError as lost:
            self._lose_engine(batch, lost)
            return
        except Exception as exc:  # only this batch's callers fail; the loop keeps serving
            log.exception("engine call failed", extra={"batch_size": len(batch), "kind": kind})
            error = EngineError(f"engine failed on a batch of {len(batch)}: {exc}")
            for w in batch:
                if not w.future.done():
                    w.future.set_exception(error)
            return
        finally:
            self._running = None
        finished = time.perf_counter()
        self._observe(kind, batch, seconds)
        for w, value in zip(batch, results, strict=True):
            if not w.future.done():
                w.future.set_result(_Outcome(value, started, finished))

    def _lose_engine(self, batch: list[_Work], lost: EngineLostError) -> None:
        """Fail this batch and everything queued, refuse new work, and tell the server."""
        log.critical("engine lost: %s", lost.message, extra={"batch_size": len(batch)})
        self.lost = lost
        for w in [*batch, *self._pending, *self._in_flight.values()]:
            if not w.future.done():
                w.future.set_exception(lost)
        self._pending.clear()
        self._in_flight.clear()
        self.metrics.queue_depth.set(0)
        if self._on_engine_lost is not None:
            self._on_engine_lost(lost)

    def _engine_call(self, batch: list[_Work]) -> Callable[[], list[Any]]:
        features = [w.features for w in batch]
        if batch[0].key == DETECT:
            return lambda: list(self.engine.detect_language(features))
        if batch[0].key == ALIGN:
            return self._align_call(batch)
        params = batch[0].key
        assert isinstance(params, GenerationParams)
        prompts = [w.prompt or [] for w in batch]
        return lambda: list(self.engine.generate(features, prompts, params))

    def _align_call(self, batch: list[_Work]) -> Callable[[], list[Any]]:
        aligner = word_aligner(self.engine)
        if aligner is None:  # the pipeline rejects word timestamps before this
            raise RuntimeError(f"the {self.engine.info.name} engine cannot align words")
        features = [w.features for w in batch]
        prompts = [w.prompt or [] for w in batch]
        texts = [w.text or ((), 0) for w in batch]
        tokens = [t for t, _ in texts]
        frames = [n for _, n in texts]
        return lambda: list(aligner.align(features, prompts, tokens, frames))

    def _observe(self, kind: str, batch: list[_Work], seconds: float) -> None:
        size = len(batch)
        self.policy.ran(batch, seconds)
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * seconds
        self._window_seconds = 0.8 * self._window_seconds + 0.2 * seconds / size
        self.metrics.batch_size.observe(size)
        self.metrics.engine_seconds.labels(kind).observe(seconds)


def _stalled(windows: int, bound: float) -> EngineLostError:
    return EngineLostError(
        f"the engine did not finish a batch of {windows} within {bound:.0f} s; "
        "this server is stopping so that a healthy one replaces it",
        reason="ENGINE_STALLED",
    )


def _window_request(work: _Work) -> WindowRequest:
    assert isinstance(work.key, GenerationParams | DetectLanguage)
    urgent = work.priority is Priority.FINAL
    return WindowRequest(work.seq, work.features, work.prompt or [], work.key, urgent)
