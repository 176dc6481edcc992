"""Rendering transcripts: JSON objects, SRT and WebVTT subtitles, timings."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from whisperwire.client.results import Segment, Timings, Transcript


def transcript_json(
    transcript: Transcript, *, source: str | None = None, timings: bool = False
) -> dict[str, Any]:
    """The JSON object printed per input: text, language, segments (seconds), timings."""
    data: dict[str, Any] = {}
    if source is not None:
        data["file"] = source
    data |= {
        "text": transcript.text.strip(),
        "language": transcript.language,
        "language_probability": transcript.language_probability,
        "duration": round(transcript.duration, 3),
        "segments": [segment_json(s) for s in transcript.segments],
    }
    if transcript.request_id:
        data["request_id"] = transcript.request_id
    if transcript.model:
        data["model"] = transcript.model
    if timings and transcript.timings is not None:
        data["timings"] = timings_json(transcript.timings)
    return data


def json_line(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False)


def segment_json(segment: Segment) -> dict[str, Any]:
    data: dict[str, Any] = {
        "index": segment.index,
        "start": round(segment.start, 3),
        "end": round(segment.end, 3),
        "text": segment.text.strip(),
    }
    if segment.words:
        data["words"] = [
            {
                "text": w.text,
                "start": round(w.start, 3),
                "end": round(w.end, 3),
                "probability": round(w.probability, 4),
            }
            for w in segment.words
        ]
    return data


def timings_json(timings: Timings) -> dict[str, float]:
    return {name: round(value, 4) for name, value in asdict(timings).items()}


def timings_line(timings: Timings) -> str:
    parts = (f"{name} {value * 1000:.0f} ms" for name, value in asdict(timings).items())
    return "timings: " + ", ".join(parts)


def srt(transcript: Transcript) -> str:
    cues = _cues(transcript)
    blocks = (
        f"{number}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n"
        for number, (start, end, text) in enumerate(cues, start=1)
    )
    return "\n".join(blocks)


def vtt(transcript: Transcript) -> str:
    cues = _cues(transcript)
    blocks = [f"{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n" for start, end, text in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)


def _cues(transcript: Transcript) -> list[tuple[float, float, str]]:
    """(start, end, text) per non-empty segment, with times that never go backwards."""
    cues: list[tuple[float, float, str]] = []
    previous_end = 0.0
    for segment in sorted(transcript.segments, key=lambda s: s.start):
        text = " ".join(segment.text.split())
        if not text:
            continue
        start = max(segment.start, previous_end)
        end = max(segment.end, start + 0.001)
        cues.append((start, end, text))
        previous_end = end
    return cues


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"
