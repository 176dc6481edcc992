"""The load client: many StreamAudio calls from one asyncio process, each sending its audio
in real time (20 ms chunks) with push-to-talk utterances, over a few channels.

Each stream sends chunks for the whole run, like an open microphone. Before each phrase the
silence so far is dropped with cancel_utterance (no final, no engine work); the utterance is
then 0.5 s of silence, the phrase and 0.3 s of silence, ended by end_utterance at a moment
staggered across streams so the releases spread over the run. (Uttering the whole silence
instead gives tiny.en up to 30 s of nothing before two words, and it hallucinates.) The
silence after the last release is flushed by the half-close as an empty final
(END_REASON_STREAM_CLOSED, no engine work).

Where an utterance sits on its stream's audio clock (its origin and length, in 20 ms chunks)
differs for every utterance of a run, and a final reports both (segment offsets and
audio_duration): a final that reached the wrong stream, or mixed two streams' audio, cannot
match its plan.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
from google.protobuf.duration_pb2 import Duration

from tests.grpc_helpers import CANCEL, END, stub
from tests.load.utterances import Phrase, phrase_for
from whisperwire.v1 import transcription_service_pb2 as pb

CHUNK_BYTES = 640  # 20 ms of 16 kHz s16le mono
CHUNK_SECONDS = 0.02
LEAD_CHUNKS = 25  # 0.5 s of silence before the phrase, in the utterance
TAIL_CHUNKS = 15  # 0.3 s of silence after the phrase, before the release
SILENCE = pb.StreamAudioRequest(audio=pb.AudioChunk(data=bytes(CHUNK_BYTES)))
Call = grpc.aio.StreamStreamCall[pb.StreamAudioRequest, pb.StreamAudioResponse]
# Each channel its own TCP connection (channels with equal options would share one).
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


@dataclass(frozen=True)
class PlannedUtterance:
    utterance_id: int
    phrase: Phrase
    origin_chunk: int
    """Chunks of the stream before this utterance began (cancel_utterance comes there)."""
    release_chunk: int
    """end_utterance is sent after this many chunks of the stream."""

    @property
    def fingerprint(self) -> tuple[int, int, str]:
        return self.origin_chunk, self.release_chunk, self.phrase.text


@dataclass(frozen=True)
class StreamPlan:
    index: int
    utterances: tuple[PlannedUtterance, ...]
    total_chunks: int

    def requests(self) -> Iterator[pb.StreamAudioRequest]:
        """The stream's requests after the config: chunks, cancel_utterance, end_utterance."""
        sent = 0
        for utterance in self.utterances:
            for _ in range(utterance.origin_chunk - sent):
                yield SILENCE
            yield CANCEL
            yield from _speech_requests(utterance.phrase)
            yield END
            sent = utterance.release_chunk
        for _ in range(self.total_chunks - sent):
            yield SILENCE


def plan_streams(streams: int, seconds: float, utterances: int) -> list[StreamPlan]:
    """Stream i's utterance k ends at a phase of period k that grows with i, so the releases
    spread evenly over the run; streams rotate through the phrases. Each period starts with
    at least one chunk of silence that is cancelled, so utterance k (from 0) has id 2k + 2."""
    total = round(seconds / CHUNK_SECONDS)
    period = total // utterances
    plans = []
    for index in range(streams):
        phase = (index + 1) / streams
        planned: list[PlannedUtterance] = []
        for k in range(utterances):
            spoken = phrase_for(index * utterances + k)
            speech = _speech_chunks(spoken)
            if speech + 1 > period:
                raise ValueError(f"{seconds} s cannot hold {utterances} utterances per stream")
            release = k * period + speech + 1 + round(phase * (period - speech - 1))
            planned.append(PlannedUtterance(2 * k + 2, spoken, release - speech, release))
        plans.append(StreamPlan(index, tuple(planned), total))
    return plans


@dataclass
class FinalSeen:
    utterance_id: int
    text: str
    end_reason: int
    latency: float | None
    """Seconds from sending end_utterance to receiving the final."""
    server_seconds: float
    """ProcessingTimings.total_duration: the server's release→final time."""
    queue_seconds: float
    inference_seconds: float
    audio_ns: int
    """Transcript.audio_duration."""
    segment_spans_ns: list[tuple[int, int]]


@dataclass
class StreamOutcome:
    plan: StreamPlan
    code: grpc.StatusCode | None = None
    details: str = ""
    chunks_sent: int = 0
    started_at: float = 0.0
    audio_done_at: float = 0.0
    max_lag: float = 0.0
    """Most the sender fell behind real time, in seconds."""
    released_at: dict[int, float] = field(default_factory=dict)
    finals: list[FinalSeen] = field(default_factory=list)


async def run_streams(target: str, plans: list[StreamPlan], channels: int) -> list[StreamOutcome]:
    opened = [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(channels)]
    try:
        return await asyncio.gather(
            *(_run_stream(opened[plan.index % channels], plan) for plan in plans)
        )
    finally:
        await asyncio.gather(*(channel.close(None) for channel in opened))


async def _run_stream(channel: grpc.aio.Channel, plan: StreamPlan) -> StreamOutcome:
    outcome = StreamOutcome(plan)
    call = stub(channel).StreamAudio()
    reader = asyncio.create_task(_read(call, outcome))
    # A failed call stops the sender; its status is read below.
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
        await _send(call, plan, outcome)
    await reader
    outcome.code = await call.code()
    outcome.details = await call.details() or ""
    return outcome


async def _send(call: Call, plan: StreamPlan, outcome: StreamOutcome) -> None:
    config = pb.StreamAudioConfig(
        request_id=f"load-{plan.index}",
        recognition=pb.RecognitionConfig(language="en", include_timings=True),
    )
    await call.write(pb.StreamAudioRequest(config=config))
    outcome.started_at = start = time.monotonic()
    releases = iter(plan.utterances)
    for request in plan.requests():
        if request is END or request is CANCEL:
            await call.write(request)
            if request is END:
                outcome.released_at[next(releases).utterance_id] = time.monotonic()
            continue
        due = start + outcome.chunks_sent * CHUNK_SECONDS
        lag = time.monotonic() - due
        if lag < 0:
            await asyncio.sleep(-lag)
        outcome.max_lag = max(outcome.max_lag, lag)
        await call.write(request)
        outcome.chunks_sent += 1
    outcome.audio_done_at = time.monotonic()
    await call.done_writing()


async def _read(call: Call, outcome: StreamOutcome) -> None:
    with contextlib.suppress(grpc.aio.AioRpcError):  # the caller reads the status
        async for response in call:
            if response.WhichOneof("event") == "final_result":
                outcome.finals.append(_final_seen(response, outcome))


def _final_seen(response: pb.StreamAudioResponse, outcome: StreamOutcome) -> FinalSeen:
    final = response.final_result
    released = outcome.released_at.get(response.utterance_id)
    return FinalSeen(
        utterance_id=response.utterance_id,
        text=final.transcript.text,
        end_reason=final.end_reason,
        latency=None if released is None else time.monotonic() - released,
        server_seconds=_seconds(final.timings.total_duration),
        queue_seconds=_seconds(final.timings.queue_duration),
        inference_seconds=_seconds(final.timings.inference_duration),
        audio_ns=final.transcript.audio_duration.ToNanoseconds(),
        segment_spans_ns=[
            (s.start_offset.ToNanoseconds(), s.end_offset.ToNanoseconds())
            for s in final.transcript.segments
        ],
    )


def _seconds(duration: Duration) -> float:
    return float(duration.ToNanoseconds()) / 1e9


def _speech_chunks(phrase: Phrase) -> int:
    return LEAD_CHUNKS + math.ceil(len(phrase.pcm) / CHUNK_BYTES) + TAIL_CHUNKS


def _speech_requests(phrase: Phrase) -> list[pb.StreamAudioRequest]:
    pcm = phrase.pcm
    chunks = [pcm[i : i + CHUNK_BYTES] for i in range(0, len(pcm), CHUNK_BYTES)]
    speech = [pb.StreamAudioRequest(audio=pb.AudioChunk(data=c)) for c in chunks]
    return [SILENCE] * LEAD_CHUNKS + speech + [SILENCE] * TAIL_CHUNKS
