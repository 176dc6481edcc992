"""Uploads through the decode workers: shared-memory files (handoff.py) against the process
pool's pipe (the code before it), side by side in one run.

This process plays the server: its event loop runs a DecodePool of `--processes` workers
(real audio: the English clips with 1 s pauses, `--cycles` times, as a WAV upload; real
decoding, VAD and log-mel in the workers) with `--concurrency` uploads in flight, while a probe
on the same loop sleeps 1 ms at a time and records how late it wakes. The loop's lateness is
what streams' chunks and a push-to-talk final would wait; it grows with every thread of the
process that holds the interpreter lock (on the pipe, the pool's result and feeder threads).
Reported per side: the probe's lateness p50/p95/p99, uploads per second, audio seconds per
second; the ratios pipe ÷ shared memory. Sides alternate, `--repeats` rounds each.

    python -m benchmarks.upload_handoff                      # ~1 min on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from benchmarks.common import (
    Figure,
    Run,
    interleaved,
    median,
    package_versions,
    percentile,
    report,
)
from benchmarks.gpu_mixed import long_file
from whisperwire.server import audio as audio_io
from whisperwire.server.decode_pool import DecodePool
from whisperwire.server.pipeline import Windowing

HOW = Windowing(n_mels=80, vad_aggressiveness=2, per_span=False)
MAX_SECONDS = 3 * 3600.0
SIDES = ("shared_memory", "pipe")


def decode(data: bytes) -> list[audio_io.Audio]:
    return [audio_io.decode_audio(data, max_seconds=MAX_SECONDS)]


async def one_side(pool: DecodePool, upload: bytes, args: argparse.Namespace) -> dict[str, Any]:
    lateness: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            asked = time.perf_counter()
            await asyncio.sleep(0.001)
            lateness.append(time.perf_counter() - asked - 0.001)

    gate = asyncio.Semaphore(args.concurrency)

    async def one() -> None:
        async with gate:
            await pool.prepare(upload, decode, HOW, MAX_SECONDS)

    probing = asyncio.create_task(probe())
    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(args.uploads)))
    elapsed = time.perf_counter() - started
    done.set()
    await probing
    ms = [1000 * x for x in lateness]
    return {
        "uploads_per_second": args.uploads / elapsed,
        "lateness_ms": {q: percentile(ms, float(q[1:])) for q in ("p50", "p95", "p99")},
    }


async def main_async(args: argparse.Namespace) -> None:
    upload, seconds = long_file(args.cycles)  # the H200 runs' file (gpu_mixed)
    pools = {
        "shared_memory": DecodePool(args.processes),
        "pipe": DecodePool(args.processes, shared_memory=False),
    }
    try:
        for pool in pools.values():  # workers started and warm
            await asyncio.gather(
                *(pool.prepare(upload, decode, HOW, MAX_SECONDS) for _ in range(2))
            )
        run = Run("upload_handoff", versions=package_versions("numpy", "av"))
        rounds: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
        for index in range(args.repeats):
            for side in interleaved(index, SIDES):
                rounds[side].append(await one_side(pools[side], upload, args))
                run.sample_load()
                print(side, rounds[side][-1], flush=True)
    finally:
        for pool in pools.values():
            pool.shutdown()
    report(run, figures(rounds, seconds), {"upload_seconds": seconds, "rounds": rounds})


def figures(rounds: dict[str, list[dict[str, Any]]], seconds: float) -> list[Figure]:
    def typical(side: str, pick: Any) -> float:
        return median(pick(r) for r in rounds[side])

    found = []
    for q in ("p50", "p95", "p99"):
        ours = typical("shared_memory", lambda r, q=q: r["lateness_ms"][q])
        pipe = typical("pipe", lambda r, q=q: r["lateness_ms"][q])
        found.append(
            Figure(
                f"event loop lateness {q}, uploads in flight",
                ours,
                "ms",
                "the pool's pipe, same run",
                pipe,
                note="ratio: shared memory ÷ pipe (below 1: the loop wakes sooner)",
            )
        )
    ours = typical("shared_memory", lambda r: r["uploads_per_second"]) * seconds
    pipe = typical("pipe", lambda r: r["uploads_per_second"]) * seconds
    found.append(
        Figure(
            "uploads' throughput",
            ours,
            "audio s/s",
            "the pool's pipe, same run",
            pipe,
            note="ratio: shared memory ÷ pipe",
        )
    )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=2, help="decode worker processes")
    parser.add_argument("--concurrency", type=int, default=8, help="uploads in flight")
    parser.add_argument("--uploads", type=int, default=24, help="uploads per round and side")
    parser.add_argument("--cycles", type=int, default=9, help="~25 s of audio per cycle")
    parser.add_argument("--repeats", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
