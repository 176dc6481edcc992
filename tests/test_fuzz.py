"""Hypothesis-driven requests against the real server (shared, in-process, tiny.en): random
oneof order, field values, unknown enum values, empty, huge and odd-length PCM, NaN floats,
random and mutated bytes as files.

Every call must end with a documented status and reason (the proto's list), within a
deadline (no hang); afterwards the server holds no stream (no leaked session) and still
answers. The calls go through grpcio's blocking client (in a thread): its asyncio client may
replace the server's status with INTERNAL when the server ends a call it is still writing
to (grpc/grpc#36066), and fuzzed streams do that all the time.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from typing import TypeVar

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from tests.grpc_helpers import error_info, stub
from tests.speech import HESTER, load_pcm16k, to_s16le
from whisperwire.server.app import RunningServer
from whisperwire.v1 import transcription_service_pb2 as pb
from whisperwire.v1 import transcription_service_pb2_grpc as pb_grpc

Request = pb.StreamAudioRequest
T = TypeVar("T")
CALL_DEADLINE = 120.0  # seconds; a call still running then is a hang
INVALID_ARGUMENT_REASONS = {
    "CONFIG_REQUIRED",
    "CONFIG_ALREADY_SET",
    "UNSUPPORTED_LANGUAGE",
    "UNSUPPORTED_ENCODING",
    "UNSUPPORTED_SAMPLE_RATE",
    "UNSUPPORTED_CHANNEL_COUNT",
    "INVALID_OPTION",
    "AUDIO_DECODE_FAILED",
    "EMPTY_AUDIO",
    "INVALID_SAMPLES",
    "CHUNK_TOO_LARGE",
    "AUDIO_SEQUENCE_GAP",
    "EMPTY_REQUEST",
}
# The proto's error list; gRPC's own RESOURCE_EXHAUSTED (message too large) has no reason.
DOCUMENTED = {
    grpc.StatusCode.INVALID_ARGUMENT: INVALID_ARGUMENT_REASONS,
    grpc.StatusCode.OUT_OF_RANGE: {"AUDIO_TOO_LONG", "STREAM_TOO_LONG", "IDLE_TIMEOUT"},
    grpc.StatusCode.RESOURCE_EXHAUSTED: {"SERVER_BUSY", ""},
}
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI stays reproducible
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SPEECH = to_s16le(load_pcm16k(HESTER))


# ---- strategies --------------------------------------------------------------------------
# Each field is mostly valid and sometimes anything at all, so examples get past the checks
# of the first message and reach the audio path and the engine.
def mostly(valid: st.SearchStrategy[T], anything: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """`valid` four times in five."""
    return st.integers(0, 4).flatmap(lambda n: anything if n == 4 else valid)


enum_values = st.one_of(st.integers(0, 3), st.integers(-(2**31), 2**31 - 1))
uint32 = st.integers(0, 2**32 - 1)
floats32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
durations = mostly(
    st.builds(Duration, seconds=st.integers(0, 2), nanos=st.integers(0, 999_999_999)),
    st.builds(
        Duration,
        seconds=st.integers(-(2**40), 2**40),
        nanos=st.integers(-999_999_999, 999_999_999),
    ),
)
recognition = mostly(
    st.builds(
        pb.RecognitionConfig,
        language=st.sampled_from(["", "en", "en-US", "EN"]),
        task=st.sampled_from([0, 1]),
        initial_prompt=st.text(max_size=20),
        enable_segment_timestamps=st.booleans(),
        beam_size=st.integers(0, 3),
        temperature=st.sampled_from([None, 0.0, 0.0, 0.4]),
        include_timings=st.booleans(),
    ),
    st.builds(
        pb.RecognitionConfig,
        language=st.one_of(st.sampled_from(["zh", "xx", "en_US", " en ", "\x00"]), st.text()),
        task=enum_values,
        initial_prompt=st.text(max_size=200),
        enable_segment_timestamps=st.booleans(),
        enable_word_timestamps=st.booleans(),
        beam_size=uint32,
        temperature=st.one_of(st.none(), floats32),
        include_timings=st.booleans(),
    ),
)
raw_formats = mostly(
    st.builds(
        pb.RawAudioFormat,
        encoding=st.sampled_from([0, 1, 2]),
        sample_rate_hertz=st.sampled_from([0, 8000, 16000, 22050, 48000]),
        channel_count=st.sampled_from([0, 1, 2]),
    ),
    st.builds(
        pb.RawAudioFormat, encoding=enum_values, sample_rate_hertz=uint32, channel_count=uint32
    ),
)
stream_configs = st.builds(
    pb.StreamAudioConfig,
    request_id=st.text(max_size=20),
    recognition=recognition,
    audio_format=st.one_of(st.none(), raw_formats),
    interim_results=st.booleans(),
    partial_interval=st.one_of(st.none(), durations),
    segment_silence=st.one_of(st.none(), durations),
    enable_speech_events=st.booleans(),
)


def _speech_slice(start: int, length: int) -> bytes:
    return SPEECH[start : start + length]


pcm = st.one_of(
    st.builds(_speech_slice, st.integers(0, len(SPEECH)), st.integers(0, 8000)),  # real speech
    st.binary(max_size=2048),  # random bytes, odd lengths included
    st.lists(floats32, max_size=256).map(lambda xs: struct.pack(f"<{len(xs)}f", *xs)),  # NaN
    st.sampled_from([b"", bytes(64 * 1024), bytes(64 * 1024 + 1)]),  # empty, limit, over it
)
chunks = st.builds(
    pb.AudioChunk, data=pcm, sequence=st.one_of(st.none(), st.none(), st.integers(0, 2**64 - 1))
)
END = Request(end_utterance=pb.EndUtterance())
F32 = pb.RawAudioFormat(encoding=pb.AUDIO_ENCODING_FLOAT32)
NAN_CHUNK = Request(audio=pb.AudioChunk(data=struct.pack("<4f", 0.1, float("nan"), 0.2, 0.3)))
any_request = st.one_of(
    st.builds(Request, config=stream_configs),
    st.builds(Request, audio=chunks),
    st.just(END),
    st.just(Request(cancel_utterance=pb.CancelUtterance())),
    st.just(Request()),
)
after_config = mostly(st.one_of(st.builds(Request, audio=chunks), st.just(END)), any_request)
stream_sequences = st.builds(
    lambda first, rest: [first, *rest],
    mostly(st.builds(Request, config=stream_configs), any_request),
    st.lists(after_config, max_size=12),
)


def _mutated(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data[: max(1, cut)])
    for position, value in flips:
        out[position % len(out)] = value
    return bytes(out)


files = st.one_of(
    st.binary(max_size=4096),
    st.builds(
        _mutated,
        st.just(HESTER.read()),
        st.integers(0, len(HESTER.read())),
        st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), max_size=8),
    ),
)
transcribe_requests = st.one_of(
    st.builds(pb.TranscribeRequest, config=recognition, audio_content=files),
    st.builds(
        pb.TranscribeRequest,
        config=recognition,
        audio_content=st.one_of(pcm, st.binary(max_size=70_000)),
        raw=raw_formats,
    ),
)


# ---- the properties ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def blocking_stub(tiny_server: RunningServer) -> Iterator[pb_grpc.TranscriptionServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{tiny_server.port}") as channel:
        yield pb_grpc.TranscriptionServiceStub(channel)


@FUZZ
@given(requests=stream_sequences)
@example(requests=[Request(config=pb.StreamAudioConfig()), Request()])
@example(requests=[Request(config=pb.StreamAudioConfig(audio_format=F32)), NAN_CHUNK, END])
async def test_any_stream_request_sequence_ends_with_a_documented_status(
    tiny_server: RunningServer,
    tiny_channel: grpc.aio.Channel,
    blocking_stub: pb_grpc.TranscriptionServiceStub,
    requests: list[Request],
) -> None:
    def stream() -> list[pb.StreamAudioResponse]:
        return list(blocking_stub.StreamAudio(iter(requests), timeout=CALL_DEADLINE))

    try:
        responses = await asyncio.to_thread(stream)
    except grpc.RpcError as error:
        _assert_documented(error)
    else:
        assert not requests or responses[0].WhichOneof("event") == "session_started"
        event(f"OK with {sum(r.WhichOneof('event') == 'final_result' for r in responses)} finals")
    await _assert_server_is_clean(tiny_server, tiny_channel)


@settings(FUZZ, max_examples=60)  # each OK decodes on the engine
@given(request=transcribe_requests)
@example(request=pb.TranscribeRequest(raw=pb.RawAudioFormat()))  # empty raw PCM
@example(request=pb.TranscribeRequest(audio_content=bytes(2_000_000), raw=pb.RawAudioFormat()))
@example(request=pb.TranscribeRequest(audio_content=bytes(2_000_001), raw=pb.RawAudioFormat()))
@example(request=pb.TranscribeRequest(audio_content=NAN_CHUNK.audio.data, raw=F32))
async def test_any_transcribe_request_ends_with_a_documented_status(
    tiny_server: RunningServer,
    tiny_channel: grpc.aio.Channel,
    blocking_stub: pb_grpc.TranscriptionServiceStub,
    request: pb.TranscribeRequest,
) -> None:
    try:
        response = await asyncio.to_thread(blocking_stub.Transcribe, request, timeout=CALL_DEADLINE)
    except grpc.RpcError as error:
        _assert_documented(error)
    else:
        assert response.request_id and response.model == "tiny.en"
        event("OK")
    await _assert_server_is_clean(tiny_server, tiny_channel)


async def test_an_empty_request_fails_with_a_documented_reason(
    blocking_stub: pb_grpc.TranscriptionServiceStub,
) -> None:
    requests = [Request(config=pb.StreamAudioConfig()), Request()]
    with pytest.raises(grpc.RpcError) as raised:
        await asyncio.to_thread(
            lambda: list(blocking_stub.StreamAudio(iter(requests), timeout=CALL_DEADLINE))
        )
    code, reason, _, _ = error_info(raised.value)  # type: ignore[arg-type]
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "EMPTY_REQUEST")


def _assert_documented(error: grpc.RpcError) -> None:
    code, reason, fields, retry = error_info(error)  # type: ignore[arg-type]
    event(f"{code.name} {reason}")
    assert code in DOCUMENTED, (code, reason, error)
    assert reason in DOCUMENTED[code], (code, reason, error)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert fields, (reason, error)  # names the bad field
    if reason == "SERVER_BUSY":
        assert retry is not None


async def _assert_server_is_clean(running: RunningServer, channel: grpc.aio.Channel) -> None:
    for _ in range(200):  # bounded: 10 s
        if not running.state.streams:
            break
        await asyncio.sleep(0.05)
    assert not running.state.streams, "a stream outlived its call"
    info = await stub(channel).GetServiceInfo(pb.GetServiceInfoRequest(), timeout=30)
    assert info.model == "tiny.en"
