"""The speech pipeline: audio → windows → log-mel → prompts → engine (with fallback) → transcript.

Everything engine-independent lives here, so an engine adapter stays a thin shim. CPU work
(decoding, VAD, features) runs in worker threads; the engine is reached through a Runner.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import numpy.typing as npt

from whisperwire.server import audio as audio_io
from whisperwire.server import vad
from whisperwire.server.domain import (
    DecodeOptions,
    EngineTime,
    Segment,
    Task,
    Timings,
    Transcript,
)
from whisperwire.server.engine import EngineInfo, Features, Generation, GenerationParams
from whisperwire.server.errors import AudioTooLongError, InvalidOptionError
from whisperwire.server.features import window_features
from whisperwire.server.runner import Priority, Runner
from whisperwire.server.tokenizer import WhisperTokenizer

Audio = npt.NDArray[np.float32]
MAX_BEAM_SIZE = 8


@dataclass(frozen=True)
class Window:
    """One ≤ 30 s slice of the audio, with its features; offsets in seconds."""

    start: float
    end: float
    features: Features


@dataclass(frozen=True)
class Decoded:
    window: Window
    generation: Generation
    temperature: float

    @property
    def avg_logprob(self) -> float | None:
        cum = self.generation.cum_logprob
        # +1 counts the end-of-text token, as Whisper does.
        return None if cum is None else cum / (len(self.generation.token_ids) + 1)


class SpeechPipeline:
    def __init__(
        self,
        tokenizer: WhisperTokenizer,
        engine: EngineInfo,
        runner: Runner,
        *,
        max_audio_seconds: float = 3 * 3600,
        vad_aggressiveness: int = 2,
    ) -> None:
        self.tokenizer = tokenizer
        self.engine = engine
        self.runner = runner
        self.max_audio_seconds = max_audio_seconds
        self.vad_aggressiveness = vad_aggressiveness

    # ---- validation -------------------------------------------------------------------
    def validate(self, options: DecodeOptions) -> DecodeOptions:
        """Reject what the model or engine cannot do; normalise the language code. Callers
        validate a request's options once, before any transcribe call."""
        if options.language is not None:  # raises on unknown languages
            options = replace(options, language=self.tokenizer.normalize_language(options.language))
        if options.task is Task.TRANSLATE and not self.tokenizer.multilingual:
            raise InvalidOptionError("translate needs a multilingual model", field="task")
        if not 1 <= options.beam_size <= MAX_BEAM_SIZE:
            raise InvalidOptionError(
                f"beam_size must be 1..{MAX_BEAM_SIZE}, got {options.beam_size}", field="beam_size"
            )
        outside = [t for t in options.temperatures if not 0.0 <= t <= 1.0]  # NaN too
        if outside or not options.temperatures:
            raise InvalidOptionError(
                f"temperature must be within 0..1, got {outside[0] if outside else 'none'}",
                field="temperature",
            )
        if options.timestamps and not self.engine.supports_timestamps:
            raise InvalidOptionError(
                f"the {self.engine.name} engine cannot produce segment timestamps; "
                "segment offsets then come from the server's voice-activity windows",
                field="enable_segment_timestamps",
            )
        if options.word_timestamps and not self.engine.supports_word_timestamps:
            raise InvalidOptionError(
                f"the {self.engine.name} engine does not produce word timestamps",
                field="enable_word_timestamps",
            )
        return options

    def admit(self, priority: Priority) -> None:
        """Refuse (BusyError) new work of `priority` that the engine could not start within
        its latency target; fronts call it before accepting a request or a stream."""
        self.runner.admit(priority)

    # ---- entry points: validated options ----------------------------------------------
    async def transcribe_bytes(
        self, data: bytes, options: DecodeOptions, *, priority: Priority = Priority.BULK
    ) -> Transcript:
        """Transcribe an audio file held in memory (any container PyAV reads); files are bulk
        work unless the caller says otherwise."""
        decode = partial(audio_io.decode_audio, data, max_seconds=self.max_audio_seconds)
        return await self._decode_and_transcribe(decode, options, priority)

    async def transcribe_pcm(
        self,
        data: bytes,
        layout: tuple[audio_io.PcmEncoding, int, int],
        options: DecodeOptions,
        *,
        priority: Priority = Priority.BULK,
    ) -> Transcript:
        """Transcribe raw interleaved PCM of (encoding, sample rate, channels): bulk work."""
        decode = partial(audio_io.decode_pcm, data, *layout)
        return await self._decode_and_transcribe(decode, options, priority)

    async def transcribe(
        self,
        samples: Audio,
        options: DecodeOptions,
        *,
        priority: Priority = Priority.FINAL,
        offset: float = 0.0,
        speech: list[vad.Span] | None = None,
    ) -> Transcript:
        """Transcribe 16 kHz mono audio; segment times are offset by `offset` seconds.

        `speech` holds the speech spans of `samples` when a voice-activity detector already
        ran over them (a stream's); None runs the detector here.
        """
        started = time.perf_counter()
        duration = len(samples) / audio_io.SAMPLE_RATE
        if duration > self.max_audio_seconds:
            raise AudioTooLongError(
                f"audio is {duration:.1f} s, the limit is {self.max_audio_seconds:.0f} s"
            )
        windows = await asyncio.to_thread(self._windows, samples, offset, speech)
        features = time.perf_counter() - started
        if not windows:
            return Transcript(
                "", [], options.language, None, duration, Timings(features=features, total=features)
            )
        (language, probability), detect_time = await self._language(windows, options, priority)
        decoded, decode_time = await self._decode_with_fallback(
            windows, language, options, priority
        )
        segments = [
            s
            for d in decoded
            if not self._is_silence(d, options)
            for s in self._segments(d, options.timestamps)
        ]
        text = " ".join(s.text for s in segments if s.text)
        spent = detect_time + decode_time
        timings = Timings(
            features=features,
            queue=spent.queue,
            engine=spent.engine,
            total=time.perf_counter() - started,
        )
        return Transcript(text, segments, language, probability, duration, timings)

    async def _decode_and_transcribe(
        self, decode: Callable[[], Audio], options: DecodeOptions, priority: Priority
    ) -> Transcript:
        started = time.perf_counter()
        samples = await asyncio.to_thread(decode)
        decoded = time.perf_counter() - started
        transcript = await self.transcribe(samples, options, priority=priority)
        timings = replace(transcript.timings, decode=decoded, total=time.perf_counter() - started)
        return replace(transcript, timings=timings)

    # ---- stages -----------------------------------------------------------------------
    def _windows(
        self, samples: Audio, offset: float, speech: list[vad.Span] | None
    ) -> list[Window]:
        spans = (
            vad.speech_spans(samples, aggressiveness=self.vad_aggressiveness)
            if speech is None
            else speech
        )
        if len(samples) <= vad.WINDOW_SECONDS * vad.SAMPLE_RATE and spans:
            # A short clip with any speech is decoded whole: trimming buys nothing.
            spans = [vad.Span(0, len(samples))]
        return [
            Window(
                start=offset + span.start / vad.SAMPLE_RATE,
                end=offset + span.end / vad.SAMPLE_RATE,
                features=window_features(samples[span.start : span.end], self.engine.n_mels),
            )
            for span in vad.plan_windows(samples, spans)
            if span.end > span.start
        ]

    async def _language(
        self, windows: list[Window], options: DecodeOptions, priority: Priority
    ) -> tuple[tuple[str | None, float | None], EngineTime]:
        if options.language is not None:
            return (options.language, None), EngineTime()
        if not self.tokenizer.multilingual:
            return ("en", None), EngineTime()
        # Like Whisper, the first window decides the language of the whole input.
        [ranked], spent = await self.runner.detect_language(
            [windows[0].features], priority=priority
        )
        code, probability = ranked[0]
        return (code, probability), spent

    async def _decode_with_fallback(
        self,
        windows: list[Window],
        language: str | None,
        options: DecodeOptions,
        priority: Priority,
    ) -> tuple[list[Decoded], EngineTime]:
        prompt = self._prompt(language, options)
        results: dict[int, Decoded] = {}
        pending = list(range(len(windows)))
        spent = EngineTime()
        for attempt, temperature in enumerate(options.temperatures):
            params = self._params(options, temperature)
            generations, attempt_time = await self.runner.generate(
                [windows[i].features for i in pending],
                [prompt] * len(pending),
                params,
                priority=priority,
            )
            spent += attempt_time
            last = attempt == len(options.temperatures) - 1
            retry: list[int] = []
            for i, generation in zip(pending, generations, strict=True):
                results[i] = Decoded(windows[i], generation, temperature)
                if not last and self._needs_fallback(results[i], options):
                    retry.append(i)
            pending = retry
            if not pending:
                break
        return [results[i] for i in range(len(windows))], spent

    def _prompt(self, language: str | None, options: DecodeOptions) -> list[int]:
        previous = self.tokenizer.encode(options.initial_prompt) if options.initial_prompt else []
        return self.tokenizer.prompt(
            language=language,
            task=options.task,
            timestamps=options.timestamps,
            previous_text_ids=previous,
        )

    def _params(self, options: DecodeOptions, temperature: float) -> GenerationParams:
        suppress = tuple(
            t
            for token in options.suppress_tokens
            for t in (self.tokenizer.non_speech_tokens() if token == -1 else (token,))
        )
        return GenerationParams(
            max_new_tokens=options.max_new_tokens,
            # Sampling ignores beams, as in Whisper.
            beam_size=options.beam_size if temperature == 0 else 1,
            temperature=temperature,
            suppress_blank=options.suppress_blank,
            suppress_tokens=suppress,
        )

    def _needs_fallback(self, decoded: Decoded, options: DecodeOptions) -> bool:
        if self._is_silence(decoded, options):
            return False
        text = self.tokenizer.decode(decoded.generation.token_ids)
        too_repetitive = (
            options.compression_ratio_threshold is not None
            and compression_ratio(text) > options.compression_ratio_threshold
        )
        avg = decoded.avg_logprob
        too_unlikely = (
            options.log_prob_threshold is not None
            and avg is not None
            and avg < options.log_prob_threshold
        )
        return too_repetitive or too_unlikely

    @staticmethod
    def _is_silence(decoded: Decoded, options: DecodeOptions) -> bool:
        """Whisper's rule: a likely no-speech window whose text is also unlikely is skipped."""
        no_speech = decoded.generation.no_speech_prob
        avg = decoded.avg_logprob
        if options.no_speech_threshold is None or no_speech is None:
            return False
        if no_speech <= options.no_speech_threshold:
            return False
        return avg is None or options.log_prob_threshold is None or avg < options.log_prob_threshold

    def _segments(self, decoded: Decoded, timestamps: bool) -> list[Segment]:
        window, generation = decoded.window, decoded.generation
        common = {
            "avg_logprob": decoded.avg_logprob,
            "no_speech_prob": generation.no_speech_prob,
            "temperature": decoded.temperature,
        }
        ids = generation.token_ids
        if not timestamps or not any(t >= self.tokenizer.timestamp_begin for t in ids):
            text = self.tokenizer.decode(ids).strip()
            return [Segment(window.start, window.end, text, **common)] if text else []
        segments = []
        for start, end, text_ids in self.tokenizer.split_timestamped(ids):
            text = self.tokenizer.decode(text_ids).strip()
            if text:
                segments.append(
                    Segment(
                        min(window.start + start, window.end),
                        min(window.start + end, window.end),
                        text,
                        **common,
                    )
                )
        return segments


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0
