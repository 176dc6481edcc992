"""The `whisperwire` command: `serve` runs the server; the other commands are clients."""

from __future__ import annotations

import argparse
import sys

from whisperwire.server.cli import add_serve_parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whisperwire", description="Whisper speech recognition over gRPC.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
