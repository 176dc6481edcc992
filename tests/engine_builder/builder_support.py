"""Test doubles for the engine builder: a local HTTP file server and the trtllm-build log."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine_builder.catalog import RemoteFile

# --- local HTTP server ---------------------------------------------------------------------


@dataclass
class FileServer:
    """Serves `files` by path on 127.0.0.1 with HTTP Range support; records every request."""

    base_url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    # path -> byte count after which the next response to that path is cut off (once).
    cut_next_response: dict[str, int] = field(default_factory=dict)
    honour_range: bool = True

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def publish(self, path: str, content: bytes) -> RemoteFile:
        self.files[path] = content
        name = path.rsplit("/", 1)[-1]
        return RemoteFile(name=name, url=self.url(path), sha256=hashlib.sha256(content).hexdigest())


def _handler_for(server: FileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            range_header = self.headers.get("Range")
            server.requests.append((self.path, range_header))
            content = server.files.get(self.path)
            if content is None:
                self.send_error(404)
                return
            start = _range_start(range_header) if server.honour_range else None
            if start is not None and start >= len(content):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(content)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = content[start or 0 :]
            self.send_response(200 if start is None else 206)
            if start is not None:
                self.send_header(
                    "Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}"
                )
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            cut = server.cut_next_response.pop(self.path, None)
            self.wfile.write(body if cut is None else body[:cut])

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

    return Handler


def _range_start(header: str | None) -> int | None:
    if header is None:
        return None
    assert header.startswith("bytes=") and header.endswith("-"), header
    return int(header[len("bytes=") : -1])


@contextmanager
def serve_files() -> Iterator[FileServer]:
    """A `FileServer` on an ephemeral 127.0.0.1 port, shut down on exit."""
    state = FileServer()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(state))
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    # A short poll interval keeps shutdown (once per test) fast.
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


# --- fake trtllm-build ---------------------------------------------------------------------


@dataclass
class FakeTrtllmBuild:
    log: Path

    def calls(self) -> list[dict[str, object]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


FAKE_TRTLLM_BUILD = Path(__file__).with_name("fake_trtllm_build.py")


def install_fake_trtllm_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTrtllmBuild:
    """Put the strict fake `trtllm-build` first on PATH; it logs each call's arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    executable = bin_dir / "trtllm-build"
    executable.write_text(f"#!{sys.executable}\n{FAKE_TRTLLM_BUILD.read_text()}")
    executable.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    log = tmp_path / "trtllm-build-calls.jsonl"
    monkeypatch.setenv("FAKE_TRTLLM_BUILD_LOG", str(log))
    monkeypatch.delenv("FAKE_TRTLLM_BUILD_FAIL", raising=False)
    return FakeTrtllmBuild(log)
