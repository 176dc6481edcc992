"""Operational behaviour of the service: auth, readiness, limits, engine failure, metrics."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from typing import Any

import grpc
import pytest
import threadpoolctl

from tests.engine_double import CUDA_FAILURE, ScriptedEngine, Step
from tests.grpc_helpers import (
    END,
    audio_requests,
    collect,
    config_request,
    error_info,
    paced,
    serving,
    stub,
)
from tests.speech import HESTER, JFK, load_pcm16k, to_s16le, wer
from whisperwire.server.app import RunningServer
from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
from whisperwire.server.tokenizer import WhisperTokenizer
from whisperwire.v1 import transcription_service_pb2 as pb

Tiny = tuple[CTranslate2Engine, WhisperTokenizer]


async def test_bearer_token(tiny_engine: Tiny) -> None:
    async with serving(*tiny_engine, token="s3cret") as (_, channel):
        request = pb.TranscribeRequest(audio_content=HESTER.read())
        for metadata in [(), (("authorization", "Bearer wrong"),)]:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub(channel).Transcribe(request, metadata=metadata)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = await stub(channel).Transcribe(
            request, metadata=(("authorization", "Bearer s3cret"),)
        )
        assert wer(HESTER.reference, reply.transcript.text) <= 0.1

        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes need no token


async def test_not_ready_is_unavailable_with_retry_info(tiny_engine: Tiny) -> None:
    async with serving(*tiny_engine) as (running, channel):
        running.state.ready = False
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub(channel).Transcribe(pb.TranscribeRequest(audio_content=HESTER.read()))
        code, reason, _, retry = error_info(raised.value)
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "ENGINE_NOT_READY")
        assert retry is not None and retry > 0


async def test_engine_failure_fails_only_that_batch(tiny_engine: Tiny) -> None:
    engine, tokenizer = tiny_engine
    flaky = ScriptedEngine(engine)
    async with serving(flaky, tokenizer, batch_wait_ms=0) as (_, channel):
        flaky.script(Step(error=CUDA_FAILURE))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub(channel).Transcribe(pb.TranscribeRequest(audio_content=HESTER.read()))
        code, reason, _, _ = error_info(raised.value)
        assert (code, reason) == (grpc.StatusCode.INTERNAL, "ENGINE_FAILURE")
        reply = await stub(channel).Transcribe(pb.TranscribeRequest(audio_content=JFK.read()))
        assert wer(JFK.reference, reply.transcript.text) <= 0.1


async def test_an_unexpected_error_is_internal_with_error_info_and_serving_goes_on(
    tiny_engine: Tiny,
) -> None:
    """A corrupt engine answer (a token id no vocabulary has) breaks the pipeline with an
    exception that is no domain error: both call kinds get INTERNAL with ErrorInfo, never
    UNKNOWN, and the next callers are served."""
    engine, tokenizer = tiny_engine
    corrupt = ScriptedEngine(engine)
    async with serving(corrupt, tokenizer) as (_, channel):
        corrupt.script(Step(tokens=(-1,)), Step(tokens=(-1,)))
        greedy = pb.RecognitionConfig(language="en", temperature=0.0)
        with pytest.raises(grpc.aio.AioRpcError) as unary:
            await stub(channel).Transcribe(
                pb.TranscribeRequest(audio_content=HESTER.read(), config=greedy)
            )
        streamed = await _stream_failure(
            channel,
            [
                config_request(language="en", temperature=0.0),
                *audio_requests(to_s16le(load_pcm16k(HESTER))),
                END,
            ],
        )
        for code, reason, _, _ in [error_info(unary.value), streamed]:
            assert (code, reason) == (grpc.StatusCode.INTERNAL, "INTERNAL")

        reply = await stub(channel).Transcribe(pb.TranscribeRequest(audio_content=JFK.read()))
        assert wer(JFK.reference, reply.transcript.text) <= 0.1
        requests = [
            config_request(language="en"),
            *audio_requests(to_s16le(load_pcm16k(HESTER))),
            END,
        ]
        responses = await collect(stub(channel).StreamAudio(paced(requests)))
        assert wer(HESTER.reference, responses[-1].final_result.transcript.text) <= 0.1


async def test_full_queue_is_resource_exhausted_with_retry_info(tiny_engine: Tiny) -> None:
    async with serving(*tiny_engine, max_queue=1, batch_wait_ms=50) as (_, channel):
        request = pb.TranscribeRequest(
            audio_content=JFK.read(), config=pb.RecognitionConfig(language="en")
        )
        results = await asyncio.gather(
            *(stub(channel).Transcribe(request) for _ in range(4)), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert errors and len(errors) < 4
        for error in errors:
            code, reason, _, retry = error_info(error)
            assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_BUSY")
            assert retry is not None and retry > 0


async def test_too_many_streams(tiny_engine: Tiny) -> None:
    async with serving(*tiny_engine, max_streams=1) as (_, channel):
        first = stub(channel).StreamAudio()
        await first.write(config_request())
        await first.read()  # session_started: the first stream is open
        code, reason, _, retry = await _stream_failure(channel, [config_request()])
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_BUSY")
        assert retry is not None
        await first.done_writing()
        assert await first.read() is grpc.aio.EOF  # no utterance was open: no final
        assert await first.code() == grpc.StatusCode.OK


async def test_idle_stream_times_out_after_flushing(tiny_engine: Tiny) -> None:
    async with serving(*tiny_engine, idle_timeout_seconds=1.0) as (_, channel):
        call = stub(channel).StreamAudio()
        await call.write(config_request(language="en"))
        for request in audio_requests(to_s16le(load_pcm16k(HESTER))):
            await call.write(request)
        responses = []
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for response in call:
                responses.append(response)
        code, reason, _, _ = error_info(raised.value)
        assert (code, reason) == (grpc.StatusCode.OUT_OF_RANGE, "IDLE_TIMEOUT")
        finals = [r for r in responses if r.WhichOneof("event") == "final_result"]
        assert len(finals) == 1
        assert wer(HESTER.reference, finals[0].final_result.transcript.text) <= 0.1


async def test_metrics_endpoint(tiny_engine: Tiny) -> None:
    port = _free_port()
    async with serving(*tiny_engine, metrics_port=port) as (_, channel):
        requests = [
            config_request(language="en"),
            *audio_requests(to_s16le(load_pcm16k(HESTER))),
            END,
        ]
        await collect(stub(channel).StreamAudio(paced(requests)))
        await stub(channel).Transcribe(pb.TranscribeRequest(audio_content=HESTER.read()))
        body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
    for name in (
        "whisperwire_queue_depth",
        "whisperwire_batch_size_count",
        "whisperwire_engine_seconds_bucket",
        'whisperwire_request_seconds_count{method="Transcribe",protocol="grpc"}',
        'whisperwire_real_time_factor_count{method="Transcribe",protocol="grpc"}',
        'whisperwire_requests_total{code="OK",method="StreamAudio",protocol="grpc"}',
        'whisperwire_engine_info{device="cpu",dtype="float32",engine="ctranslate2",'
        'model="tiny.en"} 1.0',
    ):
        assert name in body, name


def test_the_server_runs_numpy_blas_on_one_thread(tiny_server: RunningServer) -> None:
    """Log-mel's BLAS call is cheaper on one thread; the engine's OpenMP pool keeps its own."""
    pools = threadpoolctl.threadpool_info()
    assert {p["num_threads"] for p in pools if p["user_api"] == "blas"} == {1}
    assert any(p["user_api"] == "openmp" and p["num_threads"] >= 2 for p in pools)


async def _stream_failure(
    channel: grpc.aio.Channel, requests: list[pb.StreamAudioRequest]
) -> tuple[Any, ...]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await collect(stub(channel).StreamAudio(paced(requests)))
    return error_info(raised.value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())
