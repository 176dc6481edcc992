"""The batching scheduler with the real tiny.en engine behind a gate that holds the first batch,
so the queue behind it can be arranged and inspected deterministically."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence

import pytest

from tests.speech import ENGLISH_CLIPS, load_pcm16k, wer
from whisperwire.server.domain import Task, Timings
from whisperwire.server.engine import Features, Generation, GenerationParams
from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
from whisperwire.server.errors import BusyError
from whisperwire.server.features import window_features
from whisperwire.server.runner import Priority
from whisperwire.server.scheduler import BatchScheduler
from whisperwire.server.tokenizer import WhisperTokenizer

PARAMS = GenerationParams(max_new_tokens=64)


class GatedEngine:
    """The real engine; the first generate call waits for `gate`; every batch is recorded."""

    def __init__(self, inner: CTranslate2Engine) -> None:
        self.inner, self.info = inner, inner.info
        self.gate, self.entered = threading.Event(), threading.Event()
        self.batches: list[list[int]] = []  # ids of the feature arrays in each call

    def generate(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        params: GenerationParams,
    ) -> list[Generation]:
        self.batches.append([id(f) for f in features])
        if len(self.batches) == 1:
            self.entered.set()
            self.gate.wait(timeout=60)
        return self.inner.generate(features, prompts, params)

    def detect_language(self, features: Sequence[Features]) -> list[list[tuple[str, float]]]:
        return self.inner.detect_language(features)


@pytest.fixture
async def gated(
    tiny_engine: tuple[CTranslate2Engine, WhisperTokenizer],
) -> AsyncIterator[tuple[GatedEngine, list[int], list[Features]]]:
    engine, tokenizer = tiny_engine
    prompt = tokenizer.prompt(language="en", task=Task.TRANSCRIBE, timestamps=False)
    windows = [window_features(load_pcm16k(c), engine.info.n_mels) for c in ENGLISH_CLIPS]
    yield GatedEngine(engine), prompt, windows


async def _hold_first_batch(
    scheduler: BatchScheduler, engine: GatedEngine, prompt: list[int], first: Features
) -> asyncio.Task[list[Generation]]:
    task = asyncio.create_task(
        scheduler.generate([first], [prompt], PARAMS, priority=Priority.FINAL, timings=Timings())
    )
    await asyncio.to_thread(engine.entered.wait, 60)
    return task


async def test_finals_run_ahead_of_partials(
    gated: tuple[GatedEngine, list[int], list[Features]],
) -> None:
    engine, prompt, (a, b, c) = gated
    scheduler = BatchScheduler(engine, max_batch_size=1, max_wait=0)  # type: ignore[arg-type]
    scheduler.start()
    try:
        first = await _hold_first_batch(scheduler, engine, prompt, a)
        partial = asyncio.create_task(
            scheduler.generate([b], [prompt], PARAMS, priority=Priority.PARTIAL, timings=Timings())
        )
        final = asyncio.create_task(
            scheduler.generate([c], [prompt], PARAMS, priority=Priority.FINAL, timings=Timings())
        )
        await asyncio.sleep(0)  # both are queued behind the held batch
        engine.gate.set()
        await asyncio.gather(first, partial, final)
        assert engine.batches == [[id(a)], [id(c)], [id(b)]]
    finally:
        await scheduler.stop()


async def test_concurrent_callers_share_one_engine_call_and_get_their_own_results(
    gated: tuple[GatedEngine, list[int], list[Features]],
    tiny_engine: tuple[CTranslate2Engine, WhisperTokenizer],
) -> None:
    engine, prompt, windows = gated
    tokenizer = tiny_engine[1]
    scheduler = BatchScheduler(engine, max_batch_size=8, max_wait=0)  # type: ignore[arg-type]
    scheduler.start()
    try:
        first = await _hold_first_batch(scheduler, engine, prompt, windows[0])
        callers = [
            asyncio.create_task(
                scheduler.generate(
                    [w], [prompt], PARAMS, priority=Priority.FINAL, timings=Timings()
                )
            )
            for w in windows
        ]
        await asyncio.sleep(0)
        engine.gate.set()
        await first
        results = await asyncio.gather(*callers)
        assert engine.batches[1] == [id(w) for w in windows]  # one call for all three callers
        for clip, [generation] in zip(ENGLISH_CLIPS, results, strict=True):
            assert wer(clip.reference, tokenizer.decode(generation.token_ids)) <= 0.1
    finally:
        await scheduler.stop()


async def test_cancelled_callers_work_never_reaches_the_engine(
    gated: tuple[GatedEngine, list[int], list[Features]],
) -> None:
    engine, prompt, (a, b, c) = gated
    scheduler = BatchScheduler(engine, max_batch_size=8, max_wait=0)  # type: ignore[arg-type]
    scheduler.start()
    try:
        first = await _hold_first_batch(scheduler, engine, prompt, a)
        doomed = asyncio.create_task(
            scheduler.generate([b], [prompt], PARAMS, priority=Priority.FINAL, timings=Timings())
        )
        kept = asyncio.create_task(
            scheduler.generate([c], [prompt], PARAMS, priority=Priority.FINAL, timings=Timings())
        )
        await asyncio.sleep(0)
        doomed.cancel()
        engine.gate.set()
        await asyncio.gather(first, kept)
        assert doomed.cancelled()
        assert all(id(b) not in batch for batch in engine.batches)
        assert scheduler.queue_depth == 0
    finally:
        await scheduler.stop()


async def test_bounded_queue_rejects_with_a_retry_hint(
    gated: tuple[GatedEngine, list[int], list[Features]],
) -> None:
    engine, prompt, (a, b, c) = gated
    scheduler = BatchScheduler(engine, max_batch_size=1, max_wait=0, max_queue=1)  # type: ignore[arg-type]
    scheduler.start()
    try:
        first = await _hold_first_batch(scheduler, engine, prompt, a)
        queued = asyncio.create_task(
            scheduler.generate([b], [prompt], PARAMS, priority=Priority.FINAL, timings=Timings())
        )
        await asyncio.sleep(0)
        with pytest.raises(BusyError) as raised:
            await scheduler.generate(
                [c], [prompt], PARAMS, priority=Priority.FINAL, timings=Timings()
            )
        assert raised.value.retry_after > 0
        engine.gate.set()
        await asyncio.gather(first, queued)
    finally:
        await scheduler.stop()
