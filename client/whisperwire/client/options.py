"""What the caller asks for: recognition options, the raw audio layout, stream settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Task = Literal["transcribe", "translate"]
Encoding = Literal["s16le", "f32le"]


@dataclass(frozen=True)
class RecognitionOptions:
    """Decoding options shared by unary calls and streams; defaults are the server's."""

    language: str | None = None
    """ISO-639-1 code or BCP-47 tag; None detects the language."""
    task: Task = "transcribe"
    initial_prompt: str = ""
    segment_timestamps: bool = False
    """Phrase-level segments with accurate offsets (Whisper's timestamp tokens)."""
    word_timestamps: bool = False
    beam_size: int = 0
    """0 = the server default."""
    temperature: float | None = None
    """None = Whisper's fallback ladder."""
    include_timings: bool = False
    separate_channels: bool = False
    """Transcribe each channel of a multi-channel file on its own (unary calls only)."""
    detect_language_per_segment: bool = False
    """Detect the language of every window: for audio that switches language."""


@dataclass(frozen=True)
class AudioFormat:
    """Layout of headerless PCM; the default is what Whisper uses: 16 kHz mono s16le."""

    sample_rate: int = 16000
    encoding: Encoding = "s16le"
    channels: int = 1

    @property
    def bytes_per_second(self) -> int:
        sample_bytes = 2 if self.encoding == "s16le" else 4
        return self.sample_rate * self.channels * sample_bytes


@dataclass(frozen=True)
class StreamOptions:
    """Settings of one StreamAudio call (sent as its first message)."""

    recognition: RecognitionOptions = field(default_factory=RecognitionOptions)
    audio_format: AudioFormat = field(default_factory=AudioFormat)
    interim_results: bool = False
    partial_interval: float | None = None
    """Seconds between partials; None = the server default."""
    segment_silence: float | None = None
    """Seconds of silence after which the server commits a segment; None = off."""
    speech_events: bool = False
    request_id: str = ""
