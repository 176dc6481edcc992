"""One StreamAudio call's state machine: utterances, server VAD segments, partials, finals.

Each pushed chunk is converted to 16 kHz float once and voice-activity-checked once; the
utterance's per-frame speech decisions then give the pipeline the speech spans of whatever
slice it decodes, so the pipeline never runs the detector over stream audio again.

Results leave in the order their work was scheduled (an outbox of tasks), so a segment never
overtakes the final of its utterance and utterance N's final precedes utterance N+1's results.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np
import numpy.typing as npt

from whisperwire.server.audio import SAMPLE_RATE, PcmDecoder, PcmEncoding
from whisperwire.server.domain import DecodeOptions, Segment, Transcript
from whisperwire.server.errors import AudioTooLongError
from whisperwire.server.pipeline import SpeechPipeline
from whisperwire.server.runner import Priority
from whisperwire.server.vad import FRAME_MS, FRAME_SAMPLES, Span, StreamingVad, spans_of_speech

Audio = npt.NDArray[np.float32]
MIN_PARTIAL_AUDIO = 0.3  # seconds of new audio before a partial is worth an engine call
SPEECH_START_FRAMES = 3  # consecutive 30 ms speech frames that open a speech event


class EndReason(Enum):
    CLIENT_END = "client_end"
    STREAM_CLOSED = "stream_closed"
    MAX_DURATION = "max_duration"
    SERVER_SHUTDOWN = "server_shutdown"


@dataclass(frozen=True)
class StreamConfig:
    options: DecodeOptions
    encoding: PcmEncoding = "s16le"
    sample_rate: int = SAMPLE_RATE
    channels: int = 1
    interim_results: bool = False
    partial_interval: float = 0.5
    segment_silence: float | None = None  # seconds; None = no server-side segmentation
    speech_events: bool = False


@dataclass(frozen=True)
class SpeechEvent:
    started: bool
    offset: float


@dataclass(frozen=True)
class PartialResult:
    text: str
    stable_chars: int
    stability: float
    start: float
    end: float


@dataclass(frozen=True)
class SegmentResult:
    segment: Segment
    index: int  # position within the utterance


@dataclass(frozen=True)
class FinalResult:
    transcript: Transcript
    reason: EndReason


Event = SpeechEvent | PartialResult | SegmentResult | FinalResult


@dataclass(frozen=True)
class Envelope:
    utterance_id: int
    audio_received: float  # seconds of audio received on this stream when the event was made
    event: Event


@dataclass
class _Utterance:
    id: int
    origin: int  # stream samples received before this utterance began
    vad: StreamingVad
    chunks: list[Audio] = field(default_factory=list)
    samples: int = 0
    speech: list[bool] = field(default_factory=list)  # one decision per 30 ms frame
    committed: int = 0  # samples already covered by emitted segments
    segments: list[Segment] = field(default_factory=list)
    last_segment: asyncio.Task[list[Envelope]] | None = None  # commits happen in order
    language: str | None = None
    language_probability: float | None = None
    # server VAD
    in_speech: bool = False
    speech_run: int = 0
    silence_run: int = 0
    speech_since_commit: bool = False
    # partials
    partial_task: asyncio.Task[list[Envelope]] | None = None
    partial_at_samples: int = 0
    partial_at_time: float = 0.0
    previous_words: list[str] = field(default_factory=list)

    def audio(self, start: int, end: int) -> Audio:
        joined = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        self.chunks = [joined]  # joined once; later pushes append after it
        return joined[start:end]

    def speech_spans(self, start: int, end: int) -> list[Span]:
        """Speech within [start, end), relative to start (a frame boundary)."""
        first = start // FRAME_SAMPLES
        return spans_of_speech(self.speech[first : end // FRAME_SAMPLES], end - start)


class StreamSession:
    def __init__(
        self,
        pipeline: SpeechPipeline,
        config: StreamConfig,
        *,
        max_utterance_seconds: float = 600.0,
    ) -> None:
        """`config.options` are validated (pipeline.validate)."""
        self.pipeline = pipeline
        self.config = config
        self._decoder = PcmDecoder(config.encoding, config.sample_rate, config.channels)
        self._tracks_speech = bool(config.segment_silence or config.speech_events)
        self._max_samples = int(max_utterance_seconds * SAMPLE_RATE)
        self._outbox: asyncio.Queue[asyncio.Task[list[Envelope]] | None] = asyncio.Queue()
        self._received = 0  # samples on the whole stream
        self._next_id = 1
        self._open: _Utterance | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def audio_received(self) -> float:
        return self._received / SAMPLE_RATE

    # ---- inputs ---------------------------------------------------------------------------
    def push(self, data: bytes) -> None:
        samples = self._decoder.push(data)
        if not len(samples):
            return
        utterance = self._open or self._start_utterance()
        if utterance.samples + len(samples) > self._max_samples:
            raise AudioTooLongError(
                f"utterance exceeds {self._max_samples / SAMPLE_RATE:.0f} s; "
                "send end_utterance more often",
                field="audio",
            )
        utterance.chunks.append(samples)
        utterance.samples += len(samples)
        self._received += len(samples)
        flags = utterance.vad.push(samples)
        utterance.speech.extend(flags)
        if self._tracks_speech:
            self._track_speech(utterance, flags)
        if self.config.interim_results:
            self._maybe_partial(utterance)

    def end_utterance(self, reason: EndReason = EndReason.CLIENT_END) -> None:
        """Push-to-talk release: exactly one final for the open (possibly empty) utterance."""
        utterance = self._open or self._start_utterance()
        self._open = None
        self._drop_partial(utterance)
        self._post(self._final(utterance, reason))

    def cancel_utterance(self) -> None:
        """Drop the open utterance's audio; it gets no final."""
        if self._open is not None:
            self._drop_partial(self._open)
            self._open = None

    def close(self, reason: EndReason = EndReason.STREAM_CLOSED) -> None:
        """Half-close or shutdown: flush the open utterance (if it has audio), then end."""
        if self._closed:
            return
        if self._open is not None and self._open.samples:
            self.end_utterance(reason)
        self._open = None
        self._closed = True
        self._outbox.put_nowait(None)

    async def events(self) -> AsyncIterator[Envelope]:
        """Results in scheduling order; ends after close()."""
        while (work := await self._outbox.get()) is not None:
            try:
                await asyncio.wait([work])
            except BaseException:  # the call was cancelled: the work it waits on goes too
                work.cancel()
                raise
            if work.cancelled():
                continue  # a superseded partial
            for envelope in work.result():
                yield envelope

    async def abort(self) -> None:
        """The call is ending early: cancel outstanding work (queued engine work is dropped)
        and end events() at once."""
        self._closed = True
        while not self._outbox.empty():
            work = self._outbox.get_nowait()
            if work is not None:
                work.cancel()
        self._outbox.put_nowait(None)

    # ---- internals ------------------------------------------------------------------------
    def _start_utterance(self) -> _Utterance:
        vad = StreamingVad(self.pipeline.vad_aggressiveness)
        self._open = _Utterance(self._next_id, origin=self._received, vad=vad)
        self._next_id += 1
        return self._open

    def _post(self, work: Awaitable[list[Envelope]]) -> asyncio.Task[list[Envelope]]:
        task = asyncio.ensure_future(work)
        self._outbox.put_nowait(task)
        return task

    def _envelope(self, utterance: _Utterance, event: Event) -> Envelope:
        return Envelope(utterance.id, self.audio_received, event)

    async def _decode(
        self, utterance: _Utterance, start: int, end: int, priority: Priority
    ) -> Transcript:
        options = self.config.options
        if utterance.language is not None:
            options = replace(options, language=utterance.language)  # one language per utterance
        transcript = await self.pipeline.transcribe(
            utterance.audio(start, end),
            options,
            priority=priority,
            offset=(utterance.origin + start) / SAMPLE_RATE,
            speech=utterance.speech_spans(start, end),
        )
        if utterance.language is None and transcript.segments:
            utterance.language = transcript.language
            utterance.language_probability = transcript.language_probability
        return transcript

    async def _final(self, utterance: _Utterance, reason: EndReason) -> list[Envelope]:
        started = time.perf_counter()
        tail = await self._decode(utterance, utterance.committed, utterance.samples, Priority.FINAL)
        await _settled(utterance.last_segment)
        segments = [*utterance.segments, *tail.segments]
        transcript = Transcript(
            text=" ".join(s.text for s in segments),
            segments=segments,
            language=utterance.language or tail.language,
            language_probability=utterance.language_probability or tail.language_probability,
            duration=utterance.samples / SAMPLE_RATE,
            # From release to final, including segments still being decoded.
            timings=replace(tail.timings, total=time.perf_counter() - started),
        )
        return [self._envelope(utterance, FinalResult(transcript, reason))]

    async def _segment(
        self,
        utterance: _Utterance,
        start: int,
        end: int,
        previous: asyncio.Task[list[Envelope]] | None,
    ) -> list[Envelope]:
        transcript = await self._decode(utterance, start, end, Priority.FINAL)
        await _settled(previous)  # decodes overlap; commits stay in order
        first = len(utterance.segments)
        utterance.segments.extend(transcript.segments)
        return [
            self._envelope(utterance, SegmentResult(s, first + i))
            for i, s in enumerate(transcript.segments)
        ]

    def _track_speech(self, utterance: _Utterance, flags: list[bool]) -> None:
        silence_frames = int((self.config.segment_silence or 0.3) * 1000 / FRAME_MS)
        first = len(utterance.speech) - len(flags)  # frame number of flags[0]
        for index, is_speech in enumerate(flags):
            utterance.speech_run = utterance.speech_run + 1 if is_speech else 0
            utterance.silence_run = 0 if is_speech else utterance.silence_run + 1
            frame_end = (first + index + 1) * FRAME_SAMPLES
            if not utterance.in_speech and utterance.speech_run >= SPEECH_START_FRAMES:
                utterance.in_speech = utterance.speech_since_commit = True
                self._speech_event(utterance, started=True, at=frame_end)
            elif utterance.in_speech and utterance.silence_run >= silence_frames:
                utterance.in_speech = False
                self._speech_event(utterance, started=False, at=frame_end)
                if self.config.segment_silence and utterance.speech_since_commit:
                    self._cut_segment(utterance, frame_end)

    def _speech_event(self, utterance: _Utterance, *, started: bool, at: int) -> None:
        if self.config.speech_events:
            event = SpeechEvent(started, (utterance.origin + at) / SAMPLE_RATE)
            self._post(_ready([self._envelope(utterance, event)]))

    def _cut_segment(self, utterance: _Utterance, end: int) -> None:
        start, utterance.committed = utterance.committed, end
        utterance.speech_since_commit = False
        self._drop_partial(utterance)
        utterance.last_segment = self._post(
            self._segment(utterance, start, end, utterance.last_segment)
        )

    def _maybe_partial(self, utterance: _Utterance) -> None:
        now = time.monotonic()
        fresh = utterance.samples - utterance.partial_at_samples
        due = now - utterance.partial_at_time >= self.config.partial_interval
        busy = utterance.partial_task is not None and not utterance.partial_task.done()
        if busy or not due or fresh < MIN_PARTIAL_AUDIO * SAMPLE_RATE:
            return
        utterance.partial_at_time, utterance.partial_at_samples = now, utterance.samples
        utterance.partial_task = self._post(
            self._partial(utterance, utterance.committed, utterance.samples)
        )

    async def _partial(self, utterance: _Utterance, start: int, end: int) -> list[Envelope]:
        transcript = await self._decode(utterance, start, end, Priority.PARTIAL)
        words = transcript.text.split()
        stable = _common_prefix(utterance.previous_words, words)  # LocalAgreement-2
        utterance.previous_words = words
        stable_chars = len(" ".join(words[:stable]))
        stability = stable / len(words) if words else 1.0
        origin = utterance.origin
        partial = PartialResult(
            transcript.text,
            stable_chars,
            stability,
            (origin + start) / SAMPLE_RATE,
            (origin + end) / SAMPLE_RATE,
        )
        return [self._envelope(utterance, partial)]

    def _drop_partial(self, utterance: _Utterance) -> None:
        if utterance.partial_task is not None and not utterance.partial_task.done():
            utterance.partial_task.cancel()
        utterance.previous_words = []


async def _settled(task: asyncio.Task[list[Envelope]] | None) -> None:
    if task is not None:
        await asyncio.wait([task])


async def _ready(envelopes: list[Envelope]) -> list[Envelope]:
    return envelopes


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
