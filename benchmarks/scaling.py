"""Issue 7: how release→final latency, throughput and memory scale with concurrent push-to-talk
streams on the embedded CPU engine.

A real whisperwire server (the CTranslate2 engine loaded as `whisperwire serve` loads it; tiny.en
by default, 2 threads) runs in its own process. A client process (the whisperwire.client SDK)
opens N StreamAudio calls, N = 1, 2, 4, 8, 16, 32. Every stream talks in push-to-talk
utterances: a real speech clip (jfk trimmed to 10 s, the two LibriSpeech clips; each stream
starts at another clip and rotates) sent as 20 ms s16le chunks in real time, then
end_utterance; it waits for that utterance's final, pauses 0.5 s and talks again. Streams start
staggered over one mean cycle; the measured window opens once all of them talk.

Per level: release→final p50/p95 (from end_utterance written to the final read), finals, audio
seconds finalized per wall second (and per stream), each final's WER against its clip (<= 0.2
counts as correct; a final closer to another clip than to its own is cross-talk), errors, server
CPU (/proc/<pid>/stat), the foreign load (load.py) and the server's memory: VmHWM and VmRSS at
idle, VmRSS sampled every 0.5 s during each level, VmHWM after it.

    python -m benchmarks.scaling                       # tiny.en, N = 1..32, ~8 min
    python -m benchmarks.scaling --models tiny.en,base --streams 1,8,32 --seconds 40
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any

from benchmarks.common import (
    ENGLISH_CLIPS,
    Figure,
    Run,
    Worker,
    add_quiet_wait,
    add_tag_and_roles,
    answer_requests,
    clip_key,
    cpu_seconds,
    ints,
    load_clip,
    package_versions,
    percentile,
    reply,
    report,
    run_role,
    serve_worker,
    sleep_until,
    table,
    worker_channel,
)
from benchmarks.load import QUIET, ForeignLoad
from benchmarks.service_latency import DOC, ENGINE_FLOOR_MS, LATENCY_GOAL_MS
from tests.speech import chunks, to_s16le, wer
from whisperwire.client import (
    AsyncAudioStream,
    AsyncClient,
    FinalResult,
    RecognitionOptions,
    StreamOptions,
    WhisperwireClientError,
)

CLIP_SECONDS = 10.0  # as service_latency: the latency goals are for clips up to 10 s
CHUNK_SECONDS = 0.02
CORRECT_WER = 0.2
RSS_INTERVAL = 0.5  # s between VmRSS samples
# Push-to-talk as a client would: language given, greedy, no partials (interim results off).
STREAM_OPTIONS = StreamOptions(recognition=RecognitionOptions(language="en", beam_size=1))


# ---- server process -----------------------------------------------------------------------
async def server_main(args: argparse.Namespace) -> None:
    from whisperwire.server.app import load_engine
    from whisperwire.server.config import ServerSettings

    requests, out = worker_channel()
    # One client process plays every caller: no per-address stream limit.
    settings = ServerSettings(
        port=0,
        model=args.model,
        threads=args.threads,
        max_streams=max(256, args.max_streams),
        max_streams_per_client=0,
    )
    engine, tokenizer = load_engine(settings)
    await serve_worker(requests, out, settings, engine, tokenizer)


# ---- client process -----------------------------------------------------------------------
@dataclass(frozen=True)
class Speech:
    """One clip as a stream sends it."""

    key: str
    chunks: list[bytes]

    @property
    def seconds(self) -> float:
        return len(self.chunks) * CHUNK_SECONDS


@dataclass(frozen=True)
class Plan:
    streams: int
    start: float  # loop time at which stream 0 starts talking
    stagger: float  # s between the starts of consecutive streams
    window: tuple[float, float]  # loop times; finals of releases inside it count
    pause: float  # s between a final and the next utterance


@dataclass
class Log:
    finals: list[dict[str, Any]] = field(default_factory=list)
    late: list[float] = field(default_factory=list)  # send time - due time, s, in the window
    errors: list[str] = field(default_factory=list)


def speech_clips() -> list[Speech]:
    return [
        Speech(clip_key(clip), chunks(to_s16le(load_clip(clip, CLIP_SECONDS))))
        for clip in ENGLISH_CLIPS
    ]


async def client_main(args: argparse.Namespace) -> None:
    requests, out = worker_channel()
    clips = speech_clips()
    reply(out, ready=True)
    await answer_requests(requests, out, lambda r: run_level(args.port, r, clips, out))


async def run_level(port: int, request: dict[str, Any], clips: list[Speech], out: IO[str]) -> None:
    """N streams talking until the window closes; replies "steady" when it opens and "done"
    (with every final) when all streams have ended."""
    n, log = request["streams"], Log()
    async with AsyncClient(f"127.0.0.1:{port}") as client:
        streams = [await client.stream(STREAM_OPTIONS) for _ in range(n)]
        plan = make_plan(n, request, clips)
        talkers = [asyncio.create_task(talk(s, i, plan, clips, log)) for i, s in enumerate(streams)]
        await sleep_until(plan.window[0])
        reply(out, phase="steady")
        await asyncio.gather(*talkers)
    late_ms = [1000 * x for x in log.late] or [0.0]
    reply(
        out,
        phase="done",
        finals=log.finals,
        errors=log.errors,
        late_ms={"p50": percentile(late_ms, 50), "p99": percentile(late_ms, 99)},
    )


def make_plan(n: int, request: dict[str, Any], clips: list[Speech]) -> Plan:
    """Starts spread over one mean talk cycle, so releases do not bunch up; the window opens
    when the last stream has started."""
    cycle = sum(c.seconds for c in clips) / len(clips) + request["pause"]
    start = asyncio.get_running_loop().time() + 0.2
    opens = start + cycle
    return Plan(n, start, cycle / n, (opens, opens + request["seconds"]), request["pause"])


async def talk(
    stream: AsyncAudioStream, index: int, plan: Plan, clips: list[Speech], log: Log
) -> None:
    """Utterance after utterance until the window closes (one cut short then is cancelled);
    then half-close and read to the end of the call."""
    loop = asyncio.get_running_loop()
    due, k = plan.start + index * plan.stagger, 0
    try:
        while due < plan.window[1]:
            clip = clips[(index + k) % len(clips)]
            if not await speak(stream, clip, due, plan, log):
                await stream.cancel()
                break
            released = loop.time() - plan.window[0]
            final = await release(stream)
            arrived = loop.time() - plan.window[0]
            log.finals.append(
                {"stream": index, "clip": clip.key, "released": released, "arrived": arrived}
                | final
            )
            due, k = loop.time() + plan.pause, k + 1
        await stream.close()
        async for _ in stream:
            pass
    except (WhisperwireClientError, RuntimeError) as error:
        log.errors.append(f"stream {index}: {error!r}")
        stream.abort()


async def speak(stream: AsyncAudioStream, clip: Speech, due: float, plan: Plan, log: Log) -> bool:
    """The clip's chunks in real time (chunk j once its 20 ms have been "recorded"); False if
    the window closed first."""
    loop = asyncio.get_running_loop()
    for j, chunk in enumerate(clip.chunks):
        at = due + (j + 1) * CHUNK_SECONDS
        await sleep_until(at)
        now = loop.time()
        if now >= plan.window[1]:
            return False
        await stream.push(chunk)
        if now >= plan.window[0]:
            log.late.append(now - at)
    return True


async def release(stream: AsyncAudioStream) -> dict[str, Any]:
    """end_utterance, then the clock runs until that utterance's final arrives."""
    started = time.perf_counter()
    await stream.end_utterance()
    while (event := await stream.next_event()) is not None:
        if isinstance(event, FinalResult):
            latency = time.perf_counter() - started
            return {"latency_ms": 1000 * latency, "text": event.transcript.text}
    raise RuntimeError("the call ended before the final")


# ---- server memory ------------------------------------------------------------------------
def status_mib(pid: int, key: str) -> float:
    """A memory line of /proc/<pid>/status (VmRSS, VmHWM: in kB), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


class RssSampler:
    """The largest VmRSS of a process, sampled every RSS_INTERVAL s on a thread (VmHWM only
    grows, so it cannot give the peak of one level after a larger one)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.max_mib = pid, status_mib(pid, "VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(RSS_INTERVAL):
            self._sample()

    def _sample(self) -> None:
        self.max_mib = max(self.max_mib, status_mib(self.pid, "VmRSS"))


def idle_memory(pid: int, settle: float = 2.0) -> dict[str, float]:
    time.sleep(settle)  # let the warm-up's buffers go back
    return {"vm_rss_mib": status_mib(pid, "VmRSS"), "vm_hwm_mib": status_mib(pid, "VmHWM")}


# ---- main process -------------------------------------------------------------------------
@dataclass
class Processes:
    server: Worker
    server_pid: int
    client: Worker

    def pids(self) -> list[int]:
        return [os.getpid(), self.server_pid, self.client.pid]

    def kill(self) -> None:
        self.client.kill()
        self.server.kill()


def start_processes(args: argparse.Namespace, model: str) -> Processes:
    me = ["-m", "benchmarks.scaling"]
    role = ["--serve", "--model", model, "--threads", str(args.threads)]
    server = Worker("server", [*me, *role, "--max-streams", str(max(args.streams))])
    client = Worker("client", [*me, "--client", "--port", str(server.ready["port"])])
    assert client.ready.get("ready")
    return Processes(server, server.ready["pid"], client)


@dataclass(frozen=True)
class CpuMark:
    """CPU seconds of the server and the client, and the wall clock, at one moment."""

    server: float
    client: float
    wall: float

    @classmethod
    def now(cls, procs: Processes) -> CpuMark:
        return cls(
            cpu_seconds(procs.server_pid), cpu_seconds(procs.client.pid), time.perf_counter()
        )


def measure_level(procs: Processes, args: argparse.Namespace, n: int) -> dict[str, Any]:
    load = ForeignLoad(procs.pids)
    with RssSampler(procs.server_pid) as rss:
        procs.client.call(op="run", streams=n, seconds=args.seconds, pause=args.pause)
        mark, cpu0 = load.mark(), CpuMark.now(procs)  # the window opened ("steady")
        done = procs.client.read()
        cpu1, foreign = CpuMark.now(procs), load.since(mark)
    wall = cpu1.wall - cpu0.wall
    return {
        "streams": n,
        "window_s": args.seconds,
        "wall_s": wall,
        "server_cpu_s": cpu1.server - cpu0.server,
        "server_cpu_percent": 100 * (cpu1.server - cpu0.server) / wall,
        "client_cpu_percent": 100 * (cpu1.client - cpu0.client) / wall,
        "foreign": foreign,
        "vm_rss_max_mib": rss.max_mib,
        "vm_hwm_after_mib": status_mib(procs.server_pid, "VmHWM"),
        "late_ms": done["late_ms"],
        "errors": done["errors"],
        **score_finals(done["finals"], args.seconds, n),
    }


REFERENCES = {clip_key(c): c.reference for c in ENGLISH_CLIPS}


@cache
def audio_seconds() -> dict[str, float]:
    """Seconds of each clip as sent."""
    return {s.key: round(s.seconds, 3) for s in speech_clips()}


def judge(final: dict[str, Any]) -> None:
    """WER against the clip sent, and cross-talk: the text is closer to another clip's words
    than to its own (the streams rotate the clips, so another stream's final would show)."""
    final["wer"] = wer(REFERENCES[final["clip"]], final["text"])
    final["cross_talk"] = any(
        wer(ref, final["text"]) < final["wer"]
        for key, ref in REFERENCES.items()
        if key != final["clip"]
    )


def score_finals(every: list[dict[str, Any]], window_s: float, n: int) -> dict[str, Any]:
    """Latency and WER of the utterances released in the window; throughput from the finals
    that arrived in it (when the server falls behind, releases outpace finals); cross-talk
    and wrong texts over every final of the level."""
    for f in every:
        judge(f)
    finals = [f for f in every if 0 <= f["released"] < window_s]
    arrived = [f for f in every if 0 <= f["arrived"] < window_s]
    latencies = [f["latency_ms"] for f in finals] or [math.nan]
    audio_per_s = sum(audio_seconds()[f["clip"]] for f in arrived) / window_s
    return {
        "finals": len(finals),
        "finals_arrived": len(arrived),
        "finals_all": len(every),
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "max": max(latencies),
        },
        "audio_s_per_s": audio_per_s,
        "audio_s_per_s_per_stream": audio_per_s / n,
        "correct": sum(f["wer"] <= CORRECT_WER for f in finals),
        "cross_talk": sum(f["cross_talk"] for f in every),
        "wrong_texts": [f for f in every if f["wer"] > CORRECT_WER or f["cross_talk"]],
        # Compact: stream, clip, latency, WER per final (texts only of the wrong ones above).
        "per_final": [
            [f["stream"], f["clip"], round(f["latency_ms"], 1), round(f["wer"], 3)] for f in finals
        ],
    }


def levels_in_order(streams: list[int], repeat: int) -> list[int]:
    """Up on even repeats, down on odd ones, so no level always runs on a fresher server."""
    return list(streams) if repeat % 2 == 0 else list(reversed(streams))


def bench_model(args: argparse.Namespace, model: str) -> dict[str, Any]:
    procs = start_processes(args, model)
    try:
        idle = idle_memory(procs.server_pid)
        print(f"{model}: idle VmRSS {idle['vm_rss_mib']:.0f} MiB, VmHWM {idle['vm_hwm_mib']:.0f}")
        levels: list[dict[str, Any]] = []
        busy: list[dict[str, Any]] = []
        for r in range(args.repeats):
            for n in levels_in_order(args.streams, r):
                levels.append(measure_quietest(procs, args, n, busy))
        client_rss = procs.client.close()["peak_rss_mib"]
        server_rss = procs.server.close()["peak_rss_mib"]
    finally:
        procs.kill()
    return {
        "idle": idle,
        "levels": levels,
        "busy_runs": busy,
        "peak_rss_mib": {"server": server_rss, "client": client_rss},
    }


def measure_quietest(
    procs: Processes, args: argparse.Namespace, n: int, busy: list[dict[str, Any]]
) -> dict[str, Any]:
    """One level; a run during which other processes used the machine is measured again (up
    to --retry-busy times, each after waiting for quiet): the quietest run is kept, the
    others go to `busy` (they stay in the results file, out of the statistics)."""
    quiet, runs = ForeignLoad(procs.pids), []
    for _ in range(1 + args.retry_busy):
        waited = quiet.wait_quiet(args.quiet_wait)  # returns at once if quiet
        runs.append({**measure_level(procs, args, n), "waited_s": waited})
        print(levels_table(runs[-1:]).split("\n")[-1], flush=True)
        if runs[-1]["foreign"] <= QUIET:
            break
    kept = min(runs, key=lambda run: run["foreign"])
    busy += [run for run in runs if run is not kept]
    return kept


# ---- tables and figures -------------------------------------------------------------------
def levels_table(levels: list[dict[str, Any]]) -> str:
    headers = (
        "streams",
        "finals",
        "p50 ms",
        "p95 ms",
        "max ms",
        "audio s/s",
        "per stream",
        "WER<=0.2",
        "cross-talk",
        "errors",
        "server %core",
        "client %core",
        "late p99 ms",
        "VmRSS max MiB",
        "others",
    )
    rows = [
        (
            str(lv["streams"]),
            lv["finals"],
            lv["latency_ms"]["p50"],
            lv["latency_ms"]["p95"],
            lv["latency_ms"]["max"],
            lv["audio_s_per_s"],
            lv["audio_s_per_s_per_stream"],
            lv["correct"],
            lv["cross_talk"],
            len(lv["errors"]),
            lv["server_cpu_percent"],
            lv["client_cpu_percent"],
            lv["late_ms"]["p99"],
            lv["vm_rss_max_mib"],
            f"{100 * lv['foreign']:.0f} %",
        )
        for lv in levels
    ]
    return table(headers, rows)


def pooled(levels: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """All repeats of one level as one: latencies pooled, throughput averaged."""
    mine = [lv for lv in levels if lv["streams"] == n]
    latencies = [f[2] for lv in mine for f in lv["per_final"]] or [math.nan]
    finals = sum(lv["finals"] for lv in mine)
    return {
        "streams": n,
        "runs": len(mine),
        "finals": finals,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "audio_s_per_s": sum(lv["audio_s_per_s"] for lv in mine) / len(mine),
        "correct_share": sum(lv["correct"] for lv in mine) / max(1, finals),
        "vm_rss_max_mib": max(lv["vm_rss_max_mib"] for lv in mine),
        "quiet_runs": sum(lv["foreign"] <= QUIET for lv in mine),
    }


def figures_for(model: str, result: dict[str, Any], tag: str) -> list[Figure]:
    levels = result["levels"]
    ns = sorted({lv["streams"] for lv in levels})
    low, high = pooled(levels, ns[0]), pooled(levels, ns[-1])
    suffix = f", {model}" + (f" [{tag}]" if tag else "")
    redone = len(result.get("busy_runs", []))
    quiet = (
        f"quiet runs {high['quiet_runs']}/{high['runs']} at {ns[-1]}; busy runs redone: {redone}"
    )
    figures = [
        Figure(
            f"release→final p50, {ns[-1]} real-time streams{suffix}",
            high["p50_ms"],
            "ms",
            f"same at {ns[0]} stream(s), same server",
            low["p50_ms"],
            note=f"p95 {high['p95_ms']:.0f} vs {low['p95_ms']:.0f} ms; {quiet}",
        ),
        Figure(
            f"audio finalized per wall second, {ns[-1]} streams{suffix}",
            high["audio_s_per_s"],
            "audio s/s",
            f"same at {ns[0]} stream(s), same server",
            low["audio_s_per_s"],
            note=f"ideal ratio {ns[-1] // ns[0]} (latency unchanged); {quiet}",
        ),
        Figure(
            f"server peak RSS under {ns[-1]} streams vs idle{suffix}",
            high["vm_rss_max_mib"],
            "MiB",
            "server VmHWM at idle (after load and warm-up)",
            result["idle"]["vm_hwm_mib"],
            note=f"max of VmRSS every {RSS_INTERVAL:g} s; idle VmRSS "
            f"{result['idle']['vm_rss_mib']:.0f} MiB",
        ),
        Figure(
            f"finals with WER <= {CORRECT_WER:g}, {ns[-1]} streams{suffix}",
            100 * high["correct_share"],
            "%",
            f"same at {ns[0]} stream(s)",
            100 * low["correct_share"],
            note=f"{high['finals']} vs {low['finals']} finals",
        ),
        correctness_figure(levels, suffix),
    ]
    if ns[0] == 1 and model in ENGINE_FLOOR_MS:
        figures.append(single_stream_figure(model, low, suffix))
    return figures


def correctness_figure(levels: list[dict[str, Any]], suffix: str) -> Figure:
    cross = sum(lv["cross_talk"] for lv in levels)
    errors = sum(len(lv["errors"]) for lv in levels)
    return Figure(
        f"finals with another clip's text, all levels{suffix}",
        cross,
        "finals",
        "none expected",
        goal="0",
        goal_met=cross == 0,
        note=f"of {sum(lv['finals_all'] for lv in levels)} finals; stream errors: {errors}",
    )


def single_stream_figure(model: str, low: dict[str, Any], suffix: str) -> Figure:
    goal = LATENCY_GOAL_MS[model]
    return Figure(
        f"release→final p50, 1 real-time stream{suffix}",
        low["p50_ms"],
        "ms",
        f"bare engine floor, greedy 20 tokens ({DOC})",
        ENGINE_FLOOR_MS[model],
        goal=f"<= {goal:g} ms ({DOC})",
        goal_met=low["p50_ms"] <= goal,
        note=f"clips <= 10 s sent in real time; p95 {low['p95_ms']:.0f} ms",
    )


# ---- main ---------------------------------------------------------------------------------
def run_benchmark(args: argparse.Namespace) -> None:
    run = Run("scaling" + (f"-{args.tag}" if args.tag else ""))
    run.versions = package_versions("grpcio", "ctranslate2", "protobuf")
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for model in args.models:
        results[model] = bench_model(args, model)
        run.sample_load()
        print(f"\n{model}\n{levels_table(results[model]['levels'])}\n", flush=True)
    figures = [f for m, r in results.items() for f in figures_for(m, r, args.tag)]
    settings = {
        k: v for k, v in vars(args).items() if k not in ("serve", "client", "port", "model")
    }
    details = {
        "settings": {**settings, "clip_seconds": audio_seconds()},
        "models": results,
        "duration_s": time.perf_counter() - started,
    }
    report(run, figures, details)
    print(f"took {details['duration_s'] / 60:.1f} min")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=lambda t: t.split(","), default=["tiny.en"])
    parser.add_argument("--streams", type=ints, default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--seconds", type=float, default=70.0, help="measured window per level")
    parser.add_argument("--pause", type=float, default=0.5, help="s between final and next talk")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="passes over the levels")
    add_quiet_wait(parser, 30.0, "each level")
    parser.add_argument(
        "--retry-busy",
        type=int,
        default=1,
        help="measure a level again (at most this many times) if others used > 10 %% of the CPU",
    )
    add_tag_and_roles(parser, "scaling", max_streams=32)
    parser.add_argument("--model", default="tiny.en", help=argparse.SUPPRESS)  # server role
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    run_role(parse_args(argv), server_main, client_main, run_benchmark)


if __name__ == "__main__":
    main(sys.argv[1:])
