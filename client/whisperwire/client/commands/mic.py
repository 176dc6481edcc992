"""`whisperwire mic`: push-to-talk from a microphone.

Enter starts an utterance and Enter again ends it; q (or end of input) quits. One stream
serves the whole session; if it breaks, the next Enter reconnects. Client-side VAD keeps
silence off the wire, with pre-roll and hangover so word edges survive.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from whisperwire.client import formats
from whisperwire.client.commands import common
from whisperwire.client.errors import ServiceError
from whisperwire.client.mic import (
    MicrophoneError,
    MicrophoneStream,
    find_input_device,
    list_input_devices,
)
from whisperwire.client.options import AudioFormat, StreamOptions
from whisperwire.client.push_to_talk import (
    ConnectionLost,
    PushToTalkSession,
    UtteranceResult,
)
from whisperwire.client.vad_gate import FRAME_MS_CHOICES, GateSettings, VadGate

QUIT_WORDS = frozenset({"q", "quit", "exit"})
CLOSE_TIMEOUT = 30.0  # seconds to wait for outstanding finals when quitting


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "mic",
        parents=[common.connection_parser()],
        help="push-to-talk from the microphone",
        description="Push-to-talk transcription: Enter starts an utterance, Enter stops it and "
        "prints its final with the latency from release to final; q or Ctrl-D quits.",
    )
    common.add_recognition_args(parser)
    parser.add_argument("--device", help="input device: index or part of its name")
    parser.add_argument("--list-devices", action="store_true", help="list input devices, exit")
    parser.add_argument(
        "--sample-rate",
        type=int,
        default=16000,
        choices=(16000, 32000, 48000),
        help="capture rate (default 16000; the server resamples others)",
    )
    parser.add_argument(
        "--vad",
        type=int,
        default=2,
        choices=range(4),
        metavar="0-3",
        help="webrtcvad aggressiveness, 3 strictest (default 2)",
    )
    parser.add_argument("--no-vad", action="store_true", help="send everything, silence too")
    parser.add_argument(
        "--frame-ms",
        type=int,
        default=20,
        choices=FRAME_MS_CHOICES,
        help="VAD frame length (default 20)",
    )
    parser.add_argument(
        "--pre-roll-ms",
        type=int,
        default=200,
        help="audio kept from before speech starts (default 200)",
    )
    parser.add_argument(
        "--hangover-ms",
        type=int,
        default=400,
        help="audio still sent after speech stops (default 400)",
    )
    parser.add_argument(
        "--segment-silence-ms",
        type=int,
        default=0,
        help="end a segment automatically after this pause (0 = off)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text lines, or one JSON object per final",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    return common.run(args, lambda: list_devices() if args.list_devices else talk(args))


async def list_devices() -> int:
    devices = list_input_devices()
    if not devices:
        raise MicrophoneError("no audio input device found")
    for device in devices:
        marker = "*" if device.is_default else " "
        common.emit(
            f"{marker} {device.index:3d}  {device.name}  "
            f"({device.channels} ch, {device.default_sample_rate:g} Hz)"
        )
    return common.EXIT_OK


async def talk(args: argparse.Namespace) -> int:
    gate = _gate(args)
    device = find_input_device(args.device)
    options = StreamOptions(
        common.recognition_options(args), audio_format=AudioFormat(sample_rate=args.sample_rate)
    )
    with MicrophoneStream(
        device=device, sample_rate=args.sample_rate, frame_ms=args.frame_ms
    ) as microphone:
        async with common.make_client(args) as client:
            session = PushToTalkSession(client, options, gate)
            info = await session.connect()
            common.note(
                f"connected to {args.server} (session {info.session_id[:8]}); input: {device.name}"
            )
            common.note("ready: Enter = start/stop talking, q + Enter or Ctrl-D = quit")
            printer = asyncio.create_task(_print_events(session, args))
            pump = asyncio.create_task(_pump(microphone, session))
            try:
                await _keys(session, args)
                await asyncio.wait_for(session.close(), CLOSE_TIMEOUT)
                await printer
            finally:
                pump.cancel()
                printer.cancel()
    return common.EXIT_OK


def _gate(args: argparse.Namespace) -> VadGate | None:
    if args.no_vad:
        return None
    try:
        settings = GateSettings(
            aggressiveness=args.vad,
            frame_ms=args.frame_ms,
            sample_rate=args.sample_rate,
            pre_roll_ms=args.pre_roll_ms,
            hangover_ms=args.hangover_ms,
            segment_silence_ms=args.segment_silence_ms,
        )
    except ValueError as error:
        raise common.LocalProblem(str(error)) from None
    return VadGate(settings)


async def _keys(session: PushToTalkSession, args: argparse.Namespace) -> None:
    """Enter toggles talking; q or end of input quits (ending an open utterance first)."""
    while True:
        line = await asyncio.to_thread(_read_line)
        if line is None or line.strip().lower() in QUIT_WORDS:
            await session.release()
            return
        if session.talking:
            await session.release()
            common.note("■ stopped; waiting for the final")
        else:
            await _press(session, args)


def _read_line() -> str | None:
    import sys

    line = sys.stdin.readline()
    return line if line else None


async def _press(session: PushToTalkSession, args: argparse.Namespace) -> None:
    reconnecting = not session.connected
    try:
        await session.press()
    except ServiceError as error:
        common.note(f"cannot start: {common.explain(error, args.server)}; Enter to try again")
        return
    if reconnecting:
        common.note(f"reconnected to {args.server}")
    common.note("● recording; Enter to stop")


async def _pump(microphone: MicrophoneStream, session: PushToTalkSession) -> None:
    while (frame := await asyncio.to_thread(microphone.read)) is not None:
        await session.audio(frame)


async def _print_events(session: PushToTalkSession, args: argparse.Namespace) -> None:
    async for event in session.events():
        if isinstance(event, ConnectionLost):
            _report_lost(event, args)
        else:
            _print_result(event, args)


def _print_result(result: UtteranceResult, args: argparse.Namespace) -> None:
    latency_ms = round(result.latency * 1000) if result.latency is not None else None
    transcript = result.transcript
    if args.format == "json":
        data = formats.transcript_json(transcript, timings=args.timings)
        extra = {
            "utterance": result.utterance_id,
            "automatic": result.automatic,
            "latency_ms": latency_ms,
        }
        common.emit(formats.json_line(extra | data))
        return
    kind = "segment" if result.automatic else "final"
    text = transcript.text.strip() or "(no speech)"
    after = "pause" if result.automatic else "release"
    latency = f"  [{after}→final {latency_ms} ms]" if latency_ms is not None else ""
    common.emit(f"{kind}: {text}{latency}")
    if args.timings and transcript.timings:
        common.note(formats.timings_line(transcript.timings))


def _report_lost(event: ConnectionLost, args: argparse.Namespace) -> None:
    error = event.error
    reason = common.explain(error, args.server) if isinstance(error, ServiceError) else str(error)
    lost = " The utterance in progress was lost." if event.lost_utterance else ""
    common.note(f"connection lost: {reason}.{lost} The next Enter reconnects.")
