"""Issue 13 on a GPU: push-to-talk streams while long files saturate the engine, whole-batch
vs step-level (in-flight) scheduling in one run.

Per scheduling mode a fresh `whisperwire serve --engine torch` process serves (`--step-batching
false`, then `true`). Two phases each:

- `alone`: N real-time push-to-talk streams (benchmarks.gpu_streams: real speech, 20 ms
  chunks, end_utterance, wait for the final) with nothing else running;
- `loaded`: the same N streams while F callers transcribe a long file (the English clips with
  1 s pauses, `--file-cycles` times) back to back through Transcribe.

Reported per mode and phase: release→final p50/p95/max, lost and mixed-up finals; in the
loaded phase also the files' throughput (audio seconds finished per wall second); per phase
the engine's calls and busy share by kind (from the server's Prometheus metrics). The goals:
loaded p95 ≤ 2 × alone p95 (step mode), and step throughput not below whole-batch throughput.

    python -m benchmarks.gpu_mixed --model /root/w/models/base --out mixed.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

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


def engine_seconds(metrics_url: str) -> dict[str, tuple[float, float]]:
    """(calls, seconds) of engine work so far, by kind (step, generate, detect, align)."""
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "whisperwire_engine_seconds":
            continue
        for sample in family.samples:
            kind = sample.labels.get("kind", "")
            if sample.name.endswith("_count"):
                totals.setdefault(kind, [0.0, 0.0])[0] = sample.value
            elif sample.name.endswith("_sum"):
                totals.setdefault(kind, [0.0, 0.0])[1] = sample.value
    return {kind: (calls, seconds) for kind, (calls, seconds) in totals.items()}


def engine_use(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]], wall: float
) -> dict[str, Any]:
    """Per kind: engine calls per second and the share of wall time the engine spent on
    them (the engine thread is saturated where the shares sum to about 1)."""
    use: dict[str, Any] = {}
    for kind, (calls, seconds) in after.items():
        calls0, seconds0 = before.get(kind, (0.0, 0.0))
        use[kind] = {
            "calls_per_second": round((calls - calls0) / wall, 1),
            "busy_share": round((seconds - seconds0) / wall, 3),
        }
    use["busy_share_total"] = round(sum(v["busy_share"] for v in use.values()), 3)
    return use


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measured_level(
    target: str, server_pid: int, args: argparse.Namespace, metrics_url: str
) -> dict[str, Any]:
    before, begin = engine_seconds(metrics_url), time.time()
    result = level(target, server_pid, args.streams, args.seconds, args.processes)
    result["engine"] = engine_use(before, engine_seconds(metrics_url), time.time() - begin)
    return result


def loaded_level(
    target: str,
    server_pid: int,
    args: argparse.Namespace,
    file_seconds: float,
    metrics_url: str,
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
        result = measured_level(target, server_pid, args, metrics_url)
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
    port = free_port()
    extra = ["--step-batching", MODES[mode], "--metrics-port", str(port), *args.server_args]
    server, target = start_server(args.model, args.device, args.max_batch_size, extra)
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    try:
        alone = measured_level(target, server.pid, args, metrics_url)
        print(mode, "alone", json.dumps(alone), flush=True)
        loaded = loaded_level(target, server.pid, args, file_seconds, metrics_url)
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
