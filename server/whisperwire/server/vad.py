"""Voice activity regions (webrtcvad) and pause-aware splitting of long audio into windows.

Whisper sees at most 30 s at a time. Long audio is cut where people pause, never mid-word when
a pause exists, so every window is decoded independently and offsets stay absolute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import webrtcvad

SAMPLE_RATE = 16000
FRAME_MS = 30
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
_FRAME_BYTES = FRAME_SAMPLES * 2  # 16-bit PCM
WINDOW_SECONDS = 30.0


@dataclass(frozen=True)
class Span:
    """A half-open sample range [start, end) of 16 kHz audio."""

    start: int
    end: int

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE


def to_pcm16(audio: npt.NDArray[np.float32]) -> bytes:
    # Clipped with bare ufuncs (in place after the first): np.clip's Python wrapper costs
    # more than the arithmetic on a stream's 20 ms chunk, and every chunk of every stream
    # pays it. Clipped before scaling, so a huge float sample cannot overflow.
    clipped = np.minimum(audio, 1.0)
    np.maximum(clipped, -1.0, out=clipped)
    clipped *= 32767.0
    return clipped.astype("<i2").tobytes()


def speech_flags(audio: npt.NDArray[np.float32], aggressiveness: int = 2) -> list[bool]:
    """One webrtcvad decision per 30 ms frame (a trailing partial frame is dropped)."""
    return StreamingVad(aggressiveness).push(audio)


def speech_spans(
    audio: npt.NDArray[np.float32],
    *,
    aggressiveness: int = 2,
    min_speech_ms: int = 150,
    min_silence_ms: int = 300,
    pad_ms: int = 200,
) -> list[Span]:
    """Speech regions: gaps shorter than min_silence are bridged, blips shorter than
    min_speech dropped, and each region padded so word edges survive."""
    return spans_of_speech(
        speech_flags(audio, aggressiveness),
        len(audio),
        min_speech_ms=min_speech_ms,
        min_silence_ms=min_silence_ms,
        pad_ms=pad_ms,
    )


def spans_of_speech(
    flags: Sequence[bool],
    length: int,
    *,
    min_speech_ms: int = 150,
    min_silence_ms: int = 300,
    pad_ms: int = 200,
) -> list[Span]:
    """speech_spans from per-frame decisions already made (a stream's detector): `flags[i]`
    covers frame i of audio `length` samples long."""
    runs = _runs_of_speech(flags)
    runs = _bridge_short_gaps(runs, min_silence_ms // FRAME_MS)
    runs = [(a, b) for a, b in runs if (b - a) * FRAME_MS >= min_speech_ms]
    pad = pad_ms * SAMPLE_RATE // 1000
    return [
        Span(max(0, a * FRAME_SAMPLES - pad), min(length, b * FRAME_SAMPLES + pad)) for a, b in runs
    ]


def _runs_of_speech(flags: Sequence[bool]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    start: int | None = None
    for i, is_speech in enumerate([*flags, False]):
        if is_speech and start is None:
            start = i
        elif not is_speech and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _bridge_short_gaps(runs: list[tuple[int, int]], min_gap: int) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] < min_gap:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


def plan_windows(
    audio: npt.NDArray[np.float32], spans: list[Span], max_seconds: float = WINDOW_SECONDS
) -> list[Span]:
    """Pack speech spans into windows of at most max_seconds, cutting only between spans;
    a span longer than a window is cut at its quietest frames."""
    limit = int(max_seconds * SAMPLE_RATE)
    windows: list[Span] = []
    for span in spans:
        for piece in _split_long(audio, span, limit):
            if windows and piece.end - windows[-1].start <= limit:
                windows[-1] = Span(windows[-1].start, piece.end)
            else:
                windows.append(piece)
    return windows


def _split_long(audio: npt.NDArray[np.float32], span: Span, limit: int) -> list[Span]:
    pieces: list[Span] = []
    start = span.start
    while span.end - start > limit:
        cut = _quietest_frame(audio, start + limit // 2, start + limit)
        pieces.append(Span(start, cut))
        start = cut
    pieces.append(Span(start, span.end))
    return pieces


def _quietest_frame(audio: npt.NDArray[np.float32], lo: int, hi: int) -> int:
    """Start of the lowest-energy 30 ms frame in [lo, hi): the least harmful place to cut."""
    frames = audio[lo : hi - (hi - lo) % FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
    return lo + int(np.argmin(np.square(frames).sum(axis=1))) * FRAME_SAMPLES + FRAME_SAMPLES


class StreamingVad:
    """Frame-by-frame speech decisions over a stream of 16 kHz chunks of any length.

    It runs on the event loop for every chunk of every stream, so each chunk is converted
    once and the partial frame left over waits as bytes."""

    def __init__(self, aggressiveness: int = 2) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._residue = b""  # 16-bit PCM of a partial frame

    def push(self, samples: npt.NDArray[np.float32]) -> list[bool]:
        pcm = self._residue + to_pcm16(samples)
        usable = len(pcm) - len(pcm) % _FRAME_BYTES
        self._residue = pcm[usable:]
        return [
            self._vad.is_speech(pcm[i : i + _FRAME_BYTES], SAMPLE_RATE)
            for i in range(0, usable, _FRAME_BYTES)
        ]
