"""What every client command shares: connection flags, the client, error messages, exit codes.

Exit codes: 0 success; 1 the server or the connection failed; 2 a local problem (bad
arguments, unreadable file, no input device); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from whisperwire.client.aio import AsyncClient
from whisperwire.client.audio_file import AudioFileError
from whisperwire.client.channel import DEFAULT_TARGET
from whisperwire.client.errors import (
    AuthenticationError,
    DeadlineExceededError,
    InvalidRequestError,
    ServerBusyError,
    ServerUnavailableError,
    ServiceError,
    WhisperwireClientError,
)
from whisperwire.client.mic import MicrophoneError
from whisperwire.client.modal_discovery import resolve_endpoint
from whisperwire.client.options import RecognitionOptions

EXIT_OK, EXIT_SERVICE, EXIT_LOCAL, EXIT_INTERRUPTED = 0, 1, 2, 130


class LocalProblem(Exception):
    """Something on this machine the user must fix (exit 2)."""


def connection_parser() -> argparse.ArgumentParser:
    """Flags common to every client command (a parent parser)."""
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("connection")
    group.add_argument(
        "--server",
        default=os.environ.get("WHISPERWIRE_SERVER", DEFAULT_TARGET),
        help=f"HOST:PORT of the server (env WHISPERWIRE_SERVER; default {DEFAULT_TARGET})",
    )
    group.add_argument(
        "--token",
        default=os.environ.get("WHISPERWIRE_TOKEN"),
        help="bearer token the server requires (env WHISPERWIRE_TOKEN)",
    )
    group.add_argument(
        "--modal-app",
        default=os.environ.get("WHISPERWIRE_MODAL_APP"),
        help="connect to a live server of this deployed Modal app instead of --server "
        "(env WHISPERWIRE_MODAL_APP; needs Modal credentials)",
    )
    group.add_argument(
        "--modal-environment",
        default=os.environ.get("MODAL_ENVIRONMENT"),
        help="Modal environment of --modal-app (default: your profile's)",
    )
    group.add_argument("--tls", action="store_true", help="connect with TLS (default plaintext)")
    group.add_argument("--ca-cert", type=Path, help="PEM root certificates for --tls")
    group.add_argument(
        "--timeout", type=float, help="deadline in seconds for each request (default none)"
    )
    group.add_argument("-v", "--verbose", action="store_true", help="log what the client does")
    return parser


def add_recognition_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--language", help="ISO-639-1 code such as en; default auto-detect")
    parser.add_argument(
        "--task",
        choices=("transcribe", "translate"),
        default="transcribe",
        help="transcribe (default) or translate to English",
    )
    parser.add_argument("--prompt", default="", help="initial prompt: names, spelling, style")
    parser.add_argument("--beam-size", type=int, default=0, help="beam width (default: server's)")
    parser.add_argument(
        "--language-per-segment",
        action="store_true",
        help="detect the language of every window (audio that switches language)",
    )
    parser.add_argument(
        "--timings", action="store_true", help="ask for and show server processing times"
    )


def recognition_options(args: argparse.Namespace, **overrides: Any) -> RecognitionOptions:
    values: dict[str, Any] = {
        "language": args.language,
        "task": args.task,
        "initial_prompt": args.prompt,
        "beam_size": args.beam_size,
        "include_timings": args.timings,
        "detect_language_per_segment": args.language_per_segment,
    }
    return RecognitionOptions(**(values | overrides))


def make_client(args: argparse.Namespace) -> AsyncClient:
    roots = _read_ca_cert(args.ca_cert) if args.ca_cert else None
    return AsyncClient(
        args.server,
        token=args.token,
        tls=args.tls or roots is not None,
        root_certificates=roots,
        timeout=args.timeout,
    )


def _read_ca_cert(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise LocalProblem(f"cannot read --ca-cert: {error}") from None


def run(args: argparse.Namespace, command: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a command's coroutine; turn every expected failure into a message and a code."""
    _configure_logging(args.verbose)
    name = f"whisperwire {args.command}"
    try:
        if getattr(args, "modal_app", None):
            endpoint = resolve_endpoint(args.modal_app, environment=args.modal_environment)
            # The registry says whether the address is a TLS tunnel (current servers) or raw TCP.
            args.server, args.tls = endpoint.target, args.tls or endpoint.tls
        return asyncio.run(command())
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ServiceError as error:
        fail(name, explain(error, args.server))
        return EXIT_SERVICE
    except (LocalProblem, MicrophoneError, AudioFileError) as error:
        fail(name, str(error))
        return EXIT_LOCAL
    except WhisperwireClientError as error:
        fail(name, str(error))
        return EXIT_SERVICE


def explain(error: ServiceError, target: str) -> str:
    """One sentence a person can act on."""
    if isinstance(error, ServerUnavailableError):
        if error.reason == "ENGINE_NOT_READY":
            return f"the server at {target} is still warming up; try again in a moment"
        if error.reason == "SERVER_DRAINING":
            return f"the server at {target} is shutting down"
        return (
            f"cannot reach the server at {target}: {error.message}. Is `whisperwire serve` "
            "running there? Set --server or WHISPERWIRE_SERVER (and --tls if it uses TLS)."
        )
    if isinstance(error, AuthenticationError):
        return (
            f"the server at {target} refused the credentials ({error.message}); "
            "pass its token with --token or WHISPERWIRE_TOKEN"
        )
    if isinstance(error, DeadlineExceededError):
        return "the server did not answer within the deadline (--timeout)"
    if isinstance(error, ServerBusyError):
        if error.retry_delay is None:  # gRPC's own size check, not the server's admission
            return f"the request is larger than the server accepts: {error.message}"
        return f"the server is busy: {error.message}; retry in {error.retry_delay:g} s"
    if isinstance(error, InvalidRequestError):
        reason = f" [{error.reason}]" if error.reason else ""
        return f"the server refused the request: {error.message}{reason}"
    return f"the call failed: {error}"


def fail(name: str, message: str) -> None:
    print(f"{name}: {message}", file=sys.stderr)


def note(message: str) -> None:
    """Status for the person at the terminal (stderr, so stdout stays parseable)."""
    print(message, file=sys.stderr, flush=True)


def emit(line: str) -> None:
    print(line, flush=True)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
