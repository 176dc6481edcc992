"""Uploads to the decode worker processes, and their log-mel back, through files in shared memory.

A decode worker's result is mostly log-mel: about 1 MB per 30 s window, 8 MB for a
four-minute upload. Pickled through the process pool's pipe, the server's result thread read
it in 64 KiB pieces and unpickled it holding the interpreter lock; under many uploads on the
H200 that thread held the lock for about 15 % of the server's wall time, time the event loop
and the engine thread waited for it. Here the worker writes the arrays into one file (in
/dev/shm: memory, not disk) and sends only its name and shapes; the server reads them back
with numpy, which releases the lock while it copies, and unlinks the file at once. Uploads go
the same way the other way round.

A file that cannot be written (the shared-memory mount is full) is None, and the data goes
through the pipe as before: plain writes fail with an error where
writes into a mapped file would kill the worker with SIGBUS.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]
SHARED_MEMORY = Path("/dev/shm")


@dataclass(frozen=True)
class Parcel:
    """Where a worker left its arrays (float32, one after another) and their shapes."""

    path: str
    shapes: tuple[tuple[int, ...], ...]


def make_directory() -> Path:
    """A fresh directory for one server's parcels: in shared memory where the system has it
    (else the temporary directory), removed with `remove_directory` when the server stops."""
    parent = SHARED_MEMORY if SHARED_MEMORY.is_dir() and os.access(SHARED_MEMORY, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="whisperwire-handoff-", dir=parent))


def remove_directory(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def send_bytes(data: bytes, directory: Path) -> Path | None:
    """Write an upload to a new file in `directory` (in the server, on a worker thread: the
    write releases the lock, where pickling it into the pool's pipe copied it holding the
    lock); None when it cannot be written."""
    path = directory / uuid.uuid4().hex
    try:
        path.write_bytes(data)
    except OSError:
        path.unlink(missing_ok=True)
        return None
    return path


def receive_bytes(path: Path) -> bytes:
    """An upload written by send_bytes (in a worker); its file is gone after."""
    try:
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def send(arrays: Sequence[Array], directory: Path) -> Parcel | None:
    """Write `arrays` to a new file in `directory` (in a worker); None when it cannot be
    written, the file removed again."""
    path = directory / uuid.uuid4().hex
    try:
        with path.open("xb") as file:
            for array in arrays:
                np.ascontiguousarray(array, dtype=np.float32).tofile(file)
    except OSError:
        path.unlink(missing_ok=True)
        return None
    return Parcel(str(path), tuple(array.shape for array in arrays))


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
    with contextlib.suppress(FileNotFoundError):
        os.unlink(parcel.path)
