"""`whisperwire mic` end to end through an emulated microphone: a private PulseAudio daemon
whose pipe source plays a real clip at real-time pace, captured by sounddevice (PortAudio),
gated by webrtcvad, streamed to a real server.

The emulation: PulseAudio's `module-pipe-source` turns a FIFO into a capture device (made the
default source), so PortAudio's `pulse`/`default` device reads whatever is written to the
FIFO. The source has no clock of its own and delivers as fast as data arrives, so the writer
paces itself at 20 ms per 20 ms chunk.

Needs the Debian packages pulseaudio, pulseaudio-utils, libportaudio2, libasound2-plugins.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.speech import HESTER, NIGHTFALL, load_pcm16k, to_s16le, wer, white_noise
from whisperwire.server.app import start_server
from whisperwire.server.config import ServerSettings
from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
from whisperwire.server.tokenizer import WhisperTokenizer

pytestmark = pytest.mark.mic
WHISPERWIRE = str(Path(sys.executable).with_name("whisperwire"))
CHUNK = 640  # 20 ms of 16 kHz s16le mono


@dataclass
class EmulatedMicrophone:
    runtime: Path
    fifo: Path

    @property
    def env(self) -> dict[str, str]:
        return {"PULSE_RUNTIME_PATH": str(self.runtime)}

    def play(self, pcm: bytes) -> None:
        """Write 16 kHz s16le mono into the source at real-time pace (it has no clock)."""
        started = time.monotonic()
        with self.fifo.open("wb") as source:
            for number, offset in enumerate(range(0, len(pcm), CHUNK)):
                source.write(pcm[offset : offset + CHUNK])
                source.flush()
                time.sleep(max(0.0, started + (number + 1) * 0.02 - time.monotonic()))


def _pactl(runtime: Path, *args: str) -> str:
    env = os.environ | {"PULSE_RUNTIME_PATH": str(runtime)}
    done = subprocess.run(["pactl", *args], env=env, capture_output=True, text=True, check=False)
    return done.stdout


@pytest.fixture(scope="module")
def microphone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatedMicrophone]:
    if shutil.which("pulseaudio") is None:
        pytest.skip(
            "pulseaudio is not installed (apt-get install pulseaudio pulseaudio-utils "
            "libportaudio2 libasound2-plugins)"
        )
    runtime = tmp_path_factory.mktemp("pulse")
    fifo = runtime / "mic.fifo"  # created by module-pipe-source
    subprocess.run(
        [
            "pulseaudio",
            "--daemonize=yes",
            "--exit-idle-time=-1",
            "-n",
            "--load=module-native-protocol-unix",
            f"--load=module-pipe-source source_name=virtmic file={fifo} "
            "format=s16le rate=16000 channels=1",
            "--load=module-null-sink sink_name=nul",
        ],
        env=os.environ | {"PULSE_RUNTIME_PATH": str(runtime)},
        check=True,
        capture_output=True,
    )
    try:
        _wait_for_source(runtime)
        _pactl(runtime, "set-default-source", "virtmic")
        yield EmulatedMicrophone(runtime, fifo)
    finally:
        _stop_daemon(runtime)


def _wait_for_source(runtime: Path) -> None:
    for _ in range(100):
        if "virtmic" in _pactl(runtime, "list", "sources", "short"):
            return
        time.sleep(0.1)
    pytest.fail("the PulseAudio pipe source did not appear")


def _stop_daemon(runtime: Path) -> None:
    pid_file = runtime / "pid"
    if pid_file.exists():
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)


class MicSession:
    """`whisperwire mic` driven through its stdin, read through its stdout and stderr."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.notes: list[str] = []

    async def note_containing(self, text: str) -> str:
        """Read stderr until a line contains `text` (the status lines for the person)."""
        assert self.process.stderr is not None
        while line := (await asyncio.wait_for(self.process.stderr.readline(), 120)).decode():
            self.notes.append(line)
            if text in line:
                return line
        pytest.fail(f"no {text!r} on stderr; got {self.notes}")

    async def key(self, line: str = "") -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{line}\n".encode())
        await self.process.stdin.drain()

    async def result(self) -> dict[str, object]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), 120)
        data: dict[str, object] = json.loads(line)
        return data


async def start_mic(*args: str, env: dict[str, str]) -> MicSession:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WHISPERWIRE_")}
    process = await asyncio.create_subprocess_exec(
        WHISPERWIRE,
        "mic",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment | env,
    )
    return MicSession(process)


def spoken(clip: object, seed: int) -> bytes:
    """Half a second of room tone, the clip, a second of room tone."""
    before = white_noise(0.5, level=0.0003, seed=seed)
    after = white_noise(1.0, level=0.0003, seed=seed + 1)
    return to_s16le(np.concatenate([before, load_pcm16k(clip), after]))  # type: ignore[arg-type]


async def test_push_to_talk_through_a_microphone(
    microphone: EmulatedMicrophone, tiny_target: str
) -> None:
    mic = await start_mic(
        "--server", tiny_target, "--language", "en", "--format", "json", env=microphone.env
    )
    await mic.note_containing("ready:")
    results = []
    for number, clip in enumerate((HESTER, NIGHTFALL)):
        await mic.key()
        await mic.note_containing("recording")
        audio = spoken(clip, seed=2 * number)
        await asyncio.to_thread(microphone.play, audio)
        await mic.key()
        results.append((clip, audio, await mic.result()))
    await mic.key("q")
    assert await asyncio.wait_for(mic.process.wait(), 60) == 0

    # One stream for the session: utterances 1 and 2, no reconnect.
    assert [data["utterance"] for _, _, data in results] == [1, 2]
    assert not any("reconnect" in line for line in mic.notes)
    for clip, audio, data in results:
        assert wer(clip.reference, str(data["text"])) <= 0.15, data["text"]
        assert isinstance(data["latency_ms"], int) and data["latency_ms"] > 0
        assert data["automatic"] is False
        # The VAD gate kept the room tone off the wire: the server heard less than was played.
        played = len(audio) / 32000
        assert isinstance(data["duration"], float) and data["duration"] < played - 0.5


async def test_list_devices_shows_the_emulated_input(microphone: EmulatedMicrophone) -> None:
    mic = await start_mic("--list-devices", env=microphone.env)
    out, _ = await mic.process.communicate()
    assert mic.process.returncode == 0
    assert "pulse" in out.decode() or "default" in out.decode()


async def test_no_input_device_is_a_clear_message_and_exit_2(
    tmp_path: Path, tiny_target: str
) -> None:
    # A PulseAudio runtime dir with no daemon: PortAudio finds no input device.
    mic = await start_mic("--server", tiny_target, env={"PULSE_RUNTIME_PATH": str(tmp_path)})
    _, err = await mic.process.communicate(b"")
    assert mic.process.returncode == 2
    message = err.decode()
    assert "no audio input device" in message or "PortAudio" in message
    assert "Traceback" not in message


async def test_a_server_restart_between_utterances_reconnects(
    microphone: EmulatedMicrophone, tiny_engine: tuple[CTranslate2Engine, WhisperTokenizer]
) -> None:
    engine, tokenizer = tiny_engine
    server = await start_server(ServerSettings(port=0), engine, tokenizer, warm_up=False)
    target = f"127.0.0.1:{server.port}"
    mic = await start_mic("--server", target, "--format", "json", env=microphone.env)
    try:
        await mic.note_containing("ready:")
        texts = []
        for restart in (False, True):
            if restart:
                await server.drain_and_stop(grace=5.0)
                await mic.note_containing("connection lost")
                server = await start_server(
                    ServerSettings(port=server.port), engine, tokenizer, warm_up=False
                )
            await mic.key()
            await mic.note_containing("recording")
            await asyncio.to_thread(microphone.play, spoken(HESTER, seed=7))
            await mic.key()
            texts.append(str((await mic.result())["text"]))
        await mic.key("q")
        assert await asyncio.wait_for(mic.process.wait(), 60) == 0
    finally:
        await server.drain_and_stop(grace=1.0)

    assert any("reconnected" in line for line in mic.notes)
    assert not any("Traceback" in line for line in mic.notes)
    for text in texts:
        assert wer(HESTER.reference, text) <= 0.15, text


async def test_an_unreachable_server_is_a_clear_message_and_exit_1(
    microphone: EmulatedMicrophone,
) -> None:
    mic = await start_mic("--server", "127.0.0.1:1", env=microphone.env)
    _, err = await mic.process.communicate(b"")
    assert mic.process.returncode == 1
    assert "cannot reach the server at 127.0.0.1:1" in err.decode()
    assert "Traceback" not in err.decode()
