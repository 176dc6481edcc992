"""The multipart form of `/v1/audio/transcriptions` and `/v1/audio/translations` → domain.

Fields follow OpenAI's audio API. Unknown fields are ignored, as OpenAI's server ignores
them; known fields with values this server cannot honour are 400s naming the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import Enum

from starlette.datastructures import FormData, UploadFile

from whisperwire.server.domain import DecodeOptions, Task
from whisperwire.server.engine import EngineInfo
from whisperwire.server.errors import EmptyAudioError, InvalidOptionError
from whisperwire.server.http.errors import (
    MissingFieldError,
    ModelNotFoundError,
    UnsupportedFormatError,
)

# What OpenAI's own clients send as the model; any OpenAI tool works without reconfiguring.
OPENAI_MODEL_ALIAS = "whisper-1"


class ResponseFormat(str, Enum):
    JSON = "json"
    TEXT = "text"
    SRT = "srt"
    VTT = "vtt"
    VERBOSE_JSON = "verbose_json"

    @property
    def timed(self) -> bool:
        """Formats that carry segment times."""
        return self in (ResponseFormat.SRT, ResponseFormat.VTT, ResponseFormat.VERBOSE_JSON)


@dataclass(frozen=True)
class AudioRequest:
    upload: UploadFile
    options: DecodeOptions
    response_format: ResponseFormat
    stream: bool


def audio_request(form: FormData, task: Task, engine: EngineInfo) -> AudioRequest:
    """Validate the form fields (not yet the audio) and build the decode options."""
    upload = _upload(form)
    _check_model(form, engine)
    response_format = _response_format(form)
    words = _wants_words(form, response_format, engine)
    # Translations take no language and do not stream (as OpenAI's endpoint).
    translating = task is Task.TRANSLATE
    stream = False if translating else _flag(form, "stream")
    if stream and response_format not in (ResponseFormat.JSON, ResponseFormat.TEXT):
        raise InvalidOptionError(
            "stream=true sends text events; use response_format json or text",
            field="stream",
        )
    options = DecodeOptions(
        language=None if translating else (_text(form, "language") or None),
        task=task,
        initial_prompt=_text(form, "prompt") or None,
        # Segment times come from the model's timestamp tokens where the engine has them; a
        # stream sends one delta per timed phrase.
        timestamps=(response_format.timed or stream) and engine.supports_timestamps,
        word_timestamps=words,
    )
    temperature = _temperature(form)
    if temperature is not None:
        options = replace(options, temperatures=(temperature,))
    return AudioRequest(upload, options, response_format, stream)


def _upload(form: FormData) -> UploadFile:
    upload = form.get("file")
    if upload is None:
        raise MissingFieldError(
            "the audio file is required as the multipart field `file`", field="file"
        )
    if not isinstance(upload, UploadFile):
        raise InvalidOptionError("`file` must be a file upload, not a text field", field="file")
    if upload.size == 0:
        raise EmptyAudioError("the uploaded file is empty", field="file")
    return upload


def _check_model(form: FormData, engine: EngineInfo) -> None:
    model = _text(form, "model")
    if model and model not in (engine.model, OPENAI_MODEL_ALIAS):
        raise ModelNotFoundError(
            f"model {model!r} is not served here; this server serves {engine.model!r} "
            f"(also accepted as {OPENAI_MODEL_ALIAS!r})",
            field="model",
        )


def _response_format(form: FormData) -> ResponseFormat:
    value = _text(form, "response_format") or ResponseFormat.JSON.value
    try:
        return ResponseFormat(value)
    except ValueError:
        known = ", ".join(f.value for f in ResponseFormat)
        raise UnsupportedFormatError(
            f"response_format {value!r} is not supported; use one of {known}",
            field="response_format",
        ) from None


def _wants_words(form: FormData, response_format: ResponseFormat, engine: EngineInfo) -> bool:
    """Whether `timestamp_granularities` asks for words (verbose_json only, as OpenAI)."""
    # OpenAI's SDKs send arrays as `name[]`; curl users often write the bare name.
    values = [*form.getlist("timestamp_granularities[]"), *form.getlist("timestamp_granularities")]
    if "word" in values and response_format is not ResponseFormat.VERBOSE_JSON:
        raise InvalidOptionError(
            "word timestamps need response_format verbose_json",
            field="timestamp_granularities[]",
        )
    for value in values:
        if value == "segment":
            continue
        if value == "word":
            if not engine.supports_word_timestamps:
                raise InvalidOptionError(
                    f"word timestamps are not supported by the {engine.name} engine yet; "
                    "`segment` is (in verbose_json)",
                    field="timestamp_granularities[]",
                )
            continue
        raise InvalidOptionError(
            f"timestamp granularity {value!r} is not one of segment, word",
            field="timestamp_granularities[]",
        )
    return "word" in values


def _temperature(form: FormData) -> float | None:
    """None for OpenAI's default 0: Whisper's fallback ladder, which starts at 0 and raises the
    temperature when a decode looks repetitive or unlikely. Above 0: that one temperature."""
    text = _text(form, "temperature")
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise InvalidOptionError(
            f"temperature must be a number within 0..1, got {text!r}", field="temperature"
        )
    return None if value == 0.0 else value


def _flag(form: FormData, name: str) -> bool:
    text = _text(form, name).lower()
    if text in ("", "false", "0"):
        return False
    if text in ("true", "1"):
        return True
    raise InvalidOptionError(f"{name} must be true or false, got {text!r}", field=name)


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    if value is None:
        return ""
    if isinstance(value, UploadFile):
        raise InvalidOptionError(f"`{name}` must be a text field, not a file", field=name)
    return value.strip()
