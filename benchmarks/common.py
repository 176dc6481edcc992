"""Shared helpers: clips, statistics, worker subprocess protocol, result files and tables."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from subprocess import PIPE
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from tests.speech import CHINESE, HESTER, JFK, NIGHTFALL, Clip, load_pcm16k, normalise

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SAMPLE_RATE = 16000
Audio = npt.NDArray[np.float32]

SHORT_CLIPS: tuple[Clip, ...] = (JFK, NIGHTFALL, HESTER, CHINESE)
ENGLISH_CLIPS: tuple[Clip, ...] = (JFK, NIGHTFALL, HESTER)


def clip_key(clip: Clip) -> str:
    """A short name for tables: the file name without its extension."""
    return Path(clip.name).stem


def load_clip(clip: Clip, max_seconds: float | None = None) -> Audio:
    samples = load_pcm16k(clip)
    if max_seconds is not None:
        samples = samples[: int(max_seconds * SAMPLE_RATE)]
    return np.ascontiguousarray(samples, dtype=np.float32)


def seconds_of(samples: Audio) -> float:
    return len(samples) / SAMPLE_RATE


# ---- statistics ---------------------------------------------------------------------------
def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default); with few samples p99 ≈ the max."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def interleaved(round_index: int, sides: Sequence[str]) -> list[str]:
    """The sides rotated by the round: A, B then B, A (A, B, C then B, C, A ...), so no side
    always runs first."""
    k = round_index % len(sides)
    return [*sides[k:], *sides[:k]]


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def peak_rss_mib() -> float:
    """This process's peak resident set size (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sleep_until(when: float) -> None:
    """Sleep until the event loop's clock reaches `when` (pacing of real-time audio)."""
    delay = when - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


def ints(text: str) -> list[int]:
    """An argparse type: "1,2,4" -> [1, 2, 4]."""
    return [int(t) for t in text.split(",") if t.strip()]


# ---- transcripts ----------------------------------------------------------------------------
def first_words(clip: Clip, count: int = 3) -> list[str]:
    return normalise(clip.reference).split()[:count]


def phrases_in_order(text: str, phrases: Sequence[Sequence[str]]) -> int:
    """How many of `phrases` occur in `text` in order (each search starts after the last hit)."""
    words = normalise(text).split()
    found, position = 0, 0
    for phrase in phrases:
        hit = _find(words, list(phrase), position)
        if hit is not None:
            found, position = found + 1, hit + len(phrase)
    return found


def _find(words: list[str], phrase: list[str], start: int) -> int | None:
    for i in range(start, len(words) - len(phrase) + 1):
        if words[i : i + len(phrase)] == phrase:
            return i
    return None


# ---- worker subprocesses: one JSON object per line each way ----------------------------------
class Worker:
    """A benchmark side in its own process, so its peak RSS is its own."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self._proc = subprocess.Popen(
            [sys.executable, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, **(env or {})},
        )
        self.ready = self._read()

    @property
    def pid(self) -> int:
        return self._proc.pid

    def call(self, **request: Any) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        return self._read()

    def read(self) -> dict[str, Any]:
        """A further reply to the last request."""
        return self._read()

    def close(self) -> dict[str, Any]:
        final = self.call(op="quit")
        self._proc.wait(timeout=60)
        return final

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} exited with {self._proc.wait()}")
        return _parse_reply(self.name, line)


class AsyncWorker:
    """Like Worker, for a process whose event loop must keep running (e.g. it hosts a server)."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name, self._proc = name, proc

    @classmethod
    async def start(cls, name: str, argv: list[str]) -> tuple[AsyncWorker, dict[str, Any]]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *argv, stdin=PIPE, stdout=PIPE, cwd=REPO, limit=2**24
        )
        worker = cls(name, proc)
        return worker, await worker._read()

    @property
    def pid(self) -> int:
        return self._proc.pid

    async def call(self, **request: Any) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write((json.dumps(request) + "\n").encode())
        await self._proc.stdin.drain()
        return await self._read()

    async def close(self, timeout: float = 60) -> dict[str, Any]:
        final = await self.call(op="quit")
        await asyncio.wait_for(self._proc.wait(), timeout)
        return final

    async def kill(self) -> None:
        if self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()

    async def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = await self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} exited with {await self._proc.wait()}")
        return _parse_reply(self.name, line)


def _parse_reply(worker: str, line: str | bytes) -> dict[str, Any]:
    """A worker's reply line as a dict, or the error it reports raised."""
    answer: dict[str, Any] = json.loads(line)
    if "error" in answer:
        raise RuntimeError(f"worker {worker}: {answer['error']}")
    return answer


def worker_channel() -> tuple[IO[str], IO[str]]:
    """In a worker: (requests, replies). Anything else printed goes to stderr, not the pipe."""
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return sys.stdin, replies


def reply(out: IO[str], **payload: Any) -> None:
    out.write(json.dumps(payload) + "\n")
    out.flush()


async def answer_requests(
    requests: IO[str], out: IO[str], handle: Callable[[dict[str, Any]], Awaitable[None]]
) -> None:
    """In a client worker: handle each request until "quit", then reply the peak RSS."""
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, requests.readline):
        request = json.loads(line)
        if request["op"] == "quit":
            reply(out, peak_rss_mib=peak_rss_mib())
            return
        await handle(request)


async def serve_worker(
    requests: IO[str], out: IO[str], settings: Any, engine: Any, tokenizer: Any
) -> None:
    """In a server worker: start whisperwire (start_server, warm-up decode included), reply
    its port and pid, serve until the quit request, drain, reply the peak RSS."""
    from whisperwire.server.app import start_server

    running = await start_server(settings, engine, tokenizer)
    reply(out, port=running.port, pid=os.getpid())
    await asyncio.get_running_loop().run_in_executor(None, requests.readline)  # quit
    await running.drain_and_stop(2.0)
    reply(out, peak_rss_mib=peak_rss_mib())


# ---- command line ---------------------------------------------------------------------------
def add_quiet_wait(parser: argparse.ArgumentParser, default: float, before: str) -> None:
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=default,
        help=f"before {before}, wait up to this many s for the machine to be quiet",
    )


def add_tag_and_roles(parser: argparse.ArgumentParser, benchmark: str, max_streams: int) -> None:
    """--tag (results/<benchmark>-<tag>.json, for diagnostic runs), and the internal options by
    which the benchmark's module also runs as its server (--serve) and client (--client --port)
    processes."""
    parser.add_argument("--tag", default="", help=f"results/{benchmark}-<tag>.json")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--max-streams", type=int, default=max_streams, help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)


Role = Callable[[argparse.Namespace], Coroutine[Any, Any, None]]


def run_role(
    args: argparse.Namespace,
    server: Role,
    client: Role,
    bench: Callable[[argparse.Namespace], None],
) -> None:
    """Run as the server, the client or the benchmark itself, as add_roles' options say."""
    if args.serve:
        asyncio.run(server(args))
    elif args.client:
        asyncio.run(client(args))
    else:
        bench(args)


# ---- results ----------------------------------------------------------------------------
@dataclass
class Figure:
    """One headline number, with what it is compared against."""

    name: str
    value: float
    unit: str
    anchor: str  # what the value is compared with, in words
    anchor_value: float | None = None
    goal: str = ""
    goal_met: bool | None = None
    note: str = ""
    # value / anchor_value unless given (e.g. a median of per-pair ratios).
    ratio: float | None = None

    def __post_init__(self) -> None:
        if self.ratio is None and self.anchor_value:
            self.ratio = self.value / self.anchor_value


def command_line(argv: list[str]) -> list[str]:
    """argv with the script's path relative to the repository: results name no machine's paths."""
    if not argv:
        return []
    script = Path(argv[0]).resolve()
    name = str(script.relative_to(REPO)) if script.is_relative_to(REPO) else script.name
    return [name, *argv[1:]]


@dataclass
class Run:
    """Metadata of one benchmark run."""

    benchmark: str  # also the result file's name
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    argv: list[str] = field(default_factory=lambda: command_line(sys.argv))
    loadavg_start: list[float] = field(default_factory=loadavg)
    loadavg_samples: list[list[float]] = field(default_factory=list)
    cpus: int = field(default_factory=lambda: os.cpu_count() or 0)
    python: str = field(default_factory=platform.python_version)
    versions: dict[str, str] = field(default_factory=dict)

    def sample_load(self) -> None:
        self.loadavg_samples.append(loadavg())


def package_versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    return found


def write_results(run: Run, figures: list[Figure], details: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{run.benchmark}.json"
    payload = {
        "run": {**asdict(run), "loadavg_end": loadavg()},
        "figures": [asdict(f) for f in figures],
        "details": details,
    }
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    return path


def report(run: Run, figures: list[Figure], details: dict[str, Any]) -> Path:
    """Write the run's result file, then print its figures, the load over the run and where
    the file is."""
    path = write_results(run, figures, details)
    print(figures_table(figures))
    print(f"\nloadavg {run.loadavg_start} -> {run.loadavg_samples}; results in {path}")
    return path


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ---- printing ----------------------------------------------------------------------------
def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += [
        "  ".join(_justify(i, c, w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in cells
    ]
    return "\n".join(lines)


def _justify(column: int, text: str, width: int) -> str:
    return text.ljust(width) if column == 0 else text.rjust(width)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return "" if value is None else str(value)


def figures_table(figures: Sequence[Figure]) -> str:
    rows = [
        (
            f.name,
            f"{_cell(f.value)} {f.unit}",
            f.anchor,
            None if f.ratio is None else f"{f.ratio:.2f}",
            f.goal,
            {True: "yes", False: "NO", None: ""}[f.goal_met],
        )
        for f in figures
    ]
    return table(("figure", "value", "anchor", "ratio", "goal", "met"), rows)
