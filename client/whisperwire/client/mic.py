"""Microphone capture with sounddevice (PortAudio), like Riva's MicrophoneStream: a context
manager and iterator of fixed-size frames, fed by the audio callback through a queue that
ends with a sentinel."""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any

from whisperwire.client.errors import WhisperwireClientError

log = logging.getLogger(__name__)


class MicrophoneError(WhisperwireClientError):
    """No usable input device: PortAudio or sounddevice missing, no device, or it failed."""


@dataclass(frozen=True)
class InputDevice:
    index: int
    name: str
    channels: int
    default_sample_rate: float
    is_default: bool


def _sounddevice() -> ModuleType:
    try:
        import sounddevice
    except OSError as error:  # the module loads, the PortAudio library does not
        raise MicrophoneError(
            f"{error}: install PortAudio (Debian/Ubuntu: apt-get install libportaudio2)"
        ) from None
    except ImportError:
        raise MicrophoneError(
            "sounddevice is not installed: pip install 'whisperwire[mic]'"
        ) from None
    module: ModuleType = sounddevice
    return module


def list_input_devices() -> list[InputDevice]:
    sd = _sounddevice()
    default = _default_input_index(sd)
    return [
        InputDevice(
            index=int(d["index"]),
            name=str(d["name"]),
            channels=int(d["max_input_channels"]),
            default_sample_rate=float(d["default_samplerate"]),
            is_default=int(d["index"]) == default,
        )
        for d in sd.query_devices()
        if int(d["max_input_channels"]) > 0
    ]


def find_input_device(spec: str | None) -> InputDevice:
    """The device given by index or by a part of its name; None is the default input."""
    devices = list_input_devices()
    if not devices:
        raise MicrophoneError("no audio input device found (see --list-devices)")
    if spec is None:
        return next((d for d in devices if d.is_default), devices[0])
    if spec.isdigit():
        match = [d for d in devices if d.index == int(spec)]
    else:
        match = [d for d in devices if spec.lower() in d.name.lower()]
    if not match:
        raise MicrophoneError(f"no input device matches {spec!r} (see --list-devices)")
    return match[0]


def _default_input_index(sd: ModuleType) -> int | None:
    try:
        return int(sd.query_devices(kind="input")["index"])
    except sd.PortAudioError:
        return None


class MicrophoneStream:
    """Frames of 16-bit mono PCM from an input device.

    with MicrophoneStream(frame_ms=20) as mic:
        for frame in mic: ...
    """

    def __init__(
        self, *, device: InputDevice | None = None, sample_rate: int = 16000, frame_ms: int = 20
    ) -> None:
        self.device = device
        self.sample_rate = sample_rate
        self.frame_bytes = 2 * sample_rate * frame_ms // 1000
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._pending = b""
        self._stream: Any = None

    def __enter__(self) -> MicrophoneStream:
        sd = _sounddevice()
        try:
            self._stream = sd.RawInputStream(
                samplerate=self.sample_rate,
                blocksize=self.frame_bytes // 2,
                device=self.device.index if self.device else None,
                channels=1,
                dtype="int16",
                callback=self._on_audio,
            )
            self._stream.start()
        except (sd.PortAudioError, ValueError) as error:
            raise MicrophoneError(f"cannot open the input device: {error}") from None
        log.info(
            "capturing from %s at %d Hz",
            self.device.name if self.device else "default",
            self.sample_rate,
        )
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._stream is not None:
            # abort, not stop: stop waits for buffers to drain, which never happens when the
            # source has gone quiet (a pipe source, an unplugged device).
            self._stream.abort()
            self._stream.close()
            self._stream = None
        self._queue.put(None)

    def _on_audio(self, data: Any, frames: int, time: Any, status: Any) -> None:
        """PortAudio's thread: cut into whole frames and queue them; never block."""
        if status:
            log.warning("audio input: %s", status)
        self._pending += bytes(data)
        while len(self._pending) >= self.frame_bytes:
            self._queue.put(self._pending[: self.frame_bytes])
            self._pending = self._pending[self.frame_bytes :]

    def read(self, timeout: float | None = None) -> bytes | None:
        """The next frame; None once the stream is closed. Raises queue.Empty on timeout."""
        return self._queue.get(timeout=timeout)

    def discard_queued(self) -> None:
        """Drop frames captured so far (e.g. while nobody was talking)."""
        while True:
            try:
                if self._queue.get_nowait() is None:
                    self._queue.put(None)
                    return
            except queue.Empty:
                return

    def __iter__(self) -> MicrophoneStream:
        return self

    def __next__(self) -> bytes:
        frame = self._queue.get()
        if frame is None:
            raise StopIteration
        return frame
