"""Uploads decoded in worker processes come back through shared memory (handoff.py): the same
windows as on a thread, no file left behind, whether the caller waits or goes away."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from tests.grpc_helpers import until
from tests.speech import HESTER, JFK
from whisperwire.server import audio as audio_io
from whisperwire.server import handoff
from whisperwire.server.decode_pool import DecodePool
from whisperwire.server.errors import AudioDecodeError
from whisperwire.server.pipeline import Prepared, Windowing, prepare_upload

HOW = Windowing(n_mels=80, vad_aggressiveness=2, per_span=False)
MAX_SECONDS = 3600.0


def _decode(data: bytes) -> list[audio_io.Audio]:
    return [audio_io.decode_audio(data, max_seconds=MAX_SECONDS)]


def _slow_decode(data: bytes, seconds: float = 0.5) -> list[audio_io.Audio]:
    time.sleep(seconds)
    return _decode(data)


@pytest.fixture
async def pool() -> AsyncIterator[DecodePool]:
    pool = DecodePool(2)
    try:
        yield pool
    finally:
        pool.shutdown()


def _assert_same(ours: list[Prepared], reference: list[Prepared]) -> None:
    assert len(ours) == len(reference)
    for channel, expected in zip(ours, reference, strict=True):
        assert channel.duration == expected.duration
        assert len(channel.windows) == len(expected.windows) > 0
        for window, want in zip(channel.windows, expected.windows, strict=True):
            assert (window.start, window.end) == (want.start, want.end)
            assert window.features.dtype == np.float32
            np.testing.assert_array_equal(window.features, want.features)


async def test_windows_come_back_whole_and_leave_no_file(pool: DecodePool) -> None:
    for clip in (JFK, HESTER):
        ours = await pool.prepare(clip.read(), _decode, HOW, MAX_SECONDS)
        # The same job pickled through the pool's pipe, as before parcels (in a worker too:
        # its one BLAS thread rounds the log-mel's matrix product as the parcel's did).
        decode = partial(_decode, clip.read())
        piped = pool.executor.submit(prepare_upload, decode, HOW, MAX_SECONDS)
        _assert_same(ours, await asyncio.wrap_future(piped))
    assert list(pool.directory.iterdir()) == []


async def test_without_shared_memory_everything_takes_the_pipe() -> None:
    piped = DecodePool(1, shared_memory=False)
    try:
        assert piped.directory is None
        ours = await piped.prepare(JFK.read(), _decode, HOW, MAX_SECONDS)
        reference = piped.executor.submit(
            prepare_upload, partial(_decode, JFK.read()), HOW, MAX_SECONDS
        )
        _assert_same(ours, await asyncio.wrap_future(reference))
    finally:
        piped.shutdown()


async def test_a_caller_that_went_away_leaves_no_file(pool: DecodePool) -> None:
    """Cancelled while the worker decodes: the worker's job cannot be stopped, and the parcel
    it writes anyway is removed when it arrives."""
    await pool.prepare(JFK.read(), _decode, HOW, MAX_SECONDS)  # the workers are up
    task = asyncio.create_task(pool.prepare(HESTER.read(), _slow_decode, HOW, MAX_SECONDS))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.5)  # the job is done by now: its parcel was written
    assert await until(lambda: not list(pool.directory.iterdir()))


async def test_a_caller_gone_while_its_upload_is_written_leaves_no_file(pool: DecodePool) -> None:
    """Cancelled while its upload's file is being written on a thread: the write cannot be
    stopped, and the file goes once written."""
    task = asyncio.create_task(pool.prepare(HESTER.read(), _decode, HOW, MAX_SECONDS))
    await asyncio.sleep(0)  # the task is writing the upload's file on a thread
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.2)
    assert await until(lambda: not list(pool.directory.iterdir()))


async def test_a_job_cancelled_before_it_ran_leaves_no_upload(pool: DecodePool) -> None:
    """Both workers busy and their queue full (the pool hands workers one job more than
    there are workers): a sixth caller's job waits in the pool with its upload in a file;
    cancelled there, it never runs, and its upload file goes."""
    await pool.prepare(JFK.read(), _decode, HOW, MAX_SECONDS)  # the workers are up
    busy = [
        asyncio.create_task(pool.prepare(HESTER.read(), _slow_decode, HOW, MAX_SECONDS))
        for _ in range(5)
    ]
    waiting = asyncio.create_task(pool.prepare(JFK.read(), _decode, HOW, MAX_SECONDS))
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    for channels in await asyncio.gather(*busy):
        assert channels[0].windows
    assert await until(lambda: not list(pool.directory.iterdir()))


async def test_decode_errors_cross_the_process_boundary(pool: DecodePool) -> None:
    with pytest.raises(AudioDecodeError):
        await pool.prepare(JFK.read()[:200], _decode, HOW, MAX_SECONDS)
    assert list(pool.directory.iterdir()) == []  # the upload's file went with the failed job


def test_parcel_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal(shape).astype(np.float32) for shape in ((80, 3000), (3,), (2, 5))]
    parcel = handoff.send(arrays, tmp_path)
    assert parcel is not None
    back = handoff.receive(parcel)
    for got, want in zip(back, arrays, strict=True):
        np.testing.assert_array_equal(got, want)
    assert list(tmp_path.iterdir()) == []


def test_a_parcel_that_cannot_be_written_is_none(tmp_path: Path) -> None:
    """The directory is gone (the server stopped while a worker finished): the worker sends
    its result through the pipe instead, and writes nothing."""
    gone = tmp_path / "stopped-server"
    assert handoff.send([np.zeros((2, 2), np.float32)], gone) is None
    assert not gone.exists()


def test_files_leave_a_quarter_of_the_mount_free_or_a_gibibyte() -> None:
    mib, gib = 1 << 20, 1 << 30
    assert handoff.has_room(free=64 * mib, total=64 * mib, size=48 * mib)  # Docker's /dev/shm
    assert not handoff.has_room(free=64 * mib, total=64 * mib, size=48 * mib + 1)
    assert not handoff.has_room(free=10 * mib, total=64 * mib, size=1)
    assert handoff.has_room(free=56 * gib, total=252 * gib, size=8 * mib)  # a disk
    assert not handoff.has_room(free=gib, total=252 * gib, size=1)


def test_the_directory_is_in_shared_memory_where_there_is_some() -> None:
    directory = handoff.make_directory()
    try:
        assert directory.is_dir()
        if handoff.SHARED_MEMORY.is_dir() and os.access(handoff.SHARED_MEMORY, os.W_OK):
            assert directory.parent == handoff.SHARED_MEMORY
    finally:
        handoff.remove_directory(directory)
    assert not directory.exists()
