"""Faults against the real server and the real tiny.en model: clients that vanish, cancel
mid-decode or stop reading; floods of tiny chunks; chunks over the limits; idle streams;
too many streams at once; an engine failure on one batch; SIGTERM under load; a restart.

Waits are conditions polled a bounded number of times, never timing asserts; what is
measured (memory, rates, exit times) is printed and written by the `publish` fixture (to a
temporary folder; `--report-dir benchmarks/results/load` publishes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import resource
import time
import weakref
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from tests.engine_double import CUDA_FAILURE, ScriptedEngine, Step
from tests.grpc_helpers import (
    END,
    audio_requests,
    collect,
    config_request,
    error_info,
    finals,
    paced,
    serving,
    stub,
    until,
)
from tests.load.serve_process import ServeProcess
from tests.reports import Publish
from tests.speech import HESTER, JFK, NIGHTFALL, Clip, load_pcm16k, to_s16le, wer
from whisperwire.client import AsyncClient, RetryPolicy, StreamOptions
from whisperwire.client.call_status import ServerStatus
from whisperwire.client.options import RecognitionOptions
from whisperwire.client.push_to_talk import (
    ConnectionLost,
    PushToTalkSession,
    SessionEvent,
    UtteranceResult,
)
from whisperwire.server.app import RunningServer
from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
from whisperwire.server.session import Envelope
from whisperwire.server.tokenizer import WhisperTokenizer
from whisperwire.v1 import transcription_service_pb2 as pb

Tiny = tuple[CTranslate2Engine, WhisperTokenizer]
Request = pb.StreamAudioRequest
Call = grpc.aio.StreamStreamCall[pb.StreamAudioRequest, pb.StreamAudioResponse]
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
# A reader with a 1 KiB HTTP/2 window: the server can send it almost nothing unread.
SLOW_READER = [*OWN_CONNECTION, ("grpc.http2.lookahead_bytes", 1024), ("grpc.http2.bdp_probe", 0)]
GREEDY = {"language": "en", "temperature": 0.0}  # one engine call per utterance: no fallback


def idle(running: RunningServer) -> bool:
    """No stream open and no engine work queued."""
    return not running.state.streams and running.scheduler.queue_depth == 0


def audio_on_server(running: RunningServer) -> float:
    return sum(c.session.audio_received for c in running.state.streams if c.session)


@functools.cache
def pcm(clip: Clip) -> bytes:
    return to_s16le(load_pcm16k(clip))


# What each call's server said, kept from grpcio's write/status race (client/call_status.py).
_server_status: weakref.WeakKeyDictionary[Call, ServerStatus] = weakref.WeakKeyDictionary()


async def open_stream(channel: grpc.aio.Channel, *requests: Request) -> Call:
    """A stream with `requests` written after its config (no half-close)."""
    call: Call = stub(channel).StreamAudio()
    _server_status[call] = ServerStatus(call)
    await call.write(config_request(**GREEDY))
    for request in requests:
        await call.write(request)
    return call


async def outcome(call: Call) -> tuple[list[pb.StreamAudioResponse], grpc.aio.AioRpcError | None]:
    """All responses of a call, and the error it ended with (None for OK)."""
    responses: list[pb.StreamAudioResponse] = []
    try:
        while (response := await call.read()) is not grpc.aio.EOF:
            responses.append(response)
    except grpc.aio.AioRpcError as error:
        status = _server_status.get(call)
        return responses, status.error_for(error) if status else error
    return responses, None


async def still_serves(channel: grpc.aio.Channel) -> None:
    requests = [config_request(**GREEDY), *audio_requests(pcm(HESTER)), END]
    [final] = finals(await collect(stub(channel).StreamAudio(paced(requests))))
    assert wer(HESTER.reference, final.final_result.transcript.text) <= 0.1


@contextlib.asynccontextmanager
async def own_channel(
    running: RunningServer, options: list[tuple[str, int]] = OWN_CONNECTION
) -> AsyncIterator[grpc.aio.Channel]:
    """A channel on its own TCP connection, so closing it is a client vanishing."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}", options=options)
    try:
        yield channel
    finally:
        await channel.close(None)


# ---- clients that go away ---------------------------------------------------------------
@pytest.mark.parametrize("vanish", ["cancel", "drop the connection"])
async def test_client_vanishing_mid_utterance_leaves_nothing_behind(
    tiny_engine: Tiny, vanish: str
) -> None:
    async with serving(*tiny_engine) as (running, channel):
        async with own_channel(running) as doomed:
            call = await open_stream(doomed, *audio_requests(pcm(JFK))[:200])  # 4 s, no end
            assert await until(lambda: audio_on_server(running) >= 4.0)
            if vanish == "cancel":
                call.cancel()
            else:
                await doomed.close(None)
            assert await until(lambda: idle(running))
        await still_serves(channel)
        assert await until(lambda: idle(running))


async def test_cancel_mid_decode_drops_the_call_and_its_queued_work(tiny_engine: Tiny) -> None:
    engine = ScriptedEngine(tiny_engine[0])
    async with serving(engine, tiny_engine[1], batch_wait_ms=0) as (running, channel):
        engine.forget_calls()
        engine.script(Step(hold=True))
        decoding = await open_stream(channel, *audio_requests(pcm(HESTER)), END)
        assert await asyncio.to_thread(engine.entered.wait, 30)  # HESTER is in the engine
        queued = await open_stream(channel, *audio_requests(pcm(JFK)), END)
        assert await until(lambda: running.scheduler.queue_depth == 1)  # JFK waits

        decoding.cancel()
        queued.cancel()
        assert await until(lambda: not running.state.streams)  # gone while the engine runs
        engine.release()
        assert await until(lambda: idle(running))
        assert engine.batch_sizes == [1]  # the cancelled, queued utterance never reached it
        await still_serves(channel)


async def test_slow_reader_is_held_back_and_server_memory_stays_bounded(
    tiny_engine: Tiny, publish: Publish
) -> None:
    """A client that stops reading while it talks with partials on: the server keeps at most a
    few events per utterance queued for it (not one per chunk), and all arrive in order once
    it reads again."""
    clips = [JFK, NIGHTFALL, HESTER]
    async with serving(*tiny_engine) as (running, _), own_channel(running, SLOW_READER) as slow:
        call: Call = stub(slow).StreamAudio()
        config = config_request(**GREEDY)
        config.config.interim_results = True
        config.config.partial_interval.FromMilliseconds(100)
        config.config.enable_speech_events = True
        await call.write(config)
        rss_before, sent, started = _peak_rss(), 0, time.monotonic()
        for clip in clips:  # about 4× real time, reading nothing
            for request in audio_requests(pcm(clip)):
                await call.write(request)
                sent += 1
                await asyncio.sleep(0.005)
            await call.write(END)
        assert await until(lambda: running.scheduler.queue_depth == 0)
        queued = _envelopes_alive()
        talked = time.monotonic() - started
        await call.done_writing()
        responses, error = await outcome(call)

    assert error is None
    assert [r.sequence for r in responses] == list(range(len(responses)))
    got = finals(responses)
    assert [f.utterance_id for f in got] == [1, 2, 3]
    for final, clip in zip(got, clips, strict=True):
        assert wer(clip.reference, final.final_result.transcript.text) <= 0.15
    assert queued <= sent // 10, (queued, sent)
    publish(
        "slow_reader",
        {
            "chunks_sent_unread": sent,
            "seconds_talking_unread": round(talked, 1),
            "server_events_queued_while_unread": queued,
            "responses_after_reading": len(responses),
            "partials": sum(r.WhichOneof("event") == "partial_result" for r in responses),
            "peak_rss_growth_mib_in_process": round((_peak_rss() - rss_before) / 2**20, 1),
        },
    )


def _envelopes_alive() -> int:
    """Results the server made that have not been sent yet (or are being sent)."""
    gc.collect()
    return sum(type(o) is Envelope for o in gc.get_objects())  # no __class__ lookups


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---- odd and oversized input ------------------------------------------------------------
async def test_flood_of_tiny_odd_sized_chunks_is_reassembled(
    tiny_engine: Tiny, publish: Publish
) -> None:
    data = pcm(HESTER)
    sizes = [0, 1, 2, 3, 5, 7]  # empty, odd and even: samples straddle chunks
    chunks: list[Request] = []
    position = 0
    while position < len(data):
        size = sizes[len(chunks) % len(sizes)]
        chunks.append(Request(audio=pb.AudioChunk(data=data[position : position + size])))
        position += size
    async with serving(*tiny_engine) as (running, channel):
        started = time.monotonic()
        requests = [config_request(**GREEDY), *chunks, END]
        responses = await collect(stub(channel).StreamAudio(paced(requests)))
        seconds = time.monotonic() - started
        assert await until(lambda: idle(running))
    [final] = finals(responses)
    assert final.final_result.transcript.audio_duration.ToNanoseconds() == len(data) // 2 * 62_500
    assert wer(HESTER.reference, final.final_result.transcript.text) <= 0.1
    publish(
        "tiny_chunk_flood",
        {
            "messages": len(chunks),
            "seconds": round(seconds, 2),
            "per_second": len(chunks) // seconds,
        },
    )


async def test_chunk_at_the_limit_passes_and_one_byte_more_fails(tiny_engine: Tiny) -> None:
    limit = 4096
    async with serving(*tiny_engine, max_chunk_bytes=limit) as (running, channel):
        call = await open_stream(channel, *audio_requests(pcm(HESTER), limit), END)
        first = [await call.read() for _ in range(2)]  # session_started, then the final
        assert first[1].WhichOneof("event") == "final_result"
        assert wer(HESTER.reference, first[1].final_result.transcript.text) <= 0.1

        await call.write(Request(audio=pb.AudioChunk(data=bytes(limit))))
        await call.write(Request(audio=pb.AudioChunk(data=bytes(limit + 1))))
        responses, error = await outcome(call)
        assert error is not None and not finals(responses)  # the open utterance is dropped
        code, reason, fields, _ = error_info(error)
        assert (code, reason, fields) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "CHUNK_TOO_LARGE",
            ["audio.data"],
        )
        assert await until(lambda: idle(running))


async def test_message_over_the_grpc_limit_is_refused_by_grpc(tiny_engine: Tiny) -> None:
    settings = {"max_request_bytes": 256 * 1024, "max_chunk_bytes": 1024 * 1024}
    async with serving(*tiny_engine, **settings) as (running, channel):
        call = await open_stream(channel, Request(audio=pb.AudioChunk(data=bytes(300 * 1024))))
        _, error = await outcome(call)
        assert error is not None
        code, reason, _, _ = error_info(error)
        assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "")  # gRPC's, no ErrorInfo
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub(channel).Transcribe(pb.TranscribeRequest(audio_content=bytes(300 * 1024)))
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await until(lambda: idle(running))
        await still_serves(channel)


# ---- limits -----------------------------------------------------------------------------
async def test_idle_streams_time_out_while_a_talking_one_lives_on(tiny_engine: Tiny) -> None:
    async with serving(*tiny_engine, idle_timeout_seconds=1.0) as (running, channel):
        silent = [await open_stream(channel) for _ in range(4)]
        halfway = [await open_stream(channel, *audio_requests(pcm(HESTER))) for _ in range(4)]
        talking = asyncio.create_task(_talk_through_the_timeout(channel))
        results = await asyncio.gather(*(outcome(call) for call in silent + halfway))
        talked = await talking

        for _, error in results:
            assert error is not None
            code, reason, _, _ = error_info(error)
            assert (code, reason) == (grpc.StatusCode.OUT_OF_RANGE, "IDLE_TIMEOUT")
        assert [len(finals(responses)) for responses, _ in results] == [0] * 4 + [1] * 4
        for responses, _ in results[4:]:
            flushed = finals(responses)[0].final_result
            assert flushed.end_reason == pb.END_REASON_STREAM_CLOSED
            assert wer(HESTER.reference, flushed.transcript.text) <= 0.1
        [spoken] = finals(talked)
        assert wer(JFK.reference, spoken.final_result.transcript.text) <= 0.1
        assert await until(lambda: idle(running))


async def test_a_half_closed_stream_waiting_for_its_final_is_not_idle(tiny_engine: Tiny) -> None:
    """The client said all it had to say; a slow server is no reason to time it out."""
    engine = ScriptedEngine(tiny_engine[0])
    async with serving(engine, tiny_engine[1], idle_timeout_seconds=1.0) as (running, channel):
        engine.forget_calls()
        engine.script(Step(hold=True))
        call = await open_stream(channel, *audio_requests(pcm(HESTER)))
        await call.done_writing()
        assert await asyncio.to_thread(engine.entered.wait, 30)
        await asyncio.sleep(2.5)  # two and a half idle timeouts with the final held up
        engine.release()
        responses, error = await outcome(call)
        assert error is None
        [final] = finals(responses)
        assert final.final_result.end_reason == pb.END_REASON_STREAM_CLOSED
        assert wer(HESTER.reference, final.final_result.transcript.text) <= 0.1
        assert await until(lambda: idle(running))


async def _talk_through_the_timeout(channel: grpc.aio.Channel) -> list[pb.StreamAudioResponse]:
    """A chunk of silence every 0.25 s for 3 s (three idle timeouts), then speech."""
    silence = [Request(audio=pb.AudioChunk(data=bytes(640)))] * 12
    pause = [config_request(**GREEDY), *silence]
    speech = [*audio_requests(pcm(JFK)), END]
    return await collect(stub(channel).StreamAudio(_chained(paced(pause, 0.25), paced(speech))))


async def _chained(*parts: AsyncIterator[Request]) -> AsyncIterator[Request]:
    for part in parts:
        async for request in part:
            yield request


async def test_streams_opened_at_once_never_exceed_the_limit(tiny_engine: Tiny) -> None:
    async with serving(*tiny_engine, max_streams=4) as (running, channel):
        calls = [stub(channel).StreamAudio() for _ in range(12)]
        await asyncio.gather(*(call.write(config_request()) for call in calls))
        firsts = await asyncio.gather(*(_first_response(call) for call in calls))
        admitted = [c for c, first in zip(calls, firsts, strict=True) if first is None]
        refused = [first for first in firsts if first is not None]

        assert len(admitted) == 4 and len(running.state.streams) == 4
        for error in refused:
            code, reason, _, retry = error_info(error)
            assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_BUSY")
            assert retry is not None and retry > 0
        await admitted[0].done_writing()
        assert await admitted[0].read() is grpc.aio.EOF  # a slot frees ...
        latecomer = stub(channel).StreamAudio()
        await latecomer.write(config_request())
        assert await _first_response(latecomer) is None  # ... and the next stream gets it
        for call in [*admitted[1:], latecomer]:
            await call.done_writing()
        assert await until(lambda: idle(running))


async def _first_response(call: Call) -> grpc.aio.AioRpcError | None:
    """None if the stream started, else the error that refused it."""
    try:
        first = await call.read()
    except grpc.aio.AioRpcError as error:
        return error
    assert first.WhichOneof("event") == "session_started"
    return None


async def test_engine_failure_fails_only_the_callers_in_that_batch(tiny_engine: Tiny) -> None:
    engine = ScriptedEngine(tiny_engine[0])
    settings = {"batch_wait_ms": 0, "max_batch_size": 2}
    async with serving(engine, tiny_engine[1], **settings) as (running, channel):
        engine.forget_calls()
        # Call 0 holds the engine; call 1, the first batch of two, fails.
        engine.script(Step(hold=True), Step(error=CUDA_FAILURE))
        clips = [HESTER, JFK, NIGHTFALL, HESTER, JFK]
        calls = [await open_stream(channel, *audio_requests(pcm(clips[0])), END)]
        assert await asyncio.to_thread(engine.entered.wait, 30)  # call 0 holds the engine
        for waiting, clip in enumerate(clips[1:], start=1):  # queued in this order
            calls.append(await open_stream(channel, *audio_requests(pcm(clip)), END))
            assert await until(lambda n=waiting: running.scheduler.queue_depth == n)
        engine.release()
        for call in calls:
            await call.done_writing()
        results = await asyncio.gather(*(outcome(call) for call in calls))

        assert engine.batch_sizes == [1, 2, 2]
        failed = [i for i, (_, error) in enumerate(results) if error is not None]
        assert failed == [1, 2]  # first come, first served: the batch of streams 1 and 2
        for index in failed:
            code, reason, _, _ = error_info(results[index][1])  # type: ignore[arg-type]
            assert (code, reason) == (grpc.StatusCode.INTERNAL, "ENGINE_FAILURE")
        for index in (0, 3, 4):
            [final] = finals(results[index][0])
            assert wer(clips[index].reference, final.final_result.transcript.text) <= 0.1
        assert await until(lambda: idle(running))
        await still_serves(channel)


# ---- the process: SIGTERM under load, restart ------------------------------------------
@pytest.fixture
def serve_process() -> Iterator[ServeProcess]:
    server = ServeProcess.start("--grace-seconds", "60")
    yield server
    server.kill()


async def test_sigterm_under_load_finalizes_every_open_utterance(
    serve_process: ServeProcess, publish: Publish
) -> None:
    streams = 20
    async with grpc.aio.insecure_channel(serve_process.target) as channel:
        calls = [await open_stream(channel) for _ in range(streams)]
        counts = [0] * streams
        senders = [
            asyncio.create_task(_talk_in_real_time(call, counts, i)) for i, call in enumerate(calls)
        ]
        readers = [asyncio.create_task(outcome(call)) for call in calls]
        assert await until(lambda: min(counts) >= 100)  # every stream 2 s into its utterance

        signalled = time.monotonic()
        serve_process.terminate()
        with pytest.raises(grpc.aio.AioRpcError) as refused:  # no new streams meanwhile
            await (await open_stream(channel)).read()
        results = await asyncio.gather(*readers)
        await asyncio.gather(*senders)
    exit_code = await asyncio.to_thread(serve_process.wait, 75)  # the grace period + a margin
    exited = time.monotonic() - signalled

    assert exit_code == 0
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    for responses, error in results:
        assert error is not None
        code, reason, _, retry = error_info(error)
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "SERVER_DRAINING")
        assert retry is not None
        [final] = finals(responses)
        assert final.final_result.end_reason == pb.END_REASON_SERVER_SHUTDOWN
        assert final.final_result.transcript.text.lower().startswith("and so")
    publish("sigterm_under_load", {"streams": streams, "seconds_to_exit": round(exited, 2)})


async def _talk_in_real_time(call: Call, counts: list[int], index: int) -> None:
    """JFK twice over at 20 ms a chunk, no end: stops when the call ends."""
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
        for request in audio_requests(pcm(JFK)) * 2:
            if call.done():
                return
            await call.write(request)
            counts[index] += 1
            await asyncio.sleep(0.02)


async def test_restart_on_the_same_port_and_the_sdk_reconnects(
    serve_process: ServeProcess,
) -> None:
    port = serve_process.port
    retry = RetryPolicy(max_attempts=60, initial_backoff=0.25, max_backoff=1.0)
    options = StreamOptions(recognition=RecognitionOptions(language="en", temperature=0.0))
    async with AsyncClient(serve_process.target, retry=retry) as client:
        session = PushToTalkSession(client, options)
        events = session.events()
        before = await _utterance(session, events, HESTER)
        assert wer(HESTER.reference, before.transcript.text) <= 0.1

        serve_process.terminate()
        lost = await anext(events)
        assert isinstance(lost, ConnectionLost) and not lost.lost_utterance
        assert await asyncio.to_thread(serve_process.wait, 45) == 0
        restarted = asyncio.create_task(asyncio.to_thread(ServeProcess.start, "--port", str(port)))
        try:
            after = await _utterance(session, events, JFK)  # press() reconnects, retrying
            transcript = await client.transcribe(HESTER.read(), options.recognition)
        finally:
            (await restarted).kill()
        await session.close()
    assert wer(JFK.reference, after.transcript.text) <= 0.1
    assert wer(HESTER.reference, transcript.text) <= 0.1


async def _utterance(
    session: PushToTalkSession, events: AsyncIterator[SessionEvent], clip: Clip
) -> UtteranceResult:
    await session.press()
    for request in audio_requests(pcm(clip), 3200):
        await session.audio(request.audio.data)
    await session.release()
    result = await anext(events)
    assert isinstance(result, UtteranceResult), result
    return result
