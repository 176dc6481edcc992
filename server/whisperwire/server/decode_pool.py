"""Worker processes that decode and window uploaded files (`--decode-processes`).

Uploads are bulk work: decoding a file and computing its windows' log-mel in other processes
keeps that CPU time off the server's interpreter lock, and at a lower CPU priority. An upload
goes to its worker, and its windows' log-mel comes back, through files in shared memory
(handoff.py) rather than pickled through the pool's pipe.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from whisperwire.server import handoff
from whisperwire.server.engine import Features
from whisperwire.server.pipeline import Decode, Prepared, Windowing, prepare_upload

DECODE_WORKER_NICENESS = 10


class DecodePool:
    def __init__(self, processes: int, *, shared_memory: bool = True) -> None:
        """`shared_memory` False sends everything through the pool's pipe (for comparison:
        benchmarks/upload_handoff.py)."""
        # Spawned, not forked: the server process holds gRPC threads and perhaps a CUDA context.
        self.executor = ProcessPoolExecutor(
            processes, mp_context=multiprocessing.get_context("spawn"), initializer=_bulk_worker
        )
        self.directory = handoff.make_directory() if shared_memory else None

    async def prepare(
        self, data: bytes, decode: Decode, how: Windowing, max_seconds: float
    ) -> list[Prepared]:
        """Decode and window an upload in a worker; its channels, features and all."""
        sent = await self._send(data)
        upload = data if sent is None else sent
        job = partial(_prepare_in_worker, upload, decode, how, max_seconds, self.directory)
        future = self.executor.submit(job)
        try:
            shipped = await asyncio.wrap_future(future)
        except asyncio.CancelledError:  # the worker may still finish the job, or never start it
            future.add_done_callback(partial(_discard_unreceived, sent))
            raise
        return await asyncio.to_thread(_receive, shipped)  # removes the parcel, even if cancelled

    async def _send(self, data: bytes) -> Path | None:
        """The upload in a file (written on a thread), or None: it goes through the pipe."""
        if self.directory is None:
            return None
        send = asyncio.to_thread(handoff.send_bytes, data, self.directory)
        sending = asyncio.ensure_future(send)
        try:
            return await asyncio.shield(sending)
        except asyncio.CancelledError:  # the write goes on: its file goes once written
            sending.add_done_callback(_discard_sent)
            raise

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        if self.directory is not None:
            handoff.remove_directory(self.directory)


@dataclass(frozen=True)
class _Shipped:
    """A worker's channels: with a parcel, their windows' features travel in it and the
    windows hold empty placeholders."""

    channels: list[Prepared]
    parcel: handoff.Parcel | None


_IN_PARCEL: Features = np.zeros((0, 0), np.float32)


def _prepare_in_worker(
    upload: bytes | Path,
    decode: Decode,
    how: Windowing,
    max_seconds: float,
    directory: Path | None,
) -> _Shipped:
    """prepare_upload in a worker: the upload from its file (or pickled), the windows'
    features into a parcel in `directory` where they fit."""
    data = handoff.receive_bytes(upload) if isinstance(upload, Path) else upload
    channels = prepare_upload(partial(decode, data), how, max_seconds)
    features = [w.features for c in channels for w in c.windows]
    parcel = None if directory is None else handoff.send(features, directory)
    if parcel is None:
        return _Shipped(channels, None)  # through the pipe, pickled
    return _Shipped(_with_features(channels, itertools.repeat(_IN_PARCEL)), parcel)


def _receive(shipped: _Shipped) -> list[Prepared]:
    """The shipped channels with their features back in their windows (in the server)."""
    if shipped.parcel is None:
        return shipped.channels
    return _with_features(shipped.channels, iter(handoff.receive(shipped.parcel)))


def _with_features(channels: list[Prepared], features: Iterator[Features]) -> list[Prepared]:
    """The channels with each window's features taken in turn from `features`."""
    return [
        replace(c, windows=[replace(w, features=next(features)) for w in c.windows])
        for c in channels
    ]


def _discard_sent(sending: asyncio.Future[Path | None]) -> None:
    if not sending.cancelled() and sending.exception() is None and (path := sending.result()):
        path.unlink(missing_ok=True)


def _discard_unreceived(upload: Path | None, future: Future[_Shipped]) -> None:
    """A job whose caller went away: remove its upload if it never ran, its parcel if any."""
    if future.cancelled():
        if upload is not None:
            upload.unlink(missing_ok=True)
        return
    if future.exception() is None and (parcel := future.result().parcel) is not None:
        handoff.discard(parcel)


def _bulk_worker() -> None:
    """A decode worker's log-mel on one BLAS thread: N workers × a per-core BLAS pool would
    oversubscribe the cores many times over. And uploads are bulk work: on a busy machine the
    server process (streams' log-mel, the event loop, the engine thread) gets the cores first."""
    threadpool_limits(limits=1, user_api="blas")
    os.nice(DECODE_WORKER_NICENESS)
