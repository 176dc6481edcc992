"""Client-side voice-activity gate: send speech, hold back silence, keep the word edges.

Pure logic over fixed-size frames of 16-bit mono PCM (10, 20 or 30 ms, as webrtcvad needs),
so it works on a file as well as on a microphone.

- The gate opens after `start_frames` speech frames in a row; the `pre_roll_ms` of audio
  before them goes out first, so a soft word onset is not clipped.
- It stays open for `hangover_ms` of non-speech after the last speech frame, so a trailing
  consonant and short pauses inside a sentence are sent too.
- After `segment_silence_ms` (0 = off) of non-speech that followed sent audio, it reports a
  pause once: the caller may end the utterance there for an automatic segment.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import webrtcvad

FRAME_MS_CHOICES = (10, 20, 30)
VAD_RATES = (8000, 16000, 32000, 48000)


@dataclass(frozen=True)
class GateSettings:
    aggressiveness: int = 2
    """webrtcvad mode, 0 (lets most through) to 3 (strictest)."""
    frame_ms: int = 20
    sample_rate: int = 16000
    pre_roll_ms: int = 200
    hangover_ms: int = 400
    segment_silence_ms: int = 0
    start_frames: int = 2
    """Speech frames in a row that open the gate (one click is not speech)."""

    def __post_init__(self) -> None:
        if self.frame_ms not in FRAME_MS_CHOICES:
            raise ValueError(f"frame_ms must be one of {FRAME_MS_CHOICES}, not {self.frame_ms}")
        if self.sample_rate not in VAD_RATES:
            raise ValueError(f"sample_rate must be one of {VAD_RATES}, not {self.sample_rate}")
        if not 0 <= self.aggressiveness <= 3:
            raise ValueError(f"aggressiveness must be 0-3, not {self.aggressiveness}")
        if min(self.pre_roll_ms, self.hangover_ms, self.segment_silence_ms) < 0:
            raise ValueError("pre-roll, hangover and segment silence cannot be negative")

    @property
    def frame_samples(self) -> int:
        return self.sample_rate * self.frame_ms // 1000

    @property
    def frame_bytes(self) -> int:
        return 2 * self.frame_samples

    def frames_in(self, milliseconds: int) -> int:
        return -(-milliseconds // self.frame_ms)  # round up: never shorter than asked


@dataclass(frozen=True)
class Gated:
    """What to do with one frame: the audio to send now (often empty) and whether a pause
    long enough for an automatic segment just ended."""

    audio: bytes
    pause: bool = False


class VadGate:
    def __init__(self, settings: GateSettings | None = None) -> None:
        self.settings = s = settings or GateSettings()
        self._vad = webrtcvad.Vad(s.aggressiveness)
        self._hangover_frames = s.frames_in(s.hangover_ms)
        self._pause_frames = s.frames_in(s.segment_silence_ms) if s.segment_silence_ms else 0
        # Held-back frames: the pre-roll plus the speech frames that are about to open the gate.
        self._held: deque[bytes] = deque(maxlen=s.frames_in(s.pre_roll_ms) + s.start_frames - 1)
        self.frames_seen = 0
        self.frames_sent = 0
        self.reset()

    @property
    def is_open(self) -> bool:
        return self._open

    def reset(self) -> None:
        """Forget everything (a new utterance); counters keep running."""
        self._open = False
        self._held.clear()
        self._speech_run = 0
        self._silence_run = 0
        self._sent_since_pause = False

    def process(self, frame: bytes) -> Gated:
        if len(frame) != self.settings.frame_bytes:
            raise ValueError(f"frames must be {self.settings.frame_bytes} bytes, not {len(frame)}")
        self.frames_seen += 1
        if self._vad.is_speech(frame, self.settings.sample_rate):
            return self._on_speech(frame)
        return self._on_silence(frame)

    def _on_speech(self, frame: bytes) -> Gated:
        self._silence_run = 0
        self._speech_run += 1
        if not self._open and self._speech_run < self.settings.start_frames:
            self._held.append(frame)
            return Gated(b"")
        frames = [frame] if self._open else [*self._held, frame]
        self._held.clear()
        self._open = True
        self._sent_since_pause = True
        return self._send(frames)

    def _on_silence(self, frame: bytes) -> Gated:
        self._speech_run = 0
        self._silence_run += 1
        if self._silence_run > self._hangover_frames:
            self._open = False
        pause = self._pause_due()
        if pause:
            self._open = False  # the segment ends here; what follows belongs to the next one
        if self._open:
            return Gated(self._send([frame]).audio, pause)
        self._held.append(frame)
        return Gated(b"", pause)

    def _send(self, frames: list[bytes]) -> Gated:
        self.frames_sent += len(frames)
        return Gated(b"".join(frames))

    def _pause_due(self) -> bool:
        due = self._sent_since_pause and 0 < self._pause_frames <= self._silence_run
        if due:
            self._sent_since_pause = False
        return due


def split_frames(audio: bytes, frame_bytes: int) -> list[bytes]:
    """Whole frames of `audio`; a trailing partial frame is dropped."""
    return [audio[i : i + frame_bytes] for i in range(0, len(audio) - frame_bytes + 1, frame_bytes)]
