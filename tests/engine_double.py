"""The one engine double of the tests and benchmarks: scriptable, like livekit's FakeSTT.

It implements the engine seam (whisperwire.server.engine.Engine). Wrapping a real engine, it
passes calls through; on its own it answers at once (an empty generation per window, English
for language detection), so the pipeline, scheduler, session and gRPC layers do all their own
work around an engine that costs nothing. A script says what the next generate calls do: hold
until released, take a while, fail, or answer with set tokens. Every generate call's batch is
recorded.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from whisperwire.server.engine import Engine, EngineInfo, Features, Generation, GenerationParams
from whisperwire.server.tokenizer import WhisperTokenizer

INSTANT_MODEL = "tiny.en"  # whose tokenizer (and mel count) the engine borrows on its own
CUDA_FAILURE = RuntimeError("CUDA error: an illegal memory access was encountered")
HOLD_LIMIT = 60.0  # seconds a held call waits for release() before it goes on anyway
RECORDED_CALLS = 10_000  # a benchmark makes many calls: remember only the latest


@dataclass(frozen=True)
class Step:
    """What one generate call does, in this order: wait for release() when `hold`, sleep
    `delay` seconds, raise `error`, or answer every window with `tokens`; without an error or
    tokens it answers as usual (the wrapped engine, or an empty generation)."""

    hold: bool = False
    delay: float = 0.0
    error: Exception | None = None
    tokens: tuple[int, ...] | None = None


class ScriptedEngine:
    def __init__(
        self,
        inner: Engine | None = None,
        *,
        default: Step | None = None,
        model: str = INSTANT_MODEL,
        max_batch_size: int = 8,
    ) -> None:
        self.inner = inner
        self.info = inner.info if inner is not None else _instant_info(model, max_batch_size)
        self.default = default or Step()  # what calls beyond the script do
        # Per generate call, the ids of its windows (the caller's feature arrays), oldest first.
        self.calls: deque[tuple[int, ...]] = deque(maxlen=RECORDED_CALLS)
        self.entered = threading.Event()  # a generate call has begun
        self._script: deque[Step] = deque()
        self._released = threading.Event()
        self._released.set()

    # ---- the script ---------------------------------------------------------------------
    def script(self, *steps: Step) -> None:
        """The next len(steps) generate calls do these, in order; later calls the default."""
        if any(step.hold for step in steps):
            self._released.clear()
        self._script.extend(steps)

    def release(self) -> None:
        """Let held calls go on (and every later hold, until a new script holds again)."""
        self._released.set()

    def forget_calls(self) -> None:
        """Forget the calls so far (e.g. the server's warm-up decode)."""
        self.calls.clear()
        self.entered.clear()

    @property
    def batch_sizes(self) -> list[int]:
        return [len(call) for call in self.calls]

    # ---- the engine seam ----------------------------------------------------------------
    def generate(
        self,
        features: Sequence[Features],
        prompts: Sequence[Sequence[int]],
        params: GenerationParams,
    ) -> list[Generation]:
        step = self._script.popleft() if self._script else self.default
        self.calls.append(tuple(id(f) for f in features))
        self.entered.set()
        if step.hold:
            self._released.wait(HOLD_LIMIT)
        if step.delay:
            time.sleep(step.delay)
        if step.error is not None:
            raise step.error
        if step.tokens is not None:
            return [_answer(list(step.tokens)) for _ in features]
        if self.inner is not None:
            return self.inner.generate(features, prompts, params)
        return [_answer([]) for _ in features]

    def detect_language(self, features: Sequence[Features]) -> list[list[tuple[str, float]]]:
        if self.inner is not None:
            return self.inner.detect_language(features)
        return [[("en", 1.0)] for _ in features]


def instant_engine(model: str = INSTANT_MODEL) -> tuple[ScriptedEngine, WhisperTokenizer]:
    """An engine that answers at once, and the tokenizer of the model it stands in for."""
    from whisperwire.server.models import resolve_model

    return ScriptedEngine(model=model), WhisperTokenizer.from_dir(resolve_model(model))


def _answer(token_ids: list[int]) -> Generation:
    return Generation(token_ids=token_ids, cum_logprob=0.0, no_speech_prob=0.0)


def _instant_info(model: str, max_batch_size: int) -> EngineInfo:
    english_only = model.endswith(".en")
    return EngineInfo(
        name="instant",
        model=model,
        n_mels=80,
        multilingual=not english_only,
        num_languages=0 if english_only else 99,
        max_batch_size=max_batch_size,
        supports_timestamps=True,
        supports_word_timestamps=False,
        device="none",
    )
