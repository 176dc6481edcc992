"""Word timestamps from a token-to-frame alignment.

An engine aligns a window's text tokens to its 20 ms encoder frames (a monotonic path found by
dynamic time warping over the cross-attention of the model's alignment heads). Here the tokens
are grouped into words, each word takes the frames where the path first reaches its first
token and the token after its last, punctuation joins its neighbour, and the words are shared
out to the window's segments and kept inside them. The approach is Whisper's
(openai/whisper `timing.py`), as faster-whisper also applies it.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from whisperwire.server.domain import Word
from whisperwire.server.engine import Alignment
from whisperwire.server.tokenizer import WhisperTokenizer

SECONDS_PER_FRAME = 0.02  # one encoder frame: two 10 ms log-mel hops
# Languages written without spaces between words: each character stands alone.
UNSPACED_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
PREPEND_PUNCTUATION = "\"'“¿([{-"
APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"
SENTENCE_END = ".。!！?？"
MAX_MEDIAN_WORD_SECONDS = 0.7


@dataclass(frozen=True)
class _Piece:
    """A word with its tokens, in seconds from the start of its window."""

    text: str
    tokens: list[int]
    start: float
    end: float
    probability: float


def split_words(
    tokenizer: WhisperTokenizer, tokens: Sequence[int], language: str | None
) -> list[tuple[str, list[int]]]:
    """(word text, its tokens) for text tokens, in order; every token lands in one word."""
    pieces = _unicode_pieces(tokenizer, tokens)
    if language in UNSPACED_LANGUAGES:
        return pieces
    words: list[tuple[str, list[int]]] = []
    for text, ids in pieces:
        starts_word = text.startswith(" ") or text.strip() in string.punctuation
        if not words or starts_word:
            words.append((text, list(ids)))
        else:
            last_text, last_ids = words[-1]
            words[-1] = (last_text + text, last_ids + ids)
    return words


def _unicode_pieces(
    tokenizer: WhisperTokenizer, tokens: Sequence[int]
) -> list[tuple[str, list[int]]]:
    """Tokens grouped until they decode to whole characters (a CJK character or an emoji can
    span several byte-level tokens)."""
    pieces: list[tuple[str, list[int]]] = []
    current: list[int] = []
    for token in tokens:
        current.append(token)
        text = tokenizer.decode(current)
        if "\ufffd" not in text:
            pieces.append((text, current))
            current = []
    if current:
        pieces.append((tokenizer.decode(current), current))
    return pieces


def time_words(words: list[tuple[str, list[int]]], alignment: Alignment) -> list[_Piece]:
    """Times each word from the alignment: a word starts where the path first reaches its first
    token and ends where it first reaches the next word's (or end-of-text)."""
    if not words:
        return []
    text_indices = np.asarray(alignment.text_indices)
    time_indices = np.asarray(alignment.time_indices)
    # The frame where the path steps onto each token: one per text token, then end-of-text.
    jumps = np.diff(text_indices, prepend=-1) > 0
    token_times = time_indices[jumps] * SECONDS_PER_FRAME
    probs = np.asarray(alignment.token_probs, dtype=np.float64)
    bounds = np.cumsum([0] + [len(ids) for _, ids in words])
    if len(token_times) < bounds[-1] + 1:
        raise ValueError(
            f"alignment covers {len(token_times)} tokens, the words need {bounds[-1] + 1}"
        )
    return [
        _Piece(
            text,
            ids,
            float(token_times[first]),
            float(token_times[after]),
            float(probs[first:after].mean()) if after > first and len(probs) else 0.0,
        )
        for (text, ids), first, after in zip(words, bounds[:-1], bounds[1:], strict=True)
    ]


def tidy(pieces: list[_Piece]) -> list[_Piece]:
    """Whisper's clean-ups: a word at a sentence end may not stretch past twice the median
    word length (the model's attention lingers on punctuation during pauses), and
    punctuation joins the word it belongs to."""
    durations = [p.end - p.start for p in pieces if p.end > p.start]
    if durations:
        longest = 2 * min(MAX_MEDIAN_WORD_SECONDS, float(np.median(durations)))
        for i in range(1, len(pieces)):
            p = pieces[i]
            if p.end - p.start <= longest:
                continue
            if p.text.strip() in SENTENCE_END:
                pieces[i] = replace(p, end=p.start + longest)
            elif pieces[i - 1].text.strip() in SENTENCE_END:
                pieces[i] = replace(p, start=p.end - longest)
    return _merge_appended(_merge_prepended(pieces))


def _merge_prepended(pieces: list[_Piece]) -> list[_Piece]:
    """Opening quotes and brackets join the word after them."""
    out: list[_Piece] = []
    for p in reversed(pieces):
        if out and p.text.startswith(" ") and p.text.strip() in PREPEND_PUNCTUATION:
            following = out[-1]
            out[-1] = _joined(p, following, start=following.start, end=following.end)
        else:
            out.append(p)
    return out[::-1]


def _merge_appended(pieces: list[_Piece]) -> list[_Piece]:
    """Full stops, commas and closing quotes join the word before them."""
    out: list[_Piece] = []
    for p in pieces:
        if out and not out[-1].text.endswith(" ") and p.text in APPEND_PUNCTUATION:
            previous = out[-1]
            out[-1] = _joined(previous, p, start=previous.start, end=previous.end)
        else:
            out.append(p)
    return out


def _joined(first: _Piece, second: _Piece, *, start: float, end: float) -> _Piece:
    tokens = first.tokens + second.tokens
    n1, n2 = len(first.tokens), len(second.tokens)
    probability = (first.probability * n1 + second.probability * n2) / max(1, n1 + n2)
    return _Piece(first.text + second.text, tokens, start, end, probability)


def assign_to_segments(
    pieces: list[_Piece],
    token_counts: Sequence[int],
    bounds: Sequence[tuple[float, float]],
    offset: float,
) -> list[list[Word]]:
    """Shares a window's words out to its segments by token count, in absolute seconds, each
    word kept inside its segment and after the word before it."""
    out: list[list[Word]] = []
    queue = iter(pieces)
    pending = next(queue, None)
    for count, (seg_start, seg_end) in zip(token_counts, bounds, strict=True):
        words: list[Word] = []
        taken = 0
        cursor = seg_start
        while pending is not None and taken < count:
            start = min(max(offset + pending.start, cursor), seg_end)
            end = min(max(offset + pending.end, start), seg_end)
            words.append(Word(pending.text, round(start, 3), round(end, 3), pending.probability))
            cursor = end
            taken += len(pending.tokens)
            pending = next(queue, None)
        out.append(words)
    return out
