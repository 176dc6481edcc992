"""`whisperwire transcribe FILE...`: one unary call per file."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from whisperwire.client import formats
from whisperwire.client.aio import AsyncClient
from whisperwire.client.audio_file import probe_duration
from whisperwire.client.commands import common
from whisperwire.client.commands.progress import ProgressBar
from whisperwire.client.errors import InvalidRequestError, ServerBusyError, ServiceError
from whisperwire.client.options import RecognitionOptions
from whisperwire.client.results import Transcript

FORMATS = ("text", "json", "srt", "vtt")
EXTENSIONS = {"text": ".txt", "json": ".json", "srt": ".srt", "vtt": ".vtt"}
LONG_INPUT_SECONDS = 60.0  # a single file this long gets a progress bar too


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "transcribe",
        parents=[common.connection_parser()],
        help="transcribe audio files",
        description="Transcribe audio files (WAV, FLAC, MP3, Ogg, WebM, M4A), one call each.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    common.add_recognition_args(parser)
    parser.add_argument(
        "--timestamps",
        action="store_true",
        help="phrase-level segments with accurate times (on for json/srt/vtt)",
    )
    parser.add_argument(
        "--word-timestamps",
        action="store_true",
        help="per-word times (json words, srt a cue per word, vtt inline word times)",
    )
    parser.add_argument(
        "--separate-channels",
        action="store_true",
        help="transcribe each channel on its own; segments name their channel",
    )
    parser.add_argument("--format", choices=FORMATS, default="text", help="output (default text)")
    parser.add_argument(
        "-o", "--output-dir", type=Path, help="write FILE's result to DIR/<name>.<txt|json|srt|vtt>"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: on a terminal, many/long files)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    return common.run(args, lambda: transcribe_all(args))


async def transcribe_all(args: argparse.Namespace) -> int:
    _check_outputs(args)
    options = common.recognition_options(
        args,
        segment_timestamps=args.timestamps or args.format in ("json", "srt", "vtt"),
        word_timestamps=args.word_timestamps,
        separate_channels=args.separate_channels,
    )
    durations = {path: probe_duration(path) for path in args.files}
    status = common.EXIT_OK
    async with common.make_client(args) as client, _progress(args, durations) as bar:
        for path in args.files:
            if bar:
                bar.begin(path.name)
            outcome = await _transcribe(client, path, options)
            if bar:
                bar.clear()  # results and the bar share the terminal
            status = max(status, _report(path, outcome, args))
            if bar:
                bar.done(durations[path])
    return status


async def _transcribe(
    client: AsyncClient, path: Path, options: RecognitionOptions
) -> Transcript | OSError | ServiceError:
    """The transcript, or what went wrong with this file. A failing server (unreachable,
    wrong token) raises: it ends the whole command."""
    try:
        return await client.transcribe(path, options, request_id=path.name)
    except OSError as error:
        return error
    except ServiceError as error:
        if not _about_this_file(error):
            raise
        return error


def _report(
    path: Path, outcome: Transcript | OSError | ServiceError, args: argparse.Namespace
) -> int:
    if isinstance(outcome, OSError):
        common.fail("whisperwire transcribe", f"{path}: {outcome.strerror or outcome}")
        return common.EXIT_LOCAL
    if isinstance(outcome, ServiceError):
        common.fail("whisperwire transcribe", f"{path}: {common.explain(outcome, args.server)}")
        return common.EXIT_SERVICE
    _output(path, outcome, args)
    return common.EXIT_OK


def _about_this_file(error: ServiceError) -> bool:
    """Undecodable, too long or too large: the next file may still work."""
    too_large = isinstance(error, ServerBusyError) and error.retry_delay is None
    return isinstance(error, InvalidRequestError) or too_large


def _output(path: Path, transcript: Transcript, args: argparse.Namespace) -> None:
    rendered = render(transcript, args.format, str(path), timings=args.timings)
    if args.output_dir:
        target = args.output_dir / (path.stem + EXTENSIONS[args.format])
        target.write_text(rendered + "\n", encoding="utf-8")
    elif args.format == "text" and len(args.files) > 1:
        common.emit(f"{path}: {rendered}")
    else:
        common.emit(rendered)
    if args.timings and transcript.timings and args.format != "json":
        common.note(f"{path}: {formats.timings_line(transcript.timings)}")


def render(transcript: Transcript, output: str, source: str, *, timings: bool) -> str:
    if output == "json":
        data = formats.transcript_json(transcript, source=source, timings=timings)
        return formats.json_line(data)
    if output == "srt":
        return formats.srt(transcript)
    if output == "vtt":
        return formats.vtt(transcript)
    return transcript.text.strip()


def _check_outputs(args: argparse.Namespace) -> None:
    if args.output_dir is None and len(args.files) > 1 and args.format in ("srt", "vtt"):
        raise common.LocalProblem(f"several {args.format} files need --output-dir DIR")
    if args.output_dir is not None:
        try:
            args.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise common.LocalProblem(f"cannot create {args.output_dir}: {error}") from None


@contextlib.asynccontextmanager
async def _progress(
    args: argparse.Namespace, durations: dict[Path, float | None]
) -> AsyncIterator[ProgressBar | None]:
    known = [d for d in durations.values() if d is not None]
    wanted = args.progress
    if wanted is None:
        worth_it = len(durations) > 1 or sum(known) >= LONG_INPUT_SECONDS
        wanted = worth_it and sys.stderr.isatty()
    if not wanted:
        yield None
        return
    total = sum(known) if len(known) == len(durations) else None
    async with ProgressBar(len(durations), total) as bar:
        yield bar
