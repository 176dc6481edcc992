"""The gRPC servicer: proto in, domain calls, proto out. Protocol rules of StreamAudio live in
StreamCall; everything about speech lives in the pipeline and the session."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc

from whisperwire.server import convert
from whisperwire.server.audio import decode_pcm
from whisperwire.server.config import ServerSettings
from whisperwire.server.domain import DecodeOptions, Transcript
from whisperwire.server.engine import EngineInfo
from whisperwire.server.errors import (
    BusyError,
    ClientStreamLimitError,
    EmptyAudioError,
    InternalError,
    ProtocolError,
    StreamLimitError,
    UnavailableError,
    WhisperwireError,
)
from whisperwire.server.metrics import Metrics
from whisperwire.server.pipeline import SpeechPipeline
from whisperwire.server.rpc_status import code_for, to_status
from whisperwire.server.session import EndReason, StreamSession
from whisperwire.v1 import transcription_service_pb2 as pb
from whisperwire.v1 import transcription_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
VERSION = "0.1.0"


class ServerState:
    """Readiness, draining and the open streams, shared by the servicer and the app."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.ready = False
        self.draining = False
        self.streams: set[StreamCall] = set()

    def check_serving(self) -> None:
        if self.draining:
            raise UnavailableError("server is shutting down", reason="SERVER_DRAINING")
        if not self.ready:
            raise UnavailableError("engine is warming up", reason="ENGINE_NOT_READY")

    def drain(self) -> None:
        self.draining = True
        for call in list(self.streams):
            call.finish(
                UnavailableError("server is shutting down", reason="SERVER_DRAINING"),
                EndReason.SERVER_SHUTDOWN,
            )


class TranscriptionServicer(pb_grpc.TranscriptionServiceServicer):
    def __init__(
        self,
        pipeline: SpeechPipeline,
        state: ServerState,
        metrics: Metrics,
    ) -> None:
        self.pipeline = pipeline
        self.state = state
        self.settings = state.settings
        self.metrics = metrics

    async def Transcribe(
        self,
        request: pb.TranscribeRequest,
        context: grpc.aio.ServicerContext[pb.TranscribeRequest, pb.TranscribeResponse],
    ) -> pb.TranscribeResponse:
        request_id = request.request_id or uuid.uuid4().hex
        with self._outcome("Transcribe", request_id) as outcome:
            self.state.check_serving()
            options = convert.decode_options(request.config, self.settings)
            _reject_word_timestamps(request.config, self.pipeline.engine)
            transcript = await self._transcribe(request, options)
            outcome.observe(transcript)
            response = pb.TranscribeResponse(
                request_id=request_id,
                transcript=convert.transcript(transcript),
                model=self.pipeline.engine.model,
            )
            if request.config.include_timings:
                response.timings.CopyFrom(convert.timings(transcript.timings))
            return response
        await context.abort_with_status(outcome.status)
        raise AssertionError("abort_with_status returns only by raising")

    async def _transcribe(
        self, request: pb.TranscribeRequest, options: DecodeOptions
    ) -> Transcript:
        if request.WhichOneof("format") != "raw":
            return await self.pipeline.transcribe_bytes(request.audio_content, options)
        started = time.perf_counter()
        encoding, rate, channels = convert.pcm_layout(request.raw)
        if not request.audio_content:
            raise EmptyAudioError("audio_content is empty", field="audio_content")
        samples = await asyncio.to_thread(
            decode_pcm, request.audio_content, encoding, rate, channels
        )
        transcript = await self.pipeline.transcribe(samples, options)
        transcript.timings.decode = time.perf_counter() - started - transcript.timings.total
        transcript.timings.total = time.perf_counter() - started
        return transcript

    async def StreamAudio(
        self,
        request_iterator: AsyncIterator[pb.StreamAudioRequest],
        context: grpc.aio.ServicerContext[pb.StreamAudioRequest, pb.StreamAudioResponse],
    ) -> AsyncIterator[pb.StreamAudioResponse]:
        call = StreamCall(self.pipeline, self.state, self.metrics, client_address(context.peer()))
        with self._outcome("StreamAudio", call.session_id) as outcome:
            async for response in call.run(request_iterator):
                yield response
            return
        await context.abort_with_status(outcome.status)

    async def GetServiceInfo(
        self,
        request: pb.GetServiceInfoRequest,
        context: grpc.aio.ServicerContext[pb.GetServiceInfoRequest, pb.GetServiceInfoResponse],
    ) -> pb.GetServiceInfoResponse:
        info, s = self.pipeline.engine, self.settings
        tokenizer = self.pipeline.tokenizer
        tasks = (
            [pb.TASK_TRANSCRIBE, pb.TASK_TRANSLATE]
            if tokenizer.multilingual
            else [pb.TASK_TRANSCRIBE]
        )
        return pb.GetServiceInfoResponse(
            model=info.model,
            engine=info.name,
            device=info.device,
            languages=list(tokenizer.languages) if tokenizer.multilingual else ["en"],
            tasks=tasks,
            supports_segment_timestamps=info.supports_timestamps,
            supports_word_timestamps=info.supports_word_timestamps,
            limits=service_limits(s, info),
            defaults=pb.ServiceDefaults(
                recognition=pb.RecognitionConfig(beam_size=s.default_beam_size),
                audio_format=pb.RawAudioFormat(
                    encoding=pb.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=16000, channel_count=1
                ),
                partial_interval=convert.duration(s.default_partial_interval),
            ),
            version=VERSION,
        )

    @contextlib.contextmanager
    def _outcome(self, method: str, request_id: str) -> Iterator[_Outcome]:
        outcome = _Outcome(self.metrics, method, request_id)
        try:
            yield outcome
        except WhisperwireError as error:
            outcome.fail(error)
        else:
            outcome.succeed()


class _Outcome:
    """Logs and counts one call; holds the status to abort with when it failed."""

    def __init__(self, metrics: Metrics, method: str, request_id: str) -> None:
        self.metrics, self.method, self.request_id = metrics, method, request_id
        self.started = time.perf_counter()
        self.status: grpc.Status | None = None

    def observe(self, transcript: Transcript) -> None:
        elapsed = time.perf_counter() - self.started
        self.metrics.observe_transcript("grpc", self.method, elapsed, transcript.duration)

    def succeed(self) -> None:
        self.metrics.count_call("grpc", self.method, "OK")
        log.info(
            "%s ok in %.3f s",
            self.method,
            time.perf_counter() - self.started,
            extra={"request_id": self.request_id},
        )

    def fail(self, error: WhisperwireError) -> None:
        code = code_for(error)
        self.metrics.count_call("grpc", self.method, code.name)
        log.warning(
            "%s failed: %s %s: %s",
            self.method,
            code.name,
            error.reason,
            error.message,
            extra={"request_id": self.request_id},
        )
        self.status = to_status(error)


class StreamCall:
    """One StreamAudio call: the config-first rule, limits, and the reader/writer pair."""

    def __init__(
        self, pipeline: SpeechPipeline, state: ServerState, metrics: Metrics, client: str
    ) -> None:
        self.pipeline, self.state, self.metrics = pipeline, state, metrics
        self.settings = state.settings
        self.client = client
        self.session_id = uuid.uuid4().hex
        self.session: StreamSession | None = None
        self._end_error: WhisperwireError | None = None
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
        s = self.settings
        if len(self.state.streams) >= s.max_streams:
            raise BusyError(f"the limit of {s.max_streams} open streams is reached", retry_after=5)
        mine = sum(1 for call in self.state.streams if call.client == self.client)
        if s.max_streams_per_client and mine >= s.max_streams_per_client:
            raise ClientStreamLimitError(
                f"this client ({self.client}) already has {mine} open streams, the limit per "
                "client",
                retry_after=5.0,
            )

    def finish(self, error: WhisperwireError, reason: EndReason) -> None:
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
        _reject_word_timestamps(first.config.recognition, self.pipeline.engine)
        applied = convert.stream_config(first.config, self.settings)
        self.session = StreamSession(
            self.pipeline, applied, max_utterance_seconds=self.settings.max_utterance_seconds
        )
        self.request_id = first.config.request_id or self.session_id
        return convert.applied_config(first.config, self.session.config, self.request_id)

    def _started(self, config: pb.StreamAudioConfig) -> pb.StreamAudioResponse:
        started = pb.SessionStarted(
            session_id=self.session_id,
            config=config,
            limits=service_limits(self.settings, self.pipeline.engine),
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
        except WhisperwireError as error:
            await self._fail(session, error)
        except Exception as error:  # a bug must end this call, not hang it
            log.exception("stream reader failed", extra={"request_id": self.session_id})
            await self._fail(session, InternalError(f"internal error: {error}"))

    async def _fail(self, session: StreamSession, error: WhisperwireError) -> None:
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
        if len(chunk.data) > self.settings.max_chunk_bytes:
            raise ProtocolError(
                f"audio chunk of {len(chunk.data)} bytes is over the "
                f"{self.settings.max_chunk_bytes} byte limit",
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
            idle_left = self._last_message + s.idle_timeout_seconds - now
            stream_left = opened + s.max_stream_seconds - now
            if stream_left <= 0:
                self.finish(
                    StreamLimitError(
                        f"stream open longer than {s.max_stream_seconds:.0f} s",
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
                        f"no message for {s.idle_timeout_seconds:.0f} s", reason="IDLE_TIMEOUT"
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


def _reject_word_timestamps(config: pb.RecognitionConfig, engine: EngineInfo) -> None:
    if config.enable_word_timestamps and not engine.supports_word_timestamps:
        from whisperwire.server.errors import InvalidOptionError

        raise InvalidOptionError(
            f"the {engine.name} engine does not produce word timestamps",
            field="enable_word_timestamps",
        )


def service_limits(s: ServerSettings, info: EngineInfo) -> pb.ServiceLimits:
    return pb.ServiceLimits(
        max_concurrent_streams=s.max_streams,
        max_streams_per_client=s.max_streams_per_client,
        max_stream_duration=convert.duration(s.max_stream_seconds),
        idle_timeout=convert.duration(s.idle_timeout_seconds),
        max_chunk_bytes=s.max_chunk_bytes,
        max_request_bytes=s.max_request_bytes,
        max_audio_duration=convert.duration(s.max_audio_seconds),
        max_batch_size=info.max_batch_size,
    )
