"""Whisper's log-mel spectrogram, computed with numpy exactly as OpenAI's reference does.

16 kHz audio, 25 ms periodic-Hann frames every 10 ms (centred, reflect-padded), power
spectrum with the last frame dropped, a Slaney-style mel filterbank (what librosa builds and
OpenAI ships in mel_filters.npz), log10 floored at 1e-10, clamped to 8 decades below the
maximum, then scaled with (x + 4) / 4.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480000 samples in one 30 s window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in one window
SUPPORTED_N_MELS = (80, 128)

_LOG_FLOOR = 1e-10
_LOG10_FLOOR = -10.0  # log10(_LOG_FLOOR)
_DYNAMIC_RANGE_DECADES = 8.0
# The longest clip whose window has a column to spare past its audio: a tracked clip's
# frames never read the reflected end a full 30 s window would.
_LONGEST_TRACKED = (N_FRAMES - 1) * HOP_LENGTH - N_FFT // 2

# Slaney's mel scale: linear below 1 kHz, logarithmic above.
_MEL_LINEAR_HZ_PER_MEL = 200.0 / 3
_MEL_LOG_START_HZ = 1000.0
_MEL_LOG_START = _MEL_LOG_START_HZ / _MEL_LINEAR_HZ_PER_MEL
_MEL_LOG_STEP = np.log(6.4) / 27.0

Audio = npt.NDArray[np.float32]
Spectrogram = npt.NDArray[np.float32]


def log_mel_spectrogram(audio: Audio, n_mels: int) -> Spectrogram:
    """Log-mel of 16 kHz mono audio: [n_mels, len(audio) // 160] float32."""
    filters = mel_filters(n_mels)
    if audio.ndim != 1 or len(audio) < 2:
        raise ValueError(f"expected 1-D audio of at least 2 samples, got shape {audio.shape}")
    power = _power_spectrogram(audio.astype(np.float32, copy=False))
    mel = filters @ power
    return _normalise_log(mel)


def window_features(audio: Audio, n_mels: int) -> Spectrogram:
    """Log-mel of one 30 s window, [n_mels, 3000]: audio is zero-padded or trimmed to 30 s.

    A frame that sees only the padding has an exactly zero spectrum, so only the frames the
    audio reaches are transformed: a 5 s utterance costs a sixth of a full window (the
    result is the same as transforming all 30 s)."""
    audio = audio[:N_SAMPLES]
    reached = -(-(len(audio) + N_FFT // 2) // HOP_LENGTH)  # frames whose span holds audio
    if reached >= N_FRAMES:
        return log_mel_spectrogram(pad_or_trim(audio), n_mels)
    # One frame more than reached, so every transformed frame sees exactly the samples it
    # would in the padded window (none reaches this shorter signal's end padding).
    head = pad_or_trim(audio, reached * HOP_LENGTH + N_FFT // 2)
    power = _power_spectrogram(head.astype(np.float32, copy=False))
    return _normalise_log(mel_filters(n_mels) @ power, frames=N_FRAMES)


class StreamingLogMel:
    """A growing clip's window features, computed as its audio arrives: `window()` equals
    `window_features` of everything pushed, but only the last few frames and the scaling
    are left to do when it is asked for (a push-to-talk release needs its final's log-mel
    at once, not after a trip through a worker thread).

    A frame whose 25 ms span lies within the audio received is final: later audio does not
    change it. Those are transformed in batches of `batch_frames` as they complete; the
    frames that reach past the end see zeros there, exactly as in a zero-padded window, and
    are transformed when a window is asked for. Clips longer than one window are not
    tracked (`window()` is None): they are cut into windows at pauses instead."""

    def __init__(self, n_mels: int, batch_frames: int = 32) -> None:
        self.filters = mel_filters(n_mels)
        self.batch_frames = batch_frames
        self.samples = 0
        self._done = 0  # frames transformed, in order from the first
        self._log: list[Spectrogram] = []  # their log10 mel, in column blocks
        self._top = -np.inf  # the largest value in _log
        self._unread = np.zeros(0, np.float32)  # the audio from frame _done's span onwards

    def push(self, audio: Audio) -> None:
        if self.samples + len(audio) > _LONGEST_TRACKED:
            self.samples += len(audio)
            self._log, self._unread = [], np.zeros(0, np.float32)  # no longer one window
            return
        self.samples += len(audio)
        self._unread = np.concatenate([self._unread, audio.astype(np.float32, copy=False)])
        if _complete_frames(self.samples) - self._done >= self.batch_frames:
            self._transform(_complete_frames(self.samples), self._unread)

    def window(self) -> Spectrogram | None:
        """window_features of the audio pushed so far, or None past one window's length."""
        if self.samples > _LONGEST_TRACKED or self.samples < 2:
            return None
        reached = _reached_frames(self.samples)
        tail = self._framed(pad_or_trim(self._unread, self._unread_length(reached + 1)))
        log_spec = np.concatenate([*self._log, _log10(self.filters @ tail)], axis=1)
        return _scaled(log_spec, N_FRAMES, top=max(self._top, float(log_spec.max())))

    def _transform(self, until: int, audio: Audio) -> None:
        """Transform frames [_done, until) and drop the audio no later frame reads."""
        log_spec = _log10(self.filters @ self._framed(audio[: self._unread_length(until)]))
        self._log.append(log_spec)
        self._top = max(self._top, float(log_spec.max()))
        consumed = until * HOP_LENGTH - N_FFT // 2 - self._unread_start()
        self._done = until
        self._unread = self._unread[max(0, consumed) :]

    def _framed(self, audio: Audio) -> Spectrogram:
        """|STFT|² of frames _done onwards, from the audio their spans read (the first
        frames' spans reach before the clip: reflected, as centred framing does)."""
        if self._done == 0:
            audio = np.pad(audio, (N_FFT // 2, 0), mode="reflect")
        frames = sliding_window_view(audio, N_FFT)[::HOP_LENGTH]
        spectrum = np.fft.rfft(frames * _hann_window(), axis=-1)
        power = np.square(spectrum.real) + np.square(spectrum.imag)
        return np.ascontiguousarray(power.T, dtype=np.float32)

    def _unread_start(self) -> int:
        """The clip sample _unread begins at (frame _done's span start, or 0)."""
        return max(0, self._done * HOP_LENGTH - N_FFT // 2)

    def _unread_length(self, until: int) -> int:
        """Samples of _unread that frames [_done, until) read."""
        return (until - 1) * HOP_LENGTH + N_FFT // 2 - self._unread_start()


def _complete_frames(samples: int) -> int:
    """Frames whose whole span lies within `samples` of audio (centred: ±200 samples)."""
    return max(0, (samples - N_FFT // 2) // HOP_LENGTH + 1)


def _reached_frames(samples: int) -> int:
    """Frames whose span holds any of `samples` of audio."""
    return -(-(samples + N_FFT // 2) // HOP_LENGTH)


def pad_or_trim(audio: Audio, length: int = N_SAMPLES) -> Audio:
    if len(audio) >= length:
        return audio[:length]
    return np.pad(audio, (0, length - len(audio)))


def _power_spectrogram(audio: Audio) -> Spectrogram:
    """|STFT|², [n_fft // 2 + 1, frames], like torch.stft(center=True, pad_mode="reflect")."""
    padded = np.pad(audio, N_FFT // 2, mode="reflect")
    # A strided view of overlapping frames: no copy until the window multiplies them.
    frames = sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
    spectrum = np.fft.rfft(frames * _hann_window(), axis=-1)
    power = np.square(spectrum.real) + np.square(spectrum.imag)
    # OpenAI drops the last frame so 30 s gives exactly 3000 frames.
    return np.ascontiguousarray(power[:-1].T, dtype=np.float32)


def _normalise_log(mel: Spectrogram, frames: int | None = None) -> Spectrogram:
    """Whisper's scaled log10. `frames`: the width to return when it exceeds mel's, the
    columns past it silence."""
    log_spec = _log10(mel)
    return _scaled(log_spec, frames or 0, top=float(log_spec.max()))


def _log10(mel: Spectrogram) -> Spectrogram:
    return np.log10(np.maximum(mel, _LOG_FLOOR))


def _scaled(log_spec: Spectrogram, frames: int, *, top: float) -> Spectrogram:
    """Clamped to 8 decades below `top` (log_spec's maximum) and scaled, `frames` wide
    where that exceeds log_spec's width: the columns past it silence, at the floor, which
    then takes part in the maximum too."""
    width = max(frames, log_spec.shape[1])
    if width > log_spec.shape[1]:
        top = max(top, _LOG10_FLOOR)
    lowest = top - _DYNAMIC_RANGE_DECADES
    out = np.full((log_spec.shape[0], width), (max(_LOG10_FLOOR, lowest) + 4.0) / 4.0, np.float32)
    out[:, : log_spec.shape[1]] = (np.maximum(log_spec, lowest) + 4.0) / 4.0
    return out


@cache
def _hann_window() -> npt.NDArray[np.float32]:
    # Periodic Hann (torch.hann_window's default): the symmetric N+1 window without its end.
    window = np.hanning(N_FFT + 1)[:-1].astype(np.float32)
    window.flags.writeable = False  # cached and shared
    return window


@cache
def mel_filters(n_mels: int) -> npt.NDArray[np.float32]:
    """Slaney mel filterbank [n_mels, 201] for 16 kHz, n_fft 400 (librosa.filters.mel)."""
    if n_mels not in SUPPORTED_N_MELS:
        raise ValueError(f"n_mels must be one of {SUPPORTED_N_MELS}, got {n_mels}")
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    # n_mels triangles need n_mels + 2 edges, evenly spaced in mels from 0 Hz to Nyquist.
    edges_hz = _mel_to_hz(np.linspace(0.0, _hz_to_mel(SAMPLE_RATE / 2), n_mels + 2))
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (fft_hz - lower) / (centre - lower)
    falling = (upper - fft_hz) / (upper - centre)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    # Slaney normalisation: each triangle has unit area, so wide high bands are not louder.
    area_norm = 2.0 / (upper - lower)
    filters = (triangles * area_norm).astype(np.float32)
    filters.flags.writeable = False  # cached and shared
    return filters


def _hz_to_mel(hz: float) -> float:
    if hz < _MEL_LOG_START_HZ:
        return hz / _MEL_LINEAR_HZ_PER_MEL
    return float(_MEL_LOG_START + np.log(hz / _MEL_LOG_START_HZ) / _MEL_LOG_STEP)


def _mel_to_hz(mels: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    linear = mels * _MEL_LINEAR_HZ_PER_MEL
    logarithmic = _MEL_LOG_START_HZ * np.exp(_MEL_LOG_STEP * (mels - _MEL_LOG_START))
    return np.where(mels >= _MEL_LOG_START, logarithmic, linear)
