"""`whisperwire serve` as a real subprocess: startup, a real call, refusal to expose without a
token, and SIGTERM draining with an open stream."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.grpc_helpers import audio_requests, config_request, error_info, stub
from tests.speech import JFK, load_pcm16k, to_s16le, wer
from whisperwire.v1 import transcription_service_pb2 as pb

WHISPERWIRE = str(Path(sys.executable).parent / "whisperwire")


@pytest.fixture
async def serve_process() -> AsyncIterator[tuple[subprocess.Popen[str], int]]:
    process = await asyncio.to_thread(_start_serve)
    port = await asyncio.to_thread(_port_from_banner, process)
    yield process, port
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


def _start_serve() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [WHISPERWIRE, "serve", "--model", "tiny.en", "--port", "0", "--grace-seconds", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "WHISPERWIRE_THREADS": "1"},
    )


def _port_from_banner(process: subprocess.Popen[str]) -> int:
    assert process.stdout is not None
    for line in process.stdout:
        if match := re.search(r"serving .* on [\d.]+:(\d+)", line):
            return int(match.group(1))
    raise AssertionError(f"server exited with {process.wait()} before serving")


async def test_serve_answers_and_drains_open_streams_on_sigterm(
    serve_process: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = serve_process
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await stub(channel).Transcribe(pb.TranscribeRequest(audio_content=JFK.read()))
        assert wer(JFK.reference, reply.transcript.text) <= 0.1

        config = config_request(language="en")
        config.config.enable_speech_events = True
        call = stub(channel).StreamAudio()
        await call.write(config)
        for request in audio_requests(to_s16le(load_pcm16k(JFK))):
            await call.write(request)
        responses = [await call.read()]
        while responses[-1].WhichOneof("event") != "speech_event":  # the server has audio
            responses.append(await call.read())

        process.send_signal(signal.SIGTERM)

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            while True:
                response = await call.read()
                assert response is not grpc.aio.EOF
                responses.append(response)
        finals = [r.final_result for r in responses if r.WhichOneof("event") == "final_result"]
        assert [f.end_reason for f in finals] == [pb.END_REASON_SERVER_SHUTDOWN]
        assert finals[0].transcript.text.lower().startswith("and so")
        code, reason, _, retry = error_info(raised.value)
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "SERVER_DRAINING")
        assert retry is not None
    assert await asyncio.to_thread(process.wait, 30) == 0


def test_refuses_to_listen_beyond_loopback_without_a_token() -> None:
    result = subprocess.run(
        [WHISPERWIRE, "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "needs --token" in result.stderr
    assert "Traceback" not in result.stderr
