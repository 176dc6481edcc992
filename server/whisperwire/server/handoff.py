"""Uploads to the decode worker processes, and their log-mel back, through files in shared
memory instead of the process pool's pipe.

A decode worker's result is mostly log-mel: about 1 MB per 30 s window, 8 MB for a
four-minute upload. Pickled through the pipe, the server's result thread read it in 64 KiB
pieces and unpickled it holding the interpreter lock, and the pool's feeder thread pickled
every upload into the pipe holding it too. On the H200 under 24 callers uploading back to
back those two threads held the lock for about 18 % of the server's wall time (py-spy), time
that the event loop and the engine thread waited for. Here the sender writes the data to a
file in /dev/shm (memory, not disk) and sends only its name; the receiver reads it back and
unlinks it at once. On the server's side both the write and numpy's read release the lock
while they copy.

Where the data would leave less than a quarter of the mount free (1 GiB on a big one), or a
write fails, the sender gets None and the data goes through the pipe as before: a full
/dev/shm (Docker's is 64 MB) must not starve whatever else uses it. Plain writes fail with an
error where writes into a mapped file would kill the worker with SIGBUS.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]
SHARED_MEMORY = Path("/dev/shm")
KEEP_FREE, KEEP_FREE_MOST = 0.25, 1 << 30  # what files leave free: a share of the mount, ≤ 1 GiB


@dataclass(frozen=True)
class Parcel:
    """Where a worker left its arrays (float32, one after another) and their shapes."""

    path: Path
    shapes: tuple[tuple[int, ...], ...]


def make_directory() -> Path:
    """A fresh directory for one server's files: in shared memory where the system has it
    (else the temporary directory), removed with `remove_directory` when the server stops."""
    shared = SHARED_MEMORY.is_dir() and os.access(SHARED_MEMORY, os.W_OK)
    return Path(
        tempfile.mkdtemp(prefix="whisperwire-handoff-", dir=SHARED_MEMORY if shared else None)
    )


def remove_directory(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def has_room(free: int, total: int, size: int) -> bool:
    """Whether `size` bytes leave KEEP_FREE of a mount of `total` bytes (`free` of them free),
    or KEEP_FREE_MOST on a big one."""
    return free - size >= min(KEEP_FREE * total, KEEP_FREE_MOST)


def send_bytes(data: bytes, directory: Path) -> Path | None:
    """An upload in a new file of `directory` (in the server, on a worker thread), or None."""
    return _write(directory, len(data), lambda file: file.write(data))


def receive_bytes(path: Path) -> bytes:
    """An upload written by send_bytes (in a worker); its file is gone after."""
    try:
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def send(arrays: Sequence[Array], directory: Path) -> Parcel | None:
    """Float32 arrays in a new file of `directory` (in a worker), or None."""
    size = sum(4 * int(np.prod(array.shape)) for array in arrays)

    def write(file: BinaryIO) -> None:
        for array in arrays:
            np.ascontiguousarray(array, dtype=np.float32).tofile(file)

    path = _write(directory, size, write)
    return None if path is None else Parcel(path, tuple(array.shape for array in arrays))


def receive(parcel: Parcel) -> list[Array]:
    """The parcel's arrays (in the server, on a worker thread); its file is gone after."""
    try:
        flat = np.fromfile(parcel.path, dtype=np.float32)
    finally:
        discard(parcel)
    arrays, start = [], 0
    for shape in parcel.shapes:
        size = int(np.prod(shape))
        arrays.append(flat[start : start + size].reshape(shape))
        start += size
    if start != len(flat):
        raise ValueError(f"parcel {parcel.path} holds {len(flat)} floats, {start} expected")
    return arrays


def discard(parcel: Parcel) -> None:
    """Remove a parcel nobody will receive (its caller went away)."""
    parcel.path.unlink(missing_ok=True)


def _write(directory: Path, size: int, write: Callable[[BinaryIO], object]) -> Path | None:
    """A new file in `directory` holding what `write` writes, or None (no room, or the write
    failed: nothing is left behind)."""
    path = directory / uuid.uuid4().hex
    try:
        mount = os.statvfs(directory)
        if not has_room(mount.f_bavail * mount.f_frsize, mount.f_blocks * mount.f_frsize, size):
            return None
        with path.open("xb") as file:
            write(file)
    except OSError:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        return None
    return path
