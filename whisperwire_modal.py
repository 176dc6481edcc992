# # Whisper over gRPC on Modal, with TensorRT-LLM
#
# This app runs the whisperwire gRPC server on a Modal GPU: OpenAI's Whisper compiled with
# TensorRT-LLM 1.2.1, unary transcription and push-to-talk streaming, behind a bearer token.
#
# Modal's web endpoints speak HTTP/1.1, and gRPC needs HTTP/2. So the server listens on a
# plain port that `modal.forward(port, h2_enabled=True)` exposes through a public TLS tunnel:
# Modal's relay terminates TLS, offers HTTP/2 (which gRPC clients insist on) and passes
# cleartext HTTP/2 to the server. The tunnel's address is random per container, so each
# container publishes it in a named `modal.Dict`, refreshes a heartbeat there while the address
# answers, and withdraws it when it drains; clients (`whisperwire --modal-app whisperwire ...`)
# read the Dict and connect with TLS to a live server.
#
# Operator commands live in a second App, `whisperwire-ops`, so that running them never starts
# the production server (`modal run` creates every function and class of an App). An unverified
# variant behind a stable, load-balanced URL (`@app.server(h2_enabled=True)`) is deployed only
# when asked for (WHISPERWIRE_MODAL_SERVER=1); the OpenAI-compatible HTTP API (`HttpApi`,
# unverified) runs behind Modal's HTTPS proxy, scaled from zero. Details in docs/modal.md.
#
# ```sh
# modal secret create whisperwire-token WHISPERWIRE_TOKEN="$WHISPERWIRE_TOKEN"
# modal run whisperwire_modal.py::build_engines     # once per model/precision/GPU
# modal deploy whisperwire_modal.py                 # the tunnel servers (App `whisperwire`)
# whisperwire --modal-app whisperwire ...           # any machine with Modal credentials
# modal run whisperwire_modal.py::smoke             # tiny.en end to end, prints text + timings
# modal run whisperwire_modal.py::benchmark         # RTFx and push-to-talk latency table
# ```

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
import time
from pathlib import Path, PurePosixPath
from typing import Any, cast

import modal
import tomllib

from whisperwire.client.modal_discovery import resolve_endpoint
from whisperwire.modal_registry import registry_name

# ## Constants
#
# Everything that decides what runs where. The model, precision, GPU and replica count can be
# overridden from the environment of `modal deploy` / `modal run`; the values are handed to the
# containers (see `SETTINGS_ENV`) so that both sides agree.

APP_NAME = "whisperwire"
MINUTES = 60

# L40S (Ada, 48 GB) is on TensorRT-LLM's supported list and fits every Whisper size with room
# for batching. A100/H100 are supported too; A10G/L4 are the same architectures but not listed.
GPU = os.environ.get("WHISPERWIRE_MODAL_GPU", "L40S")
MODEL = os.environ.get("WHISPERWIRE_MODAL_MODEL", "large-v3-turbo")
PRECISION = os.environ.get("WHISPERWIRE_MODAL_PRECISION", "float16")
# trtllm (the default: engines built into the Volume) or torch: the PyTorch engine serves the
# OpenAI checkpoint straight from the Volume, no build: the quickest first deploy, and the
# fallback when a TensorRT-LLM build fails.
ENGINE = os.environ.get("WHISPERWIRE_ENGINE", "trtllm")
# Tunnel servers kept up at all times (each with its own address in the registry).
REPLICAS = int(os.environ.get("WHISPERWIRE_MODAL_REPLICAS", "1"))
# The Dict where tunnel servers register; the smoke test and benchmark use their own.
REGISTRY = os.environ.get("WHISPERWIRE_MODAL_REGISTRY", registry_name(APP_NAME))
SETTINGS_ENV: dict[str, str | None] = {
    "WHISPERWIRE_MODAL_GPU": GPU,
    "WHISPERWIRE_MODAL_MODEL": MODEL,
    "WHISPERWIRE_MODAL_PRECISION": PRECISION,
    "WHISPERWIRE_ENGINE": ENGINE,
    "WHISPERWIRE_MODAL_REGISTRY": REGISTRY,
}

# The load-balanced `@app.server` variant (unverified) is deployed only when set to 1.
SCALE_OUT_SERVER = os.environ.get("WHISPERWIRE_MODAL_SERVER", "") == "1"

SMOKE_MODEL = "tiny.en"
SMOKE_APP = f"{APP_NAME}-smoke"
BENCHMARK_APP = f"{APP_NAME}-benchmark"

GRPC_PORT = 50051
# The OpenAI-compatible HTTP API of the `HttpApi` server class (Modal's proxy adds TLS).
HTTP_PORT = 8000
# Seconds an open stream gets to finish on shutdown (the server's grace period).
DRAIN_SECONDS = 20
ENGINE_LOAD_TIMEOUT = 20 * MINUTES
BUILD_TIMEOUT = 2 * 60 * MINUTES
# An ops server only serves its tunnel, which Modal does not count as work: without this it
# would be scaled down 60 s after its last method call, in the middle of a benchmark.
OPS_SERVER_IDLE = 30 * MINUTES

VOLUME_NAME = "whisperwire"
VOLUME_PATH = PurePosixPath("/whisperwire")
TOKEN_SECRET = "whisperwire-token"

# The TensorRT-LLM 1.2.x stack is CUDA 13 (docs/trtllm.md#install): torch 2.9.1 and torchvision
# built for CUDA 13.0 (PyTorch's cu130 index; PyPI's are CUDA 12 builds), the tensorrt-llm wheel
# from NVIDIA's index (PyPI only has a stub that redirects there), and an R580+ host driver.
CUDA_IMAGE = "nvidia/cuda:13.1.0-devel-ubuntu24.04"
PYTHON_VERSION = "3.12"
TENSORRT_LLM_VERSION = "1.2.1"
TORCH_VERSION = "2.9.1"
TORCH_INDEX_URL = "https://download.pytorch.org/whl/cu130"
NVIDIA_INDEX_URL = "https://pypi.nvidia.com"
MIN_DRIVER_MAJOR = 580  # CUDA 13

PROJECT_DIR = Path(__file__).resolve().parent
PROJECT_IN_IMAGE = "/opt/whisperwire"
NOT_SHIPPED = [
    ".git", ".venv", "node_modules", "**/__pycache__", ".*_cache", ".hypothesis",
    "*.egg-info", "benchmarks/results",
]  # fmt: skip

# The project's speech clips (sources and licences in tests/data/README.md): jfk.flac for the
# smoke test, all of them for the benchmark.
TEST_AUDIO_DIR = PROJECT_DIR / "tests" / "data"
JFK_CLIP = TEST_AUDIO_DIR / "jfk.flac"

# ## The container image
#
# NVIDIA's CUDA 13 devel image with a standalone Python 3.12 and OpenMPI (TensorRT-LLM's runtime
# imports mpi4py; containers run as root, which OpenMPI refuses unless told otherwise, and PMIx
# needs `gds=hash` in containers, as Modal's TensorRT-LLM guide sets). Then, in this order:
# torch and torchvision from the cu130 index, TensorRT-LLM (which keeps that torch), this
# project's dependencies, and last the source, installed without dependencies so nothing above
# moves; an edit rebuilds only the last two layers. `pip check` and a CUDA 13 check end it.


def project_requirements() -> list[str]:
    """The project's client, server and builder dependencies, from pyproject.toml (only read
    where the image is defined, locally; a container never builds it)."""
    if not modal.is_local():
        return []
    project = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return [*project["dependencies"], *extras["server"], *extras["builder"]]


CUDA13_CHECK = (
    "python -c \"import torch; v = torch.version.cuda or 'none'; "
    "assert v.startswith('13'), f'torch is built for CUDA {v}, TensorRT-LLM 1.2.1 needs 13'\""
)

image = (
    modal.Image.from_registry(CUDA_IMAGE, add_python=PYTHON_VERSION)
    .entrypoint([])  # silence the base image's banner
    .apt_install("openmpi-bin", "libopenmpi-dev", "git", "wget")
    .env(
        {
            "OMPI_ALLOW_RUN_AS_ROOT": "1",
            "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "PMIX_MCA_gds": "hash",
        }
    )
    .pip_install(f"torch=={TORCH_VERSION}", "torchvision", index_url=TORCH_INDEX_URL)
    .pip_install(f"tensorrt-llm=={TENSORRT_LLM_VERSION}", extra_index_url=NVIDIA_INDEX_URL)
    .pip_install(*project_requirements())
    .add_local_dir(PROJECT_DIR, PROJECT_IN_IMAGE, copy=True, ignore=NOT_SHIPPED)
    .run_commands(
        f"python -m pip install --no-deps '{PROJECT_IN_IMAGE}'",
        "python -m pip check",
        CUDA13_CHECK,
    )
)

# The serving code needs CUDA and TensorRT-LLM only inside the container; locally (for
# `modal run`/`modal deploy`, and the tests) these imports are plain Python.
with image.imports():  # type: ignore[no-untyped-call]
    from engine_builder import volume as engine_volume
    from engine_builder.environment import detect_gpu_name, installed_trtllm_version
    from whisperwire.server import deploy
    from whisperwire.server.app import load_engine
    from whisperwire.server.config import ServerSettings

# ## Storage, secrets, the app

# One Volume holds the OpenAI checkpoints and every engine build (engines, tokenizer assets
# and manifest per build key).
volume = modal.Volume.from_name(VOLUME_NAME, create_if_missing=True)
# The tunnel is public: every call must carry this token (`WHISPERWIRE_TOKEN`).
token_secret = modal.Secret.from_name(TOKEN_SECRET, required_keys=["WHISPERWIRE_TOKEN"])

app = modal.App(APP_NAME)
# Builds, smoke test and benchmark: running them never creates the production servers above.
ops = modal.App(f"{APP_NAME}-ops")

# ## Building engines
#
# TensorRT engines only run on the GPU type and TensorRT-LLM version that built them, so they
# are built by a function on the serving GPU, into the Volume. engine_builder names each build
# by a key covering the model, precision, TensorRT-LLM version, GPU and options; a key that is
# already on the Volume is not built again.


@ops.function(
    image=image,
    gpu=GPU,
    volumes={VOLUME_PATH: volume},
    env=SETTINGS_ENV,
    timeout=BUILD_TIMEOUT,
    cpu=8,
    memory=32 * 1024,
)
def build_engines(model: str = MODEL, precision: str = PRECISION, gpu: str = GPU) -> dict[str, Any]:
    deploy.require_gpu_driver(MIN_DRIVER_MAJOR)
    root = Path(VOLUME_PATH)
    result = engine_volume.build_into_volume(root, model, precision, gpu=gpu, commit=volume.commit)
    status = "built" if result.built else "already built"
    print(f"{status}: {result.engine_dir}")
    return {"engine_dir": str(result.engine_dir), "built": result.built}


def serving_settings(model: str = "", http_port: int | None = None) -> ServerSettings:
    """Settings for this container serving `model` (default MODEL), with the HTTP API on
    `http_port` if given: the newest matching engine build on the Volume, or with
    WHISPERWIRE_ENGINE=torch the OpenAI checkpoint itself (downloaded once into the Volume).
    Either way the image's CUDA 13 needs an R580+ driver."""
    deploy.require_gpu_driver(MIN_DRIVER_MAJOR)
    if ENGINE == "torch":
        checkpoint = engine_volume.fetch_checkpoint(
            Path(VOLUME_PATH), model or MODEL, commit=volume.commit
        )
        return deploy.container_settings(
            None, port=GRPC_PORT, grace=DRAIN_SECONDS, checkpoint=checkpoint, http_port=http_port
        )
    engine_dir = engine_volume.find_engine_dir(
        Path(VOLUME_PATH, engine_volume.ENGINES_DIR),
        model or MODEL,
        PRECISION,
        trtllm_version=installed_trtllm_version() or TENSORRT_LLM_VERSION,
        gpu_name=detect_gpu_name(),
    )
    return deploy.container_settings(
        engine_dir, port=GRPC_PORT, grace=DRAIN_SECONDS, http_port=http_port
    )


# ## Serving through a tunnel
#
# Each container loads the engine, starts the gRPC server on its own thread and event loop
# (Modal's loop only runs while an input executes), opens the TLS tunnel, and registers. Modal
# keeps `REPLICAS` containers up (`min_containers`); tunnel traffic is not a Modal input, so
# this is what keeps them alive, and what replaces one that dies, is preempted, or exits because
# its engine stalled (its replacement registers a new address). The one method, `endpoint`,
# answers which address this container has.


def open_tunnel_service(model: str, registry: str) -> deploy.TunnelService:
    """Load `model`'s engines, serve them through a TLS tunnel, register in `registry`."""
    settings = serving_settings(model)
    engine, tokenizer = load_engine(settings)
    service = deploy.serve_behind_tunnel(
        settings,
        engine,
        tokenizer,
        forward=modal.forward,
        registry=modal.Dict.from_name(registry, create_if_missing=True),
        key=os.environ.get("MODAL_TASK_ID") or f"local-{os.getpid()}",
    )
    # Modal stops containers with an interrupt (which runs the exit hook); a SIGTERM drains
    # the same way.
    deploy.drain_on_sigterm(service.stop)
    return service


@app.cls(
    image=image,
    gpu=GPU,
    volumes={VOLUME_PATH: volume},
    secrets=[token_secret],
    env=SETTINGS_ENV,
    min_containers=REPLICAS,
    max_containers=REPLICAS,
    startup_timeout=ENGINE_LOAD_TIMEOUT,
    timeout=5 * MINUTES,
)
class TunnelServer:
    @modal.enter()
    def start(self) -> None:
        self.service = open_tunnel_service(MODEL, REGISTRY)

    @modal.method()
    def endpoint(self) -> dict[str, Any]:
        return self.service.endpoint.to_entry()

    @modal.exit()
    def stop(self) -> None:
        self.service.stop()


# ## Serving behind Modal's web proxy
#
# The two `@app.server` classes below start the same server on its own thread in their enter
# hook (it returns once the server is warm and serving) and drain it in their exit hook; they
# differ only in what Modal's proxy forwards: HTTP/2 to the gRPC port, or HTTP/1.1 to the HTTP
# API's.


def start_server(http_port: int | None = None) -> deploy.BackgroundServer:
    """The server behind Modal's proxy, token required, started and warm: gRPC on GRPC_PORT,
    and the HTTP API on `http_port` if given."""
    settings = serving_settings(http_port=http_port)
    deploy.require_token(settings)
    engine, tokenizer = load_engine(settings)
    server = deploy.BackgroundServer(settings, engine, tokenizer)
    server.start()
    return server


# ## Scaling out behind one URL (unverified, opt-in)
#
# `@app.server` gives a stable URL (`https://<workspace>--whisperwire-grpcserver.<region>.
# modal.direct`, printed by `modal deploy`) that load-balances over containers and scales them
# with the number of concurrent requests. With `h2_enabled=True` Modal's proxy forwards HTTP/2
# to the container as cleartext h2c, which a gRPC server on a plain port accepts. Nobody has run
# gRPC through it yet, and its URL is predictable: any request to it can cold-start a GPU. So it
# is deployed only with WHISPERWIRE_MODAL_SERVER=1. Modal's proxy authentication is off (gRPC
# clients here do not send Modal-Key/Modal-Secret); the server's bearer token is not.

# What both servers behind Modal's proxy share: the engine's container, the token, scaling.
PROXIED_SERVER: dict[str, Any] = {
    "image": image,
    "gpu": GPU,
    "volumes": {VOLUME_PATH: volume},
    "secrets": [token_secret],
    "env": SETTINGS_ENV,
    "unauthenticated": True,
    "startup_timeout": ENGINE_LOAD_TIMEOUT,
    "exit_grace_period": DRAIN_SECONDS + 10,
    "target_concurrency": 16,
    "min_containers": 0,
    "max_containers": 4,
}

if SCALE_OUT_SERVER:

    @app.server(**PROXIED_SERVER, port=GRPC_PORT, h2_enabled=True)
    class GrpcServer:
        @modal.enter()
        def start(self) -> None:
            self.server = start_server()

        @modal.exit()
        def stop(self) -> None:
            self.server.stop(DRAIN_SECONDS)


# ## The OpenAI-compatible HTTP API, over TLS (unverified)
#
# The same server also speaks OpenAI's audio API over HTTP/1.1 (`--http-port`), which Modal's
# web proxy carries as it is: `@app.server` without `h2_enabled` gives a stable HTTPS URL
# (`https://<workspace>--whisperwire-httpapi.<region>.modal.direct`, printed by `modal deploy`)
# whose TLS ends at Modal's proxy, which forwards plain HTTP to `HTTP_PORT` in the container.
# Modal's proxy authentication is off; the server's bearer token is not, and OpenAI's SDKs
# send it as their API key (`OpenAI(base_url=<url>/v1, api_key=$WHISPERWIRE_TOKEN)`).


@app.server(**PROXIED_SERVER, port=HTTP_PORT)
class HttpApi:
    @modal.enter()
    def start(self) -> None:
        self.server = start_server(http_port=HTTP_PORT)

    @modal.exit()
    def stop(self) -> None:
        self.server.stop(DRAIN_SECONDS)


# ## A server for the ops entrypoints
#
# The smoke test and the benchmark start their own tunnel server, of the model they test and
# registered in their own Dict, in the ops App: clients of the deployed app never see it, and
# running them never starts a production server. It stays up for `OPS_SERVER_IDLE` after its last
# call (tunnel traffic does not count), so it is not scaled down mid-run.


@ops.cls(
    image=image,
    gpu=GPU,
    volumes={VOLUME_PATH: volume},
    secrets=[token_secret],
    env=SETTINGS_ENV,
    max_containers=1,
    scaledown_window=OPS_SERVER_IDLE,
    startup_timeout=ENGINE_LOAD_TIMEOUT,
    timeout=5 * MINUTES,
)
class OpsServer:
    @modal.enter()
    def start(self) -> None:
        # `ops_server` sets these for each run, in the container's environment.
        self.service = open_tunnel_service(MODEL, REGISTRY)

    @modal.method()
    def endpoint(self) -> dict[str, Any]:
        return self.service.endpoint.to_entry()

    @modal.exit()
    def stop(self) -> None:
        self.service.stop()


def ops_server(model: str, registry_app: str) -> Any:
    """An OpsServer of `model`, registering in `registry_app`'s Dict."""
    env: dict[str, str | None] = {
        **SETTINGS_ENV,
        "WHISPERWIRE_MODAL_MODEL": model,
        "WHISPERWIRE_MODAL_REGISTRY": registry_name(registry_app),
    }
    # with_options replaces the secrets, so the token Secret is passed again; the variant
    # scales on its own, so it gets the idle window too.
    variant = cast(modal.Cls, OpsServer).with_options(
        secrets=[token_secret], env=env, scaledown_window=OPS_SERVER_IDLE
    )
    return variant()


# ## Smoke test: `modal run whisperwire_modal.py::smoke`
#
# Builds tiny.en engines if they are missing, starts a tiny.en ops server, finds it through its
# registry as any client would, and transcribes jfk.flac through the TLS tunnel with the SDK.
# Needs the token locally in `WHISPERWIRE_TOKEN`.


@ops.local_entrypoint()
def smoke(audio: str = "") -> None:
    token = local_token()
    clip = Path(audio) if audio else JFK_CLIP
    print("engines:", build_engines.remote(SMOKE_MODEL, "float16", GPU))
    started = time.perf_counter()
    endpoint = ops_server(SMOKE_MODEL, SMOKE_APP).endpoint.remote()
    print(f"server up in {time.perf_counter() - started:.1f} s: {endpoint}")
    found = resolve_endpoint(SMOKE_APP)
    print(asyncio.run(transcribe_once(found.target, token, clip, tls=found.tls)).describe())


def local_token() -> str:
    token = os.environ.get("WHISPERWIRE_TOKEN", "")
    if not token:
        raise SystemExit(
            "set WHISPERWIRE_TOKEN to the token stored in the whisperwire-token Modal Secret"
        )
    return token


@dataclasses.dataclass(frozen=True)
class SmokeReport:
    target: str
    text: str
    model: str
    audio_seconds: float
    round_trip_seconds: float
    server_timings: dict[str, float]

    def describe(self) -> str:
        timings = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in self.server_timings.items())
        return (
            f"{self.target} ({self.model}): {self.text!r}\n"
            f"{self.audio_seconds:.1f} s of audio in {self.round_trip_seconds * 1000:.0f} ms "
            f"round trip; server: {timings}"
        )


async def transcribe_once(
    target: str,
    token: str,
    audio: Path,
    *,
    tls: bool = True,
    root_certificates: bytes | None = None,
) -> SmokeReport:
    """One Transcribe call with server-side timings (TLS with the system's roots by default)."""
    from whisperwire.client.aio import AsyncClient
    from whisperwire.client.options import RecognitionOptions

    options = RecognitionOptions(language="en", include_timings=True)
    async with AsyncClient(
        target, token=token, tls=tls, root_certificates=root_certificates, timeout=5 * MINUTES
    ) as client:
        started = time.perf_counter()
        transcript = await client.transcribe(audio, options)
        round_trip = time.perf_counter() - started
    timings = transcript.timings
    return SmokeReport(
        target=target,
        text=transcript.text.strip(),
        model=transcript.model,
        audio_seconds=transcript.duration,
        round_trip_seconds=round_trip,
        server_timings={} if timings is None else dataclasses.asdict(timings),
    )


# ## Benchmark: `modal run whisperwire_modal.py::benchmark`
#
# Starts a tunnel server of `--model` (building engines if needed), then, from this machine and
# at each concurrency level: unary Transcribe calls back to back (RTFx = seconds of audio
# transcribed per second of wall time, latency per call), and push-to-talk streams that send
# their clip in real time and release the key (latency = release to final). The numbers
# include the path from here to Modal's relay. Clips: the LibriSpeech-length files in
# `--audio-dir` (default: the project's clips in tests/data; jfk.flac if the folder has none).


@ops.local_entrypoint()
def benchmark(
    model: str = MODEL, concurrency: str = "1,4,16", rounds: int = 3, audio_dir: str = ""
) -> None:
    token = local_token()
    clips = load_clips(benchmark_files(Path(audio_dir) if audio_dir else TEST_AUDIO_DIR))
    print("engines:", build_engines.remote(model, PRECISION, GPU))
    endpoint = ops_server(model, BENCHMARK_APP).endpoint.remote()
    print(f"server: {endpoint}")
    levels = [int(level) for level in concurrency.split(",")]
    found = resolve_endpoint(BENCHMARK_APP)
    rows = asyncio.run(run_benchmark(found.target, token, clips, levels, rounds, tls=found.tls))
    print(format_table(rows))


AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".m4a"}
CHUNK_SECONDS = 0.1


def benchmark_files(audio_dir: Path) -> list[Path]:
    files = sorted(p for p in audio_dir.glob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    return files or [JFK_CLIP]


@dataclasses.dataclass(frozen=True)
class BenchClip:
    name: str
    data: bytes
    """The file as sent to Transcribe."""
    pcm: bytes
    """16 kHz mono s16le, as a push-to-talk client streams it."""
    seconds: float


def load_clips(paths: list[Path]) -> list[BenchClip]:
    import numpy as np

    from whisperwire.server.audio import decode_audio

    clips = []
    for path in paths:
        data = path.read_bytes()
        samples = decode_audio(data)
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        clips.append(BenchClip(path.name, data, pcm, len(samples) / 16000))
    return clips


@dataclasses.dataclass(frozen=True)
class BenchRow:
    concurrency: int
    requests: int
    rtfx: float
    unary_p50: float
    unary_p95: float
    streams: int
    ptt_p50: float
    ptt_p95: float


async def run_benchmark(
    target: str,
    token: str,
    clips: list[BenchClip],
    concurrencies: list[int],
    rounds: int,
    *,
    pace: float = 1.0,
    tls: bool = True,
    root_certificates: bytes | None = None,
) -> list[BenchRow]:
    """One row per concurrency level. `pace` 1.0 streams audio in real time; 0 as fast as it can."""
    from whisperwire.client.channel import Connection

    connection = Connection(target, token, tls=tls, root_certificates=root_certificates)
    rows = []
    for level in concurrencies:
        audio_seconds, wall, unary = await _unary_level(connection, clips, level, rounds)
        ptt = await _push_to_talk_level(connection, clips, level, rounds, pace)
        rows.append(
            BenchRow(
                concurrency=level,
                requests=len(unary),
                rtfx=audio_seconds / wall,
                unary_p50=statistics.median(unary),
                unary_p95=_p95(unary),
                streams=len(ptt),
                ptt_p50=statistics.median(ptt),
                ptt_p95=_p95(ptt),
            )
        )
    return rows


async def _unary_level(
    connection: Any, clips: list[BenchClip], level: int, rounds: int
) -> tuple[float, float, list[float]]:
    from whisperwire.client.options import RecognitionOptions

    options = RecognitionOptions(language="en")

    async def worker(index: int) -> list[tuple[float, float]]:
        done = []
        async with _client(connection) as client:
            await client.health()  # connect before timing
            for round_ in range(rounds):
                clip = clips[(index + round_) % len(clips)]
                started = time.perf_counter()
                await client.transcribe(clip.data, options)
                done.append((clip.seconds, time.perf_counter() - started))
        return done

    started = time.perf_counter()
    results = await asyncio.gather(*(worker(i) for i in range(level)))
    wall = time.perf_counter() - started
    calls = [call for worker_calls in results for call in worker_calls]
    return sum(seconds for seconds, _ in calls), wall, [latency for _, latency in calls]


async def _push_to_talk_level(
    connection: Any, clips: list[BenchClip], level: int, rounds: int, pace: float
) -> list[float]:
    from whisperwire.client.aio import AsyncClient
    from whisperwire.client.options import RecognitionOptions, StreamOptions
    from whisperwire.client.results import FinalResult

    options = StreamOptions(recognition=RecognitionOptions(language="en"))
    chunk_bytes = int(16000 * CHUNK_SECONDS) * 2

    async def utterance(client: AsyncClient, clip: BenchClip) -> float:
        async with await client.stream(options) as stream:
            for start in range(0, len(clip.pcm), chunk_bytes):
                await stream.push(clip.pcm[start : start + chunk_bytes])
                if pace > 0:
                    await asyncio.sleep(CHUNK_SECONDS / pace)
            released = time.perf_counter()
            await stream.end_utterance()
            async for event in stream:
                if isinstance(event, FinalResult):
                    return time.perf_counter() - released
        raise RuntimeError("the stream ended without a final")

    async def worker(index: int) -> list[float]:
        async with _client(connection) as client:
            await client.health()
            return [
                await utterance(client, clips[(index + round_) % len(clips)])
                for round_ in range(rounds)
            ]

    results = await asyncio.gather(*(worker(i) for i in range(level)))
    return [latency for worker_latencies in results for latency in worker_latencies]


def _client(connection: Any) -> Any:
    from whisperwire.client.aio import AsyncClient

    return AsyncClient(
        connection.target,
        token=connection.token,
        tls=connection.tls,
        root_certificates=connection.root_certificates,
    )


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def format_table(rows: list[BenchRow]) -> str:
    header = (
        "concurrency", "calls", "RTFx", "unary p50 ms", "unary p95 ms",
        "streams", "PTT p50 ms", "PTT p95 ms",
    )  # fmt: skip
    lines = [header] + [
        (
            str(row.concurrency),
            str(row.requests),
            f"{row.rtfx:.1f}",
            f"{row.unary_p50 * 1000:.0f}",
            f"{row.unary_p95 * 1000:.0f}",
            str(row.streams),
            f"{row.ptt_p50 * 1000:.0f}",
            f"{row.ptt_p95 * 1000:.0f}",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(_row(line, widths) for line in lines)


def _row(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True))
