"""The resumable, hash-checked downloader against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
from builder_support import FileServer

from engine_builder.download import LogProgress, download_file, partial_path
from engine_builder.errors import ChecksumMismatchError, DownloadError

CONTENT = bytes(range(256)) * 4096  # 1 MiB: several read chunks are not needed to prove resume
CONTENT_SHA256 = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture
def served(file_server: FileServer) -> str:
    file_server.files["/models/model.pt"] = CONTENT
    return file_server.url("/models/model.pt")


def test_fresh_download_is_verified_and_reports_progress(
    served: str, file_server: FileServer, tmp_path: Path
) -> None:
    seen: list[tuple[int, int | None]] = []
    dest = download_file(
        served,
        tmp_path / "model.pt",
        sha256=CONTENT_SHA256,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert dest.read_bytes() == CONTENT
    assert not partial_path(dest).exists()
    assert seen[-1] == (len(CONTENT), len(CONTENT))
    assert file_server.requests == [("/models/model.pt", None)]


def test_partial_file_resumes_with_a_range_request(
    served: str, file_server: FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "model.pt"
    partial_path(dest).write_bytes(CONTENT[:300_000])
    seen: list[tuple[int, int | None]] = []
    download_file(served, dest, sha256=CONTENT_SHA256, progress=lambda d, t: seen.append((d, t)))
    assert dest.read_bytes() == CONTENT
    assert file_server.requests == [("/models/model.pt", "bytes=300000-")]
    assert seen[0][0] > 300_000 and seen[-1] == (len(CONTENT), len(CONTENT))


def test_dropped_connection_is_resumed_on_retry(
    served: str, file_server: FileServer, tmp_path: Path
) -> None:
    file_server.cut_next_response["/models/model.pt"] = 123_456
    dest = download_file(served, tmp_path / "model.pt", sha256=CONTENT_SHA256)
    assert dest.read_bytes() == CONTENT
    assert file_server.requests == [
        ("/models/model.pt", None),
        ("/models/model.pt", "bytes=123456-"),
    ]


def test_server_without_range_support_restarts_from_zero(
    served: str, file_server: FileServer, tmp_path: Path
) -> None:
    file_server.honour_range = False
    dest = tmp_path / "model.pt"
    partial_path(dest).write_bytes(b"stale bytes that must not be kept")
    download_file(served, dest, sha256=CONTENT_SHA256)
    assert dest.read_bytes() == CONTENT


def test_complete_partial_file_is_verified_after_a_416(
    served: str, file_server: FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "model.pt"
    partial_path(dest).write_bytes(CONTENT)
    download_file(served, dest, sha256=CONTENT_SHA256)
    assert dest.read_bytes() == CONTENT
    assert file_server.requests == [("/models/model.pt", f"bytes={len(CONTENT)}-")]


def test_hash_mismatch_raises_and_keeps_no_file(served: str, tmp_path: Path) -> None:
    dest = tmp_path / "model.pt"
    with pytest.raises(ChecksumMismatchError, match="expected " + "0" * 64):
        download_file(served, dest, sha256="0" * 64)
    assert not dest.exists()
    assert not partial_path(dest).exists()


def test_corrupt_partial_file_is_not_used(served: str, tmp_path: Path) -> None:
    dest = tmp_path / "model.pt"
    partial_path(dest).write_bytes(b"\xff" * 1000)  # right length prefix, wrong bytes
    with pytest.raises(ChecksumMismatchError):
        download_file(served, dest, sha256=CONTENT_SHA256)
    assert not dest.exists()
    assert not partial_path(dest).exists()
    download_file(served, dest, sha256=CONTENT_SHA256)  # the next attempt starts clean
    assert dest.read_bytes() == CONTENT


def test_verified_file_is_not_downloaded_again(
    served: str, file_server: FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "model.pt"
    dest.write_bytes(CONTENT)
    download_file(served, dest, sha256=CONTENT_SHA256)
    assert file_server.requests == []


def test_final_file_with_wrong_hash_is_replaced(
    served: str, file_server: FileServer, tmp_path: Path
) -> None:
    dest = tmp_path / "model.pt"
    dest.write_bytes(b"tampered")
    download_file(served, dest, sha256=CONTENT_SHA256)
    assert dest.read_bytes() == CONTENT
    assert len(file_server.requests) == 1


def test_missing_file_fails_without_retrying(file_server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(file_server.url("/nope.pt"), tmp_path / "nope.pt", sha256=CONTENT_SHA256)
    assert len(file_server.requests) == 1
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_gives_up_after_the_attempts(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="after 2 attempts"):
        download_file(
            "http://127.0.0.1:9/model.pt", tmp_path / "m.pt", sha256=CONTENT_SHA256, attempts=2
        )


def test_log_progress_logs_every_ten_percent(caplog: pytest.LogCaptureFixture) -> None:
    progress = LogProgress("model.pt")
    with caplog.at_level(logging.INFO, logger="engine_builder.download"):
        for done in range(0, 1001, 7):
            progress(done, 1000)
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 10
    assert logged[0] == "downloading model.pt: 0/1000 bytes"
    assert logged[-1] == "downloading model.pt: 903/1000 bytes"
