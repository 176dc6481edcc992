"""The gRPC servicer: proto in, domain calls, proto out. The StreamAudio protocol lives in
StreamCall, speech in the pipeline and the session, and how a call ends (status, log, count) in
the outcome interceptor."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import grpc

from whisperwire.server import convert
from whisperwire.server.domain import DecodeOptions, Transcript
from whisperwire.server.errors import EmptyAudioError
from whisperwire.server.logs import request_id
from whisperwire.server.metrics import Metrics
from whisperwire.server.pipeline import SpeechPipeline
from whisperwire.server.runner import Priority
from whisperwire.server.state import ServerState
from whisperwire.server.stream_call import StreamCall, client_address
from whisperwire.v1 import transcription_service_pb2 as pb
from whisperwire.v1 import transcription_service_pb2_grpc as pb_grpc

VERSION = "0.1.0"


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
        started = time.perf_counter()
        call_id = request.request_id or uuid.uuid4().hex
        request_id.set(call_id)
        self.state.check_serving()
        self.pipeline.admit(Priority.BULK)
        options = self.pipeline.validate(convert.decode_options(request.config, self.settings))
        transcript = await self._transcribe(request, options)
        elapsed = time.perf_counter() - started
        self.metrics.observe_transcript("grpc", "Transcribe", elapsed, transcript)
        response = pb.TranscribeResponse(
            request_id=call_id,
            transcript=convert.transcript(transcript),
            model=self.pipeline.engine.model,
        )
        if request.config.include_timings:
            response.timings.CopyFrom(convert.timings(transcript.timings))
        return response

    async def _transcribe(
        self, request: pb.TranscribeRequest, options: DecodeOptions
    ) -> Transcript:
        if request.WhichOneof("format") != "raw":
            return await self.pipeline.transcribe_bytes(request.audio_content, options)
        layout = convert.pcm_layout(request.raw)
        if not request.audio_content:
            raise EmptyAudioError("audio_content is empty", field="audio_content")
        return await self.pipeline.transcribe_pcm(request.audio_content, layout, options)

    async def StreamAudio(
        self,
        request_iterator: AsyncIterator[pb.StreamAudioRequest],
        context: grpc.aio.ServicerContext[pb.StreamAudioRequest, pb.StreamAudioResponse],
    ) -> AsyncIterator[pb.StreamAudioResponse]:
        call = StreamCall(self.pipeline, self.state, self.metrics, client_address(context.peer()))
        request_id.set(call.session_id)
        async for response in call.run(request_iterator):
            yield response

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
            limits=convert.service_limits(s, info),
            defaults=pb.ServiceDefaults(
                recognition=pb.RecognitionConfig(beam_size=s.defaults.default_beam_size),
                audio_format=pb.RawAudioFormat(
                    encoding=pb.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=16000, channel_count=1
                ),
                partial_interval=convert.duration(s.defaults.default_partial_interval),
            ),
            version=VERSION,
        )
