"""What the word-timestamp tests share: pairing one transcript's words with another's, the
invariants every transcript with words keeps, and the timing-delta figures they publish."""

from __future__ import annotations

import difflib
import statistics

from tests.speech import normalise
from whisperwire.server.domain import Transcript

TimedWord = tuple[str, float, float]  # text, start, end (seconds)
MAX_MEDIAN_DELTA = 0.060  # seconds, for both word starts and word ends


def matched_words(
    ours: list[TimedWord], theirs: list[TimedWord]
) -> list[tuple[TimedWord, TimedWord]]:
    """Pairs of the same word in both sequences (the two decoders may differ by a word)."""
    a = [normalise(w[0]) for w in ours]
    b = [normalise(w[0]) for w in theirs]
    return [
        (ours[block.a + k], theirs[block.b + k])
        for block in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks()
        for k in range(block.size)
    ]


def timed_words(transcript: Transcript) -> list[TimedWord]:
    return [(w.text, w.start, w.end) for s in transcript.segments for w in s.words]


def assert_words_inside_segments_in_order(transcript: Transcript) -> None:
    previous_end = 0.0
    for segment in transcript.segments:
        assert segment.words, segment
        assert "".join(w.text for w in segment.words).strip() == segment.text
        for word in segment.words:
            assert segment.start <= word.start <= word.end <= segment.end, (segment, word)
            assert word.start >= previous_end, (word, previous_end)
            assert 0.0 <= word.probability <= 1.0
            previous_end = word.end


def delta_figures(pairs: list[tuple[TimedWord, TimedWord]]) -> dict[str, float]:
    """Matched words, and the median and 90th percentile of |Δstart| and |Δend| in ms."""
    starts = [abs(o[1] - t[1]) for o, t in pairs]
    ends = [abs(o[2] - t[2]) for o, t in pairs]
    return {
        "words": len(pairs),
        "median_abs_start_delta_ms": round(1000 * statistics.median(starts), 1),
        "median_abs_end_delta_ms": round(1000 * statistics.median(ends), 1),
        "p90_abs_start_delta_ms": round(1000 * statistics.quantiles(starts, n=10)[-1], 1),
        "p90_abs_end_delta_ms": round(1000 * statistics.quantiles(ends, n=10)[-1], 1),
    }


def assert_close_in_time(figures: dict[str, float]) -> None:
    limit = 1000 * MAX_MEDIAN_DELTA
    assert figures["median_abs_start_delta_ms"] <= limit, figures
    assert figures["median_abs_end_delta_ms"] <= limit, figures
