"""Domain types shared by the pipeline, scheduler, sessions and servicer (no proto here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Task(str, Enum):
    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


@dataclass(frozen=True)
class DecodeOptions:
    """What a caller asks for. `language=None` means auto-detect."""

    language: str | None = None
    task: Task = Task.TRANSCRIBE
    initial_prompt: str | None = None
    timestamps: bool = False
    word_timestamps: bool = False
    # Detect the language of every window instead of only the first (mixed-language audio).
    detect_language_per_segment: bool = False
    # Transcribe each channel of multi-channel audio on its own instead of their mix.
    separate_channels: bool = False
    beam_size: int = 1
    # Whisper's temperature fallback ladder; the first entry is tried first.
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float | None = 2.4
    log_prob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    suppress_blank: bool = True
    # -1 stands for Whisper's default set of non-speech symbols.
    suppress_tokens: tuple[int, ...] = (-1,)
    max_new_tokens: int = 224


@dataclass(frozen=True)
class Word:
    text: str  # as decoded, with its leading space and punctuation
    start: float  # seconds from the start of the audio
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the audio
    end: float
    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    words: tuple[Word, ...] = ()
    # The language decoded in (per segment when detected per segment), with its probability
    # when it was detected.
    language: str | None = None
    language_probability: float | None = None
    channel: int | None = None  # 0-based, when channels are transcribed separately
    temperature: float | None = None  # of the decode that produced it (fallback may raise it)


@dataclass(frozen=True)
class EngineTime:
    """Seconds a request's engine work waited in the queue and ran in the engine."""

    queue: float = 0.0
    engine: float = 0.0

    @classmethod
    def between(cls, queued: float, started: float, finished: float) -> EngineTime:
        """The time of work queued, taken up by the engine and finished at these readings of
        one monotonic clock (`time.perf_counter()`)."""
        return cls(queue=started - queued, engine=finished - started)

    def __add__(self, other: EngineTime) -> EngineTime:
        return EngineTime(self.queue + other.queue, self.engine + other.engine)


@dataclass(frozen=True)
class Timings:
    """Seconds spent in each stage, each filled in by the stage that measured it; `queue` and
    `engine` are summed over engine calls."""

    decode: float = 0.0
    features: float = 0.0
    queue: float = 0.0
    engine: float = 0.0
    total: float = 0.0


@dataclass(frozen=True)
class Transcript:
    text: str
    segments: list[Segment]
    language: str | None
    language_probability: float | None
    duration: float  # seconds of audio
    timings: Timings = field(default_factory=Timings)
