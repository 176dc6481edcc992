"""Typed errors of the speech pipeline and service; the servicer maps each to a gRPC status."""

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
