"""The batching scheduler with the real tiny.en engine behind a script that holds the first
batch, so the queue behind it can be arranged and inspected deterministically."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.engine_double import ScriptedEngine, Step
from tests.speech import ENGLISH_CLIPS, load_pcm16k, wer
from whisperwire.server.domain import EngineTime, Task
from whisperwire.server.engine import Features, Generation, GenerationParams
from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
from whisperwire.server.errors import BusyError
from whisperwire.server.features import window_features
from whisperwire.server.runner import Priority
from whisperwire.server.scheduler import BatchScheduler
from whisperwire.server.tokenizer import WhisperTokenizer

PARAMS = GenerationParams(max_new_tokens=64)


@pytest.fixture
async def gated(
    tiny_engine: tuple[CTranslate2Engine, WhisperTokenizer],
) -> AsyncIterator[tuple[ScriptedEngine, list[int], list[Features]]]:
    engine, tokenizer = tiny_engine
    prompt = tokenizer.prompt(language="en", task=Task.TRANSCRIBE, timestamps=False)
    windows = [window_features(load_pcm16k(c), engine.info.n_mels) for c in ENGLISH_CLIPS]
    gated = ScriptedEngine(engine)
    gated.script(Step(hold=True))
    yield gated, prompt, windows


async def _hold_first_batch(
    scheduler: BatchScheduler, engine: ScriptedEngine, prompt: list[int], first: Features
) -> asyncio.Task[tuple[list[Generation], EngineTime]]:
    task = asyncio.create_task(
        scheduler.generate([first], [prompt], PARAMS, priority=Priority.FINAL)
    )
    await asyncio.to_thread(engine.entered.wait, 60)
    return task


async def test_finals_run_ahead_of_partials(
    gated: tuple[ScriptedEngine, list[int], list[Features]],
) -> None:
    engine, prompt, (a, b, c) = gated
    scheduler = BatchScheduler(engine, max_batch_size=1, max_wait=0)
    scheduler.start()
    try:
        first = await _hold_first_batch(scheduler, engine, prompt, a)
        partial = asyncio.create_task(
            scheduler.generate([b], [prompt], PARAMS, priority=Priority.PARTIAL)
        )
        final = asyncio.create_task(
            scheduler.generate([c], [prompt], PARAMS, priority=Priority.FINAL)
        )
        await asyncio.sleep(0)  # both are queued behind the held batch
        engine.release()
        await asyncio.gather(first, partial, final)
        assert list(engine.calls) == [(id(a),), (id(c),), (id(b),)]
    finally:
        await scheduler.stop()


async def test_concurrent_callers_share_one_engine_call_and_get_their_own_results(
    gated: tuple[ScriptedEngine, list[int], list[Features]],
    tiny_engine: tuple[CTranslate2Engine, WhisperTokenizer],
) -> None:
    engine, prompt, windows = gated
    tokenizer = tiny_engine[1]
    scheduler = BatchScheduler(engine, max_batch_size=8, max_wait=0)
    scheduler.start()
    try:
        first = await _hold_first_batch(scheduler, engine, prompt, windows[0])
        callers = [
            asyncio.create_task(scheduler.generate([w], [prompt], PARAMS, priority=Priority.FINAL))
            for w in windows
        ]
        await asyncio.sleep(0)
        engine.release()
        await first
        results = await asyncio.gather(*callers)
        assert engine.calls[1] == tuple(id(w) for w in windows)  # one call for all three callers
        for clip, ([generation], spent) in zip(ENGLISH_CLIPS, results, strict=True):
            assert spent.engine > 0  # each caller is told the engine time of its call
            assert wer(clip.reference, tokenizer.decode(generation.token_ids)) <= 0.1
    finally:
        await scheduler.stop()


async def test_cancelled_callers_work_never_reaches_the_engine(
    gated: tuple[ScriptedEngine, list[int], list[Features]],
) -> None:
    engine, prompt, (a, b, c) = gated
    scheduler = BatchScheduler(engine, max_batch_size=8, max_wait=0)
    scheduler.start()
    try:
        first = await _hold_first_batch(scheduler, engine, prompt, a)
        doomed = asyncio.create_task(
            scheduler.generate([b], [prompt], PARAMS, priority=Priority.FINAL)
        )
        kept = asyncio.create_task(
            scheduler.generate([c], [prompt], PARAMS, priority=Priority.FINAL)
        )
        await asyncio.sleep(0)
        doomed.cancel()
        engine.release()
        await asyncio.gather(first, kept)
        assert doomed.cancelled()
        assert all(id(b) not in call for call in engine.calls)
        assert scheduler.queue_depth == 0
    finally:
        await scheduler.stop()


async def test_bounded_queue_rejects_with_a_retry_hint(
    gated: tuple[ScriptedEngine, list[int], list[Features]],
) -> None:
    engine, prompt, (a, b, c) = gated
    scheduler = BatchScheduler(engine, max_batch_size=1, max_wait=0, max_queue=1)
    scheduler.start()
    try:
        first = await _hold_first_batch(scheduler, engine, prompt, a)
        queued = asyncio.create_task(
            scheduler.generate([b], [prompt], PARAMS, priority=Priority.FINAL)
        )
        await asyncio.sleep(0)
        with pytest.raises(BusyError) as raised:
            await scheduler.generate([c], [prompt], PARAMS, priority=Priority.FINAL)
        assert raised.value.retry_after > 0
        engine.release()
        await asyncio.gather(first, queued)
    finally:
        await scheduler.stop()
