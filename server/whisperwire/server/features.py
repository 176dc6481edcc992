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
    columns past it silence (at the floor, which then takes part in the maximum too)."""
    log_spec = np.log10(np.maximum(mel, _LOG_FLOOR))
    width = max(frames or 0, mel.shape[1])
    top = float(log_spec.max())
    if width > mel.shape[1]:
        top = max(top, _LOG10_FLOOR)
    lowest = top - _DYNAMIC_RANGE_DECADES
    out = np.full((mel.shape[0], width), (max(_LOG10_FLOOR, lowest) + 4.0) / 4.0, np.float32)
    out[:, : mel.shape[1]] = (np.maximum(log_spec, lowest) + 4.0) / 4.0
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
