"""The SDK (sync and asyncio) against a real server on port 0 with the real tiny.en model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from tests.grpc_helpers import serving
from tests.speech import HESTER, JFK, NIGHTFALL, load_pcm16k, silence, to_s16le, wer
from whisperwire.client import (
    NO_RETRY,
    AsyncAudioStream,
    AsyncClient,
    AudioFormat,
    AuthenticationError,
    Client,
    DeadlineExceededError,
    EndReason,
    FinalResult,
    PartialResult,
    RecognitionOptions,
    RetryPolicy,
    SegmentResult,
    ServerBusyError,
    ServerUnavailableError,
    ServiceError,
    SpeechEvent,
    StreamClosedError,
    StreamOptions,
)
from whisperwire.server.app import RunningServer, start_server
from whisperwire.server.config import ServerSettings
from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
from whisperwire.server.tokenizer import WhisperTokenizer

TOKEN = "s3cret-token"


def pcm(clip: object) -> bytes:
    return to_s16le(load_pcm16k(clip))  # type: ignore[arg-type]


@pytest.fixture
async def client(tiny_target: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(tiny_target) as client:
        yield client


@pytest.fixture(scope="module")
async def guarded_server(
    tiny_engine: tuple[CTranslate2Engine, WhisperTokenizer],
) -> AsyncIterator[RunningServer]:
    """A second server: needs a token, takes one stream at a time, starts not ready."""
    engine, tokenizer = tiny_engine
    settings = ServerSettings(port=0, token=TOKEN, max_streams=1)
    running = await start_server(settings, engine, tokenizer, warm_up=False)
    yield running
    await running.drain_and_stop(grace=1.0)


# ---- unary ---------------------------------------------------------------------------------
async def test_transcribe_a_path_with_timings_and_timestamps(client: AsyncClient) -> None:
    options = RecognitionOptions(segment_timestamps=True, include_timings=True)
    transcript = await client.transcribe(JFK.path, options, request_id="sdk-1")

    assert wer(JFK.reference, transcript.text) <= 0.1
    assert transcript.language == "en"
    assert transcript.duration == pytest.approx(11.0, rel=0.01)
    assert transcript.request_id == "sdk-1" and transcript.model == "tiny.en"
    assert transcript.timings is not None and transcript.timings.inference > 0
    starts = [s.start for s in transcript.segments]
    assert len(starts) >= 2 and starts == sorted(starts)
    assert all(s.end > s.start for s in transcript.segments)


async def test_transcribe_file_bytes_and_raw_pcm(client: AsyncClient) -> None:
    from_bytes = await client.transcribe(NIGHTFALL.read())
    samples = load_pcm16k(HESTER).astype("<f4").tobytes()
    from_raw = await client.transcribe(samples, raw=AudioFormat(encoding="f32le"))

    assert wer(NIGHTFALL.reference, from_bytes.text) <= 0.1
    assert wer(HESTER.reference, from_raw.text) <= 0.1
    assert from_raw.timings is None  # not asked for


async def test_sync_client_gives_the_same_results(tiny_target: str) -> None:
    def use_sync_client() -> tuple[str, str, str]:
        with Client(tiny_target) as client:
            transcript = client.transcribe(str(HESTER.path))
            info = client.service_info()
            return transcript.text, info.model, client.health()

    text, model, health = await asyncio.to_thread(use_sync_client)
    assert wer(HESTER.reference, text) <= 0.1
    assert (model, health) == ("tiny.en", "SERVING")


async def test_service_info_and_health(client: AsyncClient) -> None:
    info = await client.service_info()
    assert (info.model, info.engine) == ("tiny.en", "ctranslate2")
    assert info.device.startswith("cpu")
    assert info.languages == ("en",) and info.tasks == ("transcribe",)
    assert info.limits.max_chunk_bytes > 0 and info.default_beam_size >= 1
    assert await client.health() == "SERVING"
    assert await client.health("whisperwire.v1.TranscriptionService") == "SERVING"


async def test_deadline_exceeded_is_reported_and_not_retried(client: AsyncClient) -> None:
    long_input = to_s16le(np.concatenate([load_pcm16k(JFK)] * 4))
    with pytest.raises(DeadlineExceededError) as raised:
        await client.transcribe(long_input, raw=AudioFormat(), timeout=0.05)
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert not raised.value.retryable


# ---- streams -------------------------------------------------------------------------------
async def test_push_to_talk_utterances_on_one_stream(client: AsyncClient) -> None:
    clips = (JFK, NIGHTFALL, HESTER)
    async with await client.stream(StreamOptions(RecognitionOptions(language="en"))) as stream:
        assert stream.session.session_id and stream.session.limits.max_chunk_bytes > 0
        for clip in clips:
            await stream.push(pcm(clip))
            await stream.end_utterance()
        finals = []
        async for event in stream:
            if isinstance(event, FinalResult):
                finals.append(event)
            if len(finals) == len(clips):
                break

    assert [f.utterance_id for f in finals] == [1, 2, 3]
    for final, clip in zip(finals, clips, strict=True):
        assert final.end_reason == EndReason.CLIENT_END
        assert wer(clip.reference, final.transcript.text) <= 0.1
    # Offsets run on the stream's audio clock: utterance 3 starts after utterances 1 and 2.
    assert finals[2].transcript.segments[0].start >= 11.0 + 6.5


async def test_cancel_drops_the_utterance_and_close_flushes_the_next(client: AsyncClient) -> None:
    stream = await client.stream()
    await stream.push(pcm(JFK))
    await stream.cancel()
    await stream.push(pcm(HESTER))
    await stream.close()
    events = [event async for event in stream]

    finals = [e for e in events if isinstance(e, FinalResult)]
    assert len(finals) == 1
    assert finals[0].utterance_id == 2 and finals[0].end_reason == EndReason.STREAM_CLOSED
    assert wer(HESTER.reference, finals[0].transcript.text) <= 0.1
    with pytest.raises(StreamClosedError):
        await stream.push(b"\0\0")


async def test_partials_segments_and_speech_events(client: AsyncClient) -> None:
    audio = np.concatenate([load_pcm16k(HESTER), silence(1.2), load_pcm16k(NIGHTFALL)])
    options = StreamOptions(
        RecognitionOptions(language="en"),
        interim_results=True,
        partial_interval=0.3,
        segment_silence=0.7,
        speech_events=True,
    )
    async with await client.stream(options) as stream:
        pcm_bytes = to_s16le(audio)
        for start in range(0, len(pcm_bytes), 640 * 25):  # half a second per push, 2x real time
            await stream.push(pcm_bytes[start : start + 640 * 25])
            await asyncio.sleep(0.25)
        await stream.end_utterance()
        events = []
        async for event in stream:
            events.append(event)
            if isinstance(event, FinalResult):
                break

    kinds = {type(e) for e in events}
    assert {PartialResult, SegmentResult, SpeechEvent} <= kinds
    segments = [e.segment for e in events if isinstance(e, SegmentResult)]
    final = events[-1]
    assert isinstance(final, FinalResult)
    committed = final.transcript.segments[: len(segments)]
    assert [s.text for s in committed] == [s.text for s in segments]
    assert wer(f"{HESTER.reference} {NIGHTFALL.reference}", final.transcript.text) <= 0.15


async def test_sync_stream_push_end_and_iterate(tiny_target: str) -> None:
    def talk() -> list[str]:
        with Client(tiny_target) as client, client.stream() as stream:
            stream.push(pcm(NIGHTFALL))
            stream.end_utterance()
            stream.push(pcm(HESTER))
            stream.close()
            return [e.transcript.text for e in stream if isinstance(e, FinalResult)]

    texts = await asyncio.to_thread(talk)
    assert len(texts) == 2
    assert wer(NIGHTFALL.reference, texts[0]) <= 0.1 and wer(HESTER.reference, texts[1]) <= 0.1


async def test_stream_deadline_ends_the_call(client: AsyncClient) -> None:
    stream = await client.stream(timeout=0.5)
    with pytest.raises(DeadlineExceededError):
        async for _ in stream:
            pass


# ---- auth, readiness, retries ----------------------------------------------------------------
async def test_wrong_or_missing_token_is_an_authentication_error(
    guarded_server: RunningServer,
) -> None:
    target = f"127.0.0.1:{guarded_server.port}"
    for token in (None, "wrong"):
        async with AsyncClient(target, token=token) as client:
            with pytest.raises(AuthenticationError):
                await client.service_info()
    async with AsyncClient(target, token=TOKEN) as client:
        assert (await client.service_info()).model == "tiny.en"


async def test_retry_on_unavailable_while_the_engine_warms_up(
    guarded_server: RunningServer,
) -> None:
    target = f"127.0.0.1:{guarded_server.port}"
    guarded_server.state.ready = False
    try:
        async with AsyncClient(target, token=TOKEN, retry=NO_RETRY) as impatient:
            with pytest.raises(ServerUnavailableError) as raised:
                await impatient.transcribe(HESTER.read())
        assert raised.value.reason == "ENGINE_NOT_READY" and raised.value.retry_delay == 1.0

        # Ready again after 1.5 s: the first attempt and the retry 1 s later (RetryInfo) fail,
        # the one after succeeds.
        asyncio.get_running_loop().call_later(1.5, setattr, guarded_server.state, "ready", True)
        async with AsyncClient(target, token=TOKEN, retry=RetryPolicy(max_attempts=5)) as client:
            transcript = await client.transcribe(HESTER.read())
        assert wer(HESTER.reference, transcript.text) <= 0.1
    finally:
        guarded_server.state.ready = True


async def test_stream_open_is_retried_until_the_engine_is_ready(
    guarded_server: RunningServer,
) -> None:
    target = f"127.0.0.1:{guarded_server.port}"
    guarded_server.state.ready = False
    asyncio.get_running_loop().call_later(1.5, setattr, guarded_server.state, "ready", True)
    try:
        async with AsyncClient(target, token=TOKEN) as client:
            stream = await client.stream()
            await stream.push(pcm(HESTER))
            await stream.close()
            [final] = [e async for e in stream if isinstance(e, FinalResult)]
        assert wer(HESTER.reference, final.transcript.text) <= 0.1
    finally:
        guarded_server.state.ready = True


async def test_busy_server_says_when_to_retry_and_the_deadline_wins(
    guarded_server: RunningServer,
) -> None:
    target = f"127.0.0.1:{guarded_server.port}"
    async with AsyncClient(target, token=TOKEN) as client:
        first = await client.stream()  # the server's only stream slot
        try:
            # The server asks for 5 s; a 1 s deadline cannot wait that long, so no retry.
            with pytest.raises(ServerBusyError) as raised:
                await client.stream(timeout=1.0)
            assert raised.value.retryable and raised.value.retry_delay == 5.0
            assert raised.value.reason == "SERVER_BUSY"
        finally:
            first.abort()


async def test_the_servers_status_survives_writes_racing_the_end_of_the_call(
    tiny_engine: tuple[CTranslate2Engine, WhisperTokenizer],
) -> None:
    """Writes in flight as a draining server ends each call must not replace its status with
    grpcio's INTERNAL "Internal error from Core" (grpc/grpc#36066; client/call_status.py)."""
    async with (
        serving(*tiny_engine) as (running, _),
        AsyncClient(f"127.0.0.1:{running.port}", retry=NO_RETRY) as client,
    ):
        streams = [await client.stream() for _ in range(24)]
        drained = asyncio.Event()
        writers = [asyncio.create_task(_push_until_closed(s, drained)) for s in streams]
        await asyncio.sleep(0.3)
        running.state.drain()
        drained.set()  # now write as fast as flow control lets: the race's window
        endings = await asyncio.gather(*(_how_it_ended(s) for s in streams))
        write_errors = await asyncio.gather(*writers)

    for ending in [*endings, *write_errors]:
        if isinstance(ending, StreamClosedError):
            continue  # a write after the end was seen: the reader has the status
        assert isinstance(ending, ServerUnavailableError), ending
        assert ending.reason == "SERVER_DRAINING" and ending.retry_delay is not None
    assert all(isinstance(e, ServerUnavailableError) for e in endings)


async def _push_until_closed(stream: AsyncAudioStream, drained: asyncio.Event) -> Exception:
    speech = pcm(HESTER)
    chunks = [speech[i : i + 640] for i in range(0, len(speech), 640)]
    while True:
        for chunk in chunks:
            try:
                await stream.push(chunk)
            except (ServiceError, StreamClosedError) as error:
                return error
            await asyncio.sleep(0 if drained.is_set() else 0.005)


async def _how_it_ended(stream: AsyncAudioStream) -> Exception | None:
    try:
        async for _ in stream:
            pass
    except ServiceError as error:
        return error
    return None


async def test_unreachable_server_is_unavailable() -> None:
    with socket_on_free_port() as port:
        pass  # closed again: nothing listens there
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.05)
    async with AsyncClient(f"127.0.0.1:{port}", retry=policy) as client:
        with pytest.raises(ServerUnavailableError) as raised:
            await client.service_info()
    assert raised.value.reason == ""  # the connection failed; no server said anything


def socket_on_free_port() -> _FreePort:
    return _FreePort()


class _FreePort:
    def __enter__(self) -> int:
        import socket

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        return int(self._socket.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self._socket.close()
