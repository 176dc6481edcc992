"""Log-mel features against an independent reference: torch.stft + OpenAI's mel_filters.npz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch

from whisperwire.server.audio import decode_audio
from whisperwire.server.features import (
    N_FRAMES,
    N_SAMPLES,
    SAMPLE_RATE,
    log_mel_spectrogram,
    mel_filters,
    pad_or_trim,
    window_features,
)

N_MELS = [80, 128]
# Log-mel values lie within a few units of 0, where float32 steps are about 1e-7: a few steps
# of rounding that another CPU, BLAS or SIMD path may take differently, and nothing more.
FLOAT32_SLACK = 1e-5


@pytest.fixture(scope="module")
def openai_filters(whisper_assets_dir: Path) -> dict[int, npt.NDArray[np.float32]]:
    with np.load(whisper_assets_dir / "mel_filters.npz") as npz:
        return {n_mels: npz[f"mel_{n_mels}"] for n_mels in N_MELS}


@pytest.fixture(scope="module")
def jfk(jfk_path: Path) -> npt.NDArray[np.float32]:
    return decode_audio(jfk_path.read_bytes())


def reference_log_mel(
    audio: npt.NDArray[np.float32], filters: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """OpenAI's definition, written with torch: STFT, power, mel, log10, clamp, scale."""
    stft = torch.stft(
        torch.from_numpy(audio),
        n_fft=400,
        hop_length=160,
        window=torch.hann_window(400),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    power = stft[..., :-1].abs() ** 2
    log_spec = torch.clamp(torch.from_numpy(filters) @ power, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    result: npt.NDArray[np.float32] = ((log_spec + 4.0) / 4.0).numpy()
    return result


@pytest.mark.parametrize("n_mels", N_MELS)
def test_filterbank_matches_openai_npz(
    n_mels: int, openai_filters: dict[int, npt.NDArray[np.float32]]
) -> None:
    ours = mel_filters(n_mels)

    assert ours.shape == openai_filters[n_mels].shape == (n_mels, 201)
    np.testing.assert_allclose(ours, openai_filters[n_mels], rtol=0, atol=1e-6)


@pytest.mark.parametrize("n_mels", N_MELS)
def test_jfk_window_matches_the_reference(
    n_mels: int,
    jfk: npt.NDArray[np.float32],
    openai_filters: dict[int, npt.NDArray[np.float32]],
) -> None:
    features = window_features(jfk, n_mels)

    expected = reference_log_mel(pad_or_trim(jfk), openai_filters[n_mels])
    assert features.shape == expected.shape == (n_mels, N_FRAMES)
    assert features.dtype == np.float32
    assert np.abs(features - expected).max() < 1e-3


@pytest.mark.parametrize("n_mels", N_MELS)
def test_unpadded_speech_and_noise_match_the_reference(
    n_mels: int,
    jfk: npt.NDArray[np.float32],
    openai_filters: dict[int, npt.NDArray[np.float32]],
) -> None:
    noise = np.random.default_rng(7).normal(0, 0.1, 123_457).astype(np.float32)
    for audio in (jfk, noise):
        features = log_mel_spectrogram(audio, n_mels)

        expected = reference_log_mel(audio, openai_filters[n_mels])
        assert features.shape == expected.shape == (n_mels, len(audio) // 160)
        assert np.abs(features - expected).max() < 1e-3


def test_window_is_padded_or_trimmed_to_thirty_seconds(jfk: npt.NDArray[np.float32]) -> None:
    long_audio = np.tile(jfk, 4)  # 44 s

    trimmed = window_features(long_audio, 80)

    assert trimmed.shape == (80, N_FRAMES)
    # Same samples, same maths; a BLAS or FFT kernel may still round differently between calls.
    expected = log_mel_spectrogram(long_audio[:N_SAMPLES], 80)
    np.testing.assert_allclose(trimmed, expected, rtol=0, atol=FLOAT32_SLACK)
    assert window_features(jfk[:16000], 80).shape == (80, N_FRAMES)


def test_silence_is_flat_at_the_floor() -> None:
    features = window_features(np.zeros(16000, np.float32), 80)

    # log10 of the 1e-10 floor is -10 to within float32 rounding, which depends on the CPU's
    # log10 kernel (an AVX-512 one gives -10.000001, hence -1.5000002).
    np.testing.assert_allclose(
        features, np.full((80, N_FRAMES), (-10 + 4) / 4), rtol=0, atol=FLOAT32_SLACK
    )


@pytest.mark.parametrize("n_mels", [0, 64, 100, 129])
def test_only_80_or_128_mels(n_mels: int) -> None:
    with pytest.raises(ValueError, match="80, 128"):
        log_mel_spectrogram(np.zeros(1600, np.float32), n_mels)


@pytest.mark.parametrize("seconds", [0.0005, 0.01, 0.3, 1.0, 5.03, 17.0, 29.99, 30.0, 41.0])
def test_a_short_window_transforms_only_its_audio_and_matches_the_padded_window(
    jfk: npt.NDArray[np.float32], seconds: float
) -> None:
    """The padding's frames are skipped, not approximated: equal to the log-mel of the whole
    zero-padded 30 s window, whatever the length (JFK repeated, cut to `seconds`)."""
    audio = np.tile(jfk, 4)[: int(seconds * SAMPLE_RATE)]
    padded = log_mel_spectrogram(pad_or_trim(audio), 80)
    np.testing.assert_allclose(window_features(audio, 80), padded, rtol=0, atol=2e-5)
