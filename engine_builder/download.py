"""Resumable HTTP(S) downloads with SHA-256 verification, on the standard library.

Bytes go to `<dest>.part` first; an interrupted transfer resumes from the partial file with an
HTTP Range request. Only bytes whose SHA-256 matches are renamed to `dest`, so a file at
`dest` is always a verified one.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from engine_builder.errors import ChecksumMismatchError, DownloadError

_LOGGER = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None], None]
"""Called with (bytes on disk so far, total size or None when the server does not say)."""

_CHUNK_BYTES = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_RANGE_NOT_SATISFIABLE = 416


class _IncompleteTransferError(OSError):
    """The connection ended before the announced size arrived (resumable)."""


class LogProgress:
    """A progress callback that logs every `step_percent` percent (or every 64 MiB if unsized)."""

    def __init__(self, label: str, *, step_percent: int = 10) -> None:
        self._label = label
        self._step = step_percent
        self._next_mark = 0

    def __call__(self, done: int, total: int | None) -> None:
        mark = done * 100 // total if total else done >> 26
        if mark >= self._next_mark:
            self._next_mark = mark + (self._step if total else 1)
            size = f"/{total}" if total else ""
            _LOGGER.info("downloading %s: %d%s bytes", self._label, done, size)


def download_file(
    url: str,
    dest: Path,
    *,
    sha256: str,
    progress: ProgressCallback | None = None,
    attempts: int = 3,
    timeout: float = 60.0,
) -> Path:
    """Download `url` to `dest` unless a file with that SHA-256 is already there.

    Retries network failures up to `attempts` times, resuming each time. Raises
    `ChecksumMismatchError` (and deletes the bad bytes) when the hash does not match,
    `DownloadError` when the server refuses or the retries run out.
    """
    if dest.is_file():
        if file_sha256(dest) == sha256:
            _LOGGER.info("%s already downloaded and verified", dest)
            return dest
        _LOGGER.warning("%s does not match its SHA-256; downloading it again", dest)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(dest)
    _transfer_with_retries(
        url, partial, progress or (lambda _done, _total: None), attempts, timeout
    )
    _verify_and_publish(partial, dest, sha256)
    return dest


def partial_path(dest: Path) -> Path:
    """Where the bytes of `dest` collect until they are verified."""
    return dest.with_name(dest.name + ".part")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _transfer_with_retries(
    url: str, partial: Path, progress: ProgressCallback, attempts: int, timeout: float
) -> None:
    for attempt in range(1, attempts + 1):
        try:
            _transfer(url, partial, progress, timeout)
            return
        except urllib.error.HTTPError as error:
            # Client errors will not go away by asking again.
            if error.code < 500 or attempt == attempts:
                raise DownloadError(
                    f"GET {url} failed: HTTP {error.code} {error.reason}"
                ) from error
            _LOGGER.warning("GET %s: HTTP %d, retrying (%d/%d)", url, error.code, attempt, attempts)
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            if attempt == attempts:
                raise DownloadError(
                    f"GET {url} failed after {attempts} attempts: {error}"
                ) from error
            _LOGGER.warning("GET %s: %s, resuming (%d/%d)", url, error, attempt, attempts)


def _transfer(url: str, partial: Path, progress: ProgressCallback, timeout: float) -> None:
    """Append the missing bytes of `url` to `partial` (or restart it if the server can't resume)."""
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        )
    except urllib.error.HTTPError as error:
        if error.code == _RANGE_NOT_SATISFIABLE and offset:
            return  # The partial file is already whole (or too long): the hash decides.
        raise
    with response:
        resumed = offset > 0 and _resumes_at(response, offset)
        if offset and not resumed:
            _LOGGER.info("%s: server did not resume at byte %d; starting over", url, offset)
        start = offset if resumed else 0
        total = _total_size(response, start)
        with partial.open("ab" if resumed else "wb") as sink:
            done = _copy(response, sink, start, total, progress)
    if total is not None and done < total:
        raise _IncompleteTransferError(f"connection closed at byte {done} of {total}")


def _copy(
    response: http.client.HTTPResponse,
    sink: BinaryIO,
    done: int,
    total: int | None,
    progress: ProgressCallback,
) -> int:
    while chunk := response.read(_CHUNK_BYTES):
        sink.write(chunk)
        done += len(chunk)
        progress(done, total)
    return done


def _resumes_at(response: http.client.HTTPResponse, offset: int) -> bool:
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    if response.status != http.client.PARTIAL_CONTENT or match is None:
        return False
    return int(match[1]) == offset


def _total_size(response: http.client.HTTPResponse, start: int) -> int | None:
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    if match and match[3] != "*":
        return int(match[3])
    length = response.headers.get("Content-Length")
    return start + int(length) if length is not None else None


def _verify_and_publish(partial: Path, dest: Path, sha256: str) -> None:
    actual = file_sha256(partial)
    if actual != sha256:
        partial.unlink()
        raise ChecksumMismatchError(
            f"{dest.name}: SHA-256 is {actual}, expected {sha256}; the download was discarded"
        )
    os.replace(partial, dest)
