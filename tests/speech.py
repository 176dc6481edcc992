"""Real speech for tests: the clips in tests/data, their transcripts, WER, synthetic audio."""

from __future__ import annotations

import io
import re
import wave
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
import numpy.typing as npt

AUDIO_DIR = Path(__file__).resolve().parent / "data"  # sources and licences: data/README.md
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Clip:
    name: str
    reference: str
    language: str

    @property
    def path(self) -> Path:
        return AUDIO_DIR / self.name

    def read(self) -> bytes:
        return self.path.read_bytes()


JFK = Clip(
    "jfk.flac",
    "And so my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country.",
    "en",
)
NIGHTFALL = Clip(
    "librispeech-1089-134686-0001.wav",
    "AFTER EARLY NIGHTFALL THE YELLOW LAMPS WOULD LIGHT UP HERE AND THERE "
    "THE SQUALID QUARTER OF THE BROTHELS",
    "en",
)
HESTER = Clip(
    "librispeech-1221-135766-0002.wav",
    "YET THESE THOUGHTS AFFECTED HESTER PRYNNE LESS WITH HOPE THAN APPREHENSION",
    "en",
)
CHINESE = Clip("zh-mid.wav", "大学生利用漏洞免费吃肯德基获刑", "zh")
ENGLISH_CLIPS = (JFK, NIGHTFALL, HESTER)


def normalise(text: str) -> str:
    text = re.sub(r"[^\w\s']", " ", text.lower())
    return " ".join(text.split())


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalise(reference), normalise(hypothesis) or "<empty>"))


def corpus_wer(pairs: list[tuple[str, str]]) -> float:
    refs = [normalise(r) for r, _ in pairs]
    hyps = [normalise(h) or "<empty>" for _, h in pairs]
    return float(jiwer.wer(refs, hyps))


def load_pcm16k(clip: Clip) -> npt.NDArray[np.float32]:
    """The clip as 16 kHz mono float32, decoded with the product's own decoder."""
    from whisperwire.server.audio import decode_audio

    return decode_audio(clip.read())


def silence(seconds: float) -> npt.NDArray[np.float32]:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


def white_noise(seconds: float, level: float = 0.05, seed: int = 0) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(int(seconds * SAMPLE_RATE)) * level).astype(np.float32)


def to_wav_bytes(samples: npt.NDArray[np.float32], rate: int = SAMPLE_RATE) -> bytes:
    """A 16-bit WAV file; `samples` is mono, or (frames, channels) for several channels."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1 if samples.ndim == 1 else samples.shape[1])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def side_by_side(*channels: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(frames, channels): each clip on its own channel, the shorter ones padded with silence."""
    frames = max(len(c) for c in channels)
    out = np.zeros((frames, len(channels)), dtype=np.float32)
    for i, samples in enumerate(channels):
        out[: len(samples), i] = samples
    return out


def to_s16le(samples: npt.NDArray[np.float32]) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def chunks(data: bytes, size: int = 640) -> list[bytes]:
    """20 ms of 16 kHz s16le mono is 640 bytes."""
    return [data[i : i + size] for i in range(0, len(data), size)]
