"""`whisperwire` client commands as a user runs them: a subprocess against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import srt
import webvtt

from tests.speech import HESTER, JFK, NIGHTFALL, load_pcm16k, side_by_side, to_wav_bytes, wer
from whisperwire.server.app import RunningServer, start_server
from whisperwire.server.config import ServerSettings
from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
from whisperwire.server.tokenizer import WhisperTokenizer

WHISPERWIRE = str(Path(sys.executable).with_name("whisperwire"))
TOKEN = "cli-token"


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]


async def whisperwire(*args: str, env: dict[str, str] | None = None) -> Run:
    """Run the installed command; the event loop keeps serving the in-process server."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WHISPERWIRE_")}
    process = await asyncio.create_subprocess_exec(
        WHISPERWIRE,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment | (env or {}),
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return Run(process.returncode, out.decode(), err.decode())


def no_traceback(run: Run) -> None:
    assert "Traceback" not in run.stderr, run.stderr


@pytest.fixture(scope="module")
async def token_server(
    tiny_engine: tuple[CTranslate2Engine, WhisperTokenizer],
) -> AsyncIterator[RunningServer]:
    """Wants a token; takes requests up to 500 kB (jfk.flac is 1.1 MB)."""
    engine, tokenizer = tiny_engine
    settings = ServerSettings(port=0, token=TOKEN, max_request_bytes=500_000)
    running = await start_server(settings, engine, tokenizer)
    yield running
    await running.drain_and_stop(grace=1.0)


# ---- transcribe ----------------------------------------------------------------------------
async def test_transcribe_prints_one_json_object_per_input(tiny_target: str) -> None:
    run = await whisperwire(
        "transcribe",
        str(JFK.path),
        str(HESTER.path),
        "--server",
        tiny_target,
        "--format",
        "json",
        "--timings",
        "--timestamps",
        "--progress",
    )
    assert run.code == 0, run.stderr
    objects = run.json_lines()
    assert [o["file"] for o in objects] == [str(JFK.path), str(HESTER.path)]
    for data, clip in zip(objects, (JFK, HESTER), strict=True):
        assert wer(clip.reference, str(data["text"])) <= 0.1
        assert data["language"] == "en" and "language_probability" in data
        segments = data["segments"]
        assert isinstance(segments, list) and segments
        assert all(0 <= s["start"] < s["end"] for s in segments)
        timings = data["timings"]
        assert isinstance(timings, dict) and timings["inference"] > 0
    assert "2/2 files" in run.stderr  # the progress bar, forced on


async def test_transcribe_text_and_the_env_server(tiny_target: str) -> None:
    run = await whisperwire(
        "transcribe", str(NIGHTFALL.path), env={"WHISPERWIRE_SERVER": tiny_target}
    )
    assert run.code == 0, run.stderr
    assert wer(NIGHTFALL.reference, run.stdout) <= 0.1


async def test_srt_and_vtt_parse_and_run_forward(tiny_target: str) -> None:
    jfk = ("transcribe", str(JFK.path), "--server", tiny_target, "--format")
    as_srt, as_vtt = await whisperwire(*jfk, "srt"), await whisperwire(*jfk, "vtt")
    assert as_srt.code == as_vtt.code == 0

    subtitles = list(srt.parse(as_srt.stdout))
    srt_times = [(s.start.total_seconds(), s.end.total_seconds()) for s in subtitles]
    captions = webvtt.from_string(as_vtt.stdout).captions
    vtt_times = [
        (c.start_time.in_milliseconds() / 1000, c.end_time.in_milliseconds() / 1000)
        for c in captions
    ]

    for times in (srt_times, vtt_times):
        assert len(times) >= 2
        flat = [t for pair in times for t in pair]
        assert flat == sorted(flat)  # each cue ends after it starts, and none goes back
    assert srt_times == vtt_times
    assert wer(JFK.reference, " ".join(s.content for s in subtitles)) <= 0.1
    assert wer(JFK.reference, " ".join(c.text for c in captions)) <= 0.1


async def test_json_carries_timed_segments_by_default(tiny_target: str) -> None:
    run = await whisperwire(
        "transcribe", str(JFK.path), "--server", tiny_target, "--format", "json"
    )
    [data] = run.json_lines()
    segments = data["segments"]
    assert isinstance(segments, list) and len(segments) >= 2  # phrases, not one 11 s window
    assert segments[0]["end"] < 11.0


async def test_word_timestamps_in_json_srt_and_vtt(tiny_target: str) -> None:
    jfk = ("transcribe", str(JFK.path), "--server", tiny_target, "--word-timestamps", "--format")
    as_json, as_srt, as_vtt = [await whisperwire(*jfk, f) for f in ("json", "srt", "vtt")]
    assert as_json.code == as_srt.code == as_vtt.code == 0, as_json.stderr
    [data] = as_json.json_lines()
    segments = data["segments"]
    assert isinstance(segments, list)
    words = [w for s in segments for w in s["words"]]
    assert len(words) == len(str(data["text"]).split())
    assert all(w["start"] <= w["end"] and 0 < w["probability"] <= 1 for w in words)

    cues = list(srt.parse(as_srt.stdout))  # one cue per word
    assert [c.content for c in cues] == [w["text"].strip() for w in words]
    assert cues[0].start.total_seconds() == words[0]["start"]

    captions = webvtt.from_string(as_vtt.stdout).captions  # a cue per segment, words inline
    assert len(captions) == len(segments)
    assert "<00:00:0" in captions[0].raw_text


async def test_separate_channels_flag(tiny_target: str, tmp_path: Path) -> None:
    stereo = tmp_path / "call.wav"
    stereo.write_bytes(to_wav_bytes(side_by_side(load_pcm16k(JFK), load_pcm16k(NIGHTFALL))))
    run = await whisperwire(
        "transcribe",
        str(stereo),
        "--server",
        tiny_target,
        "--separate-channels",
        "--format",
        "json",
    )
    assert run.code == 0, run.stderr
    [data] = run.json_lines()
    segments = data["segments"]
    assert isinstance(segments, list)
    by_channel = {n: " ".join(s["text"] for s in segments if s["channel"] == n) for n in (0, 1)}
    assert wer(JFK.reference, by_channel[0]) <= 0.1
    assert wer(NIGHTFALL.reference, by_channel[1]) <= 0.1


async def test_subtitles_for_several_files_go_to_an_output_dir(
    tiny_target: str, tmp_path: Path
) -> None:
    files = (str(HESTER.path), str(NIGHTFALL.path))
    refused = await whisperwire("transcribe", *files, "--server", tiny_target, "--format", "vtt")
    assert refused.code == 2 and "--output-dir" in refused.stderr

    run = await whisperwire(
        "transcribe", *files, "--server", tiny_target, "--format", "vtt", "-o", str(tmp_path)
    )
    assert run.code == 0, run.stderr
    for clip in (HESTER, NIGHTFALL):
        captions = webvtt.read(str(tmp_path / (clip.path.stem + ".vtt"))).captions
        assert wer(clip.reference, " ".join(c.text for c in captions)) <= 0.1


async def test_a_bad_file_is_reported_and_the_rest_still_transcribed(
    tiny_target: str, tmp_path: Path
) -> None:
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is not audio")
    run = await whisperwire("transcribe", str(not_audio), str(HESTER.path), "--server", tiny_target)
    assert run.code == 1
    assert "AUDIO_DECODE_FAILED" in run.stderr and "notes.wav" in run.stderr
    assert wer(HESTER.reference, run.stdout.split(":", 1)[1]) <= 0.1
    no_traceback(run)


async def test_missing_files_exit_2(tiny_target: str) -> None:
    for command in ("transcribe", "stream"):
        run = await whisperwire(command, "/no/such/file.wav", "--server", tiny_target)
        assert run.code == 2, (command, run.stderr)
        assert "/no/such/file.wav" in run.stderr
        no_traceback(run)


# ---- stream --------------------------------------------------------------------------------
async def test_stream_replays_in_real_time_with_partials_and_latency(tiny_target: str) -> None:
    run = await whisperwire("stream", str(HESTER.path), "--server", tiny_target, "--language", "en")
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    kinds = [line.split()[0] for line in lines]
    assert "partial" in kinds
    assert kinds[-2:] == ["final", "latency"]
    assert kinds.index("partial") < kinds.index("final")
    assert wer(HESTER.reference, lines[-2].removeprefix("final")) <= 0.1
    assert lines[-1].startswith("latency release→final ") and lines[-1].endswith(" ms")


async def test_stream_fast_as_json(tiny_target: str) -> None:
    run = await whisperwire(
        "stream", str(JFK.path), "--fast", "--format", "json", "--timings", "--server", tiny_target
    )
    assert run.code == 0, run.stderr
    [data] = run.json_lines()
    assert wer(JFK.reference, str(data["text"])) <= 0.1
    assert isinstance(data["latency_ms"], int) and data["latency_ms"] >= 0
    assert isinstance(data["timings"], dict) and data["segments"]


# ---- info, connection problems ----------------------------------------------------------------
async def test_info_text_and_json(tiny_target: str) -> None:
    text = await whisperwire("info", "--server", tiny_target)
    as_json = await whisperwire("info", "--server", tiny_target, "--format", "json")
    assert text.code == as_json.code == 0
    assert "SERVING" in text.stdout and "tiny.en" in text.stdout
    [data] = as_json.json_lines()
    assert data["model"] == "tiny.en" and data["health"] == "SERVING"


async def test_unreachable_server_is_a_clear_message_and_exit_1() -> None:
    for args in (("info",), ("stream", str(HESTER.path))):  # a unary call, a stream
        run = await whisperwire(*args, "--server", "127.0.0.1:1")
        assert run.code == 1, (args, run.stderr)
        assert "cannot reach the server at 127.0.0.1:1" in run.stderr
        no_traceback(run)


async def test_wrong_token_is_a_clear_message_and_exit_1(token_server: RunningServer) -> None:
    target = f"127.0.0.1:{token_server.port}"
    for extra in ((), ("--token", "wrong")):
        run = await whisperwire("transcribe", str(HESTER.path), "--server", target, *extra)
        assert run.code == 1
        assert "refused the credentials" in run.stderr and "--token" in run.stderr
        no_traceback(run)
    by_flag = await whisperwire("info", "--server", target, "--token", TOKEN)
    by_env = await whisperwire("info", "--server", target, env={"WHISPERWIRE_TOKEN": TOKEN})
    assert by_flag.code == by_env.code == 0


async def test_a_file_over_the_size_limit_is_reported_and_the_rest_still_done(
    token_server: RunningServer,
) -> None:
    target = f"127.0.0.1:{token_server.port}"
    run = await whisperwire(
        "transcribe", str(JFK.path), str(HESTER.path), "--server", target, "--token", TOKEN
    )
    assert run.code == 1
    assert "jfk.flac: the request is larger than the server accepts" in run.stderr
    assert wer(HESTER.reference, run.stdout.split(":", 1)[1]) <= 0.1
    no_traceback(run)


async def test_serve_is_still_there() -> None:
    run = await whisperwire("serve", "--help")
    assert run.code == 0 and "--model" in run.stdout
