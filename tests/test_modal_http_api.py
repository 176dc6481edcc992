"""The Modal app's OpenAI-compatible HTTP API (`HttpApi` in whisperwire_modal.py), offline.

Its decoration is recorded from modal's own decorators; its serving body runs here on the
TensorRT-LLM contract double with a temporary directory as the Volume, and OpenAI's SDK calls
it with and without the token. (The TLS in front of it is Modal's proxy: not run here.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import openai
import pytest

import whisperwire_modal as app
from tests.speech import HESTER, wer
from tests.test_modal_app import Recorded, import_recorded
from tests.trtllm_double.support import TINY_EN, double_importable, write_engine_dir
from whisperwire.server import deploy
from whisperwire.server.deploy import BackgroundServer
from whisperwire.server.errors import ConfigurationError

TOKEN = "modal-http-test-token"
pytestmark = pytest.mark.filterwarnings("ignore:.*executing locally.*:UserWarning")


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    for name in ("GPU", "MODEL", "PRECISION", "REPLICAS", "REGISTRY"):
        monkeypatch.delenv(f"WHISPERWIRE_MODAL_{name}", raising=False)
    return import_recorded(monkeypatch)


def test_the_http_api_is_a_web_server_behind_modals_tls_proxy(recorded: Recorded) -> None:
    method, settings = recorded.decorations["HttpApi"]
    assert method == "server"
    assert settings["port"] == recorded.module.HTTP_PORT != recorded.module.GRPC_PORT
    assert not settings.get("h2_enabled")  # plain HTTP/1.1 behind the proxy's TLS
    # Modal's proxy auth is off; the server's own bearer token is not.
    assert settings["unauthenticated"] is True
    assert [secret.name for secret in settings["secrets"]] == ["whisperwire-token"]
    assert settings["gpu"] == recorded.decorations["TunnelServer"][1]["gpu"]
    assert settings["startup_timeout"] == 20 * 60
    assert settings["exit_grace_period"] > recorded.module.DRAIN_SECONDS


@pytest.fixture
def volume(tmp_path: Path, tiny_en_dir: Path, whisper_assets_dir: Path) -> Iterator[None]:
    write_engine_dir(
        tmp_path / "engines", TINY_EN, ct2_model_dir=tiny_en_dir, assets_dir=whisper_assets_dir
    )
    with pytest.MonkeyPatch.context() as patch, double_importable():
        patch.setattr(app, "VOLUME_PATH", PurePosixPath(tmp_path))
        patch.setattr(app, "MODEL", "tiny.en")
        patch.setattr(app, "GRPC_PORT", 0)  # free ports on a shared machine
        patch.setattr(app, "HTTP_PORT", 0)
        patch.setattr(deploy, "nvidia_driver_version", lambda: "580.82.07")  # the host's
        yield


@pytest.fixture
def http_api(volume: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[BackgroundServer]:
    monkeypatch.setenv("WHISPERWIRE_TOKEN", TOKEN)
    server = app.start_server(http_port=app.HTTP_PORT)  # what HttpApi's enter hook runs
    yield server
    server.stop(1.0)  # what its exit hook runs


def test_the_container_answers_the_openai_sdk_with_the_token_only(
    http_api: BackgroundServer,
) -> None:
    url = f"http://127.0.0.1:{http_api.running.http_port}/v1"
    client = openai.OpenAI(base_url=url, api_key=TOKEN, max_retries=0)
    result = client.audio.transcriptions.create(
        model="whisper-1", file=(HESTER.name, HESTER.read())
    )
    assert wer(HESTER.reference, result.text) <= 0.1
    stranger = openai.OpenAI(base_url=url, api_key="guessed", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        stranger.audio.transcriptions.create(model="whisper-1", file=(HESTER.name, HESTER.read()))


def test_without_a_token_the_http_api_does_not_start(
    volume: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WHISPERWIRE_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match="needs a bearer token"):
        app.start_server(http_port=app.HTTP_PORT)
