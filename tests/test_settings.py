"""Settings: grouped in the model, one flat public name each (flag, variable, keyword), and the
`serve` flags derived from the fields."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError

from whisperwire.server.cli import add_serve_parser, settings_from
from whisperwire.server.config import SETTINGS, ServerSettings

# The flags `serve` had before the settings were grouped: scripts and docs use them.
PUBLISHED_FLAGS = [
    "host",
    "port",
    "model",
    "engine",
    "engine-dir",
    "device",
    "compute-type",
    "threads",
    "metrics-port",
    "token",
    "max-batch-size",
    "batch-wait-ms",
    "max-queue",
    "max-streams",
    "max-streams-per-client",
    "max-stream-seconds",
    "idle-timeout-seconds",
    "max-chunk-bytes",
    "max-request-bytes",
    "max-audio-seconds",
    "grace-seconds",
    "log-format",
]


def serve(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for setting in SETTINGS:
        monkeypatch.delenv(setting.env_var, raising=False)


def test_every_setting_is_a_documented_flag_and_the_published_ones_remain() -> None:
    commands = argparse.ArgumentParser().add_subparsers()
    add_serve_parser(commands)
    help_text = commands.choices["serve"].format_help()
    for setting in SETTINGS:
        assert f"--{setting.name.replace('_', '-')}" in help_text
        assert setting.info.description, f"{setting.name} needs a docstring: it is the flag's help"
    for flag in PUBLISHED_FLAGS:
        assert f"--{flag} " in help_text


def test_flags_and_variables_land_in_their_groups(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WHISPERWIRE_ENGINE", "trtllm")
    monkeypatch.setenv("WHISPERWIRE_MODEL", "tiny.en")
    monkeypatch.setenv("WHISPERWIRE_MAX_STREAMS", "7")
    monkeypatch.setenv("whisperwire_port", "6000")  # matched without regard to case
    settings = settings_from(serve("--model", "base", "--max-batch-size", "4", "--token", "t"))

    assert settings.engine.name == "trtllm"  # a variable for one engine setting...
    assert settings.engine.model == "base"  # ...stays when a flag sets another
    assert settings.batching.max_batch_size == 4
    assert settings.limits.max_streams == 7
    assert settings.network.port == 6000
    assert settings.network.token is not None and settings.network.token.get_secret_value() == "t"
    assert settings.log_format == "text"


def test_keywords_use_the_flat_names_too() -> None:
    settings = ServerSettings(port=0, engine="trtllm", max_streams_per_client=0)
    assert (settings.network.port, settings.engine.name) == (0, "trtllm")
    assert settings.limits.max_streams_per_client == 0


@pytest.mark.parametrize(
    "argv",
    [("--max-batch-size", "0"), ("--engine", "onnx"), ("--kv-cache-free-gpu-memory-fraction", "2")],
)
def test_bad_values_are_refused(argv: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError):
        settings_from(serve(*argv))


def test_a_number_flag_names_a_bad_number() -> None:
    with pytest.raises(SystemExit):
        serve("--port", "fifty")
