"""The real gRPC server on a GPU: N concurrent real-time push-to-talk streams of real speech.

A `whisperwire serve --engine torch --device cuda` process serves; client processes (the SDK)
each drive a share of the N streams. Every stream talks in utterances: one of the project's
English clips sent as 20 ms s16le chunks in real time, then end_utterance; it waits for that
utterance's final, pauses 0.5 s, and talks again (the next clip). Streams start staggered
over one cycle; only utterances released inside the measured window count.

Per level: release→final p50/p95/max, finals, lost finals (an end_utterance with no final),
mixed-up finals (a final nearer another clip than its own), server CPU per stream (% of a
core, from /proc), GPU memory used (nvidia-smi).

    python -m benchmarks.gpu_streams --model /root/w/models/base --streams 16,64,200 --out s.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.speech import ENGLISH_CLIPS, load_pcm16k, to_s16le, wer

CHUNK_BYTES = 640  # 20 ms of 16 kHz s16le
CHUNK_SECONDS = 0.02
PAUSE_SECONDS = 0.5
CORRECT_WER = 0.2


# ---- the server -----------------------------------------------------------------------------


def start_server(
    model: str, device: str, max_batch_size: int, extra: list[str]
) -> tuple[subprocess.Popen[str], str]:
    command = [
        sys.executable, "-m", "whisperwire.cli", "serve",
        "--engine", "torch", "--device", device, "--model", model, "--port", "0",
        "--max-streams", "1024", "--max-streams-per-client", "0",
        "--max-batch-size", str(max_batch_size), "--max-queue", "8192", *extra,
    ]  # fmt: skip
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert server.stdout is not None
    for line in server.stdout:
        print("server:", line.rstrip(), flush=True)
        if match := re.search(r"serving .* on (\S+):(\d+)", line):
            return server, f"127.0.0.1:{match.group(2)}"
    raise RuntimeError(f"server exited with {server.wait()}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def gpu_memory_mib() -> float | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    return float(out.split()[0])


# ---- the clients ----------------------------------------------------------------------------


def _clips() -> list[tuple[str, bytes]]:
    return [(c.reference, to_s16le(load_pcm16k(c))) for c in ENGLISH_CLIPS]


async def _talk(
    target: str, index: int, start_at: float, stop_at: float, clips: list[tuple[str, bytes]]
) -> list[dict[str, Any]]:
    from whisperwire.client import AsyncClient, FinalResult, RecognitionOptions, StreamOptions

    utterances: list[dict[str, Any]] = []
    await asyncio.sleep(max(0.0, start_at - time.time()))
    async with AsyncClient(target) as client:
        stream = await client.stream(
            StreamOptions(recognition=RecognitionOptions(language="en", include_timings=True))
        )
        turn = index
        while time.time() < stop_at:
            reference, pcm = clips[turn % len(clips)]
            turn += 1
            began = time.time()
            for i in range(0, len(pcm), CHUNK_BYTES):
                await asyncio.sleep(
                    max(0.0, began + (i // CHUNK_BYTES) * CHUNK_SECONDS - time.time())
                )
                await stream.push(pcm[i : i + CHUNK_BYTES])
            released = time.time()
            await stream.end_utterance()
            record: dict[str, Any] = {"released": released, "reference": reference}
            try:
                while not isinstance(event := await stream.next_event(), FinalResult):
                    if event is None:
                        raise RuntimeError("stream ended without a final")
                record["latency"] = time.time() - released
                record["text"] = event.transcript.text
                if (timings := event.transcript.timings) is not None:
                    record["server"] = {
                        "features": timings.features,
                        "queue": timings.queue,
                        "engine": timings.inference,
                        "total": timings.total,
                    }
            except Exception as error:  # a lost final is a result, not a crash
                record["error"] = f"{type(error).__name__}: {error}"[:300]
                utterances.append(record)
                break
            utterances.append(record)
            await asyncio.sleep(PAUSE_SECONDS)
        await stream.close()
    return utterances


def _client_process(
    target: str, indices: list[int], starts: list[float], stop_at: float
) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        clips = _clips()
        groups = await asyncio.gather(
            *(_talk(target, i, s, stop_at, clips) for i, s in zip(indices, starts, strict=True))
        )
        return [u for group in groups for u in group]

    return asyncio.run(run())


def level(
    target: str, server_pid: int, streams: int, seconds: float, processes: int
) -> dict[str, Any]:
    cycle = sum(len(pcm) / 32000 for _, pcm in _clips()) / len(ENGLISH_CLIPS) + PAUSE_SECONDS + 0.2
    now = time.time()
    rng = random.Random(streams)
    starts = [now + 2.0 + rng.uniform(0, cycle) for _ in range(streams)]
    window = (now + 2.0 + cycle, now + 2.0 + cycle + seconds)
    stop_at = window[1]
    shares = [list(range(p, streams, processes)) for p in range(min(processes, streams))]
    context = multiprocessing.get_context("spawn")
    with context.Pool(len(shares)) as pool:
        jobs = [
            pool.apply_async(_client_process, (target, share, [starts[i] for i in share], stop_at))
            for share in shares
        ]
        time.sleep(max(0.0, window[0] - time.time()))
        cpu_before, wall_before = cpu_seconds(server_pid), time.time()
        memory = [gpu_memory_mib()]
        while time.time() < window[1]:
            time.sleep(2.0)
            memory.append(gpu_memory_mib())
        cpu_used, wall = cpu_seconds(server_pid) - cpu_before, time.time() - wall_before
        utterances = [u for job in jobs for u in job.get(timeout=seconds + 120)]
    return summarise(utterances, window, streams, cpu_used, wall, memory)


def summarise(
    utterances: list[dict[str, Any]],
    window: tuple[float, float],
    streams: int,
    cpu_used: float,
    wall: float,
    memory: list[float | None],
) -> dict[str, Any]:
    counted = [u for u in utterances if window[0] <= u["released"] <= window[1]]
    finals = [u for u in counted if "latency" in u]
    references = [reference for reference, _ in _clips()]
    mixed = [u for u in finals if _nearest(u["text"], references) != u["reference"]]
    wrong = [u for u in finals if wer(u["reference"], u["text"]) > CORRECT_WER]
    latencies = np.array([u["latency"] for u in finals]) * 1000
    used = [m for m in memory if m is not None]
    return {
        "streams": streams,
        "utterances": len(counted),
        "finals": len(finals),
        "lost": len(counted) - len(finals),
        "mixed_up": len(mixed),
        "wer_over_0.2": len(wrong),
        "latency_ms": {
            q: round(float(np.percentile(latencies, p)), 1) if len(latencies) else None
            for q, p in (("p50", 50), ("p95", 95), ("max", 100))
        },
        "server_ms": _server_split(finals),
        "server_cpu_percent_of_core_per_stream": round(100 * cpu_used / wall / streams, 3),
        "gpu_memory_used_mib_max": max(used) if used else None,
        "errors": sorted({u["error"] for u in counted if "error" in u})[:5],
    }


def _server_split(finals: list[dict[str, Any]]) -> dict[str, Any]:
    """Where a final's latency went, per the server's own timings (features: the log-mel;
    queue: waiting for the engine; engine: in it; total: transcription; rest: total minus
    the three, i.e. event-loop hops, decoding the text; outside: the client's latency minus
    total, i.e. the release reaching the stream's handler, the final reaching the client)."""
    timed = [u for u in finals if "server" in u]
    if not timed:
        return {}
    parts = {
        name: np.array([u["server"][name] for u in timed]) * 1000
        for name in ("features", "queue", "engine", "total")
    }
    parts["rest"] = parts["total"] - parts["features"] - parts["queue"] - parts["engine"]
    parts["outside"] = np.array([u["latency"] - u["server"]["total"] for u in timed]) * 1000
    return {
        name: {q: round(float(np.percentile(v, p)), 1) for q, p in (("p50", 50), ("p95", 95))}
        for name, v in parts.items()
    }


def _nearest(text: str, references: list[str]) -> str:
    return min(references, key=lambda reference: wer(reference, text))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--streams", default="16,64,200")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test of this script")
    parser.add_argument("server_args", nargs="*", help="extra `whisperwire serve` flags (after --)")
    args = parser.parse_args()
    server, target = start_server(args.model, args.device, args.max_batch_size, args.server_args)
    results: dict[str, Any] = {
        "model": args.model,
        "max_batch_size": args.max_batch_size,
        "idle_gpu_memory_mib": gpu_memory_mib(),
        "levels": [],
    }
    try:
        for streams in (int(s) for s in args.streams.split(",")):
            results["levels"].append(
                level(target, server.pid, streams, args.seconds, args.processes)
            )
            args.out.write_text(json.dumps(results, indent=2))
            print(json.dumps(results["levels"][-1]), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
