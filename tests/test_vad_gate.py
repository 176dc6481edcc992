"""The client-side VAD gate on real speech with real pauses: what it sends, what it holds
back, and that the model still hears the first and last words."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tests.speech import HESTER, NIGHTFALL, load_pcm16k, normalise, to_s16le, wer, white_noise
from whisperwire.client import AsyncClient, AudioFormat
from whisperwire.client.vad_gate import GateSettings, VadGate, split_frames

BYTES_PER_SECOND = 32000
# A quiet room (about -70 dBFS) rather than digital zeros, so every stretch of the input
# is unique and the gate's output can be located in it byte for byte.
ROOM_NOISE = 0.0003


def quiet(seconds: float, seed: int) -> npt.NDArray[np.float32]:
    return white_noise(seconds, level=ROOM_NOISE, seed=seed)


@pytest.fixture(scope="module")
def talk() -> bytes:
    """1 s of room tone, a sentence, 1.5 s pause, a sentence, 1 s of room tone (15 s)."""
    first, second = load_pcm16k(NIGHTFALL), load_pcm16k(HESTER)
    return to_s16le(np.concatenate([quiet(1.0, 1), first, quiet(1.5, 2), second, quiet(1.0, 3)]))


def gate_through(audio: bytes, **settings: int) -> tuple[bytes, list[float]]:
    """(everything the gate sent, the times in seconds at which it reported a pause)."""
    gate = VadGate(GateSettings(**settings))
    sent, pauses = [], []
    for number, frame in enumerate(split_frames(audio, gate.settings.frame_bytes)):
        gated = gate.process(frame)
        sent.append(gated.audio)
        if gated.pause:
            pauses.append((number + 1) * gate.settings.frame_ms / 1000)
    return b"".join(sent), pauses


def first_sent_at(audio: bytes, sent: bytes) -> float:
    """Where in the input the first sent audio comes from (the gate opens with 2 frames)."""
    position = audio.find(sent[: 2 * 640])
    assert position >= 0
    return position / BYTES_PER_SECOND


def last_sent_until(audio: bytes, sent: bytes) -> float:
    position = audio.rfind(sent[-640:])
    assert position >= 0
    return (position + 640) / BYTES_PER_SECOND


def test_silence_is_held_back(talk: bytes) -> None:
    sent, _ = gate_through(talk)
    silence_seconds = 1.0 + 1.5 + 1.0
    assert len(sent) / BYTES_PER_SECOND < len(talk) / BYTES_PER_SECOND - silence_seconds / 2
    assert len(sent) % 640 == 0  # whole frames only


def test_pre_roll_starts_the_audio_earlier_by_exactly_its_length(talk: bytes) -> None:
    bare, _ = gate_through(talk, pre_roll_ms=0, hangover_ms=0)
    padded, _ = gate_through(talk, pre_roll_ms=200, hangover_ms=0)
    assert first_sent_at(talk, bare) >= 1.0  # not before the speech (room tone is not speech)
    assert first_sent_at(talk, bare) - first_sent_at(talk, padded) == pytest.approx(0.2)


def test_hangover_ends_the_audio_later_by_exactly_its_length(talk: bytes) -> None:
    bare, _ = gate_through(talk, pre_roll_ms=0, hangover_ms=0)
    padded, _ = gate_through(talk, pre_roll_ms=0, hangover_ms=400)
    assert last_sent_until(talk, padded) - last_sent_until(talk, bare) == pytest.approx(0.4)


def test_a_long_pause_is_reported_once_in_each_gap(talk: bytes) -> None:
    _, pauses = gate_through(talk, segment_silence_ms=700)
    second_sentence = 1.0 + len(load_pcm16k(NIGHTFALL)) / 16000 + 1.5
    assert len(pauses) == 2
    assert 1.0 + 0.7 < pauses[0] < second_sentence < pauses[1]
    _, none = gate_through(talk, segment_silence_ms=0)
    assert none == []


def test_frames_must_have_the_configured_size() -> None:
    gate = VadGate(GateSettings(frame_ms=30))
    assert gate.settings.frame_bytes == 960
    with pytest.raises(ValueError):
        gate.process(b"\0" * 640)
    with pytest.raises(ValueError):
        GateSettings(frame_ms=25)


async def test_gated_audio_keeps_the_first_and_last_words(talk: bytes, tiny_target: str) -> None:
    sent, _ = gate_through(talk)
    async with AsyncClient(tiny_target) as client:
        ungated = (await client.transcribe(talk, raw=AudioFormat())).text
        gated = (await client.transcribe(sent, raw=AudioFormat())).text

    reference = f"{NIGHTFALL.reference} {HESTER.reference}"
    words, ungated_words = normalise(gated).split(), normalise(ungated).split()
    assert (words[0], words[-1]) == (ungated_words[0], ungated_words[-1])
    assert (words[0], words[-1]) == ("after", "apprehension")
    assert wer(ungated, gated) <= 0.1
    assert wer(reference, gated) <= 0.15
