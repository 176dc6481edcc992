"""Protobuf ↔ SDK dataclasses. Pure functions; the only module that knows both shapes."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration

from whisperwire.client.options import AudioFormat, RecognitionOptions, StreamOptions
from whisperwire.client.results import (
    EndReason,
    FinalResult,
    PartialResult,
    Segment,
    SegmentResult,
    ServiceInfo,
    ServiceLimits,
    SessionInfo,
    SpeechEvent,
    StreamEvent,
    Timings,
    Transcript,
    Word,
)
from whisperwire.v1 import transcription_service_pb2 as pb

_TASKS = {"transcribe": pb.TASK_TRANSCRIBE, "translate": pb.TASK_TRANSLATE}
_TASK_NAMES = {pb.TASK_TRANSCRIBE: "transcribe", pb.TASK_TRANSLATE: "translate"}
_ENCODINGS = {"s16le": pb.AUDIO_ENCODING_LINEAR16, "f32le": pb.AUDIO_ENCODING_FLOAT32}
_END_REASONS = {
    pb.END_REASON_CLIENT_END: EndReason.CLIENT_END,
    pb.END_REASON_STREAM_CLOSED: EndReason.STREAM_CLOSED,
    pb.END_REASON_MAX_DURATION: EndReason.MAX_DURATION,
    pb.END_REASON_SERVER_SHUTDOWN: EndReason.SERVER_SHUTDOWN,
}


def seconds(duration: Duration) -> float:
    return duration.ToNanoseconds() / 1e9


def to_duration(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


# ---- requests -----------------------------------------------------------------------------
def recognition_config(options: RecognitionOptions) -> pb.RecognitionConfig:
    config = pb.RecognitionConfig(
        language=options.language or "",
        task=_TASKS[options.task],
        initial_prompt=options.initial_prompt,
        enable_segment_timestamps=options.segment_timestamps,
        enable_word_timestamps=options.word_timestamps,
        beam_size=options.beam_size,
        include_timings=options.include_timings,
        separate_channels=options.separate_channels,
        detect_language_per_segment=options.detect_language_per_segment,
    )
    if options.temperature is not None:
        config.temperature = options.temperature
    return config


def raw_format(audio_format: AudioFormat) -> pb.RawAudioFormat:
    return pb.RawAudioFormat(
        encoding=_ENCODINGS[audio_format.encoding],
        sample_rate_hertz=audio_format.sample_rate,
        channel_count=audio_format.channels,
    )


def transcribe_request(
    audio: bytes, options: RecognitionOptions, raw: AudioFormat | None, request_id: str
) -> pb.TranscribeRequest:
    request = pb.TranscribeRequest(
        request_id=request_id, config=recognition_config(options), audio_content=audio
    )
    if raw is None:
        request.container.SetInParent()
    else:
        request.raw.CopyFrom(raw_format(raw))
    return request


def stream_config_request(options: StreamOptions) -> pb.StreamAudioRequest:
    config = pb.StreamAudioConfig(
        request_id=options.request_id,
        recognition=recognition_config(options.recognition),
        audio_format=raw_format(options.audio_format),
        interim_results=options.interim_results,
        enable_speech_events=options.speech_events,
    )
    if options.partial_interval is not None:
        config.partial_interval.CopyFrom(to_duration(options.partial_interval))
    if options.segment_silence:
        config.segment_silence.CopyFrom(to_duration(options.segment_silence))
    return pb.StreamAudioRequest(config=config)


def audio_request(data: bytes) -> pb.StreamAudioRequest:
    return pb.StreamAudioRequest(audio=pb.AudioChunk(data=data))


END_UTTERANCE = pb.StreamAudioRequest(end_utterance=pb.EndUtterance())
CANCEL_UTTERANCE = pb.StreamAudioRequest(cancel_utterance=pb.CancelUtterance())


# ---- responses ----------------------------------------------------------------------------
def word(message: pb.Word) -> Word:
    return Word(
        text=message.text,
        start=seconds(message.start_offset),
        end=seconds(message.end_offset),
        probability=message.probability,
    )


def segment(message: pb.Segment) -> Segment:
    return Segment(
        index=message.index,
        text=message.text,
        start=seconds(message.start_offset),
        end=seconds(message.end_offset),
        words=tuple(word(w) for w in message.words),
        avg_logprob=message.avg_logprob if message.HasField("avg_logprob") else None,
        no_speech_prob=message.no_speech_prob if message.HasField("no_speech_prob") else None,
        language=message.language,
        language_probability=(
            message.language_probability if message.HasField("language_probability") else None
        ),
        channel=message.channel if message.HasField("channel") else None,
    )


def timings(message: pb.ProcessingTimings) -> Timings:
    return Timings(
        decode=seconds(message.decode_duration),
        features=seconds(message.feature_duration),
        queue=seconds(message.queue_duration),
        inference=seconds(message.inference_duration),
        total=seconds(message.total_duration),
    )


def transcript(
    message: pb.Transcript,
    timing: pb.ProcessingTimings | None,
    *,
    request_id: str = "",
    model: str = "",
) -> Transcript:
    probability = message.language_probability
    return Transcript(
        text=message.text,
        segments=tuple(segment(s) for s in message.segments),
        language=message.language,
        language_probability=probability if message.HasField("language_probability") else None,
        duration=seconds(message.audio_duration),
        timings=timings(timing) if timing is not None else None,
        request_id=request_id,
        model=model,
    )


def transcribe_response(response: pb.TranscribeResponse) -> Transcript:
    timing = response.timings if response.HasField("timings") else None
    return transcript(
        response.transcript, timing, request_id=response.request_id, model=response.model
    )


def limits(message: pb.ServiceLimits) -> ServiceLimits:
    return ServiceLimits(
        max_concurrent_streams=message.max_concurrent_streams,
        max_stream_duration=seconds(message.max_stream_duration),
        idle_timeout=seconds(message.idle_timeout),
        max_chunk_bytes=message.max_chunk_bytes,
        max_request_bytes=message.max_request_bytes,
        max_audio_duration=seconds(message.max_audio_duration),
        max_batch_size=message.max_batch_size,
        max_streams_per_client=message.max_streams_per_client,
    )


def session_info(message: pb.SessionStarted) -> SessionInfo:
    return SessionInfo(
        session_id=message.session_id,
        request_id=message.config.request_id,
        limits=limits(message.limits),
    )


def service_info(message: pb.GetServiceInfoResponse) -> ServiceInfo:
    return ServiceInfo(
        model=message.model,
        engine=message.engine,
        device=message.device,
        version=message.version,
        languages=tuple(message.languages),
        tasks=tuple(_TASK_NAMES.get(t, str(t)) for t in message.tasks),
        supports_segment_timestamps=message.supports_segment_timestamps,
        supports_word_timestamps=message.supports_word_timestamps,
        limits=limits(message.limits),
        default_beam_size=message.defaults.recognition.beam_size,
        default_partial_interval=seconds(message.defaults.partial_interval),
    )


def stream_event(response: pb.StreamAudioResponse) -> StreamEvent | None:
    """The SDK event for a response; None for kinds this SDK version does not know."""
    utterance, received = response.utterance_id, seconds(response.audio_received_offset)
    kind = response.WhichOneof("event")
    if kind == "partial_result":
        p = response.partial_result
        return PartialResult(
            utterance,
            p.text,
            p.stable_prefix_length,
            p.stability,
            seconds(p.start_offset),
            seconds(p.end_offset),
            received,
        )
    if kind == "segment_result":
        return SegmentResult(utterance, segment(response.segment_result.segment), received)
    if kind == "final_result":
        f = response.final_result
        timing = f.timings if f.HasField("timings") else None
        reason = _END_REASONS.get(f.end_reason, EndReason.UNSPECIFIED)
        return FinalResult(utterance, transcript(f.transcript, timing), reason, received)
    if kind == "speech_event":
        e = response.speech_event
        started = e.type == pb.SPEECH_EVENT_TYPE_SPEECH_STARTED
        return SpeechEvent(utterance, started, seconds(e.offset), received)
    return None
