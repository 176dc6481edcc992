"""Local audio files for streaming: decode any container to 16 kHz mono s16le with PyAV."""

from __future__ import annotations

import os

import av

from whisperwire.client.errors import WhisperwireClientError

SAMPLE_RATE = 16000
BYTES_PER_SECOND = SAMPLE_RATE * 2
# Without a ceiling libswresample's mono downmix can clip; 1.0 gives (L+R)/2 like FFmpeg.
_RESAMPLER_OPTIONS = {"rematrix_maxval": "1.0"}


class AudioFileError(WhisperwireClientError):
    """A local file that cannot be read or decoded."""


def read_pcm16k(path: str | os.PathLike[str]) -> bytes:
    """The file's first audio stream as 16 kHz mono s16le."""
    resampler = av.AudioResampler(
        format="s16", layout="mono", rate=SAMPLE_RATE, options=_RESAMPLER_OPTIONS
    )
    pieces: list[bytes] = []
    try:
        with av.open(os.fspath(path)) as container:
            for frame in container.decode(audio=0):
                pieces.extend(_bytes(out) for out in resampler.resample(frame))
            pieces.extend(_bytes(out) for out in resampler.resample(None))
    except (av.FFmpegError, IndexError, ValueError) as error:
        raise AudioFileError(f"{os.fspath(path)}: cannot decode audio: {error}") from None
    return b"".join(pieces)


def probe_duration(path: str | os.PathLike[str]) -> float | None:
    """Seconds of audio according to the container, without decoding; None if unknown."""
    try:
        with av.open(os.fspath(path)) as container:
            if container.duration is not None:
                return float(container.duration) / av.time_base
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
    except (av.FFmpegError, IndexError, ValueError):
        pass
    return None


def _bytes(frame: av.AudioFrame) -> bytes:
    # Packed s16 mono: one plane holding exactly `samples` samples (planes may be padded).
    return bytes(frame.planes[0])[: frame.samples * 2]
