"""`whisperwire stream FILE`: replay a file as a live stream and show results as they come."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

from whisperwire.client import formats
from whisperwire.client.aio import AsyncAudioStream
from whisperwire.client.audio_file import BYTES_PER_SECOND, read_pcm16k
from whisperwire.client.commands import common
from whisperwire.client.options import StreamOptions
from whisperwire.client.results import FinalResult, PartialResult, SegmentResult, StreamEvent


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "stream",
        parents=[common.connection_parser()],
        help="replay a file as a live stream",
        description="Replay an audio file as 20 ms chunks in real time (or --fast) on one "
        "stream, print partials, segments and the final as they arrive, and the latency from "
        "the end of the audio (the release) to the final.",
    )
    parser.add_argument("file", type=Path, metavar="FILE")
    common.add_recognition_args(parser)
    parser.add_argument("--fast", action="store_true", help="send as fast as possible")
    parser.add_argument("--chunk-ms", type=int, default=20, help="audio per message (default 20)")
    parser.add_argument(
        "--partials",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ask for and print interim results (default on)",
    )
    parser.add_argument(
        "--segment-silence-ms",
        type=int,
        default=700,
        help="server commits a segment after this much silence (0 = off)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: every event as a line; json: one object with the final",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    return common.run(args, lambda: replay(args))


async def replay(args: argparse.Namespace) -> int:
    if args.chunk_ms <= 0:
        raise common.LocalProblem("--chunk-ms must be positive")
    pcm = await asyncio.to_thread(_read, args.file)
    options = StreamOptions(
        common.recognition_options(args),
        interim_results=args.partials and args.format == "text",
        segment_silence=args.segment_silence_ms / 1000 or None,
    )
    async with common.make_client(args) as client:
        stream = await client.stream(options)
        released = asyncio.get_running_loop().create_future()
        sender = asyncio.create_task(_send(stream, pcm, args, released))
        try:
            await _show(stream, args, released)
        finally:
            sender.cancel()
            stream.abort()
    return common.EXIT_OK


def _read(path: Path) -> bytes:
    try:
        return read_pcm16k(path)
    except FileNotFoundError:
        raise common.LocalProblem(f"{path}: no such file") from None


async def _send(
    stream: AsyncAudioStream, pcm: bytes, args: argparse.Namespace, released: asyncio.Future[float]
) -> None:
    """Push chunks on a real-time schedule, then end the utterance (the 'release')."""
    size = BYTES_PER_SECOND * args.chunk_ms // 1000
    started = time.monotonic()
    for number, offset in enumerate(range(0, len(pcm), size)):
        if not args.fast:
            due = started + number * args.chunk_ms / 1000
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        await stream.push(pcm[offset : offset + size])
    await stream.end_utterance()
    released.set_result(time.monotonic())
    await stream.close()


async def _show(
    stream: AsyncAudioStream, args: argparse.Namespace, released: asyncio.Future[float]
) -> None:
    async for event in stream:
        if isinstance(event, FinalResult):
            latency = time.monotonic() - released.result() if released.done() else None
            _print_final(event, latency, args)
        elif args.format == "text":
            _print_interim(event)


def _print_interim(event: StreamEvent) -> None:
    if isinstance(event, PartialResult):
        common.emit(f"partial [{event.start:6.2f} → {event.end:6.2f}] {event.text.strip()}")
    elif isinstance(event, SegmentResult):
        s = event.segment
        common.emit(f"segment [{s.start:6.2f} → {s.end:6.2f}] {s.text.strip()}")


def _print_final(event: FinalResult, latency: float | None, args: argparse.Namespace) -> None:
    transcript = event.transcript
    latency_ms = round(latency * 1000) if latency is not None else None
    if args.format == "json":
        data = formats.transcript_json(transcript, source=str(args.file), timings=args.timings)
        common.emit(formats.json_line(data | {"latency_ms": latency_ms}))
        return
    common.emit(f"final   {transcript.text.strip()}")
    if latency_ms is not None:
        common.emit(f"latency release→final {latency_ms} ms")
    if args.timings and transcript.timings:
        common.emit(formats.timings_line(transcript.timings))
