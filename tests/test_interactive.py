"""Interactive work first: a push-to-talk final never queues behind bulk windows (files) that
arrived before it, bulk work keeps a share, and overload is refused at once with a retry delay
instead of being served late. The real tiny.en engine runs behind a script that holds the first
engine call, so the queue behind it is arranged and checked through the recorded calls."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass

import grpc
import numpy as np
import pytest

from tests.engine_double import ScriptedEngine, Step
from tests.grpc_helpers import (
    END,
    audio_requests,
    config_request,
    error_info,
    serving,
    stub,
    until,
)
from tests.speech import ENGLISH_CLIPS, JFK, NIGHTFALL, load_pcm16k, silence, to_s16le, wer
from whisperwire.server import vad
from whisperwire.server.domain import DecodeOptions, Task
from whisperwire.server.engine import GenerationParams
from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
from whisperwire.server.features import window_features
from whisperwire.server.pipeline import SpeechPipeline
from whisperwire.server.queue_policy import QueuePolicy
from whisperwire.server.runner import Priority
from whisperwire.server.scheduler import BatchScheduler
from whisperwire.server.tokenizer import WhisperTokenizer
from whisperwire.v1 import transcription_service_pb2 as pb

Tiny = tuple[CTranslate2Engine, WhisperTokenizer]
BULK_BATCH = 1


def long_file(cycles: int = 2) -> tuple[np.ndarray, str]:  # type: ignore[type-arg]
    """The English clips with pauses, `cycles` times (~50 s for 2): several 30 s windows."""
    parts = [p for _ in range(cycles) for c in ENGLISH_CLIPS for p in (load_pcm16k(c), silence(1))]
    reference = " ".join(c.reference for _ in range(cycles) for c in ENGLISH_CLIPS)
    return np.concatenate(parts), reference


def window_count(samples: np.ndarray) -> int:  # type: ignore[type-arg]
    return len(vad.plan_windows(samples, vad.speech_spans(samples, aggressiveness=2)))


async def test_a_push_to_talk_final_runs_ahead_of_two_files_queued_before_it(
    tiny_engine: Tiny,
) -> None:
    engine, tokenizer = ScriptedEngine(tiny_engine[0]), tiny_engine[1]
    scheduler = BatchScheduler(engine, max_batch_size=8, bulk_batch_size=BULK_BATCH)
    pipeline = SpeechPipeline(tokenizer, engine.info, scheduler)
    samples, reference = long_file()
    windows = 2 * window_count(samples)
    assert windows >= 4 * BULK_BATCH  # both files leave bulk windows queued
    engine.script(Step(hold=True))
    scheduler.start()
    try:
        files = [
            asyncio.create_task(
                pipeline.transcribe(samples, DecodeOptions(language="en"), priority=Priority.BULK)
            )
            for _ in range(2)
        ]
        assert await asyncio.to_thread(engine.entered.wait, 60)  # a bulk call is running
        assert await until(lambda: scheduler.queue_depth == windows - BULK_BATCH)

        # The push-to-talk release: the utterance's final arrives behind every file window.
        utterance = window_features(load_pcm16k(JFK), engine.info.n_mels)
        prompt = tokenizer.prompt(language="en", task=Task.TRANSCRIBE, timestamps=False)
        final = asyncio.create_task(
            scheduler.generate(
                [utterance], [prompt], GenerationParams(max_new_tokens=96), priority=Priority.FINAL
            )
        )
        assert await until(lambda: scheduler.queue_depth == windows - BULK_BATCH + 1)
        engine.release()
        [generation], _ = await final
        transcripts = await asyncio.gather(*files)

        assert engine.calls[1] == (id(utterance),)  # next after the running call: the final
        assert wer(JFK.reference, tokenizer.decode(generation.token_ids)) <= 0.1
        assert sum(engine.batch_sizes) == windows + 1  # every window ran once
        assert max(engine.batch_sizes) == BULK_BATCH  # bulk calls stay small
        for transcript in transcripts:
            assert wer(reference, transcript.text) <= 0.15
    finally:
        await scheduler.stop()


@dataclass(frozen=True)
class Item:
    priority: Priority
    seq: int
    key: Hashable = "greedy"


def test_bulk_gets_its_share_while_finals_keep_coming() -> None:
    policy = QueuePolicy(max_batch_size=4, bulk_batch_size=1, bulk_share=0.25)
    bulk = [Item(Priority.BULK, i) for i in range(100)]
    ran: list[Priority] = []
    for seq in range(100, 140):  # a new final arrives before every engine call
        batch = policy.next_batch([*bulk, Item(Priority.FINAL, seq)])
        bulk = [w for w in bulk if w not in batch]
        policy.ran(batch, 1.0)  # every call takes a second
        ran.append(batch[0].priority)
    assert ran[0] is Priority.FINAL  # interactive first ...
    assert ran.count(Priority.BULK) == 10  # ... and bulk still gets its quarter of the time


def test_with_priorities_off_work_runs_in_arrival_order() -> None:
    policy = QueuePolicy(max_batch_size=2, bulk_batch_size=2, interactive_first=False)
    queued = [Item(Priority.BULK, 0), Item(Priority.PARTIAL, 1), Item(Priority.FINAL, 2)]
    assert policy.next_batch(queued) == [queued[0], queued[2]]  # partials last, as before


def test_only_work_that_can_share_a_call_is_batched() -> None:
    policy = QueuePolicy(max_batch_size=8, bulk_batch_size=8)
    queued = [Item(Priority.FINAL, 0, "greedy"), Item(Priority.FINAL, 1, "beam 5")]
    queued.append(Item(Priority.PARTIAL, 2, "greedy"))
    assert policy.next_batch(queued) == [queued[0], queued[2]]


async def test_overload_is_refused_at_once_and_admitted_streams_keep_their_final(
    tiny_engine: Tiny,
) -> None:
    engine = ScriptedEngine(tiny_engine[0])
    target = {"latency_target_seconds": 0.01, "bulk_batch_size": 1}
    async with serving(engine, tiny_engine[1], **target) as (running, channel):
        service = stub(channel)
        admitted = service.StreamAudio()
        await admitted.write(config_request(language="en"))
        assert (await admitted.read()).WhichOneof("event") == "session_started"

        engine.forget_calls()
        engine.script(Step(hold=True))
        samples, _ = long_file()
        wav = pb.TranscribeRequest(
            audio_content=to_s16le(samples),
            raw=pb.RawAudioFormat(
                encoding=pb.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=16000, channel_count=1
            ),
            config=pb.RecognitionConfig(language="en"),
        )
        bulk = asyncio.ensure_future(service.Transcribe(wav))
        assert await asyncio.to_thread(engine.entered.wait, 60)
        for request in [*audio_requests(to_s16le(load_pcm16k(NIGHTFALL)), 3200), END]:
            await admitted.write(request)
        queued = window_count(samples) - 1 + 1  # the file's other windows, and the final
        assert await until(lambda: running.scheduler.queue_depth >= queued)

        with pytest.raises(grpc.aio.AioRpcError) as refused_file:
            await service.Transcribe(wav)
        refused_stream = service.StreamAudio()
        await refused_stream.write(config_request(language="en"))
        with pytest.raises(grpc.aio.AioRpcError) as refused_call:
            await refused_stream.read()
        for refused in (refused_file.value, refused_call.value):
            code, reason, _, retry_delay = error_info(refused)
            assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_BUSY")
            assert retry_delay is not None and retry_delay > 0

        engine.release()
        final = await _next_final(admitted)
        assert wer(NIGHTFALL.reference, final.transcript.text) <= 0.1
        assert (await bulk).transcript.text  # the admitted file is served too
        await admitted.done_writing()
        assert await until(lambda: running.scheduler.queue_depth == 0)
        again = service.StreamAudio()  # once the engine caught up, streams are admitted again
        await again.write(config_request(language="en"))
        assert (await again.read()).WhichOneof("event") == "session_started"
        again.cancel()


async def _next_final(call: grpc.aio.StreamStreamCall) -> pb.FinalResult:  # type: ignore[type-arg]
    while True:
        response = await call.read()
        assert response is not grpc.aio.EOF
        if response.WhichOneof("event") == "final_result":
            return response.final_result
