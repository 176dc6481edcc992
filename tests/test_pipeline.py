"""The speech pipeline on the real CPU engine with real speech (issue: speech pipeline)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.speech import (
    CHINESE,
    ENGLISH_CLIPS,
    JFK,
    SAMPLE_RATE,
    corpus_wer,
    load_pcm16k,
    normalise,
    silence,
    to_wav_bytes,
    wer,
    white_noise,
)
from whisperwire.server import vad
from whisperwire.server.domain import DecodeOptions, Task
from whisperwire.server.errors import (
    AudioTooLongError,
    InvalidOptionError,
    UnsupportedLanguageError,
)
from whisperwire.server.pipeline import SpeechPipeline


@pytest.fixture(params=["tiny_pipeline", "base_pipeline"])
def any_pipeline(request: pytest.FixtureRequest) -> SpeechPipeline:
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


async def test_english_clips_wer_within_bound(any_pipeline: SpeechPipeline) -> None:
    pairs = []
    for clip in ENGLISH_CLIPS:
        transcript = await any_pipeline.transcribe_bytes(clip.read(), DecodeOptions(language="en"))
        pairs.append((clip.reference, transcript.text))
    assert corpus_wer(pairs) <= 0.08, pairs


async def test_jfk_resampled_from_44k_stereo_flac(tiny_pipeline: SpeechPipeline) -> None:
    transcript = await tiny_pipeline.transcribe_bytes(JFK.read(), DecodeOptions(timestamps=True))
    assert wer(JFK.reference, transcript.text) <= 0.1
    assert transcript.duration == pytest.approx(11.0, abs=0.05)
    assert transcript.segments and transcript.segments[0].start < 1.0
    assert all(s.end <= 11.01 for s in transcript.segments)
    assert all(
        s.avg_logprob is not None and s.no_speech_prob is not None for s in transcript.segments
    )
    assert transcript.timings.total > 0 and transcript.timings.engine > 0


async def test_language_identification(base_pipeline: SpeechPipeline) -> None:
    zh = await base_pipeline.transcribe_bytes(CHINESE.read(), DecodeOptions())
    en = await base_pipeline.transcribe_bytes(JFK.read(), DecodeOptions())
    assert (zh.language, en.language) == ("zh", "en")
    assert zh.language_probability is not None and zh.language_probability > 0.5
    assert en.language_probability is not None and en.language_probability > 0.5
    assert any("\u4e00" <= ch <= "\u9fff" for ch in zh.text)


async def test_translate_chinese_to_english(base_pipeline: SpeechPipeline) -> None:
    # Greedy only: base's greedy translation fails the fallback checks, and the sampled
    # fallbacks draw from an unseeded generator (about one run in ten gave one word).
    transcript = await base_pipeline.transcribe_bytes(
        CHINESE.read(), DecodeOptions(task=Task.TRANSLATE, temperatures=(0.0,))
    )
    assert transcript.language == "zh"
    # base translates this clip loosely; it must be English words.
    letters = [ch for ch in transcript.text if ch.isalpha()]
    ascii_share = sum(ch.isascii() for ch in letters) / max(1, len(letters))
    assert len(transcript.text.split()) >= 3 and ascii_share >= 0.8, transcript.text


async def test_long_form_keeps_every_clip_in_order_with_absolute_offsets(
    tiny_pipeline: SpeechPipeline,
) -> None:
    pieces, starts, clips = [], [], []
    cursor = 0.0
    for _ in range(3):
        for clip in ENGLISH_CLIPS:
            gap = silence(3.0)
            samples = load_pcm16k(clip)
            pieces += [gap, samples]
            starts.append(cursor + 3.0)
            clips.append(clip)
            cursor += 3.0 + len(samples) / SAMPLE_RATE
    audio = np.concatenate(pieces)
    assert len(audio) / SAMPLE_RATE > 90

    transcript = await tiny_pipeline.transcribe(
        audio, DecodeOptions(language="en", timestamps=True)
    )

    text = normalise(transcript.text)
    position = 0
    for clip in clips:  # every clip's words, in order
        first_words = " ".join(normalise(clip.reference).split()[:3])
        found = text.find(first_words, position)
        assert found >= 0, (first_words, text[position:])
        position = found + len(first_words)
    seg_starts = [s.start for s in transcript.segments]
    assert seg_starts == sorted(seg_starts)
    for start in starts:  # a segment begins within 1 s of where each clip begins
        assert min(abs(s - start) for s in seg_starts) <= 1.0, (start, seg_starts)
    assert transcript.segments[-1].end <= len(audio) / SAMPLE_RATE + 0.01


@pytest.mark.parametrize("make", [lambda: silence(10.0), lambda: white_noise(10.0)])
async def test_silence_and_noise_give_empty_text(
    any_pipeline: SpeechPipeline, make: object
) -> None:
    audio = make()  # type: ignore[operator]
    transcript = await any_pipeline.transcribe_bytes(to_wav_bytes(audio), DecodeOptions())
    assert transcript.text == ""
    assert transcript.segments == []


async def test_initial_prompt_is_accepted(tiny_pipeline: SpeechPipeline) -> None:
    transcript = await tiny_pipeline.transcribe_bytes(
        JFK.read(), DecodeOptions(initial_prompt="President Kennedy's inaugural address.")
    )
    assert wer(JFK.reference, transcript.text) <= 0.1


async def test_beam_search(tiny_pipeline: SpeechPipeline) -> None:
    transcript = await tiny_pipeline.transcribe_bytes(JFK.read(), DecodeOptions(beam_size=4))
    assert wer(JFK.reference, transcript.text) <= 0.1


@pytest.mark.parametrize(
    ("options", "error", "field"),
    [
        (DecodeOptions(language="xx"), UnsupportedLanguageError, "language"),
        (DecodeOptions(task=Task.TRANSLATE), InvalidOptionError, "task"),
        (DecodeOptions(beam_size=0), InvalidOptionError, "beam_size"),
        (DecodeOptions(temperatures=(1.5,)), InvalidOptionError, "temperature"),
    ],
)
def test_bad_options_raise_typed_errors(
    tiny_pipeline: SpeechPipeline, options: DecodeOptions, error: type[Exception], field: str
) -> None:
    # tiny.en is English-only, so translate is impossible there.
    with pytest.raises(error) as raised:
        tiny_pipeline.validate(options)
    assert getattr(raised.value, "field", None) == field


async def test_audio_over_the_limit_is_rejected(tiny_pipeline: SpeechPipeline) -> None:
    limited = SpeechPipeline(
        tiny_pipeline.tokenizer, tiny_pipeline.engine, tiny_pipeline.runner, max_audio_seconds=5.0
    )
    with pytest.raises(AudioTooLongError):
        await limited.transcribe_bytes(JFK.read(), DecodeOptions())


async def test_speech_spans_found_upstream_replace_the_detector(
    tiny_pipeline: SpeechPipeline,
) -> None:
    """A stream's session has already run voice-activity detection: the pipeline decodes the
    spans it is given and does not look for speech again."""
    samples = load_pcm16k(JFK)
    options = DecodeOptions(language="en")
    told_silent = await tiny_pipeline.transcribe(samples, options, speech=[])
    assert told_silent.text == "" and told_silent.timings.engine == 0.0  # no engine call
    spans = vad.speech_spans(samples)
    told = await tiny_pipeline.transcribe(samples, options, speech=spans)
    found = await tiny_pipeline.transcribe(samples, options)
    assert told.text == found.text
    assert wer(JFK.reference, told.text) <= 0.1


def test_options_are_normalised_once_by_validate(tiny_pipeline: SpeechPipeline) -> None:
    assert tiny_pipeline.validate(DecodeOptions(language="English")).language == "en"
    assert tiny_pipeline.validate(DecodeOptions(word_timestamps=True)).word_timestamps
    unaligned = SpeechPipeline(
        tiny_pipeline.tokenizer,
        replace(tiny_pipeline.engine, supports_word_timestamps=False),
        tiny_pipeline.runner,
    )
    with pytest.raises(InvalidOptionError) as raised:
        unaligned.validate(DecodeOptions(word_timestamps=True))
    assert raised.value.field == "enable_word_timestamps"
    assert "cannot time words" in str(raised.value)
