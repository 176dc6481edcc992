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
from typing import Protocol

import numpy as np
import numpy.typing as npt

from whisperwire.server import audio as audio_io
from whisperwire.server import vad
from whisperwire.server import words as words_mod
from whisperwire.server.domain import (
    DecodeOptions,
    EngineTime,
    Segment,
    Task,
    Timings,
    Transcript,
    Word,
)
from whisperwire.server.engine import EngineInfo, Features, Generation, GenerationParams
from whisperwire.server.errors import AudioTooLongError, InvalidOptionError
from whisperwire.server.features import HOP_LENGTH, N_FRAMES, window_features
from whisperwire.server.runner import Priority, Runner
from whisperwire.server.tokenizer import WhisperTokenizer

Audio = npt.NDArray[np.float32]
Language = tuple[str | None, float | None]  # (code, probability when detected)
Decode = Callable[[bytes], list[Audio]]  # an upload's bytes → its channels, 16 kHz
Part = tuple[float, float, list[int]]  # (start, end, text tokens) of one segment
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
        decode_pool: UploadPool | None = None,
    ) -> None:
        """`decode_pool` decodes uploaded files (in processes: off this interpreter's lock);
        None decodes them on a thread."""
        self.tokenizer = tokenizer
        self.engine = engine
        self.runner = runner
        self.max_audio_seconds = max_audio_seconds
        self.vad_aggressiveness = vad_aggressiveness
        self.decode_pool = decode_pool

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
                f"the {self.engine.name} engine cannot time words: it does not expose the "
                "cross-attention of the model's alignment heads that word timing needs",
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
        decode = partial(
            audio_io.decode_audio_channels if options.separate_channels else _as_one_channel,
            max_seconds=self.max_audio_seconds,
        )
        return await self._decode_and_transcribe(data, decode, options, priority)

    async def transcribe_pcm(
        self,
        data: bytes,
        layout: tuple[audio_io.PcmEncoding, int, int],
        options: DecodeOptions,
        *,
        priority: Priority = Priority.BULK,
    ) -> Transcript:
        """Transcribe raw interleaved PCM of (encoding, sample rate, channels): bulk work."""
        encoding, sample_rate, channels = layout
        decode = partial(
            audio_io.decode_pcm_channels if options.separate_channels else _pcm_as_one_channel,
            encoding=encoding,
            sample_rate=sample_rate,
            channels=channels,
        )
        return await self._decode_and_transcribe(data, decode, options, priority)

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
        _check_duration(duration, self.max_audio_seconds)
        windows = await asyncio.to_thread(
            plan_windows, samples, self._windowing(options), offset, speech
        )
        return await self._transcribe_windows(
            Prepared(duration, windows), options, priority, started
        )

    async def _transcribe_windows(
        self, prepared: Prepared, options: DecodeOptions, priority: Priority, started: float
    ) -> Transcript:
        windows, duration = prepared.windows, prepared.duration
        features = time.perf_counter() - started
        if not windows:
            return Transcript(
                "", [], options.language, None, duration, Timings(features=features, total=features)
            )
        languages, detect_time = await self._languages(windows, options, priority)
        decoded, decode_time = await self._decode_with_fallback(
            windows, languages, options, priority
        )
        kept = [
            (d, lang)
            for d, lang in zip(decoded, languages, strict=True)
            if not self._is_silence(d, options)
        ]
        segments, align_time = await self._timed_segments(kept, options, priority)
        text = " ".join(s.text for s in segments if s.text)
        language, probability = _dominant_language(windows, languages, options)
        spent = detect_time + decode_time + align_time
        timings = Timings(
            features=features,
            queue=spent.queue,
            engine=spent.engine,
            total=time.perf_counter() - started,
        )
        return Transcript(text, segments, language, probability, duration, timings)

    async def _decode_and_transcribe(
        self, data: bytes, decode: Decode, options: DecodeOptions, priority: Priority
    ) -> Transcript:
        """Decode and window the upload off the event loop (in the decode pool's processes
        where there is one, else on a thread), then transcribe each channel's windows."""
        started = time.perf_counter()
        how, max_seconds = self._windowing(options), self.max_audio_seconds
        if self.decode_pool is None:
            job = partial(prepare_upload, partial(decode, data), how, max_seconds)
            channels = await asyncio.to_thread(job)
        else:
            channels = await self.decode_pool.prepare(data, decode, how, max_seconds)
        if len(channels) == 1:
            transcript = await self._transcribe_windows(channels[0], options, priority, started)
        else:
            transcript = await self._transcribe_channels(channels, options, priority, started)
        decoded = channels[0].decode
        timings = replace(
            transcript.timings,
            decode=decoded,
            features=max(0.0, transcript.timings.features - decoded),
            total=time.perf_counter() - started,
        )
        return replace(transcript, timings=timings)

    def _windowing(self, options: DecodeOptions) -> Windowing:
        return Windowing(
            self.engine.n_mels,
            self.vad_aggressiveness,
            per_span=options.detect_language_per_segment and options.language is None,
        )

    async def _transcribe_channels(
        self, channels: list[Prepared], options: DecodeOptions, priority: Priority, started: float
    ) -> Transcript:
        """Every channel on its own, all at once (the runner batches their windows
        together), merged in time order with each segment tagged with its channel."""
        transcripts = await asyncio.gather(
            *(self._transcribe_windows(c, options, priority, started) for c in channels)
        )
        segments = sorted(
            (
                replace(segment, channel=channel)
                for channel, t in enumerate(transcripts)
                for segment in t.segments
            ),
            key=lambda s: (s.start, s.channel),
        )
        spoken = [t for t in transcripts if t.segments] or transcripts
        language = max(spoken, key=lambda t: sum(s.end - s.start for s in t.segments))
        return Transcript(
            text=" ".join(s.text for s in segments),
            segments=segments,
            language=language.language,
            language_probability=language.language_probability,
            duration=max(t.duration for t in transcripts),
            timings=Timings(
                features=sum(t.timings.features for t in transcripts),
                queue=sum(t.timings.queue for t in transcripts),
                engine=sum(t.timings.engine for t in transcripts),
            ),
        )

    # ---- stages -----------------------------------------------------------------------
    async def _languages(
        self, windows: list[Window], options: DecodeOptions, priority: Priority
    ) -> tuple[list[Language], EngineTime]:
        """(code, probability) per window; the probability is None where none was detected."""
        if options.language is not None:
            return [(options.language, None)] * len(windows), EngineTime()
        if not self.tokenizer.multilingual:
            return [("en", None)] * len(windows), EngineTime()
        # Like Whisper, the first window decides the language of the whole input, unless
        # the caller expects it to change.
        detected = windows if options.detect_language_per_segment else windows[:1]
        ranked, spent = await self.runner.detect_language(
            [w.features for w in detected], priority=priority
        )
        best: list[Language] = [r[0] for r in ranked]
        return best + [best[-1]] * (len(windows) - len(best)), spent

    async def _decode_with_fallback(
        self,
        windows: list[Window],
        languages: list[Language],
        options: DecodeOptions,
        priority: Priority,
    ) -> tuple[list[Decoded], EngineTime]:
        prompts = [self._prompt(language, options) for language, _ in languages]
        results: dict[int, Decoded] = {}
        pending = list(range(len(windows)))
        spent = EngineTime()
        for attempt, temperature in enumerate(options.temperatures):
            params = self._params(options, temperature)
            generations, attempt_time = await self.runner.generate(
                [windows[i].features for i in pending],
                [prompts[i] for i in pending],
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

    async def _timed_segments(
        self, kept: list[tuple[Decoded, Language]], options: DecodeOptions, priority: Priority
    ) -> tuple[list[Segment], EngineTime]:
        parts = [self._parts(d, options.timestamps) for d, _ in kept]
        words: list[list[list[Word]]] = [[[] for _ in p] for p in parts]
        spent = EngineTime()
        if options.word_timestamps:
            words, spent = await self._words(kept, parts, options, priority)
        segments = [
            Segment(
                start,
                end,
                text,
                avg_logprob=d.avg_logprob,
                no_speech_prob=d.generation.no_speech_prob,
                temperature=d.temperature,
                words=tuple(part_words),
                language=language,
                language_probability=probability,
            )
            for (d, (language, probability)), window_parts, window_words in zip(
                kept, parts, words, strict=True
            )
            for (start, end, text_ids), part_words in zip(window_parts, window_words, strict=True)
            if (text := self.tokenizer.decode(text_ids).strip())
        ]
        return segments, spent

    def _parts(self, decoded: Decoded, timestamps: bool) -> list[Part]:
        """A window's (start, end, text tokens) segments in absolute seconds, within the
        window; one part for the whole window without timestamp tokens."""
        window, ids = decoded.window, decoded.generation.token_ids
        if not timestamps or not any(t >= self.tokenizer.timestamp_begin for t in ids):
            return [(window.start, window.end, [t for t in ids if t < self.tokenizer.eot])]
        return [
            (min(window.start + start, window.end), min(window.start + end, window.end), text)
            for start, end, text in self.tokenizer.split_timestamped(ids)
        ]

    async def _words(
        self,
        kept: list[tuple[Decoded, Language]],
        parts: list[list[Part]],
        options: DecodeOptions,
        priority: Priority,
    ) -> tuple[list[list[list[Word]]], EngineTime]:
        """Words of every part, all windows aligned in one batch."""
        tokens = [[t for _, _, ids in window_parts for t in ids] for window_parts in parts]
        todo = [i for i, t in enumerate(tokens) if t]
        alignments, spent = await self.runner.align(
            [kept[i][0].window.features for i in todo],
            [self.tokenizer.sot_sequence(kept[i][1][0], options.task) for i in todo],
            [tokens[i] for i in todo],
            [_audio_frames(kept[i][0].window) for i in todo],
            priority=priority,
        )
        by_window = dict(zip(todo, alignments, strict=True))
        out: list[list[list[Word]]] = []
        for i, ((d, (language, _)), window_parts) in enumerate(zip(kept, parts, strict=True)):
            alignment = by_window.get(i)
            if alignment is None:
                out.append([[] for _ in window_parts])
                continue
            pieces = words_mod.time_words(
                words_mod.split_words(self.tokenizer, tokens[i], language), alignment
            )
            out.append(
                words_mod.assign_to_segments(
                    words_mod.tidy(pieces),
                    [len(ids) for _, _, ids in window_parts],
                    [(start, end) for start, end, _ in window_parts],
                    offset=d.window.start,
                )
            )
        return out, spent


@dataclass(frozen=True)
class Windowing:
    """How audio becomes windows: the model's mel bins, the VAD, one window per span?"""

    n_mels: int
    vad_aggressiveness: int
    per_span: bool  # each stretch of speech alone (language per segment)


@dataclass(frozen=True)
class Prepared:
    """One channel ready for the engine: its length and its windows."""

    duration: float
    windows: list[Window]
    decode: float = 0.0  # seconds decoding the upload (before windowing), where there was one


def plan_windows(
    samples: Audio, how: Windowing, offset: float = 0.0, speech: list[vad.Span] | None = None
) -> list[Window]:
    """Cut 16 kHz mono audio into ≤ 30 s windows at pauses and compute their log-mel."""
    spans = (
        vad.speech_spans(samples, aggressiveness=how.vad_aggressiveness)
        if speech is None
        else speech
    )
    if how.per_span:
        # Each stretch of speech alone, so a language switch at a pause starts a window.
        planned = [w for span in spans for w in vad.plan_windows(samples, [span])]
    elif len(samples) <= vad.WINDOW_SECONDS * vad.SAMPLE_RATE and spans:
        # A short clip with any speech is decoded whole: trimming buys nothing.
        planned = [vad.Span(0, len(samples))]
    else:
        planned = vad.plan_windows(samples, spans)
    return [
        Window(
            start=offset + span.start / vad.SAMPLE_RATE,
            end=offset + span.end / vad.SAMPLE_RATE,
            features=window_features(samples[span.start : span.end], how.n_mels),
        )
        for span in planned
        if span.end > span.start
    ]


def prepare_upload(
    decode: Callable[[], list[Audio]], how: Windowing, max_seconds: float
) -> list[Prepared]:
    """Decode an upload and window every channel: one job for a decode-pool process (its
    arguments and result cross the process boundary by pickling)."""
    started = time.perf_counter()
    channels = decode()
    decoded = time.perf_counter() - started
    prepared = []
    for samples in channels:
        duration = len(samples) / audio_io.SAMPLE_RATE
        _check_duration(duration, max_seconds)
        prepared.append(Prepared(duration, plan_windows(samples, how), decoded))
    return prepared


class UploadPool(Protocol):
    """Decodes and windows uploads away from the server's interpreter (decode_pool.py)."""

    async def prepare(
        self, data: bytes, decode: Decode, how: Windowing, max_seconds: float
    ) -> list[Prepared]: ...

    def shutdown(self) -> None: ...


def _check_duration(duration: float, max_seconds: float) -> None:
    if duration > max_seconds:
        raise AudioTooLongError(f"audio is {duration:.1f} s, the limit is {max_seconds:.0f} s")


def _as_one_channel(data: bytes, *, max_seconds: float) -> list[Audio]:
    return [audio_io.decode_audio(data, max_seconds=max_seconds)]


def _pcm_as_one_channel(
    data: bytes, encoding: audio_io.PcmEncoding, sample_rate: int, channels: int
) -> list[Audio]:
    return [audio_io.decode_pcm(data, encoding, sample_rate, channels)]


def _audio_frames(window: Window) -> int:
    """Log-mel frames (10 ms) of the window that hold audio, not padding."""
    return min(N_FRAMES, round((window.end - window.start) * audio_io.SAMPLE_RATE / HOP_LENGTH))


def _dominant_language(
    windows: list[Window], languages: list[Language], options: DecodeOptions
) -> Language:
    """The language spoken longest; its probability is the mean over its windows."""
    if not languages:
        return options.language, None
    seconds: dict[str | None, float] = {}
    for window, (code, _) in zip(windows, languages, strict=True):
        seconds[code] = seconds.get(code, 0.0) + window.end - window.start
    code = max(seconds, key=lambda c: seconds[c])
    probabilities = [p for c, p in languages if c == code and p is not None]
    return code, (sum(probabilities) / len(probabilities) if probabilities else None)


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0
