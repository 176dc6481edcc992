"""`whisperwire info`: the server's model, engine, limits and health."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from whisperwire.client import formats
from whisperwire.client.commands import common
from whisperwire.client.results import ServiceInfo

SERVICE = "whisperwire.v1.TranscriptionService"


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "info",
        parents=[common.connection_parser()],
        help="show the server's model, limits and health",
        description="GetServiceInfo and the grpc.health.v1 status of the server.",
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    return common.run(args, lambda: show(args))


async def show(args: argparse.Namespace) -> int:
    async with common.make_client(args) as client:
        info = await client.service_info()
        health = await client.health(SERVICE)
    if args.format == "json":
        common.emit(formats.json_line({**asdict(info), "health": health}))
    else:
        for line in describe(info, health):
            common.emit(line)
    return common.EXIT_OK if health == "SERVING" else common.EXIT_SERVICE


def describe(info: ServiceInfo, health: str) -> list[str]:
    limits = info.limits
    languages = ", ".join(info.languages[:12]) + (" ..." if len(info.languages) > 12 else "")
    return [
        f"server      {_server_name(info.version)}",
        f"health      {health}",
        f"model       {info.model} ({info.engine} on {info.device})",
        f"tasks       {', '.join(info.tasks)}",
        f"languages   {len(info.languages)}: {languages}",
        f"timestamps  segments {_yes(info.supports_segment_timestamps)}, "
        f"words {_yes(info.supports_word_timestamps)}",
        f"defaults    beam size {info.default_beam_size}, "
        f"partial interval {info.default_partial_interval:g} s",
        f"limits      {limits.max_concurrent_streams} streams"
        f" ({_per_client(limits.max_streams_per_client)}), "
        f"{limits.max_request_bytes // (1024 * 1024)} MiB per request, "
        f"{limits.max_audio_duration:g} s audio, {limits.max_chunk_bytes} B per chunk, "
        f"idle timeout {limits.idle_timeout:g} s, stream up to {limits.max_stream_duration:g} s",
    ]


def _server_name(version: str) -> str:
    return f"whisperwire {version}" if version else "whisperwire"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _per_client(limit: int) -> str:
    return f"{limit} per client" if limit else "no per-client limit"
