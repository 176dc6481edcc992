"""Security: a token whenever the server is reachable beyond loopback, an exact bearer-token
match compared in constant time, no work for unauthenticated calls, a stream limit per client
address, and requests whose fields are data only (no path, file, model or command field;
file bytes never open files).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.grpc_helpers import (
    END,
    audio_requests,
    collect,
    config_request,
    error_info,
    paced,
    serving,
)
from tests.grpc_helpers import stub as make_stub
from tests.load.serve_process import WHISPERWIRE, ServeProcess
from tests.speech import HESTER, load_pcm16k, to_s16le, wer
from whisperwire.client.call_status import ServerStatus
from whisperwire.server import auth
from whisperwire.server.app import ConfigurationError, RunningServer, check_exposure
from whisperwire.server.config import ServerSettings
from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
from whisperwire.server.stream_call import client_address
from whisperwire.server.tokenizer import WhisperTokenizer
from whisperwire.v1 import transcription_service_pb2 as pb

Tiny = tuple[CTranslate2Engine, WhisperTokenizer]
TOKEN = "s3cret-T0ken"
# Field names that would let a caller point the server at something: none may exist.
POINTERS = ("path", "file", "dir", "model", "url", "uri", "command", "cmd", "exec", "script")


# ---- exposure ---------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_loopback_needs_no_token(host: str) -> None:
    check_exposure(ServerSettings(host=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "2001:db8::7", "speech.internal"])
def test_anything_beyond_loopback_needs_a_token(host: str) -> None:
    with pytest.raises(ConfigurationError, match="needs --token"):
        check_exposure(ServerSettings(host=host))
    check_exposure(ServerSettings(host=host, token=TOKEN))


def test_serve_refuses_all_ipv6_interfaces_without_a_token() -> None:
    result = subprocess.run(
        [WHISPERWIRE, "serve", "--model", "tiny.en", "--host", "::", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "needs --token" in result.stderr and "Traceback" not in result.stderr


async def test_ipv6_loopback_serves_without_a_token() -> None:
    server = await asyncio.to_thread(ServeProcess.start, "--host", "::1")
    try:
        async with grpc.aio.insecure_channel(f"[::1]:{server.port}") as channel:
            info = await make_stub(channel).GetServiceInfo(pb.GetServiceInfoRequest())
    finally:
        server.terminate()
        await asyncio.to_thread(server.wait, 60)
    assert info.model == "tiny.en"


async def test_a_second_server_cannot_take_a_port_in_use() -> None:
    """No silent port sharing (SO_REUSEPORT): it would get half of the first's connections."""
    first = await asyncio.to_thread(ServeProcess.start)
    try:
        second = await asyncio.to_thread(
            subprocess.run,
            [WHISPERWIRE, "serve", "--model", "tiny.en", "--port", str(first.port)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        first.terminate()
        await asyncio.to_thread(first.wait, 60)
    assert second.returncode == 1
    assert "cannot listen" in second.stderr and "Traceback" not in second.stderr


async def test_serving_every_interface_with_a_token_from_the_environment(
    tiny_en_dir: Path,
) -> None:
    """Bound to 0.0.0.0 (called on 127.0.0.1 only): calls need the token, probes do not, and
    neither the token nor the model's directory leaks (logs, GetServiceInfo)."""
    server = await asyncio.to_thread(
        ServeProcess.start,
        "--host",
        "0.0.0.0",
        "--model",
        str(tiny_en_dir),
        env={"WHISPERWIRE_TOKEN": TOKEN},
    )
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = make_stub(channel)
            for metadata in [(), (("authorization", f"Bearer {TOKEN[:-1]}"),)]:
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await stub.GetServiceInfo(pb.GetServiceInfoRequest(), metadata=metadata)
                assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            info = await stub.GetServiceInfo(
                pb.GetServiceInfoRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),)
            )
            health = health_pb2_grpc.HealthStub(channel)
            probe = await health.Check(health_pb2.HealthCheckRequest())
    finally:
        server.terminate()
        await asyncio.to_thread(server.wait, 60)
    assert probe.status == health_pb2.HealthCheckResponse.SERVING
    assert info.model == tiny_en_dir.name and os.sep not in info.model
    assert TOKEN not in server.output


# ---- the bearer token -------------------------------------------------------------------
@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {TOKEN[:-1]}x",  # differs in the last byte only
        f"Bearer {TOKEN[:-1]}",  # a prefix
        f"Bearer {TOKEN}x",  # longer
        f"Bearer  {TOKEN}",  # an extra space
        TOKEN,  # no scheme
        f"Basic {TOKEN}",
        "",
    ],
)
async def test_only_the_exact_token_passes_compared_in_constant_time(
    tiny_engine: Tiny, monkeypatch: pytest.MonkeyPatch, authorization: str
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    constant_time = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return constant_time(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", compare_digest)
    async with serving(*tiny_engine, token=TOKEN) as (_, channel):
        stub = make_stub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetServiceInfo(
                pb.GetServiceInfoRequest(), metadata=(("authorization", authorization),)
            )
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        good = (("authorization", f"Bearer {TOKEN}"),)
        assert (await stub.GetServiceInfo(pb.GetServiceInfoRequest(), metadata=good)).model
    assert compared == [
        (authorization.encode(), f"Bearer {TOKEN}".encode()),
        (f"Bearer {TOKEN}".encode(), f"Bearer {TOKEN}".encode()),
    ]


async def test_unauthenticated_calls_do_no_work(tiny_engine: Tiny) -> None:
    config = config_request(language="en")
    audio = audio_requests(to_s16le(load_pcm16k(HESTER)))
    async with serving(*tiny_engine, token=TOKEN) as (running, channel):
        before = _work_done(running)
        stub = make_stub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await stub.Transcribe(pb.TranscribeRequest(audio_content=HESTER.read()))
        call = stub.StreamAudio()
        refusal = ServerStatus(call)  # keeps the status from a racing write (grpc#36066)
        with pytest.raises(grpc.aio.AioRpcError) as streamed:
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                for request in [config, *audio, END]:  # the server may refuse before the end
                    await call.write(request)
            await call.read()
        after = _work_done(running)

        assert unary.value.code() == grpc.StatusCode.UNAUTHENTICATED
        refused = refusal.error_for(streamed.value)
        assert refused is not None and refused.code() == grpc.StatusCode.UNAUTHENTICATED
        assert after == before  # no engine call, no call reached the servicer
        assert not running.state.streams
        good = (("authorization", f"Bearer {TOKEN}"),)
        responses = await collect(stub.StreamAudio(paced([config, *audio, END]), metadata=good))
        assert wer(HESTER.reference, responses[-1].final_result.transcript.text) <= 0.1
        assert _work_done(running) != before


def _work_done(running: RunningServer) -> tuple[Any, ...]:
    """Engine calls made and calls finished by the servicer, from the server's metrics."""
    registry = running.metrics.registry
    finished = sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "whisperwire_requests"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
    return registry.get_sample_value("whisperwire_batch_size_count"), finished


# ---- streams per client ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("peer", "client"),
    [
        ("ipv4:10.0.0.7:51234", "ipv4:10.0.0.7"),
        ("ipv6:[2001:db8::1]:443", "ipv6:[2001:db8::1]"),
        ("ipv6:%5B::1%5D:5000", "ipv6:%5B::1%5D"),
        ("unix:/run/whisperwire.sock", "unix:/run/whisperwire.sock"),
    ],
)
def test_a_client_is_its_address_without_the_port(peer: str, client: str) -> None:
    assert client_address(peer) == client


async def test_one_client_cannot_take_every_stream(tiny_engine: Tiny) -> None:
    """Two streams per address: the third from 127.0.0.1 is refused with RetryInfo while
    a caller from ::1 still gets in; a closed stream frees its slot."""
    good = (("authorization", f"Bearer {TOKEN}"),)
    limits = {"host": "::", "token": TOKEN, "max_streams_per_client": 2}
    async with (
        serving(*tiny_engine, **limits) as (running, ipv4),
        grpc.aio.insecure_channel(f"[::1]:{running.port}") as ipv6,
    ):
        held = [await _started_stream(ipv4, good) for _ in range(2)]
        refused = await _refusal(ipv4, good)
        other_client = await _started_stream(ipv6, good)
        held[0].cancel()
        assert await _until(lambda: len(running.state.streams) == 2)
        again = await _started_stream(ipv4, good)
        for call in [*held[1:], other_client, again]:
            call.cancel()

    code, reason, _, retry = error_info(refused)
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "CLIENT_STREAM_LIMIT")
    assert retry is not None and retry > 0
    assert "ipv4:127.0.0.1" in (refused.details() or "")


async def _started_stream(channel: grpc.aio.Channel, metadata: Any) -> Any:
    call = make_stub(channel).StreamAudio(metadata=metadata)
    await call.write(config_request(language="en"))
    first = await call.read()
    assert first.WhichOneof("event") == "session_started"
    return call


async def _refusal(channel: grpc.aio.Channel, metadata: Any) -> grpc.aio.AioRpcError:
    call = make_stub(channel).StreamAudio(metadata=metadata)
    status = ServerStatus(call)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await call.write(config_request(language="en"))
        await call.read()
    error = status.error_for(raised.value)
    assert error is not None
    return error


async def _until(condition: Any, timeout: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


# ---- requests carry data, never places --------------------------------------------------
def test_no_request_field_names_a_path_a_model_or_a_command() -> None:
    requests = [pb.TranscribeRequest, pb.StreamAudioRequest, pb.GetServiceInfoRequest]
    names = {name for request in requests for name in _field_names(request.DESCRIPTOR)}
    assert names  # the walk found the fields
    assert not [n for n in names if any(word in n.lower() for word in POINTERS)], names


def _field_names(message: Descriptor, seen: frozenset[str] = frozenset()) -> set[str]:
    if message.full_name in seen:
        return set()
    names = set()
    for field in message.fields:
        names.add(f"{message.name}.{field.name}")
        if field.message_type is not None:
            names |= _field_names(field.message_type, seen | {message.full_name})
    return names


@pytest.mark.parametrize(
    "script",
    [
        b"ffconcat version 1.0\nfile hester.wav\n",  # FFmpeg's concat demuxer
        b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:5,\nhester.wav\n#EXT-X-ENDLIST\n",
        b"file:hester.wav",
    ],
)
async def test_file_bytes_that_name_a_file_never_open_it(
    tiny_channel: grpc.aio.Channel,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    script: bytes,
) -> None:
    """Audio bytes that are a script or playlist naming a file beside the server (its working
    directory here) are not a way to have that file read and transcribed."""
    (tmp_path / "hester.wav").write_bytes(HESTER.read())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await make_stub(tiny_channel).Transcribe(pb.TranscribeRequest(audio_content=script))
    code, reason, _, _ = error_info(raised.value)
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "AUDIO_DECODE_FAILED")


@pytest.mark.parametrize("language", ["../../etc/passwd", "en; rm -rf /", "$(id)", "tiny.en"])
async def test_odd_language_values_are_just_unsupported_languages(
    tiny_channel: grpc.aio.Channel, language: str
) -> None:
    request = pb.TranscribeRequest(
        audio_content=HESTER.read(), config=pb.RecognitionConfig(language=language)
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await make_stub(tiny_channel).Transcribe(request)
    code, reason, fields, _ = error_info(raised.value)
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNSUPPORTED_LANGUAGE",
        ["language"],
    )
