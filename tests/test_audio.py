"""Audio decoding through real containers and codecs (encoded in-process with PyAV)."""

from __future__ import annotations

import io
import itertools
import tracemalloc
import wave
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whisperwire.server.audio import SAMPLE_RATE, PcmDecoder, decode_audio, decode_pcm
from whisperwire.server.errors import (
    AudioDecodeError,
    AudioTooLongError,
    EmptyAudioError,
    InvalidChannelCountError,
    InvalidSamplesError,
    UnsupportedEncodingError,
    UnsupportedSampleRateError,
)

LEFT_HZ, RIGHT_HZ, AMPLITUDE = 440.0, 1000.0, 0.4
# Samples lie in [-1, 1], where float32 steps are at most 6e-8: resampled or mixed samples may
# round differently on another CPU or code path by a few steps, a real defect by far more.
SAMPLE_SLACK = 1e-6


def stereo_tones(rate: int, seconds: float) -> npt.NDArray[np.float32]:
    """[2, n]: a 440 Hz tone on the left, a 1 kHz tone on the right."""
    t = np.arange(int(rate * seconds)) / rate
    left = AMPLITUDE * np.sin(2 * np.pi * LEFT_HZ * t)
    right = AMPLITUDE * np.sin(2 * np.pi * RIGHT_HZ * t)
    return np.stack([left, right]).astype(np.float32)


def encode(
    planar: npt.NDArray[np.float32], rate: int, container: str, codec: str, **options: str
) -> bytes:
    """Encode [channels, n] float samples with a real encoder into an in-memory container."""
    out = io.BytesIO()
    with av.open(out, "w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=rate, layout="stereo", options=options)
        assert isinstance(stream, av.AudioStream)
        encoder_format = stream.codec_context.format.name
        resampler = av.AudioResampler(format=encoder_format, layout="stereo", rate=rate)
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, planar.shape[1], frame_size):
            block = planar[:, start : start + frame_size]
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
            frame.sample_rate = rate
            for converted in resampler.resample(frame):
                muxer.mux(stream.encode(converted))
        muxer.mux(stream.encode(None))
    return out.getvalue()


def wav_bytes(pcm: bytes, rate: int, channels: int, sample_width: int = 2) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(sample_width)
        writer.setframerate(rate)
        writer.writeframes(pcm)
    return out.getvalue()


def tone_amplitude(audio: npt.NDArray[np.float32], hz: float) -> float:
    """Amplitude of a sinusoid at `hz` in 16 kHz audio (Hann-windowed spectrum peak)."""
    window = np.hanning(len(audio))
    spectrum = np.abs(np.fft.rfft(audio * window)) * 2 / window.sum()
    bin_index = round(hz * len(audio) / SAMPLE_RATE)
    return float(spectrum[bin_index - 2 : bin_index + 3].max())


def expected_mono_tones(seconds: float) -> npt.NDArray[np.float32]:
    mono: npt.NDArray[np.float32] = stereo_tones(SAMPLE_RATE, seconds).mean(axis=0)
    return mono


# --- containers -----------------------------------------------------------------------------


CONTAINERS = [
    pytest.param("wav", "pcm_s16le", 44100, {}, id="wav-s16"),
    pytest.param("flac", "flac", 44100, {}, id="flac"),
    pytest.param("mp3", "libmp3lame", 44100, {}, id="mp3"),
    pytest.param("ogg", "libopus", 48000, {}, id="ogg-opus"),
    pytest.param("webm", "libopus", 48000, {}, id="webm-opus"),
    pytest.param("ipod", "aac", 44100, {}, id="m4a-aac"),
]


@pytest.mark.parametrize(("container", "codec", "rate", "options"), CONTAINERS)
def test_every_container_decodes_to_16k_mono_with_both_channels_mixed(
    container: str, codec: str, rate: int, options: dict[str, str]
) -> None:
    seconds = 3.0
    data = encode(stereo_tones(rate, seconds), rate, container, codec, **options)

    audio = decode_audio(data)

    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / SAMPLE_RATE - seconds) < 0.1
    middle = audio[SAMPLE_RATE // 2 : -SAMPLE_RATE // 2]
    # Mono is (L + R) / 2: each tone at half its channel's amplitude.
    for hz in (LEFT_HZ, RIGHT_HZ):
        assert tone_amplitude(middle, hz) == pytest.approx(AMPLITUDE / 2, rel=0.1)


@pytest.mark.parametrize(("container", "codec"), [("wav", "pcm_s16le"), ("flac", "flac")])
def test_lossless_containers_match_the_signal_sample_by_sample(container: str, codec: str) -> None:
    data = encode(stereo_tones(48000, 2.0), 48000, container, codec)

    audio = decode_audio(data)

    expected = expected_mono_tones(2.0)
    assert len(audio) == len(expected)
    middle = slice(1000, -1000)  # away from the resampler's edge transients
    np.testing.assert_allclose(audio[middle], expected[middle], atol=2e-3)


def test_jfk_flac_matches_faster_whisper_decoding(jfk_path: Path) -> None:
    from faster_whisper.audio import decode_audio as reference_decode

    audio = decode_audio(jfk_path.read_bytes())

    reference = reference_decode(str(jfk_path), sampling_rate=SAMPLE_RATE)
    assert len(audio) == len(reference) == 11 * SAMPLE_RATE
    # The reference goes through 16-bit samples; the mix and resampling are the same.
    np.testing.assert_allclose(audio, reference, atol=1e-4)


def test_a_16k_mono_wav_decodes_to_its_exact_samples(audio_dir: Path) -> None:
    path = audio_dir / "librispeech-1089-134686-0001.wav"
    with wave.open(str(path)) as reader:
        pcm = reader.readframes(reader.getnframes())

    audio = decode_audio(path.read_bytes())

    # Exact on any CPU: scaling by a power of two only changes the exponent.
    np.testing.assert_array_equal(audio, np.frombuffer(pcm, "<i2") / np.float32(32768))


def test_concatenated_mp3s_of_two_rates_decode_whole() -> None:
    first = encode(stereo_tones(44100, 1.5), 44100, "mp3", "libmp3lame")
    second = encode(stereo_tones(22050, 1.5), 22050, "mp3", "libmp3lame")

    audio = decode_audio(first + second)

    assert abs(len(audio) / SAMPLE_RATE - 3.0) < 0.15
    for half in (audio[4000:20000], audio[-20000:-4000]):
        assert tone_amplitude(half, LEFT_HZ) == pytest.approx(AMPLITUDE / 2, rel=0.1)


def test_truncated_file_yields_the_audio_before_the_cut(jfk_path: Path) -> None:
    data = jfk_path.read_bytes()
    whole = decode_audio(data)

    partial = decode_audio(data[: len(data) // 2])

    assert 4 * SAMPLE_RATE < len(partial) < 7 * SAMPLE_RATE
    np.testing.assert_allclose(partial[: 4 * SAMPLE_RATE], whole[: 4 * SAMPLE_RATE], atol=1e-6)


def test_empty_bytes_are_empty_audio() -> None:
    with pytest.raises(EmptyAudioError):
        decode_audio(b"")


def test_a_container_without_samples_is_empty_audio() -> None:
    with pytest.raises(EmptyAudioError):
        decode_audio(wav_bytes(b"", 16000, 1))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"this is not audio at all " * 40, id="text"),
        pytest.param(bytes(range(256)) * 20, id="bytes"),
        pytest.param(b"RIFF\x00\x00", id="cut-header"),
    ],
)
def test_garbage_is_a_decode_error_saying_what_failed(data: bytes) -> None:
    with pytest.raises(AudioDecodeError, match="cannot read the audio container"):
        decode_audio(data)


def test_a_container_with_only_video_has_no_audio_stream() -> None:
    out = io.BytesIO()
    with av.open(out, "w", format="matroska") as muxer:
        stream = muxer.add_stream("ffv1", rate=5)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
        muxer.mux(stream.encode(frame))
        muxer.mux(stream.encode(None))

    with pytest.raises(AudioDecodeError, match="no audio stream"):
        decode_audio(out.getvalue())


def test_nan_samples_in_a_float_wav_are_rejected() -> None:
    samples = np.zeros((2, 16000), np.float32)
    samples[0, 5000] = np.nan
    data = encode(samples, 16000, "wav", "pcm_f32le")

    with pytest.raises(InvalidSamplesError):
        decode_audio(data)


def test_audio_over_the_limit_is_too_long() -> None:
    data = encode(stereo_tones(44100, 3.0), 44100, "flac", "flac")

    assert len(decode_audio(data, max_seconds=3.5)) > 0
    with pytest.raises(AudioTooLongError, match="maximum of 2 s"):
        decode_audio(data, max_seconds=2)


def test_a_long_file_is_rejected_without_decoding_it_all() -> None:
    minutes = 10
    data = wav_bytes(bytes(8000 * 2 * 60 * minutes), 8000, 1)
    full_decode_bytes = minutes * 60 * SAMPLE_RATE * 4  # float32 output of the whole file

    tracemalloc.start()
    try:
        with pytest.raises(AudioTooLongError):
            decode_audio(data, max_seconds=5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < full_decode_bytes / 20


# --- raw PCM ----------------------------------------------------------------------------------


def pcm_s16(planar: npt.NDArray[np.float32]) -> bytes:
    interleaved = planar.T.reshape(-1)
    return (np.clip(interleaved, -1, 1) * 32767).astype("<i2").tobytes()


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def test_16k_mono_s16_passes_straight_through_with_no_delay(audio_dir: Path) -> None:
    with wave.open(str(audio_dir / "librispeech-1221-135766-0002.wav")) as reader:
        pcm = reader.readframes(reader.getnframes())
    decoder = PcmDecoder("s16le", 16000, 1)
    chunks = [pcm[i : i + 640] for i in range(0, len(pcm), 640)]  # 20 ms chunks

    outputs = [decoder.push(chunk) for chunk in chunks]

    # No resampler: every whole sample comes out of the push that completed it.
    assert all(len(out) == len(chunk) // 2 for out, chunk in zip(outputs, chunks, strict=True))
    assert len(decoder.flush()) == 0
    expected = np.frombuffer(pcm, "<i2") / np.float32(32768)
    np.testing.assert_array_equal(np.concatenate(outputs), expected)


def test_odd_sized_chunks_carry_partial_samples_over() -> None:
    pcm = (np.arange(-500, 500) * 30).astype("<i2").tobytes()
    decoder = PcmDecoder("s16le", 16000, 1)

    outputs = [decoder.push(chunk) for chunk in split_at(pcm, [1, 2, 3, 641, 1001])]

    assert [len(out) for out in outputs] == [0, 1, 0, 319, 180, 500]
    np.testing.assert_array_equal(np.concatenate(outputs), np.arange(-500, 500) * 30 / 32768)


def test_resampled_stream_equals_one_shot_and_the_same_pcm_in_a_wav() -> None:
    pcm = pcm_s16(stereo_tones(44100, 2.0))
    decoder = PcmDecoder("s16le", 44100, 2)
    cuts = [1, 3, 1001, 4097, 60001, 60002, 200003]

    streamed = np.concatenate(
        [*(decoder.push(chunk) for chunk in split_at(pcm, cuts)), decoder.flush()]
    )

    one_shot = decode_pcm(pcm, "s16le", 44100, 2)
    # The resampler's SIMD body and scalar tail split the samples at each chunk's edges, so the
    # streamed samples may differ from the one-shot ones in the last bits, never more.
    np.testing.assert_allclose(streamed, one_shot, rtol=0, atol=SAMPLE_SLACK)
    np.testing.assert_allclose(one_shot, decode_audio(wav_bytes(pcm, 44100, 2)), atol=1e-6)
    assert len(one_shot) == 2 * SAMPLE_RATE
    middle = one_shot[4000:-4000]
    assert tone_amplitude(middle, LEFT_HZ) == pytest.approx(AMPLITUDE / 2, rel=0.02)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=9600 * 4), max_size=8))
def test_any_chunking_of_a_float_stream_gives_the_same_samples(cuts: list[int]) -> None:
    rate, seconds = 24000, 0.4
    planar = stereo_tones(rate, seconds)
    pcm = planar.T.astype("<f4").tobytes()
    decoder = PcmDecoder("f32le", rate, 2)

    outputs = [decoder.push(chunk) for chunk in split_at(pcm, cuts)]

    streamed = np.concatenate([*outputs, decoder.flush()])
    np.testing.assert_allclose(
        streamed, decode_pcm(pcm, "f32le", rate, 2), rtol=0, atol=SAMPLE_SLACK
    )


def test_eight_channels_mix_down_to_mono() -> None:
    rate = 48000
    tone = stereo_tones(rate, 1.0)[0]
    pcm = np.repeat(tone[:, None], 8, axis=1).astype("<f4").tobytes()

    audio = decode_pcm(pcm, "f32le", rate, 8)

    assert len(audio) == SAMPLE_RATE
    assert tone_amplitude(audio[2000:-2000], LEFT_HZ) > AMPLITUDE / 4


def test_nan_in_a_float_stream_is_rejected() -> None:
    decoder = PcmDecoder("f32le", 16000, 1)
    decoder.push(np.zeros(100, "<f4").tobytes())

    with pytest.raises(InvalidSamplesError):
        decoder.push(np.array([0.0, np.inf], "<f4").tobytes())


@pytest.mark.parametrize(
    ("encoding", "rate", "channels", "error", "reason"),
    [
        ("mulaw", 16000, 1, UnsupportedEncodingError, "UNSUPPORTED_ENCODING"),
        ("s16le", 7999, 1, UnsupportedSampleRateError, "UNSUPPORTED_SAMPLE_RATE"),
        ("s16le", 192001, 1, UnsupportedSampleRateError, "UNSUPPORTED_SAMPLE_RATE"),
        ("s16le", 16000, 0, InvalidChannelCountError, "UNSUPPORTED_CHANNEL_COUNT"),
        ("f32le", 16000, 9, InvalidChannelCountError, "UNSUPPORTED_CHANNEL_COUNT"),
    ],
)
def test_stream_formats_are_validated_up_front(
    encoding: str, rate: int, channels: int, error: type[Exception], reason: str
) -> None:
    with pytest.raises(error) as raised:
        PcmDecoder(encoding, rate, channels)  # type: ignore[arg-type]
    assert getattr(raised.value, "reason", None) == reason


def test_extreme_supported_rates_resample_to_16k() -> None:
    for rate in (8000, 192000):
        audio = decode_pcm(bytes(rate * 2), "s16le", rate, 1)
        assert abs(len(audio) - SAMPLE_RATE) <= 1


def test_one_shot_pcm_must_be_whole_frames_and_within_the_limit() -> None:
    with pytest.raises(EmptyAudioError):
        decode_pcm(b"", "s16le", 16000, 1)
    with pytest.raises(AudioDecodeError, match="not a whole number of 4-byte frames"):
        decode_pcm(bytes(4001), "s16le", 16000, 2)
    with pytest.raises(AudioTooLongError):
        decode_pcm(bytes(16000 * 2 * 3), "s16le", 16000, 1, max_seconds=2)
