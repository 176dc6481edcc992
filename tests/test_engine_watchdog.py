"""The engine watchdog: an engine call that overruns its bound fails its callers with
UNAVAILABLE/ENGINE_STALLED, health goes NOT_SERVING, and `whisperwire serve` exits (status 75)
so that the platform starts a fresh process. Proven with an engine that hangs (the scripted
engine double holding a call until it is released)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.engine_double import ScriptedEngine, Step
from tests.grpc_helpers import error_info, stub
from tests.speech import JFK
from whisperwire.server.app import ENGINE_LOST_EXIT_CODE, RunningServer, start_server
from whisperwire.server.config import ServerSettings
from whisperwire.server.engine import Features, GenerationParams
from whisperwire.server.errors import EngineLostError
from whisperwire.server.runner import Priority
from whisperwire.server.scheduler import BatchScheduler
from whisperwire.server.tokenizer import WhisperTokenizer
from whisperwire.v1 import transcription_service_pb2 as pb
from whisperwire.v1 import transcription_service_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[1]
STALL = 0.2  # seconds per window: a batch of one may take 0.4 s


def hanging_engine(*, answered: int = 0) -> ScriptedEngine:
    """An engine whose generate calls, after `answered` ones (the warm-up), block until
    released (a hung GPU, a wedged runtime)."""
    engine = ScriptedEngine()
    engine.script(*[Step()] * answered, Step(hold=True))
    return engine


def window() -> Features:
    import numpy as np

    return np.zeros((80, 3000), dtype=np.float32)


async def test_a_stalled_call_fails_its_batch_and_everything_after_it() -> None:
    engine = hanging_engine()
    lost: list[EngineLostError] = []
    scheduler = BatchScheduler(engine, stall_seconds=STALL, on_engine_lost=lost.append)
    scheduler.start()
    try:
        params = GenerationParams(max_new_tokens=4)
        call = scheduler.generate([window()], [[1]], params, priority=Priority.FINAL)
        with pytest.raises(EngineLostError) as raised:
            await asyncio.wait_for(call, 5)
        assert raised.value.reason == "ENGINE_STALLED"
        assert scheduler.stall_bound(1) == pytest.approx(2 * STALL)
        assert [error.reason for error in lost] == ["ENGINE_STALLED"]
        # Nothing more reaches the stuck engine: later callers are refused at once.
        with pytest.raises(EngineLostError):
            await scheduler.detect_language([window()], priority=Priority.FINAL)
        with pytest.raises(EngineLostError):  # new streams and files are refused up front
            scheduler.admit(Priority.FINAL)
        assert engine.batch_sizes == [1]
        # Stopping does not wait for the thread that will never return.
        await asyncio.wait_for(scheduler.stop(), 2)
    finally:
        engine.release()


async def test_a_slow_call_within_its_bound_is_not_a_stall() -> None:
    engine = ScriptedEngine()
    engine.script(Step(delay=0.3))
    scheduler = BatchScheduler(engine, stall_seconds=5.0)
    scheduler.start()
    params = GenerationParams(max_new_tokens=4)
    generations, _ = await scheduler.generate(
        [window()] * 2, [[1]] * 2, params, priority=Priority.FINAL
    )
    assert len(generations) == 2 and scheduler.lost is None
    await scheduler.stop()


@pytest.fixture
async def stalled_server(tiny_en_dir: Path) -> AsyncIterator[tuple[RunningServer, ScriptedEngine]]:
    engine = hanging_engine()
    options: dict[str, Any] = {"port": 0, "engine_stall_seconds": STALL}
    settings = ServerSettings(**options)
    running = await start_server(
        settings, engine, WhisperTokenizer.from_dir(tiny_en_dir), warm_up=False
    )
    try:
        yield running, engine
    finally:
        engine.release()
        await running.drain_and_stop(grace=0.5)


async def test_the_server_answers_unavailable_and_reports_not_serving(
    stalled_server: tuple[RunningServer, ScriptedEngine],
) -> None:
    running, _ = stalled_server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        request = pb.TranscribeRequest(
            audio_content=JFK.read(), config=pb.RecognitionConfig(language="en")
        )
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub(channel).Transcribe(request, timeout=30)
        code, reason, _, retry = error_info(raised.value)
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "ENGINE_STALLED")
        assert retry is not None
        assert running.engine_lost.is_set()
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(50):  # the health update runs as a task right after the stall
            answer = await health.Check(health_pb2.HealthCheckRequest())
            if answer.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            await asyncio.sleep(0.02)
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING


def serve_with_a_hanging_engine() -> None:
    """The subprocess: `whisperwire serve`'s own loop, with an engine that hangs."""
    from whisperwire.server import app
    from whisperwire.server.models import resolve_model

    tokenizer = WhisperTokenizer.from_dir(resolve_model("tiny.en", allow_download=False))
    engine = hanging_engine(answered=1)
    app.load_engine = lambda settings: (engine, tokenizer)
    options: dict[str, Any] = {
        "port": int(os.environ["WATCHDOG_PORT"]),
        "engine_stall_seconds": STALL,
    }
    settings = ServerSettings(**options)
    asyncio.run(app.serve(settings))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_serve_exits_for_replacement_when_the_engine_stalls() -> None:
    port = free_port()
    code = "from tests.test_engine_watchdog import serve_with_a_hanging_engine as s; s()"
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "WATCHDOG_PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "serving" in process.stdout.readline()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            request = pb.TranscribeRequest(
                audio_content=JFK.read(), config=pb.RecognitionConfig(language="en")
            )
            with pytest.raises(grpc.RpcError) as raised:
                pb_grpc.TranscriptionServiceStub(channel).Transcribe(  # type: ignore[no-untyped-call]
                    request, timeout=60
                )
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "did not finish a batch" in str(raised.value.details())
        returncode = process.wait(120)
    finally:
        if process.poll() is None:
            process.kill()
    assert returncode == ENGINE_LOST_EXIT_CODE, process.stderr.read() if process.stderr else ""
