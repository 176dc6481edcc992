"""Issue 3: live-stream capacity: server CPU per real-time stream, with an engine that answers
at once (so only the service is measured: gRPC, session, VAD, log-mel, scheduler).

The server runs in its own process (real start_server, the instant engine of
tests/engine_double.py and the tiny.en tokenizer); a client process opens N StreamAudio
calls, each sending 640-byte chunks (20 ms of 16 kHz PCM16, real speech) every 20 ms, paced in
real time. Server CPU (utime + stime from /proc/<pid>/stat) over a steady window gives % of a
core per stream, also normalised to exactly 50 msg/s in case the client fell behind.

Two modes, alternating:
- ptt: push-to-talk, end_utterance every ~3 s per stream (phases staggered), so every stream
  also costs a final (VAD + 30 s log-mel + an instant engine call) every 3 s;
- chunks: audio only (finals only when streams close, outside the window), comparable to the
  0.24 %/stream anchor (raw grpc.aio bytes handlers, docs/performance.md).

    python -m benchmarks.stream_capacity                       # N = 10, 50, 100; ~3 min
    python -m benchmarks.stream_capacity --streams 10,50,100,200 --seconds 30 --repeats 2
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import IO, Any

from benchmarks.common import (
    Figure,
    Run,
    Worker,
    add_tag_and_roles,
    answer_requests,
    cpu_seconds,
    interleaved,
    ints,
    load_clip,
    median,
    package_versions,
    percentile,
    reply,
    report,
    run_role,
    serve_worker,
    sleep_until,
    table,
    worker_channel,
)
from benchmarks.load import ForeignLoad
from tests.speech import JFK

CHUNK_BYTES = 640
CHUNK_SECONDS = 0.02
STREAMS_PER_CHANNEL = 50  # HTTP/2 connections commonly cap concurrent streams at 100
ANCHOR_PERCENT_PER_STREAM = 0.24  # paced bidi, 50 msg/s, raw grpc.aio: docs/performance.md
GOAL_PERCENT_PER_STREAM = 0.3
PTT, CHUNKS = "ptt", "chunks"


# ---- server process -----------------------------------------------------------------------
async def server_main(args: argparse.Namespace) -> None:
    from tests.engine_double import instant_engine
    from whisperwire.server.config import ServerSettings

    requests, out = worker_channel()
    engine, tokenizer = instant_engine()
    # One client process plays every caller: the per-address limit would refuse most of them.
    settings = ServerSettings(
        port=0, max_streams=max(256, 2 * args.max_streams), max_streams_per_client=0
    )
    await serve_worker(requests, out, settings, engine, tokenizer)


# ---- client process -----------------------------------------------------------------------
@dataclass
class Plan:
    streams: int
    ptt_chunks: int  # chunks per utterance; 0 = no end_utterance
    start: float  # loop time of the first chunk
    window: tuple[float, float]  # loop times of the measured window


@dataclass
class Stats:
    sent: int = 0  # audio chunks sent inside the window
    ends: int = 0  # end_utterance sent inside the window
    late: list[float] = field(default_factory=list)  # send time - due time, s
    final_ms: list[float] = field(default_factory=list)  # release → final, ends in the window
    errors: list[str] = field(default_factory=list)


async def client_main(args: argparse.Namespace) -> None:
    requests, out = worker_channel()
    pcm = _speech_pcm()
    reply(out, ready=True)
    await answer_requests(requests, out, lambda r: run_streams(args.port, r, pcm, out))


def _speech_pcm() -> bytes:
    from whisperwire.server.vad import to_pcm16

    return to_pcm16(load_clip(JFK))


async def run_streams(port: int, request: dict[str, Any], pcm: bytes, out: IO[str]) -> None:
    import grpc

    from whisperwire.v1 import transcription_service_pb2_grpc as pb_grpc

    n = request["streams"]
    channels = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(math.ceil(n / STREAMS_PER_CHANNEL))
    ]
    stubs = [pb_grpc.TranscriptionServiceStub(c) for c in channels]
    calls = [await open_call(stubs[i % len(stubs)]) for i in range(n)]
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    window = (start + request["warmup"], start + request["warmup"] + request["seconds"])
    ptt_chunks = round(request["ptt_seconds"] / CHUNK_SECONDS) if request["ptt_seconds"] else 0
    plan = Plan(n, ptt_chunks, start, window)
    stats = Stats()
    senders = [
        asyncio.create_task(stream(call, i, plan, pcm, stats)) for i, call in enumerate(calls)
    ]
    await sleep_until(window[0])
    reply(out, phase="steady")
    await sleep_until(window[1])
    reply(out, phase="done", **_client_report(stats, plan))
    results = await asyncio.gather(*senders, return_exceptions=True)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    for c in channels:
        await c.close()
    reply(out, phase="closed", errors=errors + stats.errors)


def _client_report(stats: Stats, plan: Plan) -> dict[str, Any]:
    seconds = plan.window[1] - plan.window[0]
    late_ms = [1000 * x for x in stats.late] or [0.0]
    finals = stats.final_ms or [math.nan]
    return {
        "sent": stats.sent,
        "msg_per_s_per_stream": stats.sent / seconds / plan.streams,
        "ends": stats.ends,
        "finals": len(stats.final_ms),
        "late_ms": {"p50": percentile(late_ms, 50), "p99": percentile(late_ms, 99)},
        "final_ms": {"p50": percentile(finals, 50), "p99": percentile(finals, 99)},
    }


async def open_call(stub: Any) -> Any:
    from whisperwire.v1 import transcription_service_pb2 as pb

    call = stub.StreamAudio()
    config = pb.StreamAudioConfig(recognition=pb.RecognitionConfig(language="en"))
    await call.write(pb.StreamAudioRequest(config=config))
    await call.read()  # session_started
    return call


async def stream(call: Any, index: int, plan: Plan, pcm: bytes, stats: Stats) -> None:
    """One real-time stream: a chunk every 20 ms (staggered across streams), and every
    plan.ptt_chunks chunks an end_utterance (phases staggered too)."""
    from whisperwire.v1 import transcription_service_pb2 as pb

    ends: deque[float] = deque()
    reader = asyncio.create_task(read_finals(call, ends, plan, stats))
    start = plan.start + index * CHUNK_SECONDS / plan.streams
    phase = index * plan.ptt_chunks // plan.streams if plan.ptt_chunks else 0
    offset = (index * 7919 * CHUNK_BYTES) % (len(pcm) - CHUNK_BYTES) // 2 * 2
    loop = asyncio.get_running_loop()
    k = 0
    while (due := start + k * CHUNK_SECONDS) < plan.window[1]:
        await sleep_until(due)
        now = loop.time()
        at = (offset + k * CHUNK_BYTES) % (len(pcm) - CHUNK_BYTES)
        await call.write(
            pb.StreamAudioRequest(audio=pb.AudioChunk(data=pcm[at : at + CHUNK_BYTES]))
        )
        inside = plan.window[0] <= now < plan.window[1]
        if inside:
            stats.sent += 1
            stats.late.append(now - due)
        k += 1
        if plan.ptt_chunks and (k + phase) % plan.ptt_chunks == 0:
            ends.append(time.perf_counter() if inside else math.nan)
            await call.write(pb.StreamAudioRequest(end_utterance=pb.EndUtterance()))
            stats.ends += inside
    await call.done_writing()
    await reader


async def read_finals(call: Any, ends: deque[float], plan: Plan, stats: Stats) -> None:
    """Release → final for every end_utterance written inside the window (FIFO order)."""
    import grpc

    from whisperwire.v1 import transcription_service_pb2 as pb

    while (response := await call.read()) is not grpc.aio.EOF:
        if response.WhichOneof("event") != "final_result":
            continue
        if response.final_result.end_reason != pb.END_REASON_CLIENT_END:
            continue  # the stream's closing final
        sent_at = ends.popleft()
        if not math.isnan(sent_at):
            stats.final_ms.append(1000 * (time.perf_counter() - sent_at))


# ---- main process -------------------------------------------------------------------------
@dataclass
class Processes:
    server: Worker
    server_pid: int
    client: Worker
    client_pid: int


def measure_idle(procs: Processes, seconds: float) -> float:
    """% of a core the server uses with no streams."""
    cpu0, t0 = cpu_seconds(procs.server_pid), time.perf_counter()
    time.sleep(seconds)
    return 100 * (cpu_seconds(procs.server_pid) - cpu0) / (time.perf_counter() - t0)


def measure(procs: Processes, args: argparse.Namespace, streams: int, mode: str) -> dict[str, Any]:
    request = {
        "op": "run",
        "streams": streams,
        "seconds": args.seconds,
        "warmup": args.warmup,
        "ptt_seconds": args.ptt_seconds if mode == PTT else 0,
    }
    load = ForeignLoad(lambda: [os.getpid(), procs.server_pid, procs.client_pid])
    procs.client.call(**request)  # returns at "steady"
    mark = load.mark()
    server0, client0, t0 = (
        cpu_seconds(procs.server_pid),
        cpu_seconds(procs.client_pid),
        time.perf_counter(),
    )
    done = procs.client.read()
    server1, client1, t1 = (
        cpu_seconds(procs.server_pid),
        cpu_seconds(procs.client_pid),
        time.perf_counter(),
    )
    foreign = load.since(mark)
    closed = procs.client.read()
    wall = t1 - t0
    server_core = 100 * (server1 - server0) / wall  # % of one core
    per_stream = server_core / streams
    rate = done["msg_per_s_per_stream"]
    return {
        "mode": mode,
        "streams": streams,
        "wall_s": wall,
        "server_cpu_percent": server_core,
        "client_cpu_percent": 100 * (client1 - client0) / wall,
        "percent_per_stream": per_stream,
        "percent_per_stream_at_50_msg_s": per_stream * 50 / rate if rate else math.nan,
        "us_per_chunk": 1e6 * (server1 - server0) / max(1, done["sent"]),
        "foreign": foreign,
        **{k: v for k, v in done.items() if k != "phase"},
        "errors": closed["errors"],
    }


def start_processes(args: argparse.Namespace) -> Processes:
    me = ["-m", "benchmarks.stream_capacity"]
    env = dict(kv.split("=", 1) for kv in args.server_env)
    server = Worker("server", [*me, "--serve", "--max-streams", str(max(args.streams))], env)
    port, server_pid = server.ready["port"], server.ready["pid"]
    client = Worker("client", [*me, "--client", "--port", str(port)])
    assert client.ready.get("ready")
    return Processes(server, server_pid, client, client.pid)


def results_table(runs: list[dict[str, Any]]) -> str:
    headers = (
        "mode",
        "streams",
        "msg/s/stream",
        "server %core",
        "%core/stream",
        "@50 msg/s",
        "µs/chunk",
        "client %core",
        "late p99 ms",
        "final p50 ms",
        "final p99 ms",
        "others",
    )
    rows = [
        (
            r["mode"],
            r["streams"],
            r["msg_per_s_per_stream"],
            r["server_cpu_percent"],
            r["percent_per_stream"],
            r["percent_per_stream_at_50_msg_s"],
            r["us_per_chunk"],
            r["client_cpu_percent"],
            r["late_ms"]["p99"],
            r["final_ms"]["p50"],
            r["final_ms"]["p99"],
            f"{100 * r['foreign']:.0f} %",
        )
        for r in runs
    ]
    return table(headers, rows)


def _env_note(args: argparse.Namespace) -> str:
    return f"; server env {' '.join(args.server_env)}" if args.server_env else ""


def figures_for(args: argparse.Namespace, runs: list[dict[str, Any]]) -> list[Figure]:
    figures = []
    for mode in (PTT, CHUNKS):
        for n in sorted({r["streams"] for r in runs if r["mode"] == mode}):
            mine = [r for r in runs if r["mode"] == mode and r["streams"] == n]
            value = median(r["percent_per_stream_at_50_msg_s"] for r in mine)
            what = "push-to-talk end every 3 s" if mode == PTT else "audio chunks only"
            tag = f" [{args.tag}]" if args.tag else ""
            figures.append(
                Figure(
                    f"server CPU per 50 msg/s stream, {n} streams, {what}{tag}",
                    value,
                    "% of a core",
                    "raw grpc.aio paced bidi (docs/performance.md)",
                    ANCHOR_PERCENT_PER_STREAM,
                    goal=f"<= {GOAL_PERCENT_PER_STREAM} %",
                    goal_met=value <= GOAL_PERCENT_PER_STREAM,
                    note=f"instant engine; median of {len(mine)} run(s){_env_note(args)}",
                )
            )
    return figures


def run_benchmark(args: argparse.Namespace) -> None:
    run = Run("stream_capacity" + (f"-{args.tag}" if args.tag else ""))
    run.versions = package_versions("grpcio", "protobuf")
    procs = start_processes(args)
    runs: list[dict[str, Any]] = []
    try:
        idle = measure_idle(procs, 3.0)
        for r in range(args.repeats):
            for i, n in enumerate(args.streams):
                for mode in interleaved(r + i, args.modes):
                    runs.append(measure(procs, args, n, mode))
                    run.sample_load()
                    print(results_table(runs[-1:]).split("\n")[-1], flush=True)
        client_rss = procs.client.close()["peak_rss_mib"]
        server_rss = procs.server.close()["peak_rss_mib"]
    finally:
        procs.client.kill()
        procs.server.kill()
    print("\n" + results_table(runs))
    print(f"server idle: {idle:.2f} % of a core; peak RSS server {server_rss:.0f} MiB")
    figures = figures_for(args, runs)
    settings = {k: v for k, v in vars(args).items() if k not in ("serve", "client", "port")}
    details = {
        "settings": settings,
        "server_idle_percent": idle,
        "peak_rss_mib": {"server": server_rss, "client": client_rss},
        "runs": runs,
    }
    report(run, figures, details)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=ints, default=[10, 50, 100])
    parser.add_argument("--modes", type=lambda t: t.split(","), default=[PTT, CHUNKS])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--ptt-seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--server-env", action="append", default=[], help="KEY=VALUE for the server process"
    )
    add_tag_and_roles(parser, "stream_capacity", max_streams=100)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    run_role(parse_args(argv), server_main, client_main, run_benchmark)


if __name__ == "__main__":
    main(sys.argv[1:])
