"""Rendering transcripts: JSON objects, SRT and WebVTT subtitles, timings."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from whisperwire.client.results import Segment, Timings, Transcript, Word


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
    if segment.channel is not None:
        data["channel"] = segment.channel
    if segment.language:
        data["language"] = segment.language
    if segment.language_probability is not None:
        data["language_probability"] = round(segment.language_probability, 4)
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
    """SubRip: a cue per segment, or per word when the segments carry words."""
    cues = _word_cues(transcript) or _cues(transcript)
    blocks = (
        f"{number}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n"
        for number, (start, end, text) in enumerate(cues, start=1)
    )
    return "\n".join(blocks)


def vtt(transcript: Transcript) -> str:
    """WebVTT: a cue per segment; words, when present, as the cue's inner timestamps
    (karaoke-style `<00:00:01.500>`), which players use to highlight the word being said."""
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
        if segment.words:
            text = _karaoke(segment.words, start, end)
        if segment.channel is not None:
            text = f"[channel {segment.channel}] {text}"
        cues.append((start, end, text))
        previous_end = end
    return cues


def _karaoke(words: tuple[Word, ...], start: float, end: float) -> str:
    """Words with a timestamp tag before each but the first; tags stay within the cue and
    never go backwards, as WebVTT requires."""
    parts = [words[0].text.strip()]
    previous = start
    for word in words[1:]:
        at = min(max(word.start, previous), end)
        parts.append(f"<{_clock(at, '.')}>{word.text.strip()}")
        previous = at
    return " ".join(parts)


def _word_cues(transcript: Transcript) -> list[tuple[float, float, str]]:
    """(start, end, word) per word, in time order, never overlapping."""
    cues: list[tuple[float, float, str]] = []
    previous_end = 0.0
    segments = sorted(transcript.segments, key=lambda s: s.start)
    for segment in segments:
        for word in segment.words:
            start = max(word.start, previous_end)
            end = max(word.end, start + 0.001)
            label = f"[channel {segment.channel}] " if segment.channel is not None else ""
            cues.append((start, end, label + word.text.strip()))
            previous_end = end
    return cues


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"
