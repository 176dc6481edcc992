"""The OpenAI-compatible HTTP API, end to end: a real server (gRPC and HTTP on port 0), OpenAI's
own Python SDK, real curl multipart uploads, real speech and the real tiny.en / base models.

- every response format, streaming and translations through `client.audio.*.create`;
- each bad input gets OpenAI's JSON error with the documented status, and the server keeps
  serving;
- busy (429), warming up and draining (503) carry Retry-After; health probes need no token;
- HTTP and gRPC callers at once share one scheduler; metrics are labelled by protocol.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
import srt
import webvtt

from tests.grpc_helpers import stub
from tests.speech import CHINESE, HESTER, JFK, NIGHTFALL, Clip, wer
from whisperwire.server.app import RunningServer, start_server
from whisperwire.server.config import ServerSettings
from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
from whisperwire.server.errors import ConfigurationError
from whisperwire.server.tokenizer import WhisperTokenizer
from whisperwire.v1 import transcription_service_pb2 as pb

Tiny = tuple[CTranslate2Engine, WhisperTokenizer]
TOKEN = "http-api-test-token"
LIMIT = 2 * 1024 * 1024  # --max-request-bytes of the test server: jfk.flac (1.1 MB) fits


@pytest.fixture(scope="module")
async def server(tiny_engine: Tiny) -> AsyncIterator[RunningServer]:
    settings = ServerSettings(port=0, http_port=0, token=TOKEN, max_request_bytes=LIMIT)
    running = await start_server(settings, *tiny_engine)
    yield running
    await running.drain_and_stop(grace=1.0)


def base_url(running: RunningServer) -> str:
    return f"http://127.0.0.1:{running.http_port}"


def sdk(running: RunningServer, token: str = TOKEN) -> openai.AsyncOpenAI:
    # No retries: the tests look at each answer (the SDK would retry 429 and 503 itself).
    return openai.AsyncOpenAI(base_url=f"{base_url(running)}/v1", api_key=token, max_retries=0)


def upload(clip: Clip) -> tuple[str, bytes]:
    return clip.name, clip.read()


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.AsyncOpenAI:
    return sdk(server)


# ---- every response format through the SDK ------------------------------------------------
async def test_json_is_the_default_with_text_and_duration_usage(
    client: openai.AsyncOpenAI,
) -> None:
    result = await client.audio.transcriptions.create(model="whisper-1", file=upload(HESTER))
    assert wer(HESTER.reference, result.text) <= 0.1
    assert result.usage is not None and result.usage.type == "duration"
    assert 4 < result.usage.seconds < 6


async def test_text_is_the_bare_transcript(client: openai.AsyncOpenAI) -> None:
    text = await client.audio.transcriptions.create(
        model="tiny.en", file=upload(NIGHTFALL), response_format="text"
    )
    assert isinstance(text, str) and text.endswith("\n")
    assert wer(NIGHTFALL.reference, text) <= 0.1


async def test_verbose_json_has_language_duration_and_timed_segments(
    client: openai.AsyncOpenAI,
) -> None:
    result = await client.audio.transcriptions.create(
        model="whisper-1",
        file=upload(JFK),
        response_format="verbose_json",
        timestamp_granularities=["segment"],
    )
    assert result.language == "english"
    assert 10.5 < result.duration < 11.5
    assert wer(JFK.reference, result.text) <= 0.1
    segments = result.segments or []
    assert len(segments) >= 2  # the model's own timestamps split JFK's two phrases
    assert " ".join(s.text for s in segments) == result.text
    assert [s.id for s in segments] == list(range(len(segments)))
    times = [t for s in segments for t in (s.start, s.end)]
    assert times == sorted(times) and times[-1] <= result.duration
    for segment in segments:
        assert segment.tokens and segment.temperature == 0.0
        assert segment.avg_logprob < 0 and 0 <= segment.no_speech_prob <= 1
        assert segment.compression_ratio > 0


async def test_verbose_json_words(client: openai.AsyncOpenAI) -> None:
    result = await client.audio.transcriptions.create(
        model="whisper-1",
        file=upload(JFK),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    words = result.words or []
    assert " ".join(w.word for w in words) == result.text.strip()
    times = [t for w in words for t in (w.start, w.end)]
    assert times == sorted(times) and times[-1] <= result.duration
    americans = next(w for w in words if "Americans" in w.word)
    assert 1.5 <= americans.start <= 2.2


async def test_srt_and_vtt_parse_with_the_same_cues(client: openai.AsyncOpenAI) -> None:
    as_srt, as_vtt = await asyncio.gather(
        client.audio.transcriptions.create(
            model="whisper-1", file=upload(JFK), response_format="srt"
        ),
        client.audio.transcriptions.create(
            model="whisper-1", file=upload(JFK), response_format="vtt"
        ),
    )
    subtitles = list(srt.parse(as_srt))
    captions = webvtt.from_string(as_vtt).captions
    srt_cues = [(s.start.total_seconds(), s.end.total_seconds(), s.content) for s in subtitles]
    vtt_cues = [
        (c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000, c.text)
        for c in captions
    ]
    assert len(srt_cues) >= 2 and srt_cues == vtt_cues
    times = [t for start, end, _ in srt_cues for t in (start, end)]
    assert times == sorted(times)
    assert wer(JFK.reference, " ".join(text for _, _, text in srt_cues)) <= 0.1


async def test_stream_sends_text_deltas_then_the_done_event(client: openai.AsyncOpenAI) -> None:
    stream = await client.audio.transcriptions.create(
        model="whisper-1", file=upload(JFK), stream=True
    )
    events = [event async for event in stream]
    *deltas, done = events
    assert deltas and all(e.type == "transcript.text.delta" for e in deltas)
    assert done.type == "transcript.text.done"
    assert "".join(e.delta for e in deltas) == done.text
    assert wer(JFK.reference, done.text) <= 0.1


async def test_models_lists_the_served_model(client: openai.AsyncOpenAI) -> None:
    listed = [model.id async for model in client.models.list()]
    assert listed == ["tiny.en"]
    assert (await client.models.retrieve("whisper-1")).id == "tiny.en"
    with pytest.raises(openai.BadRequestError) as raised:
        await client.models.retrieve("gpt-4o-transcribe")
    assert (raised.value.code, raised.value.param) == ("model_not_found", "model")


# ---- translations (multilingual base) ------------------------------------------------------
@pytest.fixture(scope="module")
async def base_server(base_engine: Tiny) -> AsyncIterator[RunningServer]:
    running = await start_server(ServerSettings(port=0, http_port=0), *base_engine)
    yield running
    await running.drain_and_stop(grace=1.0)


# openai 3.x marks `audio.translations` deprecated; the endpoint is what is under test.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_translations_reach_the_decoder_as_the_translate_task(
    base_server: RunningServer,
) -> None:
    client = sdk(base_server)
    heard = await client.audio.transcriptions.create(
        model="whisper-1", file=upload(CHINESE), response_format="verbose_json"
    )
    assert heard.language == "chinese"
    assert not heard.text.isascii()
    # English speech translated to English decodes greedily (base's Chinese translation falls
    # back to sampling and varies from run to run), so the words can be checked.
    translated = await client.audio.translations.create(
        model="whisper-1", file=upload(HESTER), response_format="verbose_json"
    )
    assert translated.language == "english"  # the language of the translated text
    assert wer(HESTER.reference, translated.text) <= 0.2, translated.text
    assert translated.segments and translated.segments[0].text


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_an_english_only_model_cannot_translate(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.audio.translations.create(model="whisper-1", file=upload(HESTER))
    assert (raised.value.code, raised.value.param) == ("invalid_option", "model")


# ---- curl: a real multipart upload ----------------------------------------------------------
async def curl(*args: str) -> tuple[int, str]:
    """(HTTP status, body) of one curl call."""
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "--write-out", "\n%{http_code}", *args, stdout=subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, out
    body, _, status = out.decode().rpartition("\n")
    return int(status), body


def curl_auth(token: str = TOKEN) -> tuple[str, str]:
    return "-H", f"Authorization: Bearer {token}"


async def test_curl_multipart_json_and_text(server: RunningServer) -> None:
    url = f"{base_url(server)}/v1/audio/transcriptions"
    status, body = await curl(
        *curl_auth(), "-F", f"file=@{HESTER.path}", "-F", "model=whisper-1", url
    )
    assert status == 200
    assert wer(HESTER.reference, json.loads(body)["text"]) <= 0.1
    status, body = await curl(
        *curl_auth(), "-F", f"file=@{NIGHTFALL.path}", "-F", "response_format=text", url
    )
    assert status == 200 and wer(NIGHTFALL.reference, body) <= 0.1


# ---- bad inputs: OpenAI's error JSON, the documented status, and the server keeps serving ---
GARBAGE = bytes(range(256)) * 64
# case -> (form fields beyond the file, file, token, (status, error code, error param))
BadInput = tuple[dict[str, str], tuple[str, bytes] | None, str, tuple[int, str, str | None]]
BAD_INPUTS: dict[str, BadInput] = {
    "no file": ({"model": "whisper-1"}, None, TOKEN, (400, "missing_field", "file")),
    "empty file": ({}, ("empty.wav", b""), TOKEN, (400, "empty_audio", "file")),
    "garbage bytes": ({}, ("noise.wav", GARBAGE), TOKEN, (400, "audio_decode_failed", "file")),
    "huge file": ({}, ("huge.wav", bytes(LIMIT + 1)), TOKEN, (413, "request_too_large", None)),
    "bad language": (
        {"language": "klingon"}, ("h.wav", HESTER.read()), TOKEN,
        (400, "unsupported_language", "language"),
    ),
    "bad response_format": (
        {"response_format": "diarized_json"}, ("h.wav", HESTER.read()), TOKEN,
        (400, "unsupported_response_format", "response_format"),
    ),
    "word timestamps outside verbose_json": (
        {"response_format": "json", "timestamp_granularities[]": "word"},
        ("h.wav", HESTER.read()), TOKEN,
        (400, "invalid_option", "timestamp_granularities[]"),
    ),
    "bad temperature": (
        {"temperature": "hot"}, ("h.wav", HESTER.read()), TOKEN,
        (400, "invalid_option", "temperature"),
    ),
    "unknown model": (
        {"model": "gpt-4o-transcribe"}, ("h.wav", HESTER.read()), TOKEN,
        (400, "model_not_found", "model"),
    ),
    "wrong token": ({}, ("h.wav", HESTER.read()), "not-the-token", (401, "invalid_api_key", None)),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_INPUTS)
async def test_bad_input_through_curl(server: RunningServer, tmp_path: Path, case: str) -> None:
    fields, file, token, expected = BAD_INPUTS[case]
    form = [arg for name, value in fields.items() for arg in ("-F", f"{name}={value}")]
    if file is not None:
        path = tmp_path / file[0]
        path.write_bytes(file[1])
        form += ["-F", f"file=@{path}"]
    url = f"{base_url(server)}/v1/audio/transcriptions"
    status, body = await curl(*curl_auth(token), *form, url)
    error = json.loads(body)["error"]
    assert (status, error["code"], error["param"]) == expected
    assert error["message"] and error["type"]
    assert (await curl(*curl_auth(), f"{base_url(server)}/v1/models"))[0] == 200


@pytest.mark.parametrize("case", [case for case in BAD_INPUTS if case != "no file"])
async def test_bad_input_through_the_sdk(server: RunningServer, case: str) -> None:
    fields, file, token, (status, code, param) = BAD_INPUTS[case]
    arguments: dict[str, Any] = {"model": "whisper-1", "file": file, **fields}
    if "timestamp_granularities[]" in arguments:
        arguments["timestamp_granularities"] = [arguments.pop("timestamp_granularities[]")]
    with pytest.raises(openai.APIStatusError) as raised:
        await sdk(server, token).audio.transcriptions.create(**arguments)
    assert (raised.value.status_code, raised.value.code, raised.value.param) == (
        status,
        code,
        param,
    )


async def test_a_chunked_upload_over_the_limit_is_cut_off_with_413(
    server: RunningServer, tmp_path: Path
) -> None:
    huge = tmp_path / "huge.wav"
    huge.write_bytes(bytes(LIMIT + 1))
    url = f"{base_url(server)}/v1/audio/transcriptions"
    status, body = await curl(
        *curl_auth(), "-H", "Transfer-Encoding: chunked", "-F", f"file=@{huge}", url
    )
    assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"


async def test_after_every_bad_input_the_server_still_transcribes(
    client: openai.AsyncOpenAI,
) -> None:
    result = await client.audio.transcriptions.create(model="whisper-1", file=upload(HESTER))
    assert wer(HESTER.reference, result.text) <= 0.1


# ---- probes, warm-up, drain, busy ------------------------------------------------------------
async def test_probes_need_no_token_and_follow_readiness(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=base_url(server)) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).json() == {"status": "SERVING"}
        server.state.ready = False  # as before the warm-up decode has passed
        try:
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json() == {"status": "NOT_SERVING"}
            assert (await http.get("/healthz")).status_code == 200  # alive all the same
            call = await http.post(
                "/v1/audio/transcriptions",
                files={"file": upload(HESTER)},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
        finally:
            server.state.ready = True
    assert call.status_code == 503 and call.headers["retry-after"] == "1"
    assert call.json()["error"]["code"] == "engine_not_ready"


async def test_draining_refuses_new_calls_with_503_and_finishes_those_in_flight(
    tiny_engine: Tiny,
) -> None:
    running = await start_server(ServerSettings(port=0, http_port=0), *tiny_engine)
    client = sdk(running)
    in_flight = asyncio.create_task(
        client.audio.transcriptions.create(model="whisper-1", file=upload(HESTER))
    )
    await asyncio.sleep(0.5)  # the upload is in; the decode is under way
    running.state.drain()
    with pytest.raises(openai.APIStatusError) as refused:
        await client.audio.transcriptions.create(model="whisper-1", file=upload(HESTER))
    assert refused.value.status_code == 503 and refused.value.code == "server_draining"
    assert refused.value.response.headers["retry-after"] == "1"
    await running.drain_and_stop(grace=30.0)
    assert wer(HESTER.reference, (await in_flight).text) <= 0.1


async def test_a_full_queue_is_429_with_retry_after(tiny_engine: Tiny) -> None:
    running = await start_server(
        ServerSettings(port=0, http_port=0, max_queue=1, batch_wait_ms=50), *tiny_engine
    )
    try:
        client = sdk(running)
        results = await asyncio.gather(
            *(
                client.audio.transcriptions.create(model="whisper-1", file=upload(JFK))
                for _ in range(4)
            ),
            return_exceptions=True,
        )
    finally:
        await running.drain_and_stop(grace=1.0)
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert refused and len(refused) < 4
    for error in refused:
        assert (error.status_code, error.code) == (429, "server_busy")
        assert int(error.response.headers["retry-after"]) >= 1


# ---- HTTP and gRPC callers at once ----------------------------------------------------------
async def test_http_and_grpc_callers_at_once_share_the_scheduler(server: RunningServer) -> None:
    registry = server.metrics.registry
    batches_before = registry.get_sample_value("whisperwire_batch_size_sum") or 0.0
    calls_before = registry.get_sample_value("whisperwire_batch_size_count") or 0.0
    client = sdk(server)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        metadata = (("authorization", f"Bearer {TOKEN}"),)
        grpc_calls = [
            stub(channel).Transcribe(
                pb.TranscribeRequest(audio_content=clip.read()), metadata=metadata
            )
            for clip in (JFK, HESTER, NIGHTFALL)
        ]
        http_calls = [
            client.audio.transcriptions.create(model="whisper-1", file=upload(clip))
            for clip in (JFK, HESTER, NIGHTFALL)
        ]
        results = await asyncio.gather(*grpc_calls, *http_calls)
    texts = [r.transcript.text for r in results[:3]] + [r.text for r in results[3:]]
    for clip, text in zip((JFK, HESTER, NIGHTFALL) * 2, texts, strict=True):
        assert wer(clip.reference, text) <= 0.1
    windows = registry.get_sample_value("whisperwire_batch_size_sum") - batches_before
    engine_calls = registry.get_sample_value("whisperwire_batch_size_count") - calls_before
    assert windows == 6 and engine_calls < windows  # some engine call took windows of both
    http = {"protocol": "http", "method": "/v1/audio/transcriptions"}
    assert registry.get_sample_value("whisperwire_requests_total", {**http, "code": "200"})
    assert registry.get_sample_value(
        "whisperwire_requests_total", {"protocol": "grpc", "method": "Transcribe", "code": "OK"}
    )
    assert registry.get_sample_value("whisperwire_audio_seconds_total", http)


# ---- settings, startup, the real process ----------------------------------------------------
def test_http_is_off_unless_a_port_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServerSettings().network.http_port is None
    monkeypatch.setenv("WHISPERWIRE_HTTP_PORT", "8080")
    assert ServerSettings().network.http_port == 8080


async def test_a_taken_http_port_is_a_startup_error(
    server: RunningServer, tiny_engine: Tiny
) -> None:
    settings = ServerSettings(port=0, http_port=server.http_port)
    with pytest.raises(ConfigurationError, match="cannot listen for HTTP"):
        await start_server(settings, *tiny_engine)


WHISPERWIRE = str(Path(sys.executable).parent / "whisperwire")


async def test_serve_with_http_port_answers_curl_and_drains_on_sigterm() -> None:
    process = await asyncio.create_subprocess_exec(
        WHISPERWIRE, "serve", "--model", "tiny.en", "--port", "0", "--http-port", "0",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "WHISPERWIRE_THREADS": "1"},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        banner = ""
        while "OpenAI HTTP API on port" not in banner:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=120)
            assert line, "the server exited before serving"
            banner = line.decode()
        port = int(banner.rsplit(" ", 1)[1])
        url = f"http://127.0.0.1:{port}/v1/audio/transcriptions"
        status, body = await curl("-F", f"file=@{HESTER.path}", "-F", "response_format=text", url)
        assert status == 200 and wer(HESTER.reference, body) <= 0.1
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
