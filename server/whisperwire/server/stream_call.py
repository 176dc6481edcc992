"""The StreamAudio protocol: the config-first rule, admission and limits, and the reader and
writer of one call. Speech itself is the session's; errors end the call by being raised, and the
outcome interceptor turns them into a status."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

from whisperwire.server import convert
from whisperwire.server.errors import (
    BusyError,
    ClientStreamLimitError,
    ProtocolError,
    StreamLimitError,
)
from whisperwire.server.logs import request_id
from whisperwire.server.metrics import Metrics
from whisperwire.server.pipeline import SpeechPipeline
from whisperwire.server.runner import Priority
from whisperwire.server.session import EndReason, StreamSession
from whisperwire.server.state import ServerState
from whisperwire.v1 import transcription_service_pb2 as pb


class StreamCall:
    """One StreamAudio call: the config-first rule, limits, and the reader/writer pair."""

    def __init__(
        self, pipeline: SpeechPipeline, state: ServerState, metrics: Metrics, client: str
    ) -> None:
        self.pipeline, self.state, self.metrics = pipeline, state, metrics
        self.settings = state.settings
        self.client = client
        self.session_id = uuid.uuid4().hex
        self.request_id = self.session_id
        self.session: StreamSession | None = None
        self._end_error: Exception | None = None  # the call's ending, mapped by the interceptor
        self._last_message = time.monotonic()
        self._input_ended = False  # half-closed: waiting on the server is not being idle
        self._next_sequence: int | None = None

    async def run(
        self, requests: AsyncIterator[pb.StreamAudioRequest]
    ) -> AsyncIterator[pb.StreamAudioResponse]:
        self._check_admission()
        iterator = aiter(requests)
        first = await anext(iterator, None)
        if first is None:
            return  # the client half-closed before sending anything
        config = self._configure(first)
        include_timings = config.recognition.include_timings
        # Again, with no await before the add: streams that opened (or a drain that began)
        # while this one waited for its config count too.
        self._check_admission()
        self.state.streams.add(self)
        self.metrics.active_streams.inc()
        reader = asyncio.create_task(self._read(iterator))
        watchdog = asyncio.create_task(self._watch_limits())
        try:
            yield self._started(config)
            assert self.session is not None
            sequence = 1
            async for envelope in self.session.events():
                yield convert.stream_response(envelope, sequence, include_timings)
                sequence += 1
            if self._end_error is not None:
                raise self._end_error
        finally:
            reader.cancel()
            watchdog.cancel()
            if self.session is not None:
                await self.session.abort()
            self.state.streams.discard(self)
            self.metrics.active_streams.dec()

    def _check_admission(self) -> None:
        self.state.check_serving()
        self.pipeline.admit(Priority.FINAL)  # the stream's finals would wait this long
        s = self.settings
        if len(self.state.streams) >= s.limits.max_streams:
            raise BusyError(
                f"the limit of {s.limits.max_streams} open streams is reached", retry_after=5
            )
        mine = sum(1 for call in self.state.streams if call.client == self.client)
        if s.limits.max_streams_per_client and mine >= s.limits.max_streams_per_client:
            raise ClientStreamLimitError(
                f"this client ({self.client}) already has {mine} open streams, the limit per "
                "client",
                retry_after=5.0,
            )

    def finish(self, error: Exception, reason: EndReason) -> None:
        """End gracefully: flush the open utterance's final, then fail the call with `error`."""
        if self._end_error is None:
            self._end_error = error
        if self.session is not None:
            self.session.close(reason)

    def _configure(self, first: pb.StreamAudioRequest) -> pb.StreamAudioConfig:
        if first.WhichOneof("request") != "config":
            raise ProtocolError(
                "the first StreamAudioRequest must be `config`",
                reason="CONFIG_REQUIRED",
                field="config",
            )
        applied = convert.stream_config(first.config, self.settings)
        applied = replace(applied, options=self.pipeline.validate(applied.options))
        self.session = StreamSession(
            self.pipeline, applied, max_utterance_seconds=self.settings.limits.max_utterance_seconds
        )
        self.request_id = first.config.request_id or self.session_id
        request_id.set(self.request_id)
        return convert.applied_config(first.config, self.session.config, self.request_id)

    def _started(self, config: pb.StreamAudioConfig) -> pb.StreamAudioResponse:
        started = pb.SessionStarted(
            session_id=self.session_id,
            config=config,
            limits=convert.service_limits(self.settings, self.pipeline.engine),
        )
        return pb.StreamAudioResponse(
            utterance_id=0,
            sequence=0,
            audio_received_offset=convert.duration(0),
            session_started=started,
        )

    async def _read(self, iterator: AsyncIterator[pb.StreamAudioRequest]) -> None:
        session = self.session
        assert session is not None
        try:
            async for request in iterator:
                self._last_message = time.monotonic()
                if session.closed:
                    break
                self._handle(session, request)
            self._input_ended = True
            session.close(EndReason.STREAM_CLOSED)
        except Exception as error:  # bad input, or a bug: it must end this call, not hang it
            await self._fail(session, error)

    async def _fail(self, session: StreamSession, error: Exception) -> None:
        self._end_error = error
        await session.abort()

    def _handle(self, session: StreamSession, request: pb.StreamAudioRequest) -> None:
        kind = request.WhichOneof("request")
        if kind == "audio":
            self._check_chunk(request.audio)
            session.push(request.audio.data)
        elif kind == "end_utterance":
            session.end_utterance()
        elif kind == "cancel_utterance":
            session.cancel_utterance()
        elif kind == "config":
            raise ProtocolError(
                "`config` may be sent only once", reason="CONFIG_ALREADY_SET", field="config"
            )
        else:
            raise ProtocolError("empty StreamAudioRequest", reason="EMPTY_REQUEST", field="request")

    def _check_chunk(self, chunk: pb.AudioChunk) -> None:
        if len(chunk.data) > self.settings.limits.max_chunk_bytes:
            raise ProtocolError(
                f"audio chunk of {len(chunk.data)} bytes is over the "
                f"{self.settings.limits.max_chunk_bytes} byte limit",
                reason="CHUNK_TOO_LARGE",
                field="audio.data",
            )
        if chunk.HasField("sequence"):
            if self._next_sequence is not None and chunk.sequence != self._next_sequence:
                raise ProtocolError(
                    f"audio sequence {chunk.sequence}, expected {self._next_sequence}",
                    reason="AUDIO_SEQUENCE_GAP",
                    field="audio.sequence",
                )
            self._next_sequence = chunk.sequence + 1

    async def _watch_limits(self) -> None:
        opened = time.monotonic()
        s = self.settings
        while True:
            now = time.monotonic()
            idle_left = self._last_message + s.limits.idle_timeout_seconds - now
            stream_left = opened + s.limits.max_stream_seconds - now
            if stream_left <= 0:
                self.finish(
                    StreamLimitError(
                        f"stream open longer than {s.limits.max_stream_seconds:.0f} s",
                        reason="STREAM_TOO_LONG",
                    ),
                    EndReason.MAX_DURATION,
                )
                return
            if self._input_ended:
                idle_left = stream_left
            elif idle_left <= 0:
                self.finish(
                    StreamLimitError(
                        f"no message for {s.limits.idle_timeout_seconds:.0f} s",
                        reason="IDLE_TIMEOUT",
                    ),
                    EndReason.STREAM_CLOSED,
                )
                return
            await asyncio.sleep(min(idle_left, stream_left) + 0.01)


def client_address(peer: str) -> str:
    """The client's address without its port: 'ipv4:10.0.0.7:51234' -> 'ipv4:10.0.0.7'."""
    kind, _, address = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return peer  # unix sockets and the like: the whole peer string
    return f"{kind}:{address.rpartition(':')[0]}"
