"""Voice-activity decisions on stream chunks of any size, against the whole clip's."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.speech import HESTER, JFK, load_pcm16k, silence
from whisperwire.server import vad

# Speech, a pause, speech: decisions of both kinds.
CLIP = np.concatenate([load_pcm16k(JFK)[:48_000], silence(1.0), load_pcm16k(HESTER)[:48_000]])
WHOLE = vad.speech_flags(CLIP)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=2_000), min_size=1, max_size=12))
def test_a_stream_in_chunks_of_any_size_gets_the_whole_clips_decisions(sizes: list[int]) -> None:
    streaming, flags, start = vad.StreamingVad(), [], 0
    for size in itertools.cycle(sizes):
        if start >= len(CLIP):
            break
        flags += streaming.push(CLIP[start : start + size])
        start += size

    assert flags == WHOLE
    assert True in WHOLE and False in WHOLE


def test_twenty_ms_chunks_decide_each_thirty_ms_frame_once_it_is_complete() -> None:
    streaming = vad.StreamingVad()

    counts = [len(streaming.push(CLIP[i : i + 320])) for i in range(0, 320 * 6, 320)]

    assert counts == [0, 1, 1, 0, 1, 1]  # 20, 40, 60, 80, 100, 120 ms: frames end at 30, 60...


def test_pcm16_conversion_scales_and_clips_without_overflowing() -> None:
    audio = np.array([-3e38, -2.0, -1.0, -0.5, 0.0, 1e-5, 0.5, 1.0, 3e38], dtype=np.float32)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way
        pcm = np.frombuffer(vad.to_pcm16(audio), "<i2")

    expected = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")  # the formula it replaced
    np.testing.assert_array_equal(pcm, expected)
    assert pcm[0] == -32767 and pcm[-1] == 32767
