"""The asyncio client: the one implementation of the protocol (the sync client wraps it).

async with AsyncClient("127.0.0.1:50051") as client:
    transcript = await client.transcribe("talk.flac")
    async with await client.stream() as stream:
        await stream.push(pcm)
        await stream.end_utterance()
        async for event in stream: ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from whisperwire.client import convert
from whisperwire.client.call_status import ServerStatus
from whisperwire.client.channel import DEFAULT_TARGET, Connection
from whisperwire.client.errors import ServiceError, StreamClosedError, from_rpc_error
from whisperwire.client.options import AudioFormat, RecognitionOptions, StreamOptions
from whisperwire.client.results import ServiceInfo, SessionInfo, StreamEvent, Transcript
from whisperwire.client.retry import RetryPolicy, deadline_after, with_retry
from whisperwire.v1 import transcription_service_pb2 as pb
from whisperwire.v1 import transcription_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
T = TypeVar("T")
AudioSource = str | os.PathLike[str] | bytes
StreamCall = grpc.aio.StreamStreamCall[pb.StreamAudioRequest, pb.StreamAudioResponse]


@dataclass(frozen=True)
class _Stubs:
    """One channel's stubs: whisperwire.v1 (typed by the generated stubs) and the health check."""

    service: pb_grpc.TranscriptionServiceAsyncStub
    # grpcio-health-checking ships no type stubs: its one method is typed here.
    health: grpc.aio.UnaryUnaryMultiCallable[
        health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
    ]

    @classmethod
    def bind(cls, channel: grpc.aio.Channel) -> _Stubs:
        health = health_pb2_grpc.HealthStub(channel)
        return cls(pb_grpc.TranscriptionServiceStub(channel), health.Check)


async def _rpc(call: Awaitable[T]) -> T:
    """Await a call, raising the SDK's typed error instead of grpc's."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        raise from_rpc_error(error) from None


async def _read_file(path: str | os.PathLike[str]) -> bytes:
    return await asyncio.to_thread(Path(path).read_bytes)


class AsyncClient:
    """A connection to a whisperwire server. Create and use it inside one event loop."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        """`timeout` is the default deadline, in seconds, of unary calls (None: no deadline)."""
        self.connection = Connection(target, token, tls, root_certificates)
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._stubs: _Stubs | None = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
            self._channel, self._stubs = None, None

    @property
    def _rpcs(self) -> _Stubs:
        if self._stubs is None:
            self._channel = self.connection.open_channel()
            self._stubs = _Stubs.bind(self._channel)
        return self._stubs

    # ---- unary calls (retried) --------------------------------------------------------------
    async def transcribe(
        self,
        audio: AudioSource,
        options: RecognitionOptions | None = None,
        *,
        raw: AudioFormat | None = None,
        request_id: str = "",
        timeout: float | None = None,
    ) -> Transcript:
        """Transcribe a file (a path, or its bytes), or headerless PCM described by `raw`."""
        content = audio if isinstance(audio, bytes) else await _read_file(audio)
        request = convert.transcribe_request(
            content, options or RecognitionOptions(), raw, request_id
        )

        async def attempt(left: float | None) -> pb.TranscribeResponse:
            return await _rpc(
                self._rpcs.service.Transcribe(request, timeout=left, metadata=self._metadata)
            )

        response = await self._unary(attempt, timeout, "Transcribe")
        return convert.transcribe_response(response)

    async def service_info(self, *, timeout: float | None = None) -> ServiceInfo:
        async def attempt(left: float | None) -> pb.GetServiceInfoResponse:
            request = pb.GetServiceInfoRequest()
            call = self._rpcs.service.GetServiceInfo(request, timeout=left, metadata=self._metadata)
            return await _rpc(call)

        return convert.service_info(await self._unary(attempt, timeout, "GetServiceInfo"))

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """grpc.health.v1 status name: SERVING, NOT_SERVING, SERVICE_UNKNOWN, ..."""

        async def attempt(left: float | None) -> health_pb2.HealthCheckResponse:
            request = health_pb2.HealthCheckRequest(service=service)
            return await _rpc(self._rpcs.health(request, timeout=left, metadata=self._metadata))

        # No retry: "not serving yet" is the answer a health check is asked for.
        response = await attempt(timeout if timeout is not None else self.timeout)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    async def _unary(
        self, attempt: Callable[[float | None], Awaitable[T]], timeout: float | None, what: str
    ) -> T:
        deadline = deadline_after(timeout if timeout is not None else self.timeout)
        return await with_retry(attempt, self.retry, deadline, what)

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return self.connection.metadata()

    # ---- streams (retried only while opening: no audio has been sent yet) --------------------
    async def stream(
        self, options: StreamOptions | None = None, *, timeout: float | None = None
    ) -> AsyncAudioStream:
        """Open a StreamAudio call: send the config, wait for the server's session_started.

        `timeout` is the deadline of the whole stream (None: no deadline).
        """
        config = convert.stream_config_request(options or StreamOptions())

        async def attempt(left: float | None) -> AsyncAudioStream:
            return await self._open_stream(config, left)

        return await with_retry(attempt, self.retry, deadline_after(timeout), "StreamAudio")

    async def _open_stream(
        self, config: pb.StreamAudioRequest, timeout: float | None
    ) -> AsyncAudioStream:
        call = self._rpcs.service.StreamAudio(None, timeout=timeout, metadata=self._metadata)
        status = ServerStatus(call)
        first: object = None
        try:
            await call.write(config)
            first = await call.read()
        except grpc.aio.AioRpcError as error:
            if (real := status.error_for(error)) is not None:
                raise from_rpc_error(real) from None
        except BaseException:
            call.cancel()
            raise
        if not isinstance(first, pb.StreamAudioResponse):  # EOF, or OK hidden by the race
            raise ServiceError(grpc.StatusCode.UNKNOWN, "stream ended before session_started")
        return AsyncAudioStream(call, convert.session_info(first.session_started), status)


class AsyncAudioStream:
    """One StreamAudio call. Write with push / end_utterance / cancel / close; read events by
    iterating. Every end_utterance gets exactly one FinalResult; cancel drops the open utterance."""

    def __init__(self, call: StreamCall, session: SessionInfo, status: ServerStatus) -> None:
        self._call = call
        self._status = status
        self.session = session
        self._write_lock = asyncio.Lock()
        self._half_closed = False

    async def __aenter__(self) -> AsyncAudioStream:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None:
            await self.close()
        else:
            self.abort()

    async def push(self, audio: bytes) -> None:
        """Send audio in the stream's format, split to the server's chunk limit."""
        size = self.session.limits.max_chunk_bytes or len(audio) or 1
        for start in range(0, len(audio), size):
            await self._write(convert.audio_request(audio[start : start + size]))

    async def end_utterance(self) -> None:
        """End the current utterance (push-to-talk release); its FinalResult follows."""
        await self._write(convert.END_UTTERANCE)

    async def cancel(self) -> None:
        """Drop the current utterance: no FinalResult comes for it."""
        await self._write(convert.CANCEL_UTTERANCE)

    async def close(self) -> None:
        """Half-close: the server finalizes the open utterance, sends its FinalResult, then ends."""
        async with self._write_lock:
            if self._half_closed or self._call.done():
                return
            self._half_closed = True
            with contextlib.suppress(grpc.aio.AioRpcError):  # the reader sees the status
                await self._call.done_writing()

    def abort(self) -> None:
        """Cancel the whole call; the server stops its work."""
        self._call.cancel()

    @property
    def done(self) -> bool:
        return self._call.done()

    async def next_event(self) -> StreamEvent | None:
        """The next event, or None when the call ended with OK. Raises ServiceError."""
        while True:
            try:
                response = await self._call.read()
            except grpc.aio.AioRpcError as error:
                if (real := self._status.error_for(error)) is None:
                    return None  # ended with OK; a racing write hid that (call_status.py)
                raise from_rpc_error(real) from None
            if not isinstance(response, pb.StreamAudioResponse):  # EOF: ended with OK
                return None
            event = convert.stream_event(response)
            if event is not None:
                return event

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[StreamEvent]:
        while (event := await self.next_event()) is not None:
            yield event

    async def _write(self, request: pb.StreamAudioRequest) -> None:
        async with self._write_lock:
            if self._half_closed:
                raise StreamClosedError("the stream was closed for writing")
            try:
                await self._call.write(request)
            except grpc.aio.AioRpcError as error:
                if (real := self._status.error_for(error)) is None:
                    raise StreamClosedError("the stream has ended") from None
                raise from_rpc_error(real) from None
            except asyncio.InvalidStateError:
                raise StreamClosedError("the stream has ended") from None
