"""The `whisperwire` command: the client commands, plus those other packages add (`serve`).

The server is not imported here: it registers `serve` in the `whisperwire.commands` entry
point group, and this command adds whatever that group holds. Without the server's
dependencies, `whisperwire serve` says what to install instead of failing on an import.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import EntryPoint, entry_points
from typing import Any

COMMAND_GROUP = "whisperwire.commands"
"""Entry points naming a function that adds one subcommand parser (`add(subparsers)`)."""
SERVER_INSTALL_HINT = "pip install 'whisperwire[server,models]'"


def build_parser() -> argparse.ArgumentParser:
    from whisperwire.client.commands import add_client_parsers

    parser = argparse.ArgumentParser(
        prog="whisperwire", description="Whisper speech recognition over gRPC."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    added = add_registered_parsers(subparsers)
    if "serve" not in added:
        add_unavailable_parser(subparsers, "serve", "the whisperwire server is not installed")
    add_client_parsers(subparsers)
    return parser


def add_registered_parsers(subparsers: Any) -> set[str]:
    """Add every command of the entry point group; names of those that could not load too."""
    names = set()
    for entry_point in entry_points(group=COMMAND_GROUP):
        names.add(entry_point.name)
        try:
            add_parser = entry_point.load()
        except ImportError as error:
            # Registered but its dependencies are missing (the `server` extra not installed).
            add_unavailable_parser(subparsers, entry_point.name, _missing(entry_point, error))
            continue
        add_parser(subparsers)
    return names


def add_unavailable_parser(subparsers: Any, name: str, reason: str) -> None:
    """A stand-in for a command that cannot run here: any use explains what to install."""
    # No option prefix: whatever follows (`--model tiny.en`, `-h`) is taken as is, since the
    # command will not run anyway.
    parser = subparsers.add_parser(
        name, help=f"(not installed: {SERVER_INSTALL_HINT})", add_help=False, prefix_chars="\0"
    )
    parser.add_argument("ignored", nargs="*")
    parser.set_defaults(handler=lambda args: _explain_unavailable(name, reason))


def _missing(entry_point: EntryPoint, error: ImportError) -> str:
    return f"needs packages that are not installed ({error}; from {entry_point.value})"


def _explain_unavailable(name: str, reason: str) -> int:
    print(f"whisperwire {name}: {reason}; install it with: {SERVER_INSTALL_HINT}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    # gRPC's core logs e.g. TLS handshake failures to stderr at INFO; the commands explain
    # failures themselves. Must be set before grpc is first imported, hence the lazy imports.
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
