"""Spoken phrases for the load tier, cut from the real speech clips at the speakers' pauses.

tiny.en hears these reliably one at a time. Joined into longer unique phrases (three pieces,
504 orders) it drops everything after the first pause in 166 of 252 tried, and espeak-ng
phrases ("stream number N", colour and animal pairs) come back wrong in a third to half of
cases, so neither can tell cross-talk from a bad transcript. Streams therefore rotate
through the nine pieces, and each utterance is fingerprinted by where it sits on its
stream's audio clock instead (see load_client.StreamPlan).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tests.speech import HESTER, JFK, NIGHTFALL, SAMPLE_RATE, Clip, load_pcm16k, to_s16le, wer


@dataclass(frozen=True)
class Piece:
    clip: Clip
    start: float
    end: float
    text: str


PIECES = (
    Piece(JFK, 0.0, 2.3, "and so my fellow americans"),
    Piece(JFK, 3.0, 4.3, "ask not"),
    Piece(JFK, 4.9, 7.7, "what your country can do for you"),
    Piece(JFK, 7.9, 11.0, "ask what you can do for your country"),
    Piece(NIGHTFALL, 0.3, 1.76, "after early nightfall"),
    Piece(NIGHTFALL, 1.76, 4.0, "the yellow lamps would light up here and there"),
    Piece(NIGHTFALL, 4.0, 6.3, "the squalid quarter of the brothels"),
    Piece(HESTER, 0.3, 2.5, "yet these thoughts affected hester prynne"),
    Piece(HESTER, 2.5, 4.7, "less with hope than apprehension"),
)
TEXTS = [piece.text for piece in PIECES]


@dataclass(frozen=True)
class Phrase:
    text: str
    pcm: bytes
    """16 kHz mono s16le."""


@functools.cache
def phrase_for(index: int) -> Phrase:
    """Piece number `index` (modulo their count) as PCM."""
    piece = PIECES[index % len(PIECES)]
    samples = _clip_audio(piece.clip)
    cut = samples[int(piece.start * SAMPLE_RATE) : int(piece.end * SAMPLE_RATE)]
    return Phrase(piece.text, to_s16le(cut))


def closest_text(transcript: str) -> tuple[str, float]:
    """The piece text closest to `transcript`, and its WER."""
    scores = [wer(text, transcript) for text in TEXTS]
    best = int(np.argmin(scores))
    return TEXTS[best], scores[best]


@functools.cache
def _clip_audio(clip: Clip) -> npt.NDArray[np.float32]:
    return load_pcm16k(clip)
