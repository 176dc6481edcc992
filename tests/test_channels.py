"""Per-channel transcription: a call recording with one speaker per channel."""

from __future__ import annotations

import grpc

from tests.grpc_helpers import stub
from tests.speech import (
    HESTER,
    JFK,
    NIGHTFALL,
    load_pcm16k,
    side_by_side,
    to_s16le,
    to_wav_bytes,
    wer,
)
from whisperwire.server.audio import decode_audio
from whisperwire.v1 import transcription_service_pb2 as pb

MAX_WER = 0.1  # per channel; tiny.en hears "Prynne" as "Prin"
STEREO = side_by_side(load_pcm16k(JFK), load_pcm16k(NIGHTFALL))


async def _transcribe(
    channel: grpc.aio.Channel, audio: bytes, *, separate: bool, raw: pb.RawAudioFormat | None = None
) -> pb.Transcript:
    config = pb.RecognitionConfig(enable_segment_timestamps=True, separate_channels=separate)
    request = pb.TranscribeRequest(audio_content=audio, config=config)
    if raw is not None:
        request.raw.CopyFrom(raw)
    response = await stub(channel).Transcribe(request)
    return response.transcript


def _channel_text(transcript: pb.Transcript, number: int) -> str:
    return " ".join(s.text for s in transcript.segments if s.channel == number)


async def test_each_channel_is_transcribed_whole_and_tagged(tiny_channel: grpc.aio.Channel) -> None:
    transcript = await _transcribe(tiny_channel, to_wav_bytes(STEREO), separate=True)
    assert all(s.HasField("channel") for s in transcript.segments)
    assert {s.channel for s in transcript.segments} == {0, 1}
    assert wer(JFK.reference, _channel_text(transcript, 0)) <= MAX_WER
    assert wer(NIGHTFALL.reference, _channel_text(transcript, 1)) <= MAX_WER
    starts = [s.start_offset.ToNanoseconds() for s in transcript.segments]
    assert starts == sorted(starts)  # merged in time order
    assert [s.index for s in transcript.segments] == list(range(len(transcript.segments)))
    assert transcript.text == " ".join(s.text for s in transcript.segments)


async def test_raw_pcm_channels_are_transcribed_apart(tiny_channel: grpc.aio.Channel) -> None:
    pair = side_by_side(load_pcm16k(HESTER), load_pcm16k(NIGHTFALL))
    raw = pb.RawAudioFormat(channel_count=2)
    transcript = await _transcribe(tiny_channel, to_s16le(pair.reshape(-1)), separate=True, raw=raw)
    assert wer(HESTER.reference, _channel_text(transcript, 0)) <= MAX_WER
    assert wer(NIGHTFALL.reference, _channel_text(transcript, 1)) <= MAX_WER


async def test_without_the_option_channels_are_mixed_as_before(
    tiny_channel: grpc.aio.Channel,
) -> None:
    mixed = await _transcribe(tiny_channel, to_wav_bytes(STEREO), separate=False)
    assert not any(s.HasField("channel") for s in mixed.segments)
    # The mix is what callers got before: one transcript of both voices at once, the same
    # as for the server's own mono mix sent as mono.
    mix = decode_audio(to_wav_bytes(STEREO)).astype("<f4").tobytes()
    raw = pb.RawAudioFormat(encoding=pb.AUDIO_ENCODING_FLOAT32)
    assert mixed.text == (await _transcribe(tiny_channel, mix, separate=False, raw=raw)).text


async def test_mono_audio_is_unaffected_by_the_option(tiny_channel: grpc.aio.Channel) -> None:
    mono = to_wav_bytes(load_pcm16k(HESTER))
    separate = await _transcribe(tiny_channel, mono, separate=True)
    plain = await _transcribe(tiny_channel, mono, separate=False)
    assert separate == plain
