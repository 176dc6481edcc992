"""DirectRunner: one caller at a time, and each result's time split into queue and engine."""

from __future__ import annotations

import asyncio

import numpy as np

from tests.engine_double import ScriptedEngine, Step
from whisperwire.server.engine import GenerationParams
from whisperwire.server.runner import DirectRunner

ENGINE_SECONDS = 0.3


async def test_a_caller_behind_another_is_timed_as_queued_not_as_engine() -> None:
    engine = ScriptedEngine()
    engine.script(Step(delay=ENGINE_SECONDS))  # the first call takes a while; the second not
    runner = DirectRunner(engine)
    window = np.zeros((engine.info.n_mels, 3000), dtype=np.float32)
    params = GenerationParams(max_new_tokens=8)
    (_, first), (_, second) = await asyncio.gather(
        runner.generate([window], [[]], params), runner.generate([window], [[]], params)
    )
    assert first.engine >= ENGINE_SECONDS > first.queue
    # The second waited its turn for the whole first call, then took no time in the engine.
    assert second.queue >= ENGINE_SECONDS > second.engine
