"""`whisperwire serve` as a subprocess: started on port 0, its port read from the banner, its
output drained (a chatty server must never block on a full pipe), its CPU and memory read
from /proc, and stopped with SIGTERM or killed."""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

WHISPERWIRE = str(Path(sys.executable).parent / "whisperwire")
BANNER = re.compile(r"whisperwire serving .* on (?P<host>.+):(?P<port>\d+)\s*$")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class ServeProcess:
    """One running `whisperwire serve`; use `start` to make one."""

    process: subprocess.Popen[str]
    port: int = 0
    lines: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=400))
    _banner: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(
        cls, *flags: str, env: dict[str, str] | None = None, timeout: float = 120.0
    ) -> ServeProcess:
        """Start `whisperwire serve --model tiny.en --port 0 FLAGS` and wait for its banner."""
        process = subprocess.Popen(
            [WHISPERWIRE, "serve", "--model", "tiny.en", "--port", "0", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        server = cls(process)
        threading.Thread(target=server._drain, name="serve-output", daemon=True).start()
        if not server._banner.wait(timeout) or not server.port:
            server.kill()
            raise AssertionError(f"no banner within {timeout} s:\n{server.output}")
        return server

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process (all its threads) so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
        return (utime + stime) / CLOCK_TICKS

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("VmRSS missing from /proc status")

    def terminate(self) -> None:
        """SIGTERM: the server drains its open streams and exits."""
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if not self._banner.is_set() and (match := BANNER.search(line)):
                self.port = int(match.group("port"))
                self._banner.set()
        self._banner.set()  # the process ended: stop waiting for a banner
