"""How the pipeline reaches an engine: directly, or through the batching scheduler. Both
return, with each result, the queue and engine time they measured for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from enum import IntEnum
from functools import partial
from typing import Protocol, TypeVar

from whisperwire.server.domain import EngineTime
from whisperwire.server.engine import (
    Alignment,
    Engine,
    Features,
    Generation,
    GenerationParams,
    word_aligner,
)

T = TypeVar("T")


class Priority(IntEnum):
    """Lower runs first: a final someone waits for beats a partial that may be superseded, and
    both (interactive work, a stream's) beat bulk work: files and long audio, which no one
    watches word by word."""

    FINAL = 0
    PARTIAL = 1
    BULK = 2

    @property
    def interactive(self) -> bool:
        return self is not Priority.BULK


class Runner(Protocol):
    async def generate(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        params: GenerationParams,
        *,
        priority: Priority,
    ) -> tuple[list[Generation], EngineTime]: ...

    async def detect_language(
        self, features: Sequence[Features], *, priority: Priority
    ) -> tuple[list[list[tuple[str, float]]], EngineTime]: ...

    async def align(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        text_tokens: Sequence[Sequence[int]],
        num_frames: Sequence[int],
        *,
        priority: Priority,
    ) -> tuple[list[Alignment], EngineTime]: ...

    def admit(self, priority: Priority) -> None:
        """Raise BusyError when new work of `priority` would wait past the latency target."""


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
    ) -> tuple[list[Generation], EngineTime]:
        size = self._engine.info.max_batch_size
        out: list[Generation] = []
        spent = EngineTime()
        for i in range(0, len(features), size):
            batch = partial(
                self._engine.generate, features[i : i + size], prompts[i : i + size], params
            )
            generations, batch_time = await self._run(batch)
            out += generations
            spent += batch_time
        return out, spent

    async def detect_language(
        self, features: Sequence[Features], *, priority: Priority = Priority.FINAL
    ) -> tuple[list[list[tuple[str, float]]], EngineTime]:
        return await self._run(partial(self._engine.detect_language, features))

    async def align(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        text_tokens: Sequence[Sequence[int]],
        num_frames: Sequence[int],
        *,
        priority: Priority = Priority.FINAL,
    ) -> tuple[list[Alignment], EngineTime]:
        aligner = word_aligner(self._engine)
        if aligner is None:
            raise RuntimeError(f"the {self._engine.info.name} engine cannot align words")
        return await self._run(partial(aligner.align, features, prompts, text_tokens, num_frames))

    def admit(self, priority: Priority) -> None:
        """One caller at a time has no latency target to keep: everyone waits their turn."""

    async def _run(self, call: Callable[[], T]) -> tuple[T, EngineTime]:
        queued = time.perf_counter()
        async with self._lock:
            started = time.perf_counter()
            result = await asyncio.to_thread(call)
        return result, EngineTime.between(queued, started, time.perf_counter())
