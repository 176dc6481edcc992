"""`whisperwire serve`: one flag per setting (config.py), named and described by the setting;
flags override WHISPERWIRE_* variables, which override defaults."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any, get_args

from pydantic import ValidationError
from pydantic.fields import FieldInfo

from whisperwire.server.config import SETTINGS, ServerSettings


def add_serve_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the gRPC server",
        description="Run the whisperwire gRPC server. Every flag can also be set as "
        "WHISPERWIRE_<FLAG> (e.g. WHISPERWIRE_MODEL=tiny.en).",
    )
    groups: dict[str | None, Any] = {}
    for setting in SETTINGS:
        if setting.group not in groups:
            groups[setting.group] = parser.add_argument_group(setting.group or "other")
        groups[setting.group].add_argument(
            f"--{setting.name.replace('_', '-')}",
            dest=setting.name,
            type=_flag_type(setting.info),
            default=None,  # unset flags leave variables and defaults alone
            help=_flag_help(setting.info),
        )
    parser.set_defaults(handler=run_serve)


def _flag_type(info: FieldInfo) -> Callable[[str], Any]:
    """int or float for numbers (argparse names a bad value); pydantic checks the rest."""
    numbers = [
        kind for kind in get_args(info.annotation) or (info.annotation,) if kind in (int, float)
    ]
    return numbers[0] if numbers else str


def _flag_help(info: FieldInfo) -> str:
    default = "unset" if info.default is None else info.default
    text = " ".join((info.description or "").split())
    return f"{text} (default: {default})".replace("%", "%%")


def settings_from(args: argparse.Namespace) -> ServerSettings:
    """The flags given, over WHISPERWIRE_* variables, over defaults."""
    given = {s.name: getattr(args, s.name) for s in SETTINGS if getattr(args, s.name) is not None}
    return ServerSettings(**given)


def run_serve(args: argparse.Namespace) -> int:
    from whisperwire.server.app import serve
    from whisperwire.server.errors import ConfigurationError, ModelNotFoundError
    from whisperwire.server.logs import configure_logging

    try:
        settings = settings_from(args)
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
