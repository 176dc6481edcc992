"""Word timestamps: timed against faster-whisper's on the same model and clips, and carried
through Transcribe and StreamAudio."""

from __future__ import annotations

from pathlib import Path

import grpc
from faster_whisper import WhisperModel

from tests.grpc_helpers import END, audio_requests, collect, config_request, finals, stub
from tests.reports import Publish
from tests.speech import ENGLISH_CLIPS, JFK, load_pcm16k, normalise, to_s16le
from tests.word_timing import (
    TimedWord,
    assert_close_in_time,
    assert_words_inside_segments_in_order,
    delta_figures,
    matched_words,
    timed_words,
)
from whisperwire.server.domain import DecodeOptions
from whisperwire.server.pipeline import SpeechPipeline
from whisperwire.v1 import transcription_service_pb2 as pb

WORDS = DecodeOptions(timestamps=True, word_timestamps=True)


async def test_word_times_match_faster_whisper(
    tiny_pipeline: SpeechPipeline, tiny_en_dir: Path, publish: Publish
) -> None:
    reference = WhisperModel(str(tiny_en_dir), device="cpu", compute_type="float32", cpu_threads=2)
    pairs: list[tuple[TimedWord, TimedWord]] = []
    for clip in ENGLISH_CLIPS:
        transcript = await tiny_pipeline.transcribe_bytes(clip.read(), WORDS)
        assert_words_inside_segments_in_order(transcript)
        segments, _ = reference.transcribe(
            str(clip.path), word_timestamps=True, beam_size=1, vad_filter=False
        )
        theirs = [(w.word, w.start, w.end) for s in segments for w in s.words or []]
        matched = matched_words(timed_words(transcript), theirs)
        assert len(matched) >= 0.9 * len(theirs), (transcript, theirs)
        pairs += matched
    figures = delta_figures(pairs)
    publish("word_timestamps_vs_faster_whisper", figures)
    assert_close_in_time(figures)


async def test_words_without_segment_timestamps_stay_inside_the_window(
    tiny_pipeline: SpeechPipeline,
) -> None:
    transcript = await tiny_pipeline.transcribe_bytes(
        JFK.read(), DecodeOptions(word_timestamps=True)
    )
    [segment] = transcript.segments
    assert_words_inside_segments_in_order(transcript)
    americans = next(w for w in segment.words if "Americans" in w.text)
    assert 1.5 <= americans.start <= 2.2  # openai/whisper's own test: near 1.8 s


async def test_no_words_unless_asked(tiny_pipeline: SpeechPipeline) -> None:
    transcript = await tiny_pipeline.transcribe_bytes(JFK.read(), DecodeOptions(timestamps=True))
    assert all(s.words == () for s in transcript.segments)


def _proto_words(segment: pb.Segment) -> list[tuple[str, float, float, float]]:
    return [
        (
            w.text,
            w.start_offset.ToNanoseconds() / 1e9,
            w.end_offset.ToNanoseconds() / 1e9,
            w.probability,
        )
        for w in segment.words
    ]


async def test_transcribe_returns_words(
    tiny_channel: grpc.aio.Channel, tiny_pipeline: SpeechPipeline
) -> None:
    response = await stub(tiny_channel).Transcribe(
        pb.TranscribeRequest(
            audio_content=JFK.read(),
            config=pb.RecognitionConfig(
                enable_segment_timestamps=True, enable_word_timestamps=True
            ),
        )
    )
    expected = await tiny_pipeline.transcribe_bytes(JFK.read(), WORDS)
    got = [w for s in response.transcript.segments for w in _proto_words(s)]
    want = [(w.text, w.start, w.end) for s in expected.segments for w in s.words]
    assert [(t, round(s, 3), round(e, 3)) for t, s, e, _ in got] == want
    assert all(0 < p <= 1 for *_, p in got)


async def test_stream_finals_and_segments_carry_words(tiny_channel: grpc.aio.Channel) -> None:
    pcm = to_s16le(load_pcm16k(JFK))
    requests = [config_request(enable_word_timestamps=True), *audio_requests(pcm, 32000), END]
    responses = await collect(stub(tiny_channel).StreamAudio(iter(requests)))
    [final] = finals(responses)
    segments: list[pb.Segment] = list(final.final_result.transcript.segments)
    assert segments and all(s.words for s in segments)
    text = "".join(w[0] for s in segments for w in _proto_words(s))
    assert normalise(text) == normalise(final.final_result.transcript.text)
    starts = [w[1] for s in segments for w in _proto_words(s)]
    assert starts == sorted(starts)
