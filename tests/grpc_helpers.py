"""Helpers for talking to a real whisperwire server from tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import grpc

from tests.speech import chunks
from whisperwire.client.call_status import ServerStatus
from whisperwire.client.errors import from_rpc_error
from whisperwire.server.app import RunningServer, start_server
from whisperwire.server.config import ServerSettings
from whisperwire.server.tokenizer import WhisperTokenizer
from whisperwire.v1 import transcription_service_pb2 as pb
from whisperwire.v1 import transcription_service_pb2_grpc as pb_grpc

Request = pb.StreamAudioRequest


def stub(channel: grpc.aio.Channel) -> pb_grpc.TranscriptionServiceAsyncStub:
    return pb_grpc.TranscriptionServiceStub(channel)


def config_request(**recognition: object) -> Request:
    config = pb.StreamAudioConfig(recognition=pb.RecognitionConfig(**recognition))  # type: ignore[arg-type]
    return Request(config=config)


def audio_requests(pcm: bytes, size: int = 640) -> list[Request]:
    return [Request(audio=pb.AudioChunk(data=c)) for c in chunks(pcm, size)]


END = Request(end_utterance=pb.EndUtterance())
CANCEL = Request(cancel_utterance=pb.CancelUtterance())


async def paced(requests: Iterable[Request], delay: float = 0.0) -> AsyncIterator[Request]:
    for request in requests:
        yield request
        if delay:
            await asyncio.sleep(delay)


async def collect(call: grpc.aio.StreamStreamCall) -> list[pb.StreamAudioResponse]:
    """Every response; a failed call raises the server's own status, even when one of the
    iterator's writes raced the end of the call (client/call_status.py)."""
    status = ServerStatus(call)
    responses: list[pb.StreamAudioResponse] = []
    try:
        async for response in call:
            responses.append(response)
    except grpc.aio.AioRpcError as error:
        if (real := status.error_for(error)) is not None:
            raise real from None
    return responses


def finals(responses: list[pb.StreamAudioResponse]) -> list[pb.StreamAudioResponse]:
    return [r for r in responses if r.WhichOneof("event") == "final_result"]


def error_info(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, list[str], float | None]:
    """(code, ErrorInfo.reason, BadRequest fields, RetryInfo delay) of a failed call, read by
    the SDK's own parser."""
    parsed = from_rpc_error(error)
    return parsed.code, parsed.reason, list(parsed.fields), parsed.retry_delay


@contextlib.asynccontextmanager
async def serving(
    engine: Any, tokenizer: WhisperTokenizer, **settings: Any
) -> AsyncIterator[tuple[RunningServer, grpc.aio.Channel]]:
    running = await start_server(ServerSettings(port=0, **settings), engine, tokenizer)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield running, channel
    finally:
        await running.drain_and_stop(grace=1.0)


async def until(condition: Callable[[], bool], polls: int = 400) -> bool:
    """Poll `condition` every 50 ms, at most `polls` times; whether it came true."""
    for _ in range(polls):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()
