"""Worker processes that decode and window uploaded files (`--decode-processes`).

Uploads are bulk work: decoding a file and computing its windows' log-mel in other processes
keeps that CPU time off the server's interpreter lock, and at a lower CPU priority. Their
results (mostly log-mel) come back through shared memory (handoff.py), not the pool's pipe.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from functools import partial
from pathlib import Path

from threadpoolctl import threadpool_limits

from whisperwire.server import handoff
from whisperwire.server.pipeline import (
    Decode,
    Prepared,
    ShippedUpload,
    Windowing,
    prepare_shipped_upload,
    receive_upload,
)

DECODE_WORKER_NICENESS = 10


class DecodePool:
    def __init__(self, processes: int) -> None:
        # Spawned, not forked: the server process holds gRPC threads and perhaps a CUDA context.
        self.executor = ProcessPoolExecutor(
            processes, mp_context=multiprocessing.get_context("spawn"), initializer=_bulk_worker
        )
        self.directory = handoff.make_directory()

    async def prepare(
        self, data: bytes, decode: Decode, how: Windowing, max_seconds: float
    ) -> list[Prepared]:
        """Decode and window an upload in a worker; its channels, features and all."""
        sent = await asyncio.to_thread(handoff.send_bytes, data, self.directory)
        upload = data if sent is None else sent
        job = partial(prepare_shipped_upload, upload, decode, how, max_seconds, self.directory)
        future = self.executor.submit(job)
        try:
            shipped = await asyncio.wrap_future(future)
        except asyncio.CancelledError:  # the worker may still finish the job, or never start it
            future.add_done_callback(partial(_discard_unreceived, sent))
            raise
        return await asyncio.to_thread(receive_upload, shipped)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        handoff.remove_directory(self.directory)


def _discard_unreceived(upload: Path | None, future: Future[ShippedUpload]) -> None:
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
