"""The push-to-talk session (what `whisperwire mic` runs) fed real speech frame by frame:
one stream for many utterances, VAD gating, automatic segments, reconnect after a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from tests.speech import HESTER, JFK, NIGHTFALL, load_pcm16k, to_s16le, wer, white_noise
from whisperwire.client import AsyncClient, EndReason, RecognitionOptions, StreamOptions
from whisperwire.client.push_to_talk import (
    ConnectionLost,
    PushToTalkSession,
    SessionEvent,
    UtteranceResult,
)
from whisperwire.client.vad_gate import GateSettings, VadGate, split_frames
from whisperwire.server.app import RunningServer, start_server
from whisperwire.server.config import ServerSettings
from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
from whisperwire.server.tokenizer import WhisperTokenizer

ENGLISH = StreamOptions(RecognitionOptions(language="en"))


def spoken(*clips: object, pause: float = 1.0) -> bytes:
    """The clips with `pause` seconds of quiet room tone around and between them."""
    parts = [white_noise(pause, level=0.0003, seed=0)]
    for seed, clip in enumerate(clips, start=1):
        parts += [load_pcm16k(clip), white_noise(pause, level=0.0003, seed=seed)]  # type: ignore[arg-type]
    return to_s16le(np.concatenate(parts))


async def say(session: PushToTalkSession, audio: bytes) -> None:
    """Hold the key, speak `audio` frame by frame, release."""
    await session.press()
    for frame in split_frames(audio, 640):
        await session.audio(frame)
    await session.release()


async def take(events: AsyncIterator[SessionEvent], count: int) -> list[SessionEvent]:
    """The next `count` events (a generous guard turns a missing event into a failure)."""
    return [await asyncio.wait_for(anext(events), 120) for _ in range(count)]


async def test_utterances_on_one_stream_with_the_vad_gate(tiny_target: str) -> None:
    talks = (spoken(HESTER), spoken(NIGHTFALL))
    async with AsyncClient(tiny_target) as client:
        session = PushToTalkSession(client, ENGLISH, VadGate())
        first = await session.connect()
        for audio in talks:
            await say(session, audio)
        await session.close()
        results = [event async for event in session.events()]

    assert all(isinstance(r, UtteranceResult) for r in results)
    assert [r.utterance_id for r in results] == [1, 2]  # type: ignore[union-attr]
    for result, clip, audio in zip(results, (HESTER, NIGHTFALL), talks, strict=True):
        assert isinstance(result, UtteranceResult)
        assert result.end_reason == EndReason.CLIENT_END and not result.automatic
        assert result.latency is not None and result.latency > 0
        assert wer(clip.reference, result.transcript.text) <= 0.1
        # The room tone before and after was held back: the server got less than was said.
        assert result.transcript.duration < len(audio) / 32000 - 1.0
    assert first.session_id


async def test_a_pause_ends_a_segment_and_release_adds_no_empty_final(tiny_target: str) -> None:
    gate = VadGate(GateSettings(segment_silence_ms=700))
    async with AsyncClient(tiny_target) as client:
        session = PushToTalkSession(client, ENGLISH, gate)
        await session.connect()
        await say(session, spoken(NIGHTFALL, HESTER, pause=1.5))
        await session.close()
        results = [event async for event in session.events()]

    assert len(results) == 2
    for result, clip in zip(results, (NIGHTFALL, HESTER), strict=True):
        assert isinstance(result, UtteranceResult) and result.automatic
        assert wer(clip.reference, result.transcript.text) <= 0.1


async def test_an_empty_press_gets_an_empty_final(tiny_target: str) -> None:
    async with AsyncClient(tiny_target) as client:
        session = PushToTalkSession(client, ENGLISH, VadGate())
        await session.connect()
        await say(session, to_s16le(white_noise(1.0, level=0.0003)))
        await session.close()
        [result] = [event async for event in session.events()]
    assert isinstance(result, UtteranceResult) and result.transcript.text == ""


@pytest.fixture
async def restartable(
    tiny_engine: tuple[CTranslate2Engine, WhisperTokenizer],
) -> AsyncIterator[list[RunningServer]]:
    """A server of its own (the test stops it); the list holds the current incarnation."""
    engine, tokenizer = tiny_engine
    servers = [await start_server(ServerSettings(port=0), engine, tokenizer, warm_up=False)]
    yield servers
    await servers[-1].drain_and_stop(grace=0.5)


async def test_a_server_restart_mid_utterance_then_reconnect_on_the_next_press(
    restartable: list[RunningServer], tiny_engine: tuple[CTranslate2Engine, WhisperTokenizer]
) -> None:
    port = restartable[0].port
    async with AsyncClient(f"127.0.0.1:{port}") as client:
        session = PushToTalkSession(client, ENGLISH, VadGate())
        events = session.events()
        await session.connect()

        # The server shuts down while the key is held: it finalizes what it got, then the
        # stream ends; the rest of this press goes nowhere.
        await session.press()
        for frame in split_frames(spoken(JFK), 640):
            await session.audio(frame)
        await restartable[0].drain_and_stop(grace=30)  # time to decode the open utterance
        shutdown_final, lost = await take(events, 2)
        await session.release()

        engine, tokenizer = tiny_engine
        settings = ServerSettings(port=port)
        restartable.append(await start_server(settings, engine, tokenizer, warm_up=False))
        assert not session.connected
        await say(session, spoken(HESTER))  # reconnects first
        [after_restart] = await take(events, 1)
        await session.close()

    assert isinstance(shutdown_final, UtteranceResult)
    assert shutdown_final.end_reason == EndReason.SERVER_SHUTDOWN
    assert shutdown_final.latency is None
    assert wer(JFK.reference, shutdown_final.transcript.text) <= 0.1
    assert isinstance(lost, ConnectionLost)
    assert "SERVER_DRAINING" in str(lost.error) and not lost.lost_utterance
    assert isinstance(after_restart, UtteranceResult)
    assert after_restart.end_reason == EndReason.CLIENT_END
    assert wer(HESTER.reference, after_restart.transcript.text) <= 0.1
