"""The engine seam: the one narrow interface every inference backend implements.

The pipeline owns audio, features, prompts, fallback, segmentation and text; an engine only
turns a batch of 30 s log-mel windows plus per-item decoder prompts into generated token ids.
It is called from exactly one thread (the scheduler's worker), so adapters need no locking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from whisperwire.server.errors import EngineError

Features = npt.NDArray[np.float32]  # [n_mels, 3000] log-mel of one 30 s window
LanguageRanking = list[tuple[str, float]]  # (language code, probability), most likely first


@dataclass(frozen=True)
class GenerationParams:
    """Per-batch decoding parameters (every item of one engine call shares them)."""

    max_new_tokens: int
    beam_size: int = 1
    temperature: float = 0.0
    suppress_blank: bool = True
    suppress_tokens: tuple[int, ...] = ()
    return_no_speech_prob: bool = True


@dataclass(frozen=True)
class Generation:
    """One item's output: generated ids only (no prompt, no end-of-text)."""

    token_ids: list[int]
    # Sum of token log-probabilities; None where the engine does not report it.
    cum_logprob: float | None = None
    no_speech_prob: float | None = None


@dataclass(frozen=True)
class Alignment:
    """One item's monotonic path matching text tokens to encoder frames (20 ms each).

    Pairs (text_indices[k], time_indices[k]) walk from the first text token to the
    end-of-text token appended after the last one; `token_probs` holds each text token's
    probability given the tokens before it.
    """

    text_indices: list[int]
    time_indices: list[int]
    token_probs: list[float]


@dataclass(frozen=True)
class EngineInfo:
    name: str  # "ctranslate2" | "trtllm" | ...
    model: str
    n_mels: int
    multilingual: bool
    num_languages: int
    max_batch_size: int
    # Whether the engine applies Whisper's timestamp-token rules itself.
    supports_timestamps: bool
    supports_word_timestamps: bool
    device: str


class Engine(Protocol):
    info: EngineInfo

    def generate(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        params: GenerationParams,
    ) -> list[Generation]:
        """Decode a batch; len(features) == len(prompts) <= info.max_batch_size."""
        ...

    def detect_language(self, features: Sequence[Features]) -> list[LanguageRanking]:
        """Per item, (language code, probability) pairs, most likely first."""
        ...


@runtime_checkable
class WordAligner(Protocol):
    """An engine that can time words (EngineInfo.supports_word_timestamps): an optional
    capability beside Engine, so engines without it implement nothing."""

    def align(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        text_tokens: Sequence[Sequence[int]],
        num_frames: Sequence[int],
    ) -> list[Alignment]:
        """Align each item's text tokens (no timestamps, no end-of-text) to its window.

        `prompts` are start-of-transcript sequences; `num_frames` counts each window's
        log-mel frames that hold audio (100 per second), so padding draws no words.
        """
        ...


@dataclass(frozen=True)
class DetectLanguage:
    """Step-level work that asks only for a window's language (Engine.detect_language's
    ranking), so detection joins the running decode instead of stopping it."""


DETECT_LANGUAGE = DetectLanguage()
StepWork = GenerationParams | DetectLanguage


@dataclass(frozen=True)
class WindowRequest:
    """One window submitted for step-level decoding (or, with DETECT_LANGUAGE, detection)."""

    ticket: int  # the scheduler's id for the window, unique while it is in flight
    features: Features
    prompt: Sequence[int]  # empty for DETECT_LANGUAGE
    params: StepWork
    # Someone waits on this window right now (a push-to-talk final): return it the moment
    # it finishes rather than at the end of the advance.
    urgent: bool = False


def never() -> bool:
    return False


@runtime_checkable
class StepBatcher(Protocol):
    """An engine with in-flight batching: windows join the running decode at any step boundary
    and leave it the moment they finish, so a new window never waits for a whole batch.
    An optional capability beside Engine; the scheduler's one engine thread calls it."""

    @property
    def in_flight(self) -> int:
        """Windows admitted and not yet returned or cancelled."""
        ...

    def steppable(self, params: StepWork) -> bool:
        """Whether windows with these parameters (or language detection) are decoded
        step-level at all (others go through whole-batch `generate` / `detect_language`)."""
        ...

    def free_slots(self, params: StepWork) -> int:
        """How many windows with these (steppable) parameters may be admitted now; 0 while
        the engine is full or decodes windows whose parameters cannot share a step."""
        ...

    def advance(
        self,
        admit: Sequence[WindowRequest],
        cancel: Sequence[int],
        interrupted: Callable[[], bool] = never,
    ) -> Mapping[int, Generation | LanguageRanking | EngineError]:
        """Drop the `cancel` tickets' windows, admit `admit` (at most `free_slots`; their
        encoder runs as one batch), run a few decode steps over every window in flight, and
        return the windows that finished, by ticket: its Generation (a LanguageRanking for
        DETECT_LANGUAGE), or the EngineError its caller gets when the engine failed on that
        window alone. Raising EngineError means the engine failed as a whole: every window
        in flight is dropped (in_flight is 0).

        The advance may end early, after fewer steps, once an urgent window finished or
        `interrupted()` (polled from this thread: urgent work waits to be admitted) is true."""
        ...


def step_batcher(engine: Engine) -> StepBatcher | None:
    """The engine itself when it offers step-level batching, else None."""
    return engine if isinstance(engine, StepBatcher) else None


def word_aligner(engine: Engine) -> WordAligner | None:
    """The engine's aligner when it advertises word timestamps, else None."""
    if engine.info.supports_word_timestamps and isinstance(engine, WordAligner):
        return engine
    return None
