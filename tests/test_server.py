"""The gRPC service over a real grpc.aio server on port 0 with the real tiny.en model."""

from __future__ import annotations

import asyncio
import os

import grpc
import pytest

from tests.grpc_helpers import (
    CANCEL,
    END,
    audio_requests,
    collect,
    config_request,
    error_info,
    finals,
    paced,
    serving,
    stub,
)
from tests.speech import (
    ENGLISH_CLIPS,
    HESTER,
    JFK,
    NIGHTFALL,
    load_pcm16k,
    silence,
    to_s16le,
    wer,
)
from whisperwire.server.decode_pool import DECODE_WORKER_NICENESS, DecodePool
from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
from whisperwire.server.tokenizer import WhisperTokenizer
from whisperwire.v1 import transcription_service_pb2 as pb
from whisperwire.v1 import transcription_service_pb2_grpc as pb_grpc  # noqa: F401

Request = pb.StreamAudioRequest


async def test_transcribe_file(tiny_channel: grpc.aio.Channel) -> None:
    response = await stub(tiny_channel).Transcribe(
        pb.TranscribeRequest(
            request_id="r-1",
            audio_content=JFK.read(),
            config=pb.RecognitionConfig(include_timings=True, enable_segment_timestamps=True),
        )
    )
    assert response.request_id == "r-1"
    assert wer(JFK.reference, response.transcript.text) <= 0.1
    assert response.transcript.language == "en"
    assert response.transcript.audio_duration.ToNanoseconds() == pytest.approx(11e9, rel=0.01)
    assert len(response.transcript.segments) >= 1
    assert [s.index for s in response.transcript.segments] == list(
        range(len(response.transcript.segments))
    )
    assert response.timings.inference_duration.ToNanoseconds() > 0
    assert response.model == "tiny.en"


async def test_transcribe_raw_float_stereo_pcm_at_48k(tiny_channel: grpc.aio.Channel) -> None:
    import numpy as np

    samples = load_pcm16k(HESTER)
    upsampled = np.interp(np.arange(0, len(samples), 1 / 3), np.arange(len(samples)), samples)
    stereo = np.repeat(upsampled.astype("<f4"), 2)  # interleaved L R
    response = await stub(tiny_channel).Transcribe(
        pb.TranscribeRequest(
            audio_content=stereo.tobytes(),
            raw=pb.RawAudioFormat(
                encoding=pb.AUDIO_ENCODING_FLOAT32, sample_rate_hertz=48000, channel_count=2
            ),
        )
    )
    assert wer(HESTER.reference, response.transcript.text) <= 0.1
    assert response.transcript.audio_duration.ToNanoseconds() == pytest.approx(4.8e9, rel=0.02)


async def test_service_info(tiny_channel: grpc.aio.Channel) -> None:
    info = await stub(tiny_channel).GetServiceInfo(pb.GetServiceInfoRequest())
    assert (info.model, info.engine) == ("tiny.en", "ctranslate2")
    assert list(info.tasks) == [pb.TASK_TRANSCRIBE]
    assert info.supports_segment_timestamps and info.supports_word_timestamps
    assert info.limits.max_chunk_bytes > 0 and info.limits.max_request_bytes >= 32 * 1024 * 1024


async def test_health_is_serving_after_warm_up(tiny_channel: grpc.aio.Channel) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(tiny_channel)
    for service in ("", "whisperwire.v1.TranscriptionService"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_push_to_talk_several_utterances_on_one_stream(
    tiny_channel: grpc.aio.Channel,
) -> None:
    requests = [config_request(language="en")]
    for clip in ENGLISH_CLIPS:
        requests += [*audio_requests(to_s16le(load_pcm16k(clip))), END]
    responses = await collect(stub(tiny_channel).StreamAudio(paced(requests)))

    assert responses[0].WhichOneof("event") == "session_started"
    assert [r.sequence for r in responses] == list(range(len(responses)))
    got = finals(responses)
    assert [f.utterance_id for f in got] == [1, 2, 3]
    for final, clip in zip(got, ENGLISH_CLIPS, strict=True):
        assert final.final_result.end_reason == pb.END_REASON_CLIENT_END
        assert wer(clip.reference, final.final_result.transcript.text) <= 0.1


async def test_sixteen_concurrent_streams_each_get_their_own_final(
    tiny_channel: grpc.aio.Channel,
) -> None:
    clips = [ENGLISH_CLIPS[i % 3] for i in range(16)]

    async def one(clip: object) -> str:
        pcm = to_s16le(load_pcm16k(clip))  # type: ignore[arg-type]
        requests = [config_request(language="en"), *audio_requests(pcm, 3200), END]
        responses = await collect(stub(tiny_channel).StreamAudio(paced(requests)))
        [final] = finals(responses)
        return final.final_result.transcript.text

    texts = await asyncio.gather(*(one(c) for c in clips))
    for clip, text in zip(clips, texts, strict=True):
        assert wer(clip.reference, text) <= 0.1, (clip.name, text)


async def test_half_close_flushes_the_open_utterance(tiny_channel: grpc.aio.Channel) -> None:
    requests = [config_request(), *audio_requests(to_s16le(load_pcm16k(NIGHTFALL)))]
    responses = await collect(stub(tiny_channel).StreamAudio(paced(requests)))
    [final] = finals(responses)
    assert final.final_result.end_reason == pb.END_REASON_STREAM_CLOSED
    assert wer(NIGHTFALL.reference, final.final_result.transcript.text) <= 0.1


async def test_cancel_drops_the_utterance(tiny_channel: grpc.aio.Channel) -> None:
    requests = [
        config_request(),
        *audio_requests(to_s16le(load_pcm16k(JFK))),
        CANCEL,
        *audio_requests(to_s16le(load_pcm16k(HESTER))),
        END,
    ]
    responses = await collect(stub(tiny_channel).StreamAudio(paced(requests)))
    [final] = finals(responses)
    assert final.utterance_id == 2
    assert wer(HESTER.reference, final.final_result.transcript.text) <= 0.1


async def test_end_without_audio_gives_an_empty_final(tiny_channel: grpc.aio.Channel) -> None:
    responses = await collect(stub(tiny_channel).StreamAudio(paced([config_request(), END])))
    [final] = finals(responses)
    assert final.final_result.transcript.text == ""


async def test_segments_after_pauses_then_final(tiny_channel: grpc.aio.Channel) -> None:
    import numpy as np

    audio = np.concatenate([load_pcm16k(JFK), silence(1.2), load_pcm16k(HESTER), silence(1.2)])
    config = config_request(language="en")
    config.config.segment_silence.FromMilliseconds(700)
    config.config.enable_speech_events = True
    requests = [config, *audio_requests(to_s16le(audio)), END]
    responses = await collect(stub(tiny_channel).StreamAudio(paced(requests)))

    kinds = [r.WhichOneof("event") for r in responses]
    segments = [
        r.segment_result.segment for r in responses if r.WhichOneof("event") == "segment_result"
    ]
    assert len(segments) >= 2
    assert kinds[-1] == "final_result" and "speech_event" in kinds
    assert [s.index for s in segments] == list(range(len(segments)))
    final = finals(responses)[0].final_result.transcript
    # The final starts with the segments already sent.
    assert [s.text for s in final.segments[: len(segments)]] == [s.text for s in segments]
    assert wer(JFK.reference + " " + HESTER.reference, final.text) <= 0.15
    starts = [s.start_offset.ToNanoseconds() for s in final.segments]
    assert starts == sorted(starts)


async def test_partials_are_sent_and_the_final_follows(tiny_channel: grpc.aio.Channel) -> None:
    config = config_request(language="en")
    config.config.interim_results = True
    config.config.partial_interval.FromMilliseconds(300)
    requests = [config, *audio_requests(to_s16le(load_pcm16k(JFK))), END]
    # Real time pace (20 ms per chunk) so partials have time to happen.
    responses = await collect(stub(tiny_channel).StreamAudio(paced(requests, 0.02)))
    partials = [r.partial_result for r in responses if r.WhichOneof("event") == "partial_result"]
    assert len(partials) >= 2
    assert all(p.stable_prefix_length <= len(p.text) for p in partials)
    assert responses[-1].WhichOneof("event") == "final_result"
    assert wer(JFK.reference, responses[-1].final_result.transcript.text) <= 0.1


# ---- errors ---------------------------------------------------------------------------
async def _stream_error(channel: grpc.aio.Channel, requests: list[Request]) -> tuple[object, ...]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await collect(stub(channel).StreamAudio(paced(requests)))
    return error_info(raised.value)


async def test_first_message_must_be_config(tiny_channel: grpc.aio.Channel) -> None:
    code, reason, fields, _ = await _stream_error(tiny_channel, [END])
    assert (code, reason, fields) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "CONFIG_REQUIRED",
        ["config"],
    )


async def test_config_only_once(tiny_channel: grpc.aio.Channel) -> None:
    code, reason, _, _ = await _stream_error(tiny_channel, [config_request(), config_request()])
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_ALREADY_SET")


@pytest.mark.parametrize(
    ("config", "reason", "field"),
    [
        (
            pb.StreamAudioConfig(recognition=pb.RecognitionConfig(language="klingon")),
            "UNSUPPORTED_LANGUAGE",
            "language",
        ),
        (
            pb.StreamAudioConfig(audio_format=pb.RawAudioFormat(sample_rate_hertz=1000)),
            "UNSUPPORTED_SAMPLE_RATE",
            None,
        ),
        (
            pb.StreamAudioConfig(audio_format=pb.RawAudioFormat(encoding=7)),
            "UNSUPPORTED_ENCODING",
            None,
        ),  # type: ignore[arg-type]
        (
            pb.StreamAudioConfig(recognition=pb.RecognitionConfig(separate_channels=True)),
            "INVALID_OPTION",
            "recognition.separate_channels",
        ),
        (
            pb.StreamAudioConfig(recognition=pb.RecognitionConfig(task=pb.TASK_TRANSLATE)),
            "INVALID_OPTION",
            "task",
        ),
    ],
)
async def test_bad_stream_config(
    tiny_channel: grpc.aio.Channel, config: pb.StreamAudioConfig, reason: str, field: str | None
) -> None:
    code, got_reason, fields, _ = await _stream_error(tiny_channel, [Request(config=config)])
    assert (code, got_reason) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    assert fields  # every INVALID_ARGUMENT names the bad field
    if field:
        assert field in fields


async def test_chunk_over_the_limit(tiny_channel: grpc.aio.Channel) -> None:
    big = Request(audio=pb.AudioChunk(data=b"\0" * (65 * 1024)))
    code, reason, _, _ = await _stream_error(tiny_channel, [config_request(), big])
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CHUNK_TOO_LARGE")


async def test_sequence_gap(tiny_channel: grpc.aio.Channel) -> None:
    chunks = [Request(audio=pb.AudioChunk(data=b"\0" * 640, sequence=n)) for n in (5, 6, 8)]
    code, reason, _, _ = await _stream_error(tiny_channel, [config_request(), *chunks])
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "AUDIO_SEQUENCE_GAP")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "EMPTY_AUDIO"),
        (b"RIFF\x00\x00garbage" * 10, "AUDIO_DECODE_FAILED"),
        (JFK.read()[:200], "AUDIO_DECODE_FAILED"),
    ],
)
async def test_undecodable_files(
    tiny_channel: grpc.aio.Channel, content: bytes, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub(tiny_channel).Transcribe(pb.TranscribeRequest(audio_content=content))
    code, got, _, _ = error_info(raised.value)
    assert (code, got) == (grpc.StatusCode.INVALID_ARGUMENT, reason)


async def test_server_keeps_serving_after_errors(tiny_channel: grpc.aio.Channel) -> None:
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError):
            await stub(tiny_channel).Transcribe(pb.TranscribeRequest(audio_content=b"nope"))
    response = await stub(tiny_channel).Transcribe(
        pb.TranscribeRequest(audio_content=HESTER.read())
    )
    assert wer(HESTER.reference, response.transcript.text) <= 0.1


async def test_files_decoded_in_worker_processes(
    tiny_engine: tuple[CTranslate2Engine, WhisperTokenizer],
) -> None:
    """--decode-processes: uploads decode in spawned processes, at a lower CPU priority than
    the server's; results and decode errors (pickled back across the process boundary) are
    the same as on threads. Uploads and log-mel travel through shared memory, and no file
    outlives its call or the server."""
    engine, tokenizer = tiny_engine
    async with serving(engine, tokenizer, decode_processes=2) as (running, channel):
        pool = running.pipeline.decode_pool
        assert isinstance(pool, DecodePool) and pool.directory is not None
        handoff_directory = pool.directory
        worker_niceness = await asyncio.wrap_future(pool.executor.submit(os.nice, 0))
        assert worker_niceness == min(19, os.nice(0) + DECODE_WORKER_NICENESS)
        replies = await asyncio.gather(
            *(
                stub(channel).Transcribe(pb.TranscribeRequest(audio_content=clip.read()))
                for clip in ENGLISH_CLIPS
            )
        )
        for clip, reply in zip(ENGLISH_CLIPS, replies, strict=True):
            assert wer(clip.reference, reply.transcript.text) <= 0.1, clip.name
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub(channel).Transcribe(pb.TranscribeRequest(audio_content=JFK.read()[:200]))
        code, reason, _, _ = error_info(raised.value)
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "AUDIO_DECODE_FAILED")
        assert list(handoff_directory.iterdir()) == []
    assert not handoff_directory.exists()
