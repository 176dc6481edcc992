"""A push-to-talk session: one stream for the whole session, an utterance per key press.

The key goes down (`press`), audio frames arrive (`audio`), the key comes up (`release`):
speech passes the VAD gate to the stream, and the release sends end_utterance, whose final
comes back as an UtteranceResult with the release→final latency. An automatic segment
(the gate's pause) ends the utterance early, and the press goes on with the next one.

If the stream fails (server restart, idle timeout), a ConnectionLost is reported and the next
press opens a new stream.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from whisperwire.client.aio import AsyncAudioStream, AsyncClient
from whisperwire.client.errors import ServiceError, StreamClosedError, WhisperwireClientError
from whisperwire.client.options import StreamOptions
from whisperwire.client.results import EndReason, FinalResult, SessionInfo, Transcript
from whisperwire.client.vad_gate import VadGate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UtteranceResult:
    transcript: Transcript
    utterance_id: int
    end_reason: EndReason
    automatic: bool
    """Ended by a pause in speech (segment silence), not by the key."""
    latency: float | None
    """Seconds from the end being sent (release or pause) to the final; None if the server
    ended the utterance itself."""


@dataclass(frozen=True)
class ConnectionLost:
    error: WhisperwireClientError
    lost_utterance: bool
    """An utterance was open or awaiting its final, and no final will come for it."""


SessionEvent = UtteranceResult | ConnectionLost


@dataclass(frozen=True)
class _PendingEnd:
    sent_at: float
    automatic: bool


class PushToTalkSession:
    def __init__(
        self, client: AsyncClient, options: StreamOptions, gate: VadGate | None = None
    ) -> None:
        self._client = client
        self._options = options
        self._gate = gate
        self._stream: AsyncAudioStream | None = None
        self._reader: asyncio.Task[None] | None = None
        self._events: asyncio.Queue[SessionEvent | None] = asyncio.Queue()
        self._pending: deque[_PendingEnd] = deque()
        self._talking = False
        self._sent_since_end = False
        self._auto_ends_this_press = 0

    @property
    def talking(self) -> bool:
        return self._talking

    @property
    def connected(self) -> bool:
        return self._stream is not None

    async def connect(self) -> SessionInfo:
        """Open the session's stream now (retried while no audio has been sent)."""
        stream = await self._client.stream(self._options)
        self._stream = stream
        self._reader = asyncio.create_task(self._read(stream))
        log.info("stream open: session %s", stream.session.session_id)
        return stream.session

    async def press(self) -> None:
        """Start an utterance; reconnects first if the last stream was lost."""
        if self._stream is None:
            await self.connect()
        if self._gate is not None:
            self._gate.reset()
        self._talking = True
        self._sent_since_end = False
        self._auto_ends_this_press = 0

    async def audio(self, frame: bytes) -> None:
        """A frame of captured audio; ignored unless talking."""
        if not self._talking:
            return
        if self._gate is None:
            await self._push(frame)
            return
        gated = self._gate.process(frame)
        if gated.audio:
            await self._push(gated.audio)
        if gated.pause:
            await self._end(automatic=True)

    async def release(self) -> None:
        """End the utterance: its final follows as an UtteranceResult."""
        if not self._talking:
            return
        self._talking = False
        if self._auto_ends_this_press and not self._sent_since_end:
            return  # the last pause already ended it; an empty final would add nothing
        await self._end(automatic=False)

    async def close(self) -> None:
        """Half-close, wait for the outstanding finals, end the event sequence."""
        self._talking = False
        stream, reader = self._stream, self._reader
        if stream is not None:
            await stream.close()
        if reader is not None:
            await reader
        self._events.put_nowait(None)

    async def events(self) -> AsyncIterator[SessionEvent]:
        """Finals and lost connections, in order, until close()."""
        while (event := await self._events.get()) is not None:
            yield event

    async def _push(self, audio: bytes) -> None:
        stream = self._stream
        if stream is None:
            return
        try:
            await stream.push(audio)
            self._sent_since_end = True
        except (ServiceError, StreamClosedError) as error:
            self._lose(stream, error)

    async def _end(self, *, automatic: bool) -> None:
        stream = self._stream
        if stream is None:
            return
        self._pending.append(_PendingEnd(time.monotonic(), automatic))
        self._auto_ends_this_press += int(automatic)
        self._sent_since_end = False
        try:
            await stream.end_utterance()
        except (ServiceError, StreamClosedError) as error:
            self._lose(stream, error)

    async def _read(self, stream: AsyncAudioStream) -> None:
        try:
            async for event in stream:
                if isinstance(event, FinalResult):
                    self._events.put_nowait(self._result(event))
        except ServiceError as error:
            self._lose(stream, error)

    def _result(self, final: FinalResult) -> UtteranceResult:
        if final.end_reason != EndReason.CLIENT_END:
            self._sent_since_end = False  # the server ended it (e.g. shutting down) itself
        answered = final.end_reason == EndReason.CLIENT_END and self._pending
        pending = self._pending.popleft() if answered else None
        automatic = pending.automatic if pending else False
        latency = time.monotonic() - pending.sent_at if pending else None
        return UtteranceResult(
            final.transcript, final.utterance_id, final.end_reason, automatic, latency
        )

    def _lose(self, stream: AsyncAudioStream, error: WhisperwireClientError) -> None:
        """Report a failed stream once; the next press reconnects."""
        if self._stream is not stream:
            return
        log.warning("stream lost: %s", error)
        lost = bool(self._pending) or (self._talking and self._sent_since_end)
        self._stream, self._reader = None, None
        self._pending.clear()
        stream.abort()
        self._events.put_nowait(ConnectionLost(error, lost))
