"""A one-line progress bar on stderr for many or long files (unary calls report no progress
of their own, so it counts files and audio seconds and keeps an elapsed clock ticking)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import TextIO

WIDTH = 24


class ProgressBar:
    def __init__(self, total_files: int, total_seconds: float | None, out: TextIO = sys.stderr):
        self.total_files = total_files
        self.total_seconds = total_seconds
        self.out = out
        self.files_done = 0
        self.seconds_done = 0.0
        self.current = ""
        self._started = time.monotonic()
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ProgressBar:
        self._ticker = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self.clear()

    def begin(self, name: str) -> None:
        self.current = name
        self.draw()

    def done(self, seconds: float | None) -> None:
        self.files_done += 1
        self.seconds_done += seconds or 0.0
        self.draw()

    def clear(self) -> None:
        self.out.write("\r\033[K")
        self.out.flush()

    def draw(self) -> None:
        self.out.write("\r\033[K" + self.line())
        self.out.flush()

    def line(self) -> str:
        fraction = self._fraction()
        filled = round(fraction * WIDTH)
        elapsed = time.monotonic() - self._started
        audio = ""
        if self.total_seconds:
            audio = f"  {self.seconds_done:.0f}/{self.total_seconds:.0f} s audio"
        return (
            f"[{'#' * filled}{'.' * (WIDTH - filled)}] {self.files_done}/{self.total_files} files"
            f"{audio}  {int(elapsed) // 60}:{int(elapsed) % 60:02d}  {self.current}"
        )

    def _fraction(self) -> float:
        if self.total_seconds:
            return min(1.0, self.seconds_done / self.total_seconds)
        return self.files_done / max(1, self.total_files)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.draw()
