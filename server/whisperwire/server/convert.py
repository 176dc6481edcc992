"""Proto ↔ domain conversion; with the servicer and the stream call, the only modules that know
the proto."""

from __future__ import annotations

from dataclasses import replace

from google.protobuf.duration_pb2 import Duration

from whisperwire.server.audio import PcmEncoding
from whisperwire.server.config import ServerSettings
from whisperwire.server.domain import DecodeOptions, Segment, Task, Timings, Transcript, Word
from whisperwire.server.engine import EngineInfo
from whisperwire.server.errors import InvalidOptionError, UnsupportedEncodingError
from whisperwire.server.session import (
    EndReason,
    Envelope,
    FinalResult,
    PartialResult,
    SegmentResult,
    SpeechEvent,
    StreamConfig,
)
from whisperwire.v1 import transcription_service_pb2 as pb

ENCODINGS: dict[int, PcmEncoding] = {
    pb.AUDIO_ENCODING_UNSPECIFIED: "s16le",
    pb.AUDIO_ENCODING_LINEAR16: "s16le",
    pb.AUDIO_ENCODING_FLOAT32: "f32le",
}
END_REASONS = {
    EndReason.CLIENT_END: pb.END_REASON_CLIENT_END,
    EndReason.STREAM_CLOSED: pb.END_REASON_STREAM_CLOSED,
    EndReason.MAX_DURATION: pb.END_REASON_MAX_DURATION,
    EndReason.SERVER_SHUTDOWN: pb.END_REASON_SERVER_SHUTDOWN,
}


def service_limits(s: ServerSettings, info: EngineInfo) -> pb.ServiceLimits:
    return pb.ServiceLimits(
        max_concurrent_streams=s.limits.max_streams,
        max_streams_per_client=s.limits.max_streams_per_client,
        max_stream_duration=duration(s.limits.max_stream_seconds),
        idle_timeout=duration(s.limits.idle_timeout_seconds),
        max_chunk_bytes=s.limits.max_chunk_bytes,
        max_request_bytes=s.limits.max_request_bytes,
        max_audio_duration=duration(s.limits.max_audio_seconds),
        max_batch_size=info.max_batch_size,
    )


def duration(seconds: float) -> Duration:
    d = Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def seconds(d: Duration) -> float:
    return float(d.ToNanoseconds()) / 1e9


# ---- requests → domain ---------------------------------------------------------------
def decode_options(config: pb.RecognitionConfig, settings: ServerSettings) -> DecodeOptions:
    if config.task not in (pb.TASK_UNSPECIFIED, pb.TASK_TRANSCRIBE, pb.TASK_TRANSLATE):
        raise InvalidOptionError(f"unknown task value {config.task}", field="config.task")
    options = DecodeOptions(
        language=config.language.strip() or None,
        task=Task.TRANSLATE if config.task == pb.TASK_TRANSLATE else Task.TRANSCRIBE,
        initial_prompt=config.initial_prompt or None,
        timestamps=config.enable_segment_timestamps,
        word_timestamps=config.enable_word_timestamps,
        beam_size=config.beam_size or settings.defaults.default_beam_size,
        detect_language_per_segment=config.detect_language_per_segment,
        separate_channels=config.separate_channels,
    )
    if config.HasField("temperature"):  # checked with every other option by the pipeline
        options = replace(options, temperatures=(config.temperature,))
    return options


def pcm_layout(fmt: pb.RawAudioFormat) -> tuple[PcmEncoding, int, int]:
    """(encoding, sample rate, channels) with the proto's documented defaults filled in."""
    if fmt.encoding not in ENCODINGS:
        raise UnsupportedEncodingError(
            f"unknown audio encoding value {fmt.encoding}", field="audio_format.encoding"
        )
    return ENCODINGS[fmt.encoding], fmt.sample_rate_hertz or 16000, fmt.channel_count or 1


def stream_config(config: pb.StreamAudioConfig, settings: ServerSettings) -> StreamConfig:
    encoding, rate, channels = pcm_layout(config.audio_format)
    silence = seconds(config.segment_silence) if config.HasField("segment_silence") else 0.0
    interval = (
        seconds(config.partial_interval)
        if config.HasField("partial_interval")
        else settings.defaults.default_partial_interval
    )
    if interval < 0.1 and config.interim_results:
        raise InvalidOptionError(
            "partial_interval must be at least 100 ms", field="partial_interval"
        )
    if silence < 0:
        raise InvalidOptionError("segment_silence must not be negative", field="segment_silence")
    if config.recognition.separate_channels:
        raise InvalidOptionError(
            "separate_channels is for Transcribe; open one stream per channel instead",
            field="recognition.separate_channels",
        )
    return StreamConfig(
        options=decode_options(config.recognition, settings),
        encoding=encoding,
        sample_rate=rate,
        channels=channels,
        interim_results=config.interim_results,
        partial_interval=interval,
        segment_silence=silence or None,
        speech_events=config.enable_speech_events,
    )


def applied_config(
    config: pb.StreamAudioConfig, applied: StreamConfig, request_id: str
) -> pb.StreamAudioConfig:
    out = pb.StreamAudioConfig()
    out.CopyFrom(config)
    out.request_id = request_id
    out.recognition.beam_size = applied.options.beam_size
    out.audio_format.encoding = (
        pb.AUDIO_ENCODING_FLOAT32 if applied.encoding == "f32le" else pb.AUDIO_ENCODING_LINEAR16
    )
    out.audio_format.sample_rate_hertz = applied.sample_rate
    out.audio_format.channel_count = applied.channels
    out.partial_interval.CopyFrom(duration(applied.partial_interval))
    return out


# ---- domain → responses ----------------------------------------------------------------
def segment(s: Segment, index: int) -> pb.Segment:
    out = pb.Segment(
        index=index,
        text=s.text,
        start_offset=duration(s.start),
        end_offset=duration(s.end),
        words=[word(w) for w in s.words],
        language=s.language or "",
    )
    if s.avg_logprob is not None:
        out.avg_logprob = s.avg_logprob
    if s.no_speech_prob is not None:
        out.no_speech_prob = s.no_speech_prob
    if s.language_probability is not None:
        out.language_probability = s.language_probability
    if s.channel is not None:
        out.channel = s.channel
    return out


def word(w: Word) -> pb.Word:
    return pb.Word(
        text=w.text,
        start_offset=duration(w.start),
        end_offset=duration(w.end),
        probability=w.probability,
    )


def transcript(t: Transcript) -> pb.Transcript:
    out = pb.Transcript(
        text=t.text,
        segments=[segment(s, i) for i, s in enumerate(t.segments)],
        language=t.language or "",
        audio_duration=duration(t.duration),
    )
    if t.language_probability is not None:
        out.language_probability = t.language_probability
    return out


def timings(t: Timings) -> pb.ProcessingTimings:
    return pb.ProcessingTimings(
        decode_duration=duration(t.decode),
        feature_duration=duration(t.features),
        queue_duration=duration(t.queue),
        inference_duration=duration(t.engine),
        total_duration=duration(t.total),
    )


def stream_response(
    envelope: Envelope, sequence: int, include_timings: bool
) -> pb.StreamAudioResponse:
    out = pb.StreamAudioResponse(
        utterance_id=envelope.utterance_id,
        sequence=sequence,
        audio_received_offset=duration(envelope.audio_received),
    )
    event = envelope.event
    if isinstance(event, FinalResult):
        out.final_result.transcript.CopyFrom(transcript(event.transcript))
        out.final_result.end_reason = END_REASONS[event.reason]
        if include_timings:
            out.final_result.timings.CopyFrom(timings(event.transcript.timings))
    elif isinstance(event, SegmentResult):
        out.segment_result.segment.CopyFrom(segment(event.segment, event.index))
    elif isinstance(event, PartialResult):
        out.partial_result.CopyFrom(
            pb.PartialResult(
                text=event.text,
                stable_prefix_length=event.stable_chars,
                stability=event.stability,
                start_offset=duration(event.start),
                end_offset=duration(event.end),
            )
        )
    elif isinstance(event, SpeechEvent):
        kind = (
            pb.SPEECH_EVENT_TYPE_SPEECH_STARTED
            if event.started
            else pb.SPEECH_EVENT_TYPE_SPEECH_ENDED
        )
        out.speech_event.CopyFrom(pb.SpeechEvent(type=kind, offset=duration(event.offset)))
    return out
