import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_TRANSCRIBE: _ClassVar[Task]
    TASK_TRANSLATE: _ClassVar[Task]

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_LINEAR16: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_FLOAT32: _ClassVar[AudioEncoding]

class SpeechEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPEECH_EVENT_TYPE_UNSPECIFIED: _ClassVar[SpeechEventType]
    SPEECH_EVENT_TYPE_SPEECH_STARTED: _ClassVar[SpeechEventType]
    SPEECH_EVENT_TYPE_SPEECH_ENDED: _ClassVar[SpeechEventType]

class EndReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    END_REASON_UNSPECIFIED: _ClassVar[EndReason]
    END_REASON_CLIENT_END: _ClassVar[EndReason]
    END_REASON_STREAM_CLOSED: _ClassVar[EndReason]
    END_REASON_MAX_DURATION: _ClassVar[EndReason]
    END_REASON_SERVER_SHUTDOWN: _ClassVar[EndReason]
TASK_UNSPECIFIED: Task
TASK_TRANSCRIBE: Task
TASK_TRANSLATE: Task
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
AUDIO_ENCODING_LINEAR16: AudioEncoding
AUDIO_ENCODING_FLOAT32: AudioEncoding
SPEECH_EVENT_TYPE_UNSPECIFIED: SpeechEventType
SPEECH_EVENT_TYPE_SPEECH_STARTED: SpeechEventType
SPEECH_EVENT_TYPE_SPEECH_ENDED: SpeechEventType
END_REASON_UNSPECIFIED: EndReason
END_REASON_CLIENT_END: EndReason
END_REASON_STREAM_CLOSED: EndReason
END_REASON_MAX_DURATION: EndReason
END_REASON_SERVER_SHUTDOWN: EndReason

class RecognitionConfig(_message.Message):
    __slots__ = ("language", "task", "initial_prompt", "enable_segment_timestamps", "enable_word_timestamps", "beam_size", "temperature", "include_timings", "separate_channels", "detect_language_per_segment")
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    INITIAL_PROMPT_FIELD_NUMBER: _ClassVar[int]
    ENABLE_SEGMENT_TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    ENABLE_WORD_TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    BEAM_SIZE_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_TIMINGS_FIELD_NUMBER: _ClassVar[int]
    SEPARATE_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DETECT_LANGUAGE_PER_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    language: str
    task: Task
    initial_prompt: str
    enable_segment_timestamps: bool
    enable_word_timestamps: bool
    beam_size: int
    temperature: float
    include_timings: bool
    separate_channels: bool
    detect_language_per_segment: bool
    def __init__(self, language: _Optional[str] = ..., task: _Optional[_Union[Task, str]] = ..., initial_prompt: _Optional[str] = ..., enable_segment_timestamps: _Optional[bool] = ..., enable_word_timestamps: _Optional[bool] = ..., beam_size: _Optional[int] = ..., temperature: _Optional[float] = ..., include_timings: _Optional[bool] = ..., separate_channels: _Optional[bool] = ..., detect_language_per_segment: _Optional[bool] = ...) -> None: ...

class RawAudioFormat(_message.Message):
    __slots__ = ("encoding", "sample_rate_hertz", "channel_count")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HERTZ_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_COUNT_FIELD_NUMBER: _ClassVar[int]
    encoding: AudioEncoding
    sample_rate_hertz: int
    channel_count: int
    def __init__(self, encoding: _Optional[_Union[AudioEncoding, str]] = ..., sample_rate_hertz: _Optional[int] = ..., channel_count: _Optional[int] = ...) -> None: ...

class ContainerFormat(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Word(_message.Message):
    __slots__ = ("text", "start_offset", "end_offset", "probability")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    text: str
    start_offset: _duration_pb2.Duration
    end_offset: _duration_pb2.Duration
    probability: float
    def __init__(self, text: _Optional[str] = ..., start_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., end_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., probability: _Optional[float] = ...) -> None: ...

class Segment(_message.Message):
    __slots__ = ("index", "text", "start_offset", "end_offset", "words", "avg_logprob", "no_speech_prob", "language", "language_probability", "channel")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    AVG_LOGPROB_FIELD_NUMBER: _ClassVar[int]
    NO_SPEECH_PROB_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    index: int
    text: str
    start_offset: _duration_pb2.Duration
    end_offset: _duration_pb2.Duration
    words: _containers.RepeatedCompositeFieldContainer[Word]
    avg_logprob: float
    no_speech_prob: float
    language: str
    language_probability: float
    channel: int
    def __init__(self, index: _Optional[int] = ..., text: _Optional[str] = ..., start_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., end_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., words: _Optional[_Iterable[_Union[Word, _Mapping]]] = ..., avg_logprob: _Optional[float] = ..., no_speech_prob: _Optional[float] = ..., language: _Optional[str] = ..., language_probability: _Optional[float] = ..., channel: _Optional[int] = ...) -> None: ...

class Transcript(_message.Message):
    __slots__ = ("text", "segments", "language", "language_probability", "audio_duration")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    AUDIO_DURATION_FIELD_NUMBER: _ClassVar[int]
    text: str
    segments: _containers.RepeatedCompositeFieldContainer[Segment]
    language: str
    language_probability: float
    audio_duration: _duration_pb2.Duration
    def __init__(self, text: _Optional[str] = ..., segments: _Optional[_Iterable[_Union[Segment, _Mapping]]] = ..., language: _Optional[str] = ..., language_probability: _Optional[float] = ..., audio_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ProcessingTimings(_message.Message):
    __slots__ = ("decode_duration", "feature_duration", "queue_duration", "inference_duration", "total_duration")
    DECODE_DURATION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_DURATION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DURATION_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_DURATION_FIELD_NUMBER: _ClassVar[int]
    TOTAL_DURATION_FIELD_NUMBER: _ClassVar[int]
    decode_duration: _duration_pb2.Duration
    feature_duration: _duration_pb2.Duration
    queue_duration: _duration_pb2.Duration
    inference_duration: _duration_pb2.Duration
    total_duration: _duration_pb2.Duration
    def __init__(self, decode_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., feature_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., queue_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., inference_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., total_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ServiceLimits(_message.Message):
    __slots__ = ("max_concurrent_streams", "max_stream_duration", "idle_timeout", "max_chunk_bytes", "max_request_bytes", "max_audio_duration", "max_batch_size", "max_streams_per_client")
    MAX_CONCURRENT_STREAMS_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAM_DURATION_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_AUDIO_DURATION_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAMS_PER_CLIENT_FIELD_NUMBER: _ClassVar[int]
    max_concurrent_streams: int
    max_stream_duration: _duration_pb2.Duration
    idle_timeout: _duration_pb2.Duration
    max_chunk_bytes: int
    max_request_bytes: int
    max_audio_duration: _duration_pb2.Duration
    max_batch_size: int
    max_streams_per_client: int
    def __init__(self, max_concurrent_streams: _Optional[int] = ..., max_stream_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., idle_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_chunk_bytes: _Optional[int] = ..., max_request_bytes: _Optional[int] = ..., max_audio_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_batch_size: _Optional[int] = ..., max_streams_per_client: _Optional[int] = ...) -> None: ...

class ServiceDefaults(_message.Message):
    __slots__ = ("recognition", "audio_format", "partial_interval")
    RECOGNITION_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    recognition: RecognitionConfig
    audio_format: RawAudioFormat
    partial_interval: _duration_pb2.Duration
    def __init__(self, recognition: _Optional[_Union[RecognitionConfig, _Mapping]] = ..., audio_format: _Optional[_Union[RawAudioFormat, _Mapping]] = ..., partial_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class TranscribeRequest(_message.Message):
    __slots__ = ("request_id", "config", "audio_content", "container", "raw")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CONTENT_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    config: RecognitionConfig
    audio_content: bytes
    container: ContainerFormat
    raw: RawAudioFormat
    def __init__(self, request_id: _Optional[str] = ..., config: _Optional[_Union[RecognitionConfig, _Mapping]] = ..., audio_content: _Optional[bytes] = ..., container: _Optional[_Union[ContainerFormat, _Mapping]] = ..., raw: _Optional[_Union[RawAudioFormat, _Mapping]] = ...) -> None: ...

class TranscribeResponse(_message.Message):
    __slots__ = ("request_id", "transcript", "timings", "model")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    transcript: Transcript
    timings: ProcessingTimings
    model: str
    def __init__(self, request_id: _Optional[str] = ..., transcript: _Optional[_Union[Transcript, _Mapping]] = ..., timings: _Optional[_Union[ProcessingTimings, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...

class StreamAudioConfig(_message.Message):
    __slots__ = ("request_id", "recognition", "audio_format", "interim_results", "partial_interval", "segment_silence", "enable_speech_events")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RECOGNITION_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    INTERIM_RESULTS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_SILENCE_FIELD_NUMBER: _ClassVar[int]
    ENABLE_SPEECH_EVENTS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    recognition: RecognitionConfig
    audio_format: RawAudioFormat
    interim_results: bool
    partial_interval: _duration_pb2.Duration
    segment_silence: _duration_pb2.Duration
    enable_speech_events: bool
    def __init__(self, request_id: _Optional[str] = ..., recognition: _Optional[_Union[RecognitionConfig, _Mapping]] = ..., audio_format: _Optional[_Union[RawAudioFormat, _Mapping]] = ..., interim_results: _Optional[bool] = ..., partial_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., segment_silence: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., enable_speech_events: _Optional[bool] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("data", "sequence")
    DATA_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    sequence: int
    def __init__(self, data: _Optional[bytes] = ..., sequence: _Optional[int] = ...) -> None: ...

class EndUtterance(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CancelUtterance(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StreamAudioRequest(_message.Message):
    __slots__ = ("config", "audio", "end_utterance", "cancel_utterance")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    END_UTTERANCE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_UTTERANCE_FIELD_NUMBER: _ClassVar[int]
    config: StreamAudioConfig
    audio: AudioChunk
    end_utterance: EndUtterance
    cancel_utterance: CancelUtterance
    def __init__(self, config: _Optional[_Union[StreamAudioConfig, _Mapping]] = ..., audio: _Optional[_Union[AudioChunk, _Mapping]] = ..., end_utterance: _Optional[_Union[EndUtterance, _Mapping]] = ..., cancel_utterance: _Optional[_Union[CancelUtterance, _Mapping]] = ...) -> None: ...

class SessionStarted(_message.Message):
    __slots__ = ("session_id", "config", "limits")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    config: StreamAudioConfig
    limits: ServiceLimits
    def __init__(self, session_id: _Optional[str] = ..., config: _Optional[_Union[StreamAudioConfig, _Mapping]] = ..., limits: _Optional[_Union[ServiceLimits, _Mapping]] = ...) -> None: ...

class SpeechEvent(_message.Message):
    __slots__ = ("type", "offset")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    type: SpeechEventType
    offset: _duration_pb2.Duration
    def __init__(self, type: _Optional[_Union[SpeechEventType, str]] = ..., offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class PartialResult(_message.Message):
    __slots__ = ("text", "stable_prefix_length", "stability", "start_offset", "end_offset")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    STABLE_PREFIX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    STABILITY_FIELD_NUMBER: _ClassVar[int]
    START_OFFSET_FIELD_NUMBER: _ClassVar[int]
    END_OFFSET_FIELD_NUMBER: _ClassVar[int]
    text: str
    stable_prefix_length: int
    stability: float
    start_offset: _duration_pb2.Duration
    end_offset: _duration_pb2.Duration
    def __init__(self, text: _Optional[str] = ..., stable_prefix_length: _Optional[int] = ..., stability: _Optional[float] = ..., start_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., end_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SegmentResult(_message.Message):
    __slots__ = ("segment",)
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    segment: Segment
    def __init__(self, segment: _Optional[_Union[Segment, _Mapping]] = ...) -> None: ...

class FinalResult(_message.Message):
    __slots__ = ("transcript", "end_reason", "timings")
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    transcript: Transcript
    end_reason: EndReason
    timings: ProcessingTimings
    def __init__(self, transcript: _Optional[_Union[Transcript, _Mapping]] = ..., end_reason: _Optional[_Union[EndReason, str]] = ..., timings: _Optional[_Union[ProcessingTimings, _Mapping]] = ...) -> None: ...

class StreamAudioResponse(_message.Message):
    __slots__ = ("utterance_id", "sequence", "audio_received_offset", "session_started", "speech_event", "partial_result", "segment_result", "final_result")
    UTTERANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_RECEIVED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    SESSION_STARTED_FIELD_NUMBER: _ClassVar[int]
    SPEECH_EVENT_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_RESULT_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_RESULT_FIELD_NUMBER: _ClassVar[int]
    FINAL_RESULT_FIELD_NUMBER: _ClassVar[int]
    utterance_id: int
    sequence: int
    audio_received_offset: _duration_pb2.Duration
    session_started: SessionStarted
    speech_event: SpeechEvent
    partial_result: PartialResult
    segment_result: SegmentResult
    final_result: FinalResult
    def __init__(self, utterance_id: _Optional[int] = ..., sequence: _Optional[int] = ..., audio_received_offset: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., session_started: _Optional[_Union[SessionStarted, _Mapping]] = ..., speech_event: _Optional[_Union[SpeechEvent, _Mapping]] = ..., partial_result: _Optional[_Union[PartialResult, _Mapping]] = ..., segment_result: _Optional[_Union[SegmentResult, _Mapping]] = ..., final_result: _Optional[_Union[FinalResult, _Mapping]] = ...) -> None: ...

class GetServiceInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetServiceInfoResponse(_message.Message):
    __slots__ = ("model", "engine", "device", "languages", "tasks", "supports_segment_timestamps", "supports_word_timestamps", "limits", "defaults", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_SEGMENT_TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_WORD_TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    engine: str
    device: str
    languages: _containers.RepeatedScalarFieldContainer[str]
    tasks: _containers.RepeatedScalarFieldContainer[Task]
    supports_segment_timestamps: bool
    supports_word_timestamps: bool
    limits: ServiceLimits
    defaults: ServiceDefaults
    version: str
    def __init__(self, model: _Optional[str] = ..., engine: _Optional[str] = ..., device: _Optional[str] = ..., languages: _Optional[_Iterable[str]] = ..., tasks: _Optional[_Iterable[_Union[Task, str]]] = ..., supports_segment_timestamps: _Optional[bool] = ..., supports_word_timestamps: _Optional[bool] = ..., limits: _Optional[_Union[ServiceLimits, _Mapping]] = ..., defaults: _Optional[_Union[ServiceDefaults, _Mapping]] = ..., version: _Optional[str] = ...) -> None: ...
