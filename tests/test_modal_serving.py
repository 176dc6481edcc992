"""The serving body of the Modal deployment (whisperwire.server.deploy), run here for real.

The real server with the real CPU engine (tiny.en) runs on its own thread and loop as in a
Modal container; only Modal's servers are stood in for: `modal.forward` by a loopback TCP
relay and the named `modal.Dict` by a file (tests/test_modal_standins.py). Clients are the real
SDK, finding the server through the registry and reaching it through the relay.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from modal.exception import RemoteError

from tests.speech import HESTER, JFK, load_pcm16k, to_s16le, wer
from tests.test_modal_standins import DictStandIn, LoopbackForward
from whisperwire.client import (
    AsyncClient,
    AuthenticationError,
    EndReason,
    FinalResult,
    RecognitionOptions,
    ServerUnavailableError,
    SpeechEvent,
    StreamOptions,
)
from whisperwire.client.modal_discovery import resolve_target
from whisperwire.modal_registry import TunnelEndpoint
from whisperwire.server.config import ServerSettings
from whisperwire.server.deploy import (
    TunnelService,
    container_settings,
    drain_on_sigterm,
    serve_behind_tunnel,
)
from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
from whisperwire.server.errors import ConfigurationError
from whisperwire.server.models import resolve_model
from whisperwire.server.tokenizer import WhisperTokenizer

TOKEN = "tunnel-token-for-tests"
KEY = "ta-01TESTCONTAINER"
APP = "whisperwire"
REPO = Path(__file__).resolve().parents[1]
Engine = tuple[CTranslate2Engine, WhisperTokenizer]


def settings(**overrides: Any) -> ServerSettings:
    # The grace period bounds the drain; it ends as soon as the open finals are out.
    values: dict[str, Any] = {"port": 0, "token": TOKEN, "grace_seconds": 60.0, **overrides}
    return ServerSettings(**values)


@dataclass
class Served:
    service: TunnelService
    forward: LoopbackForward
    registry: DictStandIn

    @property
    def server_port(self) -> int:
        return self.service.server.running.port


def serve(engine: Engine, registry: DictStandIn, **options: Any) -> Served:
    forward = LoopbackForward()
    service = serve_behind_tunnel(
        settings(), *engine, forward=forward, registry=registry, key=KEY, **options
    )
    return Served(service, forward, registry)


@pytest.fixture(scope="module")
def served(tiny_engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    registry = DictStandIn(tmp_path_factory.mktemp("modal") / "registry.pickle")
    running = serve(tiny_engine, registry, heartbeat_interval=0.05)
    yield running
    running.service.stop()


async def test_a_client_with_the_token_transcribes_through_the_tunnel(served: Served) -> None:
    target = resolve_target(APP, registry=served.registry)

    (relay,) = served.forward.relays.values()
    assert target == f"127.0.0.1:{relay.port}"
    assert relay.port != served.server_port  # the tunnel, not the server's own port
    async with AsyncClient(target, token=TOKEN) as client:
        transcript = await client.transcribe(JFK.path, RecognitionOptions(language="en"))
    assert wer(JFK.reference, transcript.text) <= 0.1
    assert relay.accepted >= 1


@pytest.mark.parametrize("token", [None, "not-the-token"])
async def test_the_tunnel_is_public_so_calls_without_the_token_are_refused(
    served: Served, token: str | None
) -> None:
    async with AsyncClient(resolve_target(APP, registry=served.registry), token=token) as client:
        with pytest.raises(AuthenticationError) as raised:
            await client.transcribe(JFK.path)
    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_the_tunnel_is_opened_unencrypted_for_the_server_port(served: Served) -> None:
    assert served.forward.calls == [
        {"port": served.server_port, "unencrypted": True, "h2_enabled": False}
    ]


def test_the_address_is_published_and_its_heartbeat_advances(served: Served) -> None:
    first = TunnelEndpoint.from_entry(served.registry.get(KEY))
    (relay,) = served.forward.relays.values()
    assert (first.host, first.port) == ("127.0.0.1", relay.port)
    assert (first.container, first.model, first.engine) == (KEY, "tiny.en", "ctranslate2")

    while (latest := TunnelEndpoint.from_entry(served.registry.get(KEY))) == first:
        time.sleep(0.05)
    assert latest.heartbeat_at > first.heartbeat_at
    assert latest.started_at == first.started_at


async def test_stop_withdraws_the_address_then_drains_through_the_open_tunnel(
    tiny_engine: Engine, tmp_path: Path
) -> None:
    running = serve(tiny_engine, DictStandIn(tmp_path / "registry.pickle"))
    target = resolve_target(APP, registry=running.registry)
    async with AsyncClient(target, token=TOKEN) as client:
        stream = await client.stream(_stream_options())
        await _push_until_heard(stream)

        stopping = asyncio.ensure_future(asyncio.to_thread(running.service.stop))
        final = await _final_then_unavailable(stream)
        await stopping

    assert final.end_reason is EndReason.SERVER_SHUTDOWN
    assert final.transcript.text.lower().startswith("yet these thoughts")
    assert list(running.registry.items()) == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(_host_port(target)).close()
    running.service.stop()  # the exit hook after a SIGTERM drain: nothing left to do
    assert running.forward.relays == {}


def test_the_container_has_no_per_client_limit_unless_the_secret_sets_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Callers arrive through Modal's relay, so they would all share one client address."""
    monkeypatch.setenv("WHISPERWIRE_TOKEN", "t0ken")
    monkeypatch.delenv("WHISPERWIRE_MAX_STREAMS_PER_CLIENT", raising=False)
    assert container_settings(tmp_path, port=50051, grace=30).limits.max_streams_per_client == 0
    monkeypatch.setenv("WHISPERWIRE_MAX_STREAMS_PER_CLIENT", "8")
    assert container_settings(tmp_path, port=50051, grace=30).limits.max_streams_per_client == 8


def test_without_a_token_nothing_is_started_or_exposed(tiny_engine: Engine, tmp_path: Path) -> None:
    forward, registry = LoopbackForward(), DictStandIn(tmp_path / "registry.pickle")
    with pytest.raises(ConfigurationError, match="public tunnel needs a bearer token"):
        serve_behind_tunnel(
            settings(token=None), *tiny_engine, forward=forward, registry=registry, key=KEY
        )
    assert forward.calls == []
    assert len(registry) == 0


class UnavailableRelay:
    """`modal.forward` when Modal's relay cannot be reached."""

    def __init__(self) -> None:
        self.ports: list[int] = []

    def __call__(self, port: int, *, unencrypted: bool = False) -> AbstractContextManager[Any]:
        self.ports.append(port)
        raise RemoteError("Relay server is unavailable")


def test_a_tunnel_that_cannot_open_stops_the_server_and_publishes_nothing(
    tiny_engine: Engine, tmp_path: Path
) -> None:
    forward, registry = UnavailableRelay(), DictStandIn(tmp_path / "registry.pickle")
    with pytest.raises(RemoteError):
        serve_behind_tunnel(settings(), *tiny_engine, forward=forward, registry=registry, key=KEY)
    (port,) = forward.ports
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port)).close()
    assert len(registry) == 0


# --- SIGTERM, in a process of its own --------------------------------------------------------


def serve_until_interrupted(registry_path: str) -> None:
    """The subprocess: what the Modal container does, with the stand-ins and the CPU engine."""
    model_dir = resolve_model("tiny.en", allow_download=False)
    engine = CTranslate2Engine(model_dir, model_name="tiny.en", threads=1)
    service = serve_behind_tunnel(
        settings(),
        engine,
        WhisperTokenizer.from_dir(model_dir),
        forward=LoopbackForward(),
        registry=DictStandIn(Path(registry_path)),
        key=KEY,
    )
    drain_on_sigterm(service.stop)
    print("serving", flush=True)
    try:
        threading.Event().wait()  # Modal's main thread, waiting for inputs
    except KeyboardInterrupt:
        service.stop()  # the exit hook
        print("interrupted", flush=True)


@pytest.fixture
def tunnel_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], DictStandIn]]:
    registry_path = tmp_path / "registry.pickle"
    code = (
        "from tests.test_modal_serving import serve_until_interrupted; "
        f"serve_until_interrupted({str(registry_path)!r})"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "WHISPERWIRE_THREADS": "1"},
    )
    yield process, DictStandIn(registry_path)
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


async def test_sigterm_withdraws_the_address_and_drains_open_streams(
    tunnel_process: tuple[subprocess.Popen[str], DictStandIn],
) -> None:
    process, registry = tunnel_process
    assert await asyncio.to_thread(_next_line, process) == "serving"
    target = resolve_target(APP, registry=registry)
    async with AsyncClient(target, token=TOKEN) as client:
        stream = await client.stream(_stream_options())
        await _push_until_heard(stream)

        process.send_signal(signal.SIGTERM)
        final = await _final_then_unavailable(stream)

    assert final.end_reason is EndReason.SERVER_SHUTDOWN
    assert final.transcript.text.lower().startswith("yet these thoughts")
    assert await asyncio.to_thread(process.wait, 60) == 0
    assert await asyncio.to_thread(_next_line, process) == "interrupted"
    assert list(registry.items()) == []


def _next_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline().strip()


# --- helpers ---------------------------------------------------------------------------------


def _stream_options() -> StreamOptions:
    return StreamOptions(recognition=RecognitionOptions(language="en"), speech_events=True)


async def _push_until_heard(stream: Any) -> None:
    """Send a whole clip without ending the utterance; return once the server hears speech."""
    await stream.push(to_s16le(load_pcm16k(HESTER)))
    while not isinstance(await stream.next_event(), SpeechEvent):
        pass


async def _final_then_unavailable(stream: Any) -> FinalResult:
    """The drain's final for the open utterance, then the call's UNAVAILABLE status."""
    finals = []
    with pytest.raises(ServerUnavailableError) as raised:
        while (event := await stream.next_event()) is not None:
            if isinstance(event, FinalResult):
                finals.append(event)
    assert raised.value.reason == "SERVER_DRAINING"
    (final,) = finals
    return final


def _host_port(target: str) -> tuple[str, int]:
    host, port = target.rsplit(":", 1)
    return host, int(port)
