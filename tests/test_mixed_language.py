"""Audio that switches language: each segment decoded and tagged in its own language."""

from __future__ import annotations

import numpy as np

from tests.speech import CHINESE, HESTER, NIGHTFALL, load_pcm16k, silence, wer
from whisperwire.server.domain import DecodeOptions
from whisperwire.server.pipeline import SpeechPipeline

CLIPS = (HESTER, CHINESE, NIGHTFALL)
MIXED = np.concatenate([part for clip in CLIPS for part in (load_pcm16k(clip), silence(1.0))])


async def test_each_segment_has_its_own_language(base_pipeline: SpeechPipeline) -> None:
    options = DecodeOptions(detect_language_per_segment=True, timestamps=True)
    transcript = await base_pipeline.transcribe(MIXED, options)
    spoken = [(s.language, s.text) for s in transcript.segments]
    assert [language for language, _ in spoken] == [c.language for c in CLIPS], spoken
    assert all(s.language_probability and s.language_probability > 0.5 for s in transcript.segments)
    assert wer(HESTER.reference, spoken[0][1]) <= 0.1
    assert wer(NIGHTFALL.reference, spoken[2][1]) <= 0.1
    # Chinese comes out in Chinese characters (traditional or simplified), not translated.
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in spoken[1][1]) >= 10, spoken[1]
    assert transcript.language == "en"  # spoken longest


async def test_without_the_option_the_first_window_decides(base_pipeline: SpeechPipeline) -> None:
    transcript = await base_pipeline.transcribe(MIXED, DecodeOptions(timestamps=True))
    assert {s.language for s in transcript.segments} == {"en"}
    assert transcript.language == "en"


async def test_a_given_language_is_kept(base_pipeline: SpeechPipeline) -> None:
    options = DecodeOptions(language="en", detect_language_per_segment=True)
    transcript = await base_pipeline.transcribe(MIXED, options)
    assert {s.language for s in transcript.segments} == {"en"}
    assert all(s.language_probability is None for s in transcript.segments)
