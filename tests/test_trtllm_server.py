"""The whole server on the TensorRT-LLM adapter: gRPC → scheduler → adapter → contract double.

The double (tests/trtllm_double) checks every ModelRunnerCpp call against docs/trtllm.md and
computes the answer with the real tiny.en model, so these calls exercise the production GPU path's
wiring, batching and single-thread discipline on a CPU-only machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.grpc_helpers import (
    END,
    audio_requests,
    collect,
    config_request,
    error_info,
    finals,
    paced,
    stub,
)
from tests.speech import ENGLISH_CLIPS, JFK, Clip, load_pcm16k, to_s16le, wer
from tests.trtllm_double.support import TINY_EN, double_importable, write_engine_dir
from whisperwire.server.app import RunningServer, load_engine, start_server
from whisperwire.server.config import ServerSettings
from whisperwire.v1 import transcription_service_pb2 as pb

MAX_WER = 0.1  # per clip; tiny.en hears "Prynne" as "Prin" (1 word in 11)


@pytest.fixture(scope="module")
def double() -> Iterator[None]:
    with double_importable():
        yield


@pytest.fixture(scope="module")
async def trtllm_server(
    double: None,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_en_dir: Path,
    whisper_assets_dir: Path,
) -> AsyncIterator[RunningServer]:
    engine_dir = write_engine_dir(
        tmp_path_factory.mktemp("engines"),
        TINY_EN,
        ct2_model_dir=tiny_en_dir,
        assets_dir=whisper_assets_dir,
    )
    options: dict[str, Any] = {"port": 0, "engine": "trtllm", "engine_dir": engine_dir}
    settings = ServerSettings(**options)
    # The same path `whisperwire serve --engine trtllm` takes.
    engine, tokenizer = load_engine(settings)
    running = await start_server(settings, engine, tokenizer)
    yield running
    await running.drain_and_stop(grace=1.0)


@pytest.fixture(scope="module")
async def channel(trtllm_server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{trtllm_server.port}") as channel:
        yield channel


async def test_service_info_names_the_trtllm_engine(channel: grpc.aio.Channel) -> None:
    info = await stub(channel).GetServiceInfo(pb.GetServiceInfoRequest())
    assert (info.model, info.engine) == ("tiny.en", "trtllm")
    assert not info.supports_segment_timestamps and not info.supports_word_timestamps


async def transcribe(channel: grpc.aio.Channel, clip: Clip) -> str:
    response = await stub(channel).Transcribe(pb.TranscribeRequest(audio_content=clip.read()))
    assert response.transcript.language == "en"
    return str(response.transcript.text)


async def push_to_talk(channel: grpc.aio.Channel, clip: Clip) -> str:
    pcm = to_s16le(load_pcm16k(clip))
    requests = [config_request(language="en"), *audio_requests(pcm, 3200), END]
    responses = await collect(stub(channel).StreamAudio(paced(requests)))
    [final] = finals(responses)
    assert final.final_result.end_reason == pb.END_REASON_CLIENT_END
    return str(final.final_result.transcript.text)


async def test_concurrent_unary_and_push_to_talk_calls_are_each_correct(
    channel: grpc.aio.Channel,
) -> None:
    clips = [*ENGLISH_CLIPS, JFK]
    calls = [transcribe(channel, clip) for clip in clips]
    calls += [push_to_talk(channel, clip) for clip in clips]
    texts = await asyncio.gather(*calls)
    for clip, text in zip(clips + clips, texts, strict=True):
        assert wer(clip.reference, text) <= MAX_WER, (clip.name, text)


@pytest.mark.parametrize("option", ["enable_segment_timestamps", "enable_word_timestamps"])
async def test_timestamps_are_refused_by_this_engine(
    channel: grpc.aio.Channel, option: str
) -> None:
    request = pb.TranscribeRequest(
        audio_content=JFK.read(),
        config=pb.RecognitionConfig(**{option: True}),  # type: ignore[arg-type]
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub(channel).Transcribe(request)
    # docs/trtllm.md#generate: no timestamp rules in TensorRT-LLM, so none are offered;
    # ModelRunnerCpp returns no cross-attention, so no words can be timed either.
    assert error_info(raised.value)[:3] == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_OPTION",
        [option],
    )
    assert "trtllm" in raised.value.details()
