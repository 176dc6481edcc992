"""`whisperwire serve`: flags override WHISPERWIRE_* variables, which override defaults."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from pydantic import ValidationError

from whisperwire.server.config import ServerSettings

FLAGS: list[tuple[str, type, str]] = [
    ("host", str, "address to bind (default 127.0.0.1; others need --token)"),
    ("port", int, "gRPC port (default 50051; 0 = any free port)"),
    (
        "model",
        str,
        "model name (tiny.en, base, small, ...) or CTranslate2 model dir (default base)",
    ),
    ("engine", str, "ctranslate2 (default) or trtllm"),
    ("engine-dir", str, "TensorRT-LLM engine dir from engine_builder (with --engine trtllm)"),
    ("device", str, "cpu (default) or cuda"),
    ("compute-type", str, "CTranslate2 compute type (default: int8 on CPU where faster)"),
    ("threads", int, "engine threads (default: one per core)"),
    ("metrics-port", int, "serve Prometheus /metrics on this HTTP port"),
    ("http-port", int, "serve the OpenAI-compatible HTTP API on this port (default off)"),
    ("token", str, "require 'authorization: Bearer TOKEN' on every call"),
    ("max-batch-size", int, "most windows per engine call (default 8)"),
    ("batch-wait-ms", float, "when idle, wait this long for a batch to fill (default 0)"),
    ("max-queue", int, "queued windows before RESOURCE_EXHAUSTED (default 512)"),
    ("max-streams", int, "concurrent StreamAudio calls (default 256)"),
    ("max-streams-per-client", int, "concurrent streams from one client IP (default 64; 0 = off)"),
    ("max-stream-seconds", float, "longest stream, wall clock (default 3600)"),
    ("idle-timeout-seconds", float, "end streams silent this long (default 300)"),
    ("max-chunk-bytes", int, "largest audio chunk (default 65536)"),
    ("max-request-bytes", int, "largest unary request (default 32 MiB)"),
    ("max-audio-seconds", float, "longest unary audio (default 10800)"),
    ("grace-seconds", float, "on SIGTERM, time allowed for in-flight work (default 30)"),
    ("log-format", str, "text (default) or json"),
]


def add_serve_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the gRPC server",
        description="Run the whisperwire gRPC server. Every flag can also be set as "
        "WHISPERWIRE_<FLAG> (e.g. WHISPERWIRE_MODEL=tiny.en).",
    )
    for name, kind, text in FLAGS:
        parser.add_argument(f"--{name}", type=kind, default=None, help=text)
    parser.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from whisperwire.server.app import serve
    from whisperwire.server.errors import ConfigurationError, ModelNotFoundError
    from whisperwire.server.logs import configure_logging

    given = {
        name.replace("-", "_"): getattr(args, name.replace("-", "_"))
        for name, _, _ in FLAGS
        if getattr(args, name.replace("-", "_")) is not None
    }
    try:
        settings = ServerSettings(**given)
    except ValidationError as error:
        print(f"whisperwire serve: invalid settings:\n{error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format)
    try:
        asyncio.run(serve(settings))
    except (ConfigurationError, ModelNotFoundError, OSError) as error:
        logging.getLogger("whisperwire").error("cannot start: %s", error)
        print(f"whisperwire serve: {error}", file=sys.stderr)
        return 1
    return 0
