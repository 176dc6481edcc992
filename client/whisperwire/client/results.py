"""Typed results of the SDK: plain dataclasses, times in seconds, no protobuf in sight."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    """A stretch of the transcript. Offsets are seconds from the start of the input
    (Transcribe) or of the stream's audio (StreamAudio)."""

    index: int
    text: str
    start: float
    end: float
    words: tuple[Word, ...] = ()
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    language: str = ""
    language_probability: float | None = None
    channel: int | None = None
    """Set when channels were transcribed separately (0-based)."""


@dataclass(frozen=True)
class Timings:
    """Server-side time per processing stage, in seconds."""

    decode: float
    features: float
    queue: float
    inference: float
    total: float


@dataclass(frozen=True)
class Transcript:
    """The result of one file (Transcribe) or one utterance (a stream's final)."""

    text: str
    segments: tuple[Segment, ...]
    language: str
    language_probability: float | None
    duration: float
    timings: Timings | None = None
    request_id: str = ""
    model: str = ""


class EndReason(Enum):
    """Why an utterance of a stream ended."""

    UNSPECIFIED = "unspecified"
    CLIENT_END = "client_end"
    STREAM_CLOSED = "stream_closed"
    MAX_DURATION = "max_duration"
    SERVER_SHUTDOWN = "server_shutdown"


@dataclass(frozen=True)
class PartialResult:
    """Interim text of the uncommitted audio; replaces the previous partial of its utterance."""

    utterance_id: int
    text: str
    stable_prefix_length: int
    stability: float
    start: float
    end: float
    audio_received: float


@dataclass(frozen=True)
class SegmentResult:
    """A segment of the current utterance that will not change; segments only append."""

    utterance_id: int
    segment: Segment
    audio_received: float


@dataclass(frozen=True)
class FinalResult:
    """The complete result of one utterance; replaces its partials and segments."""

    utterance_id: int
    transcript: Transcript
    end_reason: EndReason
    audio_received: float


@dataclass(frozen=True)
class SpeechEvent:
    """The server's voice-activity detector saw speech start or stop."""

    utterance_id: int
    started: bool
    offset: float
    audio_received: float


StreamEvent = PartialResult | SegmentResult | FinalResult | SpeechEvent


@dataclass(frozen=True)
class ServiceLimits:
    """Limits the server enforces; 0 means no limit."""

    max_concurrent_streams: int
    max_stream_duration: float
    idle_timeout: float
    max_chunk_bytes: int
    max_request_bytes: int
    max_audio_duration: float
    max_batch_size: int
    max_streams_per_client: int = 0


@dataclass(frozen=True)
class SessionInfo:
    """A stream as the server set it up (from SessionStarted)."""

    session_id: str
    request_id: str
    limits: ServiceLimits


@dataclass(frozen=True)
class ServiceInfo:
    model: str
    engine: str
    device: str
    version: str
    languages: tuple[str, ...]
    tasks: tuple[str, ...]
    supports_segment_timestamps: bool
    supports_word_timestamps: bool
    limits: ServiceLimits
    default_beam_size: int
    default_partial_interval: float
