"""Issue 14: the same file through the OpenAI-compatible HTTP API and through gRPC `Transcribe`,
against the bare pipeline, in one run: the overhead per request of each front.

This process hosts one server (start_server: gRPC and HTTP on free ports, one scheduler) and a
bare `SpeechPipeline(..., DirectRunner(engine))` on the same engine object. A client process
holds one grpc.aio channel and one keep-alive httpx connection (the transport OpenAI's Python
SDK uses) and sends each clip's file bytes: a unary `Transcribe`, and a multipart POST to
`/v1/audio/transcriptions` (response_format json). Each pair also runs
`pipeline.transcribe_bytes` in this process on the same bytes; the order rotates every pair.

overhead = front's round trip − bare pipeline, per pair (p50/p95); HTTP − gRPC likewise.
The instant engine shows the fronts without engine noise; tiny.en a real decode.

    python -m benchmarks.http_vs_grpc                       # instant + tiny.en, ~2 min
    python -m benchmarks.http_vs_grpc --models tiny.en --rounds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

from benchmarks.common import (
    ENGLISH_CLIPS,
    AsyncWorker,
    Figure,
    Run,
    clip_key,
    interleaved,
    package_versions,
    percentile,
    reply,
    report,
    table,
    worker_channel,
)
from tests.engine_double import instant_engine

INSTANT = "instant"
GRPC, HTTP, DIRECT = "grpc Transcribe", "http transcriptions", "bare pipeline"
SIDES = (GRPC, HTTP, DIRECT)
CLIPS = {clip_key(clip): clip for clip in ENGLISH_CLIPS}


# ---- the client process --------------------------------------------------------------------
async def client_main(args: argparse.Namespace) -> None:
    import grpc
    import httpx

    from whisperwire.v1 import transcription_service_pb2 as pb
    from whisperwire.v1 import transcription_service_pb2_grpc as pb_grpc

    requests, out = worker_channel()
    files = {key: clip.read() for key, clip in CLIPS.items()}
    loop = asyncio.get_running_loop()
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{args.port}") as channel,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{args.http_port}", timeout=300) as http,
    ):
        transcribe = pb_grpc.TranscriptionServiceStub(channel).Transcribe
        config = pb.RecognitionConfig(language="en")
        reply(out, ready=True)
        while line := await loop.run_in_executor(None, requests.readline):
            request = json.loads(line)
            if request["op"] == "quit":
                break
            data = files[request["clip"]]
            started = time.perf_counter()
            if request["side"] == GRPC:
                response = await transcribe(pb.TranscribeRequest(audio_content=data, config=config))
                text = response.transcript.text
            else:
                answer = await http.post(
                    "/v1/audio/transcriptions",
                    files={"file": (request["clip"], data)},
                    data={"model": "whisper-1", "language": "en"},
                )
                answer.raise_for_status()
                text = answer.json()["text"]
            reply(out, seconds=time.perf_counter() - started, text=text)
    reply(out, done=True)


# ---- the server process (this one) ----------------------------------------------------------
@dataclass
class Target:
    server: Any  # RunningServer
    direct: Any  # SpeechPipeline over DirectRunner
    options: Any  # DecodeOptions
    client: AsyncWorker

    async def measure(self, side: str, clip: str) -> dict[str, Any]:
        if side != DIRECT:
            return await self.client.call(op="call", side=side, clip=clip)
        started = time.perf_counter()
        transcript = await self.direct.transcribe_bytes(CLIPS[clip].read(), self.options)
        return {"seconds": time.perf_counter() - started, "text": transcript.text}


async def open_target(args: argparse.Namespace, model: str) -> Target:
    from whisperwire.server.app import start_server
    from whisperwire.server.config import ServerSettings
    from whisperwire.server.domain import DecodeOptions
    from whisperwire.server.engine import Engine
    from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
    from whisperwire.server.models import resolve_model
    from whisperwire.server.pipeline import SpeechPipeline
    from whisperwire.server.runner import DirectRunner
    from whisperwire.server.tokenizer import WhisperTokenizer

    engine: Engine
    if model == INSTANT:
        engine, tokenizer = instant_engine()
    else:
        model_dir = resolve_model(model)
        engine = CTranslate2Engine(model_dir, model_name=model, threads=args.threads)
        tokenizer = WhisperTokenizer.from_dir(model_dir)
    settings = ServerSettings(port=0, http_port=0, model=model, threads=args.threads)
    server = await start_server(settings, engine, tokenizer)
    direct = SpeechPipeline(tokenizer, engine.info, DirectRunner(engine))
    argv = ["-m", "benchmarks.http_vs_grpc", "--client", "--port", str(server.port)]
    argv += ["--http-port", str(server.http_port)]
    client, _ = await AsyncWorker.start("client", argv)
    # What the HTTP form gives (language en, OpenAI's default temperature 0 = the ladder).
    options = direct.validate(DecodeOptions(language="en"))  # as the fronts do per request
    return Target(server, direct, options, client)


async def bench_model(args: argparse.Namespace, model: str) -> dict[str, Any]:
    target = await open_target(args, model)
    try:
        for clip in CLIPS:  # warm-up, untimed: connections, first decodes
            for side in SIDES:
                await target.measure(side, clip)
        pairs = []
        for r in range(args.instant_rounds if model == INSTANT else args.rounds):
            for i, clip in enumerate(CLIPS):
                pair: dict[str, Any] = {"clip": clip}
                for side in interleaved(r + i, SIDES):
                    pair[side] = await target.measure(side, clip)
                pairs.append(pair)
        await target.client.close()
    finally:
        await target.client.kill()
        await target.server.drain_and_stop(1.0)
    return {"pairs": pairs, "summary": summarise(pairs)}


# ---- statistics ---------------------------------------------------------------------------
def summarise(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    def ms(side: str) -> list[float]:
        return [1000 * p[side]["seconds"] for p in pairs]

    def spread(values: list[float]) -> dict[str, float]:
        return {q: percentile(values, int(q[1:])) for q in ("p50", "p95")} | {"max": max(values)}

    def difference(a: str, b: str) -> dict[str, float]:
        return spread([x - y for x, y in zip(ms(a), ms(b), strict=True)])

    return {
        "n": len(pairs),
        "round_trip_ms": {side: spread(ms(side)) for side in SIDES},
        "overhead_ms": {
            "grpc - bare": difference(GRPC, DIRECT),
            "http - bare": difference(HTTP, DIRECT),
            "http - grpc": difference(HTTP, GRPC),
        },
        "same_text": sum(p[GRPC]["text"] == p[HTTP]["text"] == p[DIRECT]["text"] for p in pairs),
    }


def model_table(model: str, summary: dict[str, Any]) -> str:
    rows: list[tuple[object, ...]] = [
        (f"round trip, {side}", s["p50"], s["p95"], s["max"])
        for side, s in summary["round_trip_ms"].items()
    ]
    rows += [
        (f"overhead, {name}", s["p50"], s["p95"], s["max"])
        for name, s in summary["overhead_ms"].items()
    ]
    text = table((f"{model} (ms, {summary['n']} pairs)", "p50", "p95", "max"), rows)
    return f"{text}\nsame text on all three sides in {summary['same_text']}/{summary['n']} pairs"


def figures_for(model: str, summary: dict[str, Any]) -> list[Figure]:
    engine = "instant engine" if model == INSTANT else model
    overhead = summary["overhead_ms"]
    return [
        Figure(
            f"HTTP API overhead (round trip - bare pipeline) p50, {engine}",
            overhead["http - bare"]["p50"],
            "ms",
            "gRPC Transcribe overhead, same file, same run",
            overhead["grpc - bare"]["p50"],
            note=f"{summary['n']} pairs; p95 HTTP {overhead['http - bare']['p95']:.1f} ms, "
            f"gRPC {overhead['grpc - bare']['p95']:.1f} ms",
        ),
        Figure(
            f"HTTP - gRPC per request p50, {engine}",
            overhead["http - grpc"]["p50"],
            "ms",
            "paired difference of the two fronts' round trips",
        ),
    ]


# ---- main ---------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=lambda t: t.split(","), default=[INSTANT, "tiny.en"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10, help="rounds over the 3 clips")
    parser.add_argument("--instant-rounds", type=int, default=30, help="same, instant engine")
    parser.add_argument("--tag", default="", help="results/http_vs_grpc-<tag>.json")
    # client mode (internal)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--http-port", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


async def run_benchmark(args: argparse.Namespace) -> None:
    run = Run("http_vs_grpc" + (f"-{args.tag}" if args.tag else ""))
    run.versions = package_versions("grpcio", "uvicorn", "starlette", "httpx", "ctranslate2")
    results: dict[str, Any] = {}
    for model in args.models:
        results[model] = await bench_model(args, model)
        run.sample_load()
        print(model_table(model, results[model]["summary"]), "\n", flush=True)
    figures = [f for m, r in results.items() for f in figures_for(m, r["summary"])]
    settings = {k: v for k, v in vars(args).items() if k not in ("client", "port", "http_port")}
    report(run, figures, {"settings": settings, "models": results})


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    asyncio.run(client_main(args) if args.client else run_benchmark(args))


if __name__ == "__main__":
    main(sys.argv[1:])
