"""The `whisperwire` command: `serve` runs the server; the other commands are clients."""

from __future__ import annotations

import argparse
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    from whisperwire.client.commands import add_client_parsers
    from whisperwire.server.cli import add_serve_parser

    parser = argparse.ArgumentParser(
        prog="whisperwire", description="Whisper speech recognition over gRPC."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(subparsers)
    add_client_parsers(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # gRPC's core logs e.g. TLS handshake failures to stderr at INFO; the commands explain
    # failures themselves. Must be set before grpc is first imported, hence the lazy imports.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
