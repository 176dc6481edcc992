"""Transcripts in OpenAI's response formats: json, text, srt, vtt, verbose_json, and the
server-sent events of `stream=true`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from whisperwire.server.domain import Segment, Task, Transcript
from whisperwire.server.http.forms import ResponseFormat
from whisperwire.server.pipeline import compression_ratio
from whisperwire.server.tokenizer import WhisperTokenizer, language_name

MEDIA_TYPES = {
    ResponseFormat.JSON: "application/json",
    ResponseFormat.VERBOSE_JSON: "application/json",
    ResponseFormat.TEXT: "text/plain; charset=utf-8",
    ResponseFormat.SRT: "text/plain; charset=utf-8",  # what OpenAI sends for srt and vtt
    ResponseFormat.VTT: "text/plain; charset=utf-8",
}


def body(
    transcript: Transcript, fmt: ResponseFormat, task: Task, tokenizer: WhisperTokenizer
) -> str:
    if fmt is ResponseFormat.TEXT:
        return transcript.text + "\n"
    if fmt is ResponseFormat.SRT:
        return srt(transcript.segments)
    if fmt is ResponseFormat.VTT:
        return vtt(transcript.segments)
    if fmt is ResponseFormat.VERBOSE_JSON:
        return _json(verbose_json(transcript, task, tokenizer))
    if task is Task.TRANSLATE:
        return _json({"text": transcript.text})  # OpenAI's translation object has no usage
    return _json({"text": transcript.text, "usage": usage(transcript)})


def usage(transcript: Transcript) -> dict[str, Any]:
    """OpenAI's usage object of duration-billed models."""
    return {"type": "duration", "seconds": round(transcript.duration, 3)}


def verbose_json(transcript: Transcript, task: Task, tokenizer: WhisperTokenizer) -> dict[str, Any]:
    translating = task is Task.TRANSLATE
    # OpenAI names the language here ("english"), where requests take codes; a translation
    # names the language of its text, always English.
    language = "english" if translating else language_name(transcript.language or "")
    data: dict[str, Any] = {
        "task": task.value,
        "language": language,
        "duration": round(transcript.duration, 3),
        "text": transcript.text,
        "segments": [_segment(index, s, tokenizer) for index, s in enumerate(transcript.segments)],
    }
    words = [w for s in transcript.segments for w in s.words]
    if words:  # OpenAI's word objects, for timestamp_granularities=word
        data["words"] = [
            {"word": w.text.strip(), "start": round(w.start, 3), "end": round(w.end, 3)}
            for w in words
        ]
    if not translating:
        data["usage"] = usage(transcript)
    return data


def _segment(index: int, segment: Segment, tokenizer: WhisperTokenizer) -> dict[str, Any]:
    return {
        "id": index,
        "seek": round(segment.start * 100),  # in 10 ms frames, as Whisper counts its seek
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "text": segment.text,
        # The text's tokens (the decoder's own ids without its timestamp tokens).
        "tokens": tokenizer.encode(" " + segment.text),
        "temperature": segment.temperature,
        "avg_logprob": segment.avg_logprob,
        "compression_ratio": compression_ratio(segment.text),
        "no_speech_prob": segment.no_speech_prob,
    }


def srt(segments: list[Segment]) -> str:
    blocks = (
        f"{number}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n"
        for number, (start, end, text) in enumerate(_cues(segments), start=1)
    )
    return "\n".join(blocks)


def vtt(segments: list[Segment]) -> str:
    blocks = [
        f"{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n"
        for start, end, text in _cues(segments)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def _cues(segments: list[Segment]) -> Iterator[tuple[float, float, str]]:
    """(start, end, text) per non-empty segment, with times that never go backwards."""
    previous_end = 0.0
    for segment in sorted(segments, key=lambda s: s.start):
        text = " ".join(segment.text.split())
        if not text:
            continue
        start = max(segment.start, previous_end)
        end = max(segment.end, start + 0.001)
        previous_end = end
        yield start, end, text


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


# ---- stream=true ---------------------------------------------------------------------------
def text_events(transcript: Transcript) -> Iterator[str]:
    """`transcript.text.delta` per segment, then `transcript.text.done`; the deltas join to
    exactly the done event's text."""
    pieces = [s.text for s in transcript.segments if s.text]
    for index, piece in enumerate(pieces):
        yield sse({"type": "transcript.text.delta", "delta": piece if index == 0 else " " + piece})
    yield sse({"type": "transcript.text.done", "text": transcript.text})


def sse(data: dict[str, Any]) -> str:
    return f"data: {_json(data)}\n\n"


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False)
