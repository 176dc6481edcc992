"""Load tier: hundreds of real-time push-to-talk streams against `whisperwire serve` in a
subprocess (so the server's CPU is its own), with real speech and the real tiny.en model.

Every stream sends 20 ms chunks in real time for the whole run and ends utterances with
end_utterance at staggered moments. Asserted: every call ends OK, every utterance gets
exactly one final, and each final is its own utterance's: the exact length and place of that
utterance on its stream's audio clock (unique in the run: no cross-talk) and its words
(within a loose WER bound). Reported, not asserted: the chunk rate achieved, server and
client CPU, server memory, release→final latency.

WHISPERWIRE_LOAD_STREAMS (200), WHISPERWIRE_LOAD_SECONDS (60),
WHISPERWIRE_LOAD_UTTERANCES (utterances per stream, 1) and WHISPERWIRE_LOAD_ENGINE_THREADS
(1) size the run.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest

from tests.load.load_client import (
    CHUNK_SECONDS,
    FinalSeen,
    PlannedUtterance,
    StreamOutcome,
    plan_streams,
    run_streams,
)
from tests.load.serve_process import ServeProcess
from tests.load.utterances import closest_text
from tests.reports import Publish
from whisperwire.v1 import transcription_service_pb2 as pb

STREAMS = int(os.environ.get("WHISPERWIRE_LOAD_STREAMS", "200"))
SECONDS = float(os.environ.get("WHISPERWIRE_LOAD_SECONDS", "60"))
UTTERANCES = int(os.environ.get("WHISPERWIRE_LOAD_UTTERANCES", "1"))
# One engine thread leaves the other core to gRPC (server and client): with two, a backlog
# of finals starves both event loops and the client falls behind real time.
ENGINE_THREADS = int(os.environ.get("WHISPERWIRE_LOAD_ENGINE_THREADS", "1"))
STREAMS_PER_CHANNEL = 25
MAX_WER = 0.5  # loose: tiny.en hears "and so am I fellow americans" in one cut

pytestmark = [pytest.mark.slow, pytest.mark.timeout(SECONDS * 3 + 600)]


@dataclass
class Sample:
    at: float
    server_cpu: float
    server_rss: int
    client_cpu: float


@dataclass
class Sampler:
    """Samples the server's CPU time and RSS and this process's CPU time once a second."""

    server: ServeProcess
    samples: list[Sample] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    """The machine's 1-minute load average: a shared machine skews every figure."""

    def take(self) -> None:
        self.load.append(round(os.getloadavg()[0], 2))
        self.samples.append(
            Sample(
                time.monotonic(),
                self.server.cpu_seconds(),
                self.server.rss_bytes(),
                time.process_time(),
            )
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.take()
            await asyncio.sleep(1.0)  # ends with the load (stop is set), bounded by the test

    def memory(self) -> dict[str, float]:
        rss = [s.server_rss / 2**20 for s in self.samples]
        return {"start": round(rss[0], 1), "peak": round(max(rss), 1), "end": round(rss[-1], 1)}

    def between(self, start: float, end: float) -> dict[str, float]:
        inside = [s for s in self.samples if start <= s.at <= end] or self.samples[-2:]
        first, last = inside[0], inside[-1]
        span = max(last.at - first.at, 1e-9)
        return {
            "seconds": round(span, 1),
            "server": round((last.server_cpu - first.server_cpu) / span, 3),
            "client": round((last.client_cpu - first.client_cpu) / span, 3),
        }


@pytest.fixture
def server() -> Iterator[ServeProcess]:
    running = ServeProcess.start(
        "--max-streams",
        str(max(512, STREAMS + 16)),
        "--max-streams-per-client",
        "0",  # every simulated caller shares this process's address
        "--max-queue",
        "4096",
        "--threads",
        str(ENGINE_THREADS),
    )
    yield running
    running.kill()


async def test_hundreds_of_real_time_push_to_talk_streams(
    server: ServeProcess, publish: Publish
) -> None:
    plans = plan_streams(STREAMS, SECONDS, UTTERANCES)
    fingerprints = [u.fingerprint for plan in plans for u in plan.utterances]
    assert len(set(fingerprints)) == len(fingerprints)  # every utterance is recognisable
    channels = max(1, -(-STREAMS // STREAMS_PER_CHANNEL))
    sampler, stop = Sampler(server), asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop))
    began = time.monotonic()
    outcomes = await run_streams(server.target, plans, channels)
    ended = time.monotonic()
    stop.set()
    await sampling
    sampler.take()

    report = _report(outcomes, sampler, began, ended, channels)
    publish("load", report)

    errors = [(o.plan.index, o.code, o.details) for o in outcomes if o.code != grpc.StatusCode.OK]
    assert not errors, errors[:10]
    problems = [problem for outcome in outcomes for problem in _problems(outcome)]
    assert not problems, f"{len(problems)} problems: {problems[:20]}"


def _problems(outcome: StreamOutcome) -> list[tuple[object, ...]]:
    """What is wrong with a stream's finals: one per utterance, each matching it, and the
    trailing silence's final empty."""
    planned = {u.utterance_id: u for u in outcome.plan.utterances}
    ids = [f.utterance_id for f in outcome.finals]
    if len(ids) != len(set(ids)) or not set(planned) <= set(ids):
        return [("finals", outcome.plan.index, ids)]
    problems = []
    for final in outcome.finals:
        utterance = planned.get(final.utterance_id)
        if utterance is not None:
            problems += _final_problems(outcome.plan.index, utterance, final)
        elif (final.utterance_id, final.end_reason, final.text) != (
            max(planned) + 1,
            pb.END_REASON_STREAM_CLOSED,
            "",
        ):
            problems.append(("unplanned final", outcome.plan.index, final))
    return problems


def _final_problems(
    stream: int, utterance: PlannedUtterance, final: FinalSeen
) -> list[tuple[object, ...]]:
    """The final is this stream's utterance: its place on the stream's audio clock, its words."""
    chunk_ns = round(CHUNK_SECONDS * 1e9)
    origin = utterance.origin_chunk * chunk_ns
    end = utterance.release_chunk * chunk_ns
    closest, score = closest_text(final.text)
    checks = {
        "end reason": final.end_reason == pb.END_REASON_CLIENT_END,
        "audio length": final.audio_ns == end - origin,
        "segments inside the utterance": bool(final.segment_spans_ns)
        and all(origin <= a <= b <= end for a, b in final.segment_spans_ns),
        "closest phrase": closest == utterance.phrase.text,
        "wer": score <= MAX_WER,
    }
    context = (stream, utterance.utterance_id, utterance.phrase.text, final.text, round(score, 2))
    return [(check, *context) for check, ok in checks.items() if not ok]


def _report(
    outcomes: list[StreamOutcome],
    sampler: Sampler,
    began: float,
    ended: float,
    channels: int,
) -> dict[str, object]:
    all_open = max(o.started_at for o in outcomes)
    audio_done = min(o.audio_done_at for o in outcomes)
    return {
        "config": {
            "streams": len(outcomes),
            "seconds_per_stream": SECONDS,
            "utterances_per_stream": UTTERANCES,
            "channels": channels,
            "chunk_ms": CHUNK_SECONDS * 1000,
            "model": "tiny.en",
            "engine_threads": ENGINE_THREADS,
            "cpu_cores": os.cpu_count(),
        },
        "machine_load_average_1min": {"start": sampler.load[0], "end": sampler.load[-1]},
        "wall_seconds": round(ended - began, 1),
        "calls_ok": sum(o.code == grpc.StatusCode.OK for o in outcomes),
        "calls_failed": sum(o.code != grpc.StatusCode.OK for o in outcomes),
        "finals": sum(len(o.finals) for o in outcomes),
        "sending": _sending(outcomes),
        "cpu_cores_while_every_stream_sends": sampler.between(all_open, audio_done),
        "cpu_cores_whole_run": sampler.between(began, ended),
        "server_rss_mib": sampler.memory(),
        **_latencies([f for o in outcomes for f in o.finals if f.latency is not None]),
    }


def _sending(outcomes: list[StreamOutcome]) -> dict[str, object]:
    """How close to real time the client kept: each stream has SECONDS of audio to send."""
    walls = [o.audio_done_at - o.started_at for o in outcomes]
    chunks = sum(o.chunks_sent for o in outcomes)
    span = max(o.audio_done_at for o in outcomes) - min(o.started_at for o in outcomes)
    return {
        "chunks_sent": chunks,
        "nominal_chunks_per_second": round(len(outcomes) / CHUNK_SECONDS),
        "achieved_chunks_per_second": round(chunks / span),
        "wall_seconds_to_send_each_stream": _percentiles(walls),
        "max_sender_lag_seconds": round(max(o.max_lag for o in outcomes), 3),
    }


def _latencies(spoken: list[FinalSeen]) -> dict[str, object]:
    return {
        "release_to_final_seconds": _percentiles([f.latency or 0.0 for f in spoken]),
        "server_release_to_final_seconds": _percentiles([f.server_seconds for f in spoken]),
        "server_queue_seconds": _percentiles([f.queue_seconds for f in spoken]),
        "server_inference_seconds": _percentiles([f.inference_seconds for f in spoken]),
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    array = np.array(values or [np.nan])
    return {
        "p50": round(float(np.percentile(array, 50)), 3),
        "p95": round(float(np.percentile(array, 95)), 3),
        "max": round(float(array.max()), 3),
    }
