"""Audio in: any common container, or raw PCM streams, to 16 kHz mono float32.

Decoding and resampling are PyAV's (FFmpeg's libavformat, libavcodec and libswresample), so
the samples match what OpenAI's `ffmpeg -ac 1 -ar 16000` pipeline feeds Whisper.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Literal, get_args

import av
import av.container
import numpy as np
import numpy.typing as npt

from whisperwire.server.errors import (
    AudioDecodeError,
    AudioTooLongError,
    EmptyAudioError,
    InvalidChannelCountError,
    InvalidSamplesError,
    UnsupportedEncodingError,
    UnsupportedSampleRateError,
)

SAMPLE_RATE = 16000

PcmEncoding = Literal["s16le", "f32le"]
Samples = npt.NDArray[np.float32]
# Interleaved PCM as received: int16 or float32, depending on the encoding.
_RawPcm = npt.NDArray[np.int16] | npt.NDArray[np.float32]

MIN_PCM_SAMPLE_RATE = 8000
MAX_PCM_SAMPLE_RATE = 192000
MAX_PCM_CHANNELS = 8

# Per encoding: numpy dtype of one little-endian sample, and PyAV's packed sample format.
_PCM_FORMATS: dict[str, tuple[str, str]] = {
    "s16le": ("<i2", "s16"),
    "f32le": ("<f4", "flt"),
}
_S16_SCALE = np.float32(1 / 32768)
# Without a ceiling, libswresample sums mono downmix coefficients to more than 1 for float
# output; 1.0 gives the (L+R)/2 mix that FFmpeg's s16 output (OpenAI's pipeline) uses.
_RESAMPLER_OPTIONS = {"rematrix_maxval": "1.0"}


def _new_resampler(layout: str = "mono") -> av.AudioResampler:
    # Planar output: one row per channel, so channels kept apart need no de-interleaving.
    return av.AudioResampler(
        format="fltp", layout=layout, rate=SAMPLE_RATE, options=_RESAMPLER_OPTIONS
    )


def _empty() -> Samples:
    return np.zeros(0, dtype=np.float32)


def _frames_to_samples(frames: Iterable[av.AudioFrame]) -> list[Samples]:
    # The resampler's output is planar float: one row per channel, (channels, n).
    return [frame.to_ndarray().astype(np.float32, copy=False) for frame in frames]


def _join(chunks: list[Samples]) -> Samples:
    """Chunks of (channels, n) joined to (channels, total); mono comes out one-dimensional."""
    if not chunks:
        return _empty()
    if len({chunk.shape[0] for chunk in chunks}) > 1:
        raise AudioDecodeError(
            "the channel count changes within the file; transcribe it without separate_channels",
            field="audio",
        )
    joined = np.concatenate(chunks, axis=1)
    return joined[0] if joined.shape[0] == 1 else joined


def _check_finite(samples: npt.NDArray[np.generic]) -> None:
    if not np.isfinite(samples).all():
        raise InvalidSamplesError("audio contains NaN or infinite samples", field="audio")


# --- containers -----------------------------------------------------------------------------


def decode_audio(data: bytes, *, max_seconds: float | None = None) -> Samples:
    """Decode a whole file held in memory (WAV, FLAC, MP3, OGG/Opus, WebM, M4A, ...).

    Returns 16 kHz mono float32. A truncated or partly corrupt file yields the audio that
    could be decoded, as the ffmpeg CLI does: packets that fail to decode are skipped and a
    demuxer error ends the stream; only a file with nothing decodable is an error.
    Decoding stops as soon as the audio exceeds `max_seconds` (AudioTooLongError).
    """
    [samples] = _decode(data, max_seconds, keep_channels=False)
    return samples


def decode_audio_channels(data: bytes, *, max_seconds: float | None = None) -> list[Samples]:
    """Like decode_audio, but each channel on its own: one 16 kHz array per channel."""
    return _decode(data, max_seconds, keep_channels=True)


def _decode(data: bytes, max_seconds: float | None, *, keep_channels: bool) -> list[Samples]:
    if not data:
        raise EmptyAudioError("audio is empty", field="audio")
    with _open_container(data) as container:
        samples = _decode_first_audio_stream(container, max_seconds, keep_channels)
    _check_finite(samples)
    return list(samples) if samples.ndim == 2 else [samples]


# Demuxers that follow references (an ffconcat script's `file x.wav`, playlists) open them
# through a protocol; allowing none keeps a request's bytes from reading the server's files.
_NO_PROTOCOLS = {"protocol_whitelist": "none"}


def _open_container(data: bytes) -> av.container.InputContainer:
    try:
        return av.open(
            io.BytesIO(data), mode="r", metadata_errors="ignore", container_options=_NO_PROTOCOLS
        )
    except (av.FFmpegError, UnicodeDecodeError) as error:
        raise AudioDecodeError(
            f"cannot read the audio container (not a supported audio format?): {_reason(error)}",
            field="audio",
        ) from error


def _reason(error: Exception) -> str:
    # FFmpeg errors carry the library's own wording; str() adds errno and a file of '<none>'.
    return getattr(error, "strerror", None) or str(error)


def _decode_first_audio_stream(
    container: av.container.InputContainer, max_seconds: float | None, keep_channels: bool
) -> Samples:
    if not container.streams.audio:
        raise AudioDecodeError("the container has no audio stream", field="audio")
    stream = container.streams.audio[0]
    resampler = _FollowingResampler(keep_channels)
    chunks: list[Samples] = []
    decoded = 0
    last_error: av.FFmpegError | None = None
    for frames, error in _decoded_packets(container, stream):
        last_error = error or last_error
        new = [samples for frame in frames for samples in resampler.resample(frame)]
        chunks.extend(new)
        decoded += sum(chunk.shape[-1] for chunk in new)
        _check_length(decoded, max_seconds)
    chunks.extend(resampler.flush())
    return _nonempty(_join(chunks), last_error)


def _check_length(decoded_samples: int, max_seconds: float | None) -> None:
    if max_seconds is not None and decoded_samples > max_seconds * SAMPLE_RATE:
        raise AudioTooLongError(
            f"audio is longer than the maximum of {max_seconds:g} s", field="audio"
        )


def _decoded_packets(
    container: av.container.InputContainer, stream: av.AudioStream
) -> Iterator[tuple[list[av.AudioFrame], av.FFmpegError | None]]:
    """Per packet, its decoded frames; a packet that fails to decode yields its error."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError as error:  # the demuxer cannot go on: treat as end of data
            yield [], error
            return
        try:
            yield list(packet.decode()), None
        except av.FFmpegError as error:
            yield [], error


class _FollowingResampler:
    """To 16 kHz mono, following input format changes (e.g. MP3s of two rates concatenated).

    PyAV's resampler is fixed by its first frame; on a change the old one is drained and a
    new one started, as ffmpeg reconfigures its filter graph.
    """

    def __init__(self, keep_channels: bool = False) -> None:
        self._keep_channels = keep_channels
        self._resampler: av.AudioResampler | None = None
        self._input_format: tuple[str, str, int] | None = None

    def resample(self, frame: av.AudioFrame) -> list[Samples]:
        input_format = (frame.format.name, frame.layout.name, frame.sample_rate)
        drained = self.flush() if input_format != self._input_format else []
        if self._resampler is None:
            self._resampler = _new_resampler(frame.layout.name if self._keep_channels else "mono")
            self._input_format = input_format
        return drained + _frames_to_samples(self._resampler.resample(frame))

    def flush(self) -> list[Samples]:
        if self._resampler is None:
            return []
        tail = _frames_to_samples(self._resampler.resample(None))
        self._resampler = None
        self._input_format = None
        return tail


def _nonempty(samples: Samples, last_error: av.FFmpegError | None) -> Samples:
    if samples.shape[-1]:
        return samples
    if last_error is not None:
        raise AudioDecodeError(f"no decodable audio: {_reason(last_error)}", field="audio")
    raise EmptyAudioError("the audio stream holds no samples", field="audio")


# --- raw PCM streams ------------------------------------------------------------------------


class PcmDecoder:
    """Raw interleaved PCM chunks in, 16 kHz mono float32 out, resampling across chunk edges.

    Chunks need not hold whole frames: a partial frame's bytes wait for the next push. Audio
    already at 16 kHz mono is converted with numpy alone (the hot path of every stream).
    """

    def __init__(self, encoding: PcmEncoding, sample_rate: int, channels: int) -> None:
        _validate_pcm_format(encoding, sample_rate, channels)
        self._dtype, self._av_format = _PCM_FORMATS[encoding]
        self._is_float = encoding == "f32le"
        self._sample_rate = sample_rate
        self._channels = channels
        self._frame_bytes = np.dtype(self._dtype).itemsize * channels
        self._pending = b""
        needs_resampling = sample_rate != SAMPLE_RATE or channels != 1
        self._resampler = _new_resampler() if needs_resampling else None
        self._next_pts = 0

    @property
    def frame_bytes(self) -> int:
        """Bytes of one interleaved frame (a sample for every channel)."""
        return self._frame_bytes

    def push(self, data: bytes) -> Samples:
        """Decode a chunk; returns the samples it completes (possibly none)."""
        interleaved = self._take_whole_frames(data)
        if not len(interleaved):
            return _empty()
        if self._is_float:
            _check_finite(interleaved)
        if self._resampler is None:
            return self._to_float(interleaved)
        return _join(_frames_to_samples(self._resampler.resample(self._to_frame(interleaved))))

    def flush(self) -> Samples:
        """End the stream: the resampler's delayed tail. A trailing partial frame is dropped."""
        self._pending = b""
        if self._resampler is None:
            return _empty()
        return _join(_frames_to_samples(self._resampler.resample(None)))

    def _take_whole_frames(self, data: bytes) -> _RawPcm:
        buffered = self._pending + data if self._pending else data
        whole = len(buffered) - len(buffered) % self._frame_bytes
        self._pending = bytes(buffered[whole:])
        return np.frombuffer(memoryview(buffered)[:whole], dtype=self._dtype)

    def _to_float(self, interleaved: _RawPcm) -> Samples:
        if self._is_float:
            return interleaved.astype(np.float32)
        samples = interleaved.astype(np.float32)
        samples *= _S16_SCALE
        return samples

    def _to_frame(self, interleaved: _RawPcm) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(
            interleaved.reshape(1, -1), format=self._av_format, layout=f"{self._channels}c"
        )
        frame.sample_rate = self._sample_rate
        frame.pts = self._next_pts
        self._next_pts += len(interleaved) // self._channels
        return frame


def _validate_pcm_format(encoding: str, sample_rate: int, channels: int) -> None:
    if encoding not in get_args(PcmEncoding):
        supported = ", ".join(get_args(PcmEncoding))
        raise UnsupportedEncodingError(
            f"unsupported PCM encoding {encoding!r} (supported: {supported})", field="encoding"
        )
    if not MIN_PCM_SAMPLE_RATE <= sample_rate <= MAX_PCM_SAMPLE_RATE:
        raise UnsupportedSampleRateError(
            f"sample rate {sample_rate} Hz is outside "
            f"{MIN_PCM_SAMPLE_RATE}..{MAX_PCM_SAMPLE_RATE} Hz",
            field="sample_rate",
        )
    if not 1 <= channels <= MAX_PCM_CHANNELS:
        raise InvalidChannelCountError(
            f"channel count {channels} is outside 1..{MAX_PCM_CHANNELS}", field="channels"
        )


def decode_pcm(
    data: bytes,
    encoding: PcmEncoding,
    sample_rate: int,
    channels: int,
    *,
    max_seconds: float | None = None,
) -> Samples:
    """Decode a whole raw PCM buffer (one-shot PcmDecoder); it must hold whole frames."""
    decoder = PcmDecoder(encoding, sample_rate, channels)
    frame_bytes = decoder.frame_bytes
    if not data:
        raise EmptyAudioError("audio is empty", field="audio")
    if len(data) % frame_bytes:
        raise AudioDecodeError(
            f"PCM length {len(data)} bytes is not a whole number of "
            f"{frame_bytes}-byte frames ({channels} channel(s) of {encoding})",
            field="audio",
        )
    seconds = len(data) / frame_bytes / sample_rate
    if max_seconds is not None and seconds > max_seconds:
        raise AudioTooLongError(
            f"audio is {seconds:.1f} s, over the maximum of {max_seconds:g} s", field="audio"
        )
    return np.concatenate([decoder.push(data), decoder.flush()])


def decode_pcm_channels(
    data: bytes,
    encoding: PcmEncoding,
    sample_rate: int,
    channels: int,
    *,
    max_seconds: float | None = None,
) -> list[Samples]:
    """Like decode_pcm, but each channel on its own: one 16 kHz array per channel."""
    _validate_pcm_format(encoding, sample_rate, channels)
    frame_bytes = np.dtype(_PCM_FORMATS[encoding][0]).itemsize * channels
    if len(data) % frame_bytes:  # decode_pcm explains it
        return [decode_pcm(data, encoding, sample_rate, channels, max_seconds=max_seconds)]
    frames = np.frombuffer(data, dtype=_PCM_FORMATS[encoding][0]).reshape(-1, channels)
    return [
        decode_pcm(frames[:, c].tobytes(), encoding, sample_rate, 1, max_seconds=max_seconds)
        for c in range(channels)
    ]
