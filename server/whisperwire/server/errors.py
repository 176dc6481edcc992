"""Typed errors of the speech pipeline and service; the outcome interceptor (outcomes.py) maps
each to a gRPC status."""

from __future__ import annotations


class WhisperwireError(Exception):
    """Base class. `reason` is the UPPER_SNAKE ErrorInfo reason; `field` names a bad field."""

    reason = "INTERNAL"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(WhisperwireError):
    """The caller sent something unusable (maps to INVALID_ARGUMENT)."""

    reason = "INVALID_ARGUMENT"


class AudioDecodeError(InvalidInput):
    reason = "AUDIO_DECODE_FAILED"


class EmptyAudioError(InvalidInput):
    reason = "EMPTY_AUDIO"


class InvalidSamplesError(InvalidInput):
    """NaN/inf samples."""

    reason = "INVALID_SAMPLES"


class UnsupportedEncodingError(InvalidInput):
    reason = "UNSUPPORTED_ENCODING"


class UnsupportedSampleRateError(InvalidInput):
    reason = "UNSUPPORTED_SAMPLE_RATE"


class UnsupportedLanguageError(InvalidInput):
    reason = "UNSUPPORTED_LANGUAGE"


class InvalidOptionError(InvalidInput):
    """An option value or combination the engine cannot honour."""

    reason = "INVALID_OPTION"


class AudioTooLongError(WhisperwireError):
    """Over the configured maximum duration (maps to OUT_OF_RANGE)."""

    reason = "AUDIO_TOO_LONG"


class ModelNotFoundError(WhisperwireError):
    """A model name or directory cannot be resolved (a startup error)."""

    reason = "MODEL_NOT_FOUND"


class EngineError(WhisperwireError):
    """The engine failed on a batch (maps to INTERNAL; the server keeps serving)."""

    reason = "ENGINE_FAILURE"


class InvalidChannelCountError(InvalidInput):
    """A raw PCM stream declared a channel count outside what the decoder mixes down."""

    reason = "UNSUPPORTED_CHANNEL_COUNT"


class ProtocolError(InvalidInput):
    """A stream message out of order (CONFIG_REQUIRED, CONFIG_ALREADY_SET, ...)."""

    def __init__(self, message: str, *, reason: str, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.reason = reason


class StreamLimitError(WhisperwireError):
    """A stream outlived a limit (maps to OUT_OF_RANGE: STREAM_TOO_LONG, IDLE_TIMEOUT)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class BusyError(WhisperwireError):
    """Too much work already (maps to RESOURCE_EXHAUSTED with RetryInfo)."""

    reason = "SERVER_BUSY"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ClientStreamLimitError(BusyError):
    """One client holds its share of the streams (RESOURCE_EXHAUSTED with RetryInfo)."""

    reason = "CLIENT_STREAM_LIMIT"


class UnavailableError(WhisperwireError):
    """Not serving right now (maps to UNAVAILABLE: ENGINE_NOT_READY, SERVER_DRAINING)."""

    def __init__(self, message: str, *, reason: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class InternalError(WhisperwireError):
    """A bug on our side (maps to INTERNAL); the server keeps serving."""

    reason = "INTERNAL"


class ConfigurationError(WhisperwireError):
    """Settings that cannot be served safely or at all (a startup error)."""

    reason = "CONFIGURATION"
