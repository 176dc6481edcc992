"""Issue 13 on a GPU: push-to-talk streams while long files saturate the engine, whole-batch
vs step-level (in-flight) scheduling in one run.

Per scheduling mode a fresh `whisperwire serve --engine torch` process serves (`--step-batching
false`, then `true`). Two phases each:

- `alone`: N real-time push-to-talk streams (benchmarks.gpu_streams: real speech, 20 ms
  chunks, end_utterance, wait for the final) with nothing else running;
- `loaded`: the same N streams while F callers transcribe a long file (the English clips with
  1 s pauses, `--file-cycles` times) back to back through Transcribe.

Reported per mode and phase: release→final p50/p95/max, lost and mixed-up finals; in the
loaded phase also the files' throughput (audio seconds finished per wall second). The goals:
loaded p95 ≤ 2 × alone p95 (step mode), and step throughput not below whole-batch throughput.

    python -m benchmarks.gpu_mixed --model /root/w/models/base --out mixed.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gpu_streams import gpu_memory_mib, level, start_server
from tests.speech import ENGLISH_CLIPS, load_pcm16k, silence, to_wav_bytes

MODES = {"whole": "false", "step": "true"}


def long_file(cycles: int) -> tuple[bytes, float]:
    parts = [p for _ in range(cycles) for c in ENGLISH_CLIPS for p in (load_pcm16k(c), silence(1))]
    audio = np.concatenate(parts)
    return to_wav_bytes(audio), len(audio) / 16000


def _file_caller_process(target: str, callers: int, cycles: int, stop_at: float) -> list[float]:
    """Transcribe the long file back to back from `callers` callers until `stop_at`; the
    finish time of each file."""
    from whisperwire.client import AsyncClient

    wav, _ = long_file(cycles)

    async def caller(client: AsyncClient) -> list[float]:
        finished: list[float] = []
        while time.time() < stop_at:
            await client.transcribe(wav, timeout=600)
            finished.append(time.time())
        return finished

    async def run() -> list[float]:
        async with AsyncClient(target) as client:
            groups = await asyncio.gather(*(caller(client) for _ in range(callers)))
        return [t for group in groups for t in group]

    return asyncio.run(run())


def loaded_level(
    target: str, server_pid: int, args: argparse.Namespace, file_seconds: float
) -> dict[str, Any]:
    """The streams' level while the file callers run; files finished inside the streams'
    measured window give the throughput."""
    warm_up = 8.0  # the streams' own ramp-up (2 s + one utterance cycle) fits inside
    begin = time.time()
    stop_at = begin + warm_up + args.seconds + 30
    context = multiprocessing.get_context("spawn")
    shares = [args.files // args.file_processes] * args.file_processes
    for i in range(args.files % args.file_processes):
        shares[i] += 1
    with context.Pool(args.file_processes) as pool:
        jobs = [
            pool.apply_async(_file_caller_process, (target, n, args.file_cycles, stop_at))
            for n in shares
            if n
        ]
        time.sleep(warm_up)
        window_start = time.time()
        result = level(target, server_pid, args.streams, args.seconds, args.processes)
        window_end = time.time()
        finishes = [t for job in jobs for t in job.get(timeout=900)]
    inside = [t for t in finishes if window_start <= t <= window_end]
    window = window_end - window_start
    result["files"] = {
        "callers": args.files,
        "file_seconds": round(file_seconds, 1),
        "finished_in_window": len(inside),
        "window_seconds": round(window, 1),
        "audio_seconds_per_second": round(len(inside) * file_seconds / window, 1),
    }
    return result


def run_mode(mode: str, args: argparse.Namespace, file_seconds: float) -> dict[str, Any]:
    extra = ["--step-batching", MODES[mode], *args.server_args]
    server, target = start_server(args.model, args.device, args.max_batch_size, extra)
    try:
        alone = level(target, server.pid, args.streams, args.seconds, args.processes)
        print(mode, "alone", json.dumps(alone), flush=True)
        loaded = loaded_level(target, server.pid, args, file_seconds)
        print(mode, "loaded", json.dumps(loaded), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {"alone": alone, "loaded": loaded}


def verdict(modes: dict[str, Any]) -> dict[str, Any]:
    def p95(mode: str, phase: str) -> float | None:
        value = modes[mode][phase]["latency_ms"]["p95"]
        return None if value is None else float(value)

    def throughput(mode: str) -> float:
        return float(modes[mode]["loaded"]["files"]["audio_seconds_per_second"])

    out: dict[str, Any] = {}
    for mode in modes:
        alone, loaded = p95(mode, "alone"), p95(mode, "loaded")
        if alone and loaded:
            out[f"{mode}_loaded_p95_over_alone_p95"] = round(loaded / alone, 2)
    if "step" in modes and "whole" in modes and throughput("whole"):
        out["step_throughput_over_whole"] = round(throughput("step") / throughput("whole"), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True)
    parser.add_argument("--modes", default="whole,step")
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--files", type=int, default=24, help="concurrent file callers")
    parser.add_argument("--file-cycles", type=int, default=9, help="~25 s of audio per cycle")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--processes", type=int, default=8, help="stream client processes")
    parser.add_argument("--file-processes", type=int, default=4)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test of this script")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("server_args", nargs="*", help="extra `whisperwire serve` flags (after --)")
    args = parser.parse_args()
    _, file_seconds = long_file(args.file_cycles)
    results: dict[str, Any] = {
        "model": args.model,
        "streams": args.streams,
        "file_callers": args.files,
        "max_batch_size": args.max_batch_size,
        "idle_gpu_memory_mib": gpu_memory_mib(),
        "modes": {},
    }
    for mode in args.modes.split(","):
        results["modes"][mode] = run_mode(mode, args, file_seconds)
        results["verdict"] = verdict(results["modes"])
        args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results["verdict"]), flush=True)


if __name__ == "__main__":
    main()
