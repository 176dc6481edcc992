"""The blocking client: a facade over AsyncClient, whose event loop runs in a background
thread, so the protocol logic exists once.

    with Client("127.0.0.1:50051") as client:
        print(client.transcribe("talk.flac").text)
        with client.stream() as stream:
            stream.push(pcm)
            stream.end_utterance()
            for event in stream: ...
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from types import TracebackType
from typing import Any, TypeVar

from whisperwire.client.aio import AsyncAudioStream, AsyncClient, AudioSource
from whisperwire.client.channel import DEFAULT_TARGET
from whisperwire.client.options import AudioFormat, RecognitionOptions, StreamOptions
from whisperwire.client.results import ServiceInfo, SessionInfo, StreamEvent, Transcript
from whisperwire.client.retry import RetryPolicy

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever in a daemon thread; coroutines are submitted to it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="whisperwire-client", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt: do not leave the call running
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class Client:
    """Blocking twin of AsyncClient; same arguments, same results, same errors."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> None:
        self._loop = _LoopThread()
        self._async = AsyncClient(
            target,
            token=token,
            tls=tls,
            root_certificates=root_certificates,
            retry=retry,
            timeout=timeout,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.loop.is_closed():
            return
        self._loop.run(self._async.close())
        self._loop.stop()

    def transcribe(
        self,
        audio: AudioSource,
        options: RecognitionOptions | None = None,
        *,
        raw: AudioFormat | None = None,
        request_id: str = "",
        timeout: float | None = None,
    ) -> Transcript:
        return self._loop.run(
            self._async.transcribe(audio, options, raw=raw, request_id=request_id, timeout=timeout)
        )

    def service_info(self, *, timeout: float | None = None) -> ServiceInfo:
        return self._loop.run(self._async.service_info(timeout=timeout))

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        return self._loop.run(self._async.health(service, timeout=timeout))

    def stream(
        self, options: StreamOptions | None = None, *, timeout: float | None = None
    ) -> AudioStream:
        return AudioStream(self._loop.run(self._async.stream(options, timeout=timeout)), self._loop)


class AudioStream:
    """Blocking twin of AsyncAudioStream. Writing and reading may happen in different threads."""

    def __init__(self, stream: AsyncAudioStream, loop: _LoopThread) -> None:
        self._stream = stream
        self._loop = loop

    @property
    def session(self) -> SessionInfo:
        return self._stream.session

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None:
            self.close()
        else:
            self.abort()

    def push(self, audio: bytes) -> None:
        self._loop.run(self._stream.push(audio))

    def end_utterance(self) -> None:
        self._loop.run(self._stream.end_utterance())

    def cancel(self) -> None:
        self._loop.run(self._stream.cancel())

    def close(self) -> None:
        self._loop.run(self._stream.close())

    def abort(self) -> None:
        self._loop.loop.call_soon_threadsafe(self._stream.abort)

    def next_event(self) -> StreamEvent | None:
        return self._loop.run(self._stream.next_event())

    def __iter__(self) -> Iterator[StreamEvent]:
        while (event := self.next_event()) is not None:
            yield event
