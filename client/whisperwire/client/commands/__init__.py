"""The client commands of `whisperwire` (transcribe, stream, mic, info). The only part of
the client package that prints; everything else logs."""

from __future__ import annotations

from typing import Any

from whisperwire.client.commands import info, mic, stream, transcribe


def add_client_parsers(subparsers: Any) -> None:
    for command in (transcribe, stream, mic, info):
        command.add_parser(subparsers)
