"""Assembles and runs the server: engine → scheduler → pipeline → servicer, plus health,
reflection, auth, metrics, warm-up and graceful shutdown."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server
from threadpoolctl import threadpool_limits

from whisperwire.server.auth import BearerTokenInterceptor
from whisperwire.server.config import NetworkSettings, ServerSettings
from whisperwire.server.decode_pool import DecodePool
from whisperwire.server.domain import DecodeOptions
from whisperwire.server.engine import Engine
from whisperwire.server.errors import ConfigurationError as ConfigurationError  # re-exported
from whisperwire.server.errors import EngineLostError
from whisperwire.server.http.app import HttpServer, HttpTls, listen
from whisperwire.server.http.routes import AudioApi
from whisperwire.server.metrics import Metrics
from whisperwire.server.outcomes import OutcomeInterceptor
from whisperwire.server.pipeline import SpeechPipeline
from whisperwire.server.scheduler import BatchScheduler
from whisperwire.server.servicer import TranscriptionServicer
from whisperwire.server.state import ServerState
from whisperwire.server.tokenizer import WhisperTokenizer
from whisperwire.server.vad import Span
from whisperwire.v1 import transcription_service_pb2 as pb
from whisperwire.v1 import transcription_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TranscriptionService"].full_name
# Exit status when the engine is lost (EX_TEMPFAIL): the platform should start a fresh process.
ENGINE_LOST_EXIT_CODE = 75


def load_engine(settings: ServerSettings) -> tuple[Engine, WhisperTokenizer]:
    """The configured engine and the tokenizer that matches its vocabulary."""
    if settings.engine.name == "trtllm":
        from whisperwire.server.engines.trtllm_loader import load_trtllm_engine

        return load_trtllm_engine(settings)
    if settings.engine.name == "torch":
        try:
            from whisperwire.server.engines.torch import load_torch_engine
        except ImportError as error:
            raise ConfigurationError(
                f"engine=torch needs PyTorch: pip install 'whisperwire[torch]' ({error})"
            ) from error

        return load_torch_engine(
            settings.engine.model,
            device=settings.engine.device,
            dtype=settings.engine.compute_type,
            max_batch_size=settings.batching.max_batch_size,
            compile_encoder=settings.engine.torch_compile,
        )
    from whisperwire.server.engines.ctranslate2 import CTranslate2Engine
    from whisperwire.server.models import resolve_model

    model_dir = resolve_model(settings.engine.model)
    engine = CTranslate2Engine(
        model_dir,
        model_name=Path(settings.engine.model).name,
        device=settings.engine.device,
        compute_type=settings.engine.compute_type,
        threads=settings.engine.threads,
        max_batch_size=settings.batching.max_batch_size,
    )
    return engine, WhisperTokenizer.from_dir(model_dir)


def check_exposure(settings: ServerSettings) -> None:
    """Refuse to serve beyond loopback without a token."""
    if settings.network.token is not None:
        return
    try:
        loopback = ipaddress.ip_address(settings.network.host).is_loopback
    except ValueError:
        loopback = settings.network.host == "localhost"
    if not loopback:
        raise ConfigurationError(
            f"binding to {settings.network.host} needs --token (or WHISPERWIRE_TOKEN): "
            "the server would be reachable by others"
        )


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    state: ServerState
    scheduler: BatchScheduler
    health: health_aio.HealthServicer
    metrics: Metrics
    pipeline: SpeechPipeline
    http: HttpServer | None = None
    """The OpenAI-compatible HTTP API, when --http-port is set."""
    engine_lost: asyncio.Event = field(default_factory=asyncio.Event)
    """Set once the engine stalled or failed for good: the process should exit."""

    @property
    def http_port(self) -> int | None:
        return None if self.http is None else self.http.port

    def on_engine_lost(self, lost: EngineLostError) -> None:
        """The scheduler's callback (on the event loop): NOT_SERVING, then signal the exit."""
        self.engine_lost.set()
        task = asyncio.get_running_loop().create_task(
            self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        )
        task.add_done_callback(lambda _: None)  # keep a reference until it runs

    async def warm_up(self) -> None:
        """One real decode before reporting SERVING (catches a broken engine early)."""
        started = time.perf_counter()
        t = np.arange(16000, dtype=np.float32) / 16000
        tone = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        language = None if self.pipeline.tokenizer.multilingual else "en"
        options = DecodeOptions(language=language)
        await self.pipeline.transcribe(tone, options, speech=[Span(0, len(tone))])
        self.state.ready = True
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "warm-up decode took %.2f s; serving on port %d",
            time.perf_counter() - started,
            self.port,
        )

    async def drain_and_stop(self, grace: float) -> None:
        """Stop taking calls, give every open utterance its final, then exit."""
        log.info("draining: %d open streams", len(self.state.streams))
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.state.drain()
        stopping = [self.server.stop(grace)]
        if self.http is not None:
            stopping.append(self.http.stop(grace))
        await asyncio.gather(*stopping)
        await self.scheduler.stop()
        if self.pipeline.decode_pool is not None:
            self.pipeline.decode_pool.shutdown()

    async def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)


async def start_server(
    settings: ServerSettings,
    engine: Engine,
    tokenizer: WhisperTokenizer,
    *,
    warm_up: bool = True,
) -> RunningServer:
    check_exposure(settings)
    # A bad TLS setting fails before anything starts.
    credentials = server_credentials(settings.network)
    # Log-mel's matrix product costs ~40 % less CPU on one BLAS thread than on OpenBLAS's
    # spinning pool, at the same wall time, and the engine already has the cores. Only
    # numpy's BLAS is affected: CTranslate2 threads through its own OpenMP runtime.
    threadpool_limits(limits=1, user_api="blas")
    metrics = Metrics()
    metrics.describe_engine(engine.info)
    scheduler = BatchScheduler(
        engine,
        max_batch_size=settings.batching.max_batch_size,
        max_wait=settings.batching.batch_wait_ms / 1000,
        max_queue=settings.batching.max_queue,
        bulk_batch_size=settings.batching.bulk_batch_size,
        step_joins=settings.batching.step_joins,
        bulk_share=settings.batching.bulk_share,
        interactive_first=settings.batching.interactive_first,
        latency_target=settings.batching.latency_target_seconds,
        metrics=metrics,
        stall_seconds=settings.batching.engine_stall_seconds,
        step_batching=settings.batching.step_batching,
    )
    scheduler.start()
    pipeline = SpeechPipeline(
        tokenizer,
        engine.info,
        scheduler,
        max_audio_seconds=settings.limits.max_audio_seconds,
        decode_pool=_decode_pool(settings.engine.decode_processes),
    )
    state = ServerState(settings)
    # The token check runs first: a refused call never reaches the servicer or its counts.
    interceptors: list[grpc.aio.ServerInterceptor] = (  # type: ignore[type-arg]
        [BearerTokenInterceptor(settings.network.token.get_secret_value())]
        if settings.network.token
        else []
    )
    interceptors.append(OutcomeInterceptor(metrics, SERVICE_NAME))
    server = grpc.aio.server(interceptors=interceptors, options=_channel_options(settings))
    pb_grpc.add_TranscriptionServiceServicer_to_server(
        TranscriptionServicer(pipeline, state, metrics), server
    )
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = _listen(server, settings, credentials)
    http = _http_server(settings, pipeline, state, metrics)
    if settings.network.metrics_port is not None:
        start_http_server(
            settings.network.metrics_port, addr=settings.network.host, registry=metrics.registry
        )
    running = RunningServer(
        server, port, state, scheduler, health_servicer, metrics, pipeline, http
    )
    scheduler.set_engine_lost_handler(running.on_engine_lost)
    await running._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    if http is not None:
        await http.start()
    if warm_up:
        await running.warm_up()
    else:
        state.ready = True
        await running._set_health(health_pb2.HealthCheckResponse.SERVING)
    return running


def _http_server(
    settings: ServerSettings, pipeline: SpeechPipeline, state: ServerState, metrics: Metrics
) -> HttpServer | None:
    """The OpenAI-compatible API over the same pipeline (so HTTP and gRPC work is batched
    together), the same token, limits and TLS; bound now, started with the gRPC server."""
    network = settings.network
    if network.http_port is None:
        return None
    return HttpServer(
        AudioApi(pipeline, state, metrics),
        listen(network.host, network.http_port),
        token=network.token.get_secret_value() if network.token else None,
        max_request_bytes=settings.limits.max_request_bytes,
        tls=HttpTls(network.tls_cert, network.tls_key, network.tls_client_ca)
        if network.tls_cert and network.tls_key
        else None,
    )


def _listen(
    server: grpc.aio.Server, settings: ServerSettings, credentials: grpc.ServerCredentials | None
) -> int:
    """Bind the gRPC port (IPv6 literals in brackets), with TLS when `credentials` are given;
    a failure is a startup error."""
    host = f"[{settings.network.host}]" if ":" in settings.network.host else settings.network.host
    address = f"{host}:{settings.network.port}"
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError as error:  # grpcio's "Failed to bind to address ..."
        raise ConfigurationError(f"cannot listen on {address}: {error}") from error


def server_credentials(network: NetworkSettings) -> grpc.ServerCredentials | None:
    """TLS (and mutual TLS with a client CA) from PEM files; None serves plaintext."""
    if network.tls_cert is None and network.tls_key is None:
        if network.tls_client_ca is not None:
            raise ConfigurationError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if network.tls_cert is None or network.tls_key is None:
        raise ConfigurationError("TLS needs both --tls-cert and --tls-key")
    client_ca = (
        _read_pem(network.tls_client_ca, "--tls-client-ca") if network.tls_client_ca else None
    )
    return grpc.ssl_server_credentials(
        [(_read_pem(network.tls_key, "--tls-key"), _read_pem(network.tls_cert, "--tls-cert"))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _read_pem(path: Path, flag: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read {flag} {path}: {error}") from error


def _decode_pool(processes: int) -> DecodePool | None:
    return DecodePool(processes) if processes else None


def _channel_options(settings: ServerSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.limits.max_request_bytes),
        ("grpc.max_send_message_length", settings.limits.max_request_bytes),
        # A second server on a taken port fails to start instead of sharing its connections.
        ("grpc.so_reuseport", 0),
        # Push-to-talk streams sit silent for minutes: let clients keep them alive.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]


async def serve(settings: ServerSettings) -> None:
    """Run until SIGTERM/SIGINT, then drain."""
    check_exposure(settings)
    sys.setswitchinterval(settings.engine.switch_interval_ms / 1000)
    engine, tokenizer = await asyncio.to_thread(load_engine, settings)
    try:
        running = await start_server(settings, engine, tokenizer)
    except EngineLostError:  # the warm-up decode stalled: nothing to serve with
        exit_for_replacement()
    http = "" if running.http_port is None else f", OpenAI HTTP API on port {running.http_port}"
    print(
        f"whisperwire serving {engine.info.model} ({engine.info.name}, {engine.info.device}) "
        f"on {settings.network.host}:{running.port}{http}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waits = [asyncio.ensure_future(event.wait()) for event in (stop, running.engine_lost)]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for waiting in waits:
        waiting.cancel()
    await running.drain_and_stop(settings.network.grace_seconds)
    if running.engine_lost.is_set():
        exit_for_replacement()


def exit_for_replacement() -> None:
    """End the process at once with ENGINE_LOST_EXIT_CODE. A stalled engine thread can be
    neither stopped nor joined, so a normal interpreter exit would wait for it forever."""
    log.critical("the engine is lost; exiting with status %d", ENGINE_LOST_EXIT_CODE)
    logging.shutdown()
    os._exit(ENGINE_LOST_EXIT_CODE)
