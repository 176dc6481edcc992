"""Issue 13: a push-to-talk final while two long files are being transcribed.

This process hosts a real server (start_server on port 0, tiny.en on CTranslate2, 2 threads)
and its clients. Per scheduler setting: two ~222 s files (the English clips with 1 s pauses, 9
times) go in through Transcribe at once; while they are decoded, a push-to-talk stream sends a
4.6 s utterance (HESTER) in real time every few seconds and times release (end_utterance) →
final. The same utterance alone (no files) is the unloaded latency. Settings:

- `before`: one queue in arrival order, bulk calls of up to max_batch_size (8) windows;
- `after`: streams first, bulk calls of `--bulk-batch-sizes` windows each (8, 2, 1).

Reported: release→final p50/max per setting, its ratio to the unloaded latency (goal ≤ 4×),
and the files' throughput (audio seconds per wall second) so the price in bulk throughput shows.

    python -m benchmarks.interactive_latency                 # ~3 min on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from benchmarks.common import (
    ENGLISH_CLIPS,
    Audio,
    Figure,
    Run,
    figures_table,
    load_clip,
    median,
    package_versions,
    seconds_of,
    write_results,
)
from tests.speech import HESTER, to_s16le
from whisperwire.server.config import ServerSettings
from whisperwire.v1 import transcription_service_pb2 as pb
from whisperwire.v1 import transcription_service_pb2_grpc as pb_grpc

ISSUE_ANCHOR = 18.4  # s, release→final under the two files, in the issue (before)
CHUNK = 640  # bytes: 20 ms of 16 kHz s16le


@dataclass(frozen=True)
class Setting:
    name: str
    interactive_first: bool
    bulk_batch_size: int | None


def long_file(cycles: int = 9) -> Audio:
    gap = np.zeros(16000, dtype=np.float32)
    return np.concatenate(
        [p for _ in range(cycles) for c in ENGLISH_CLIPS for p in (load_clip(c), gap)]
    )


def transcribe_request(samples: Audio) -> pb.TranscribeRequest:
    raw = pb.RawAudioFormat(
        encoding=pb.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=16000, channel_count=1
    )
    return pb.TranscribeRequest(
        audio_content=to_s16le(samples), raw=raw, config=pb.RecognitionConfig(language="en")
    )


async def push_to_talk(service: Any, pcm: bytes) -> float:
    """One utterance spoken in real time on its own stream; seconds from release to final."""
    call = service.StreamAudio()
    config = pb.StreamAudioConfig(recognition=pb.RecognitionConfig(language="en"))
    await call.write(pb.StreamAudioRequest(config=config))
    await call.read()  # session_started
    reader = asyncio.ensure_future(_final(call))
    started = time.perf_counter()
    for i in range(0, len(pcm), CHUNK):
        await call.write(pb.StreamAudioRequest(audio=pb.AudioChunk(data=pcm[i : i + CHUNK])))
        await asyncio.sleep(max(0.0, started + (i + CHUNK) / 32000 - time.perf_counter()))
    released = time.perf_counter()
    await call.write(pb.StreamAudioRequest(end_utterance=pb.EndUtterance()))
    finished = await reader
    await call.done_writing()
    return finished - released


async def _final(call: Any) -> float:
    while (response := await call.read()) is not grpc.aio.EOF:
        if response.WhichOneof("event") == "final_result":
            return time.perf_counter()
    raise RuntimeError("the stream ended without a final")


async def scenario(
    engine: Any, tokenizer: Any, setting: Setting, args: argparse.Namespace
) -> dict[str, Any]:
    from whisperwire.server.app import start_server

    settings = ServerSettings(
        port=0, interactive_first=setting.interactive_first, bulk_batch_size=setting.bulk_batch_size
    )
    running = await start_server(settings, engine, tokenizer)
    utterance = to_s16le(load_clip(HESTER))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            service = pb_grpc.TranscriptionServiceStub(channel)  # type: ignore[no-untyped-call]
            alone = [await push_to_talk(service, utterance) for _ in range(args.alone)]
            files = long_file()
            started = time.perf_counter()
            bulk = [
                asyncio.ensure_future(service.Transcribe(transcribe_request(files)))
                for _ in range(2)
            ]
            loaded = []
            while not all(b.done() for b in bulk):
                await asyncio.sleep(args.pause)
                if not all(b.done() for b in bulk):
                    loaded.append(await push_to_talk(service, utterance))
            await asyncio.gather(*bulk)
            wall = time.perf_counter() - started
    finally:
        await running.drain_and_stop(grace=1.0)
    return {
        "setting": setting.name,
        "bulk_batch_size": setting.bulk_batch_size or 8,
        "alone_s": alone,
        "loaded_s": loaded,
        "files_wall_s": wall,
        "files_audio_s": 2 * seconds_of(files),
        "files_x_real_time": 2 * seconds_of(files) / wall,
    }


def figures(results: list[dict[str, Any]]) -> list[Figure]:
    out = []
    for r in results:
        alone, loaded = median(r["alone_s"]), median(r["loaded_s"])
        out.append(
            Figure(
                f"{r['setting']} (bulk calls of {r['bulk_batch_size']}): release→final p50",
                loaded,
                "s",
                "the same utterance with no files",
                alone,
                goal="≤ 4× unloaded",
                goal_met=loaded <= 4 * alone,
                note=f"max {max(r['loaded_s']):.2f} s over {len(r['loaded_s'])} utterances; "
                f"files at {r['files_x_real_time']:.1f}× real time",
            )
        )
    return out


async def main(args: argparse.Namespace) -> None:
    from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
    from whisperwire.server.models import resolve_model
    from whisperwire.server.tokenizer import WhisperTokenizer

    model_dir = resolve_model("tiny.en")
    engine = CTranslate2Engine(model_dir, model_name="tiny.en", threads=2)
    tokenizer = WhisperTokenizer.from_dir(model_dir)
    settings = [Setting("before", False, None)]
    settings += [Setting("after", True, size) for size in args.bulk_batch_sizes]
    run = Run("interactive_latency", versions=package_versions("ctranslate2", "grpcio"))
    results = []
    for setting in settings:
        results.append(await scenario(engine, tokenizer, setting, args))
        run.sample_load()
        print(setting, {k: v for k, v in results[-1].items() if k != "setting"}, flush=True)
        found = figures(results)  # written after every setting: a long run keeps what it has
        path = write_results(run, found, {"issue_anchor_s": ISSUE_ANCHOR, "results": results})
    print(figures_table(found))
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bulk-batch-sizes", type=int, nargs="+", default=[8, 2, 1])
    parser.add_argument("--alone", type=int, default=3, help="unloaded utterances per setting")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between utterances")
    asyncio.run(main(parser.parse_args()))
