"""How the pipeline reaches an engine: directly, or through the batching scheduler."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from enum import IntEnum
from functools import partial
from typing import Protocol, TypeVar

from whisperwire.server.domain import Timings
from whisperwire.server.engine import Engine, Features, Generation, GenerationParams

T = TypeVar("T")


class Priority(IntEnum):
    """Lower runs first: a final someone waits for beats a partial that may be superseded."""

    FINAL = 0
    PARTIAL = 1


class Runner(Protocol):
    async def generate(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        params: GenerationParams,
        *,
        priority: Priority,
        timings: Timings,
    ) -> list[Generation]: ...

    async def detect_language(
        self, features: Sequence[Features], *, priority: Priority, timings: Timings
    ) -> list[list[tuple[str, float]]]: ...


class DirectRunner:
    """Calls the engine in a worker thread, one caller at a time (CLI, benchmarks, tests)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = asyncio.Lock()

    async def generate(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        params: GenerationParams,
        *,
        priority: Priority = Priority.FINAL,
        timings: Timings,
    ) -> list[Generation]:
        size = self._engine.info.max_batch_size
        out: list[Generation] = []
        for i in range(0, len(features), size):
            batch = partial(
                self._engine.generate, features[i : i + size], prompts[i : i + size], params
            )
            out += await self._run(timings, batch)
        return out

    async def detect_language(
        self, features: Sequence[Features], *, priority: Priority = Priority.FINAL, timings: Timings
    ) -> list[list[tuple[str, float]]]:
        return await self._run(timings, partial(self._engine.detect_language, features))

    async def _run(self, timings: Timings, call: Callable[[], T]) -> T:
        queued = time.perf_counter()
        async with self._lock:
            started = time.perf_counter()
            result = await asyncio.to_thread(call)
        timings.queue += started - queued
        timings.engine += time.perf_counter() - started
        return result
