"""Serving behind a Modal tunnel: the part of the Modal deployment that does not need Modal.

whisperwire_modal.py wires Modal's objects into these functions; tests pass loopback stand-ins.

- The gRPC server runs on a thread of its own with its own event loop (`BackgroundServer`). In
  an `@app.cls` container Modal's event loop runs only while an input executes (docs/modal.md,
  "Modal behaviour the code relies on"), so a server started on it would stall between inputs.
- `serve_behind_tunnel` exposes the port with `forward(port, unencrypted=True)`: gRPC needs
  HTTP/2, which the tunnel's TLS endpoint does not offer, so clients use its raw TCP endpoint
  with a plaintext channel. That endpoint is public, hence a bearer token is required.
- The tunnel's address is random per container, so it is published in a registry (a named
  `modal.Dict`) under the container's id, with a heartbeat; clients pick among live entries
  (whisperwire.client.modal_discovery; the entry's format is whisperwire.modal_registry).
- Stopping withdraws the entry first (new clients go elsewhere), then drains (open streams get
  their finals through the still-open tunnel), then closes the tunnel.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar

from whisperwire.modal_registry import HEARTBEAT_SECONDS, TunnelEndpoint
from whisperwire.server.app import RunningServer, start_server
from whisperwire.server.config import ServerSettings
from whisperwire.server.engine import Engine
from whisperwire.server.errors import ConfigurationError
from whisperwire.server.tokenizer import WhisperTokenizer

log = logging.getLogger(__name__)
T = TypeVar("T")


class Tunnel(Protocol):
    """The part of `modal.Tunnel` used here."""

    @property
    def tcp_socket(self) -> tuple[str, int]: ...


class Forward(Protocol):
    """`modal.forward`: exposes a container port while the context is open."""

    def __call__(self, port: int, *, unencrypted: bool = ...) -> AbstractContextManager[Tunnel]: ...


class Registry(Protocol):
    """The part of `modal.Dict` used here."""

    def put(self, key: str, value: dict[str, Any], /) -> object: ...

    def pop(self, key: str, default: Any, /) -> Any: ...


def require_token(settings: ServerSettings) -> None:
    """A tunnel is reachable by anyone who finds its address: refuse to serve without a token."""
    if settings.network.token is None or not settings.network.token.get_secret_value():
        raise ConfigurationError(
            "serving through a public tunnel needs a bearer token: set WHISPERWIRE_TOKEN "
            "(on Modal, in the whisperwire-token Secret)"
        )


# --- the server on its own thread ---------------------------------------------------------


class BackgroundServer:
    """`start_server` on a dedicated thread and event loop; `start` returns once it serves."""

    def __init__(
        self, settings: ServerSettings, engine: Engine, tokenizer: WhisperTokenizer
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._tokenizer = tokenizer
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="whisperwire-grpc", daemon=True)
        self._running: RunningServer | None = None

    @property
    def running(self) -> RunningServer:
        if self._running is None:
            raise RuntimeError("the server is not running")
        return self._running

    def start(self) -> RunningServer:
        self._thread.start()
        try:
            # Includes the warm-up decode: it returns once the server answers SERVING.
            self._running = self._call(start_server(self._settings, self._engine, self._tokenizer))
        except BaseException:
            self._stop_loop()
            raise
        return self._running

    def stop(self, grace: float) -> None:
        """Drain (open streams get their finals within `grace` seconds), then end the thread."""
        if self._running is not None:
            running, self._running = self._running, None
            self._call(running.drain_and_stop(grace))
        self._stop_loop()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            _cancel_leftover_tasks(self._loop)
            self._loop.close()

    def _stop_loop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()


def _cancel_leftover_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())


# --- behind the tunnel, registered ----------------------------------------------------------


class Heartbeat:
    """Re-stamps the endpoint's registry entry every `interval` seconds, on a daemon thread.

    A failed write is logged, not fatal: the server keeps serving the clients it has, and
    clients treat the entry as stale only after several missed beats.
    """

    def __init__(
        self,
        registry: Registry,
        endpoint: TunnelEndpoint,
        interval: float,
        clock: Callable[[], float],
    ) -> None:
        self._registry = registry
        self._endpoint = endpoint
        self._interval = interval
        self._clock = clock
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="whisperwire-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Return once no beat is in flight, so none can re-publish a withdrawn entry."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self._registry.put(
                    self._endpoint.container, self._endpoint.beat(self._clock()).to_entry()
                )
            except Exception:
                log.warning("heartbeat to the endpoint registry failed", exc_info=True)


class TunnelService:
    """A server behind a tunnel, registered while it serves. `stop` is idempotent."""

    def __init__(
        self,
        server: BackgroundServer,
        tunnel: ExitStack,
        registry: Registry,
        endpoint: TunnelEndpoint,
        heartbeat: Heartbeat,
        grace: float,
    ) -> None:
        self.server = server
        self.endpoint = endpoint
        self._tunnel = tunnel
        self._registry = registry
        self._heartbeat = heartbeat
        self._grace = grace
        self._stop_lock = threading.Lock()
        self._stopped = False

    def stop(self, grace: float | None = None) -> None:
        """Withdraw the address, drain, close the tunnel. A concurrent caller waits for it."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
            self._heartbeat.stop()
            self._withdraw()
            try:
                self.server.stop(self._grace if grace is None else grace)
            finally:
                self._tunnel.close()
            log.info("stopped serving through %s", self.endpoint.target)

    def _withdraw(self) -> None:
        try:
            self._registry.pop(self.endpoint.container, None)
        except Exception:
            # Draining matters more; clients will see the entry go stale.
            log.warning("could not withdraw %s from the registry", self.endpoint.container)


def serve_behind_tunnel(
    settings: ServerSettings,
    engine: Engine,
    tokenizer: WhisperTokenizer,
    *,
    forward: Forward,
    registry: Registry,
    key: str,
    heartbeat_interval: float = HEARTBEAT_SECONDS,
    clock: Callable[[], float] = time.time,
) -> TunnelService:
    """Start the server, expose it through `forward`, publish its address under `key`."""
    require_token(settings)
    server = BackgroundServer(settings, engine, tokenizer)
    running = server.start()
    tunnel_scope = ExitStack()
    try:
        tunnel = tunnel_scope.enter_context(forward(running.port, unencrypted=True))
        host, port = tunnel.tcp_socket
        now = clock()
        endpoint = TunnelEndpoint(
            host=host,
            port=port,
            container=key,
            model=engine.info.model,
            engine=engine.info.name,
            started_at=now,
            heartbeat_at=now,
        )
        # Unreachable clients make a server useless: a failed first publish fails startup.
        registry.put(key, endpoint.to_entry())
    except BaseException:
        tunnel_scope.close()
        server.stop(grace=0)
        raise
    heartbeat = Heartbeat(registry, endpoint, heartbeat_interval, clock)
    heartbeat.start()
    log.info("serving %s on port %d through the tunnel %s", key, running.port, endpoint.target)
    grace = settings.network.grace_seconds
    return TunnelService(server, tunnel_scope, registry, endpoint, heartbeat, grace)


def drain_on_sigterm(stop: Callable[[], None]) -> None:
    """On SIGTERM: run `stop` (drain) on a thread, then interrupt this process.

    The interrupt (SIGINT) is how Modal's runtime stops a container itself, so after the drain
    it unwinds the usual way and runs the exit hooks (whose `stop` is then a no-op). Call from
    the main thread (e.g. a sync `@modal.enter`). Repeated SIGTERMs do not restart the drain.
    """
    if threading.current_thread() is not threading.main_thread():
        # Only the main thread may set signal handlers; the exit hook still drains.
        log.warning("not on the main thread: SIGTERM will not drain")
        return
    draining = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if draining.is_set():
            return
        draining.set()
        log.info("SIGTERM: draining")
        # A signal handler must return promptly; the drain takes up to the grace period.
        drain = threading.Thread(target=_stop_then_interrupt, args=(stop,), name="drain")
        drain.start()

    signal.signal(signal.SIGTERM, on_sigterm)


def _stop_then_interrupt(stop: Callable[[], None]) -> None:
    try:
        stop()
    finally:
        os.kill(os.getpid(), signal.SIGINT)


def container_settings(
    engine_dir: Path | None,
    *,
    port: int,
    grace: float,
    checkpoint: Path | None = None,
    http_port: int | None = None,
) -> ServerSettings:
    """Settings of a GPU container, all interfaces, token from the env: TensorRT-LLM engines
    from `engine_dir`, or (given `checkpoint`) the torch engine on an OpenAI checkpoint; the
    OpenAI-compatible HTTP API too when `http_port` is given.

    Every other WHISPERWIRE_* variable (e.g. in the Secret) still applies. The per-client
    stream limit is off unless set there: every caller arrives through Modal's relay, so all
    would share one client address.
    """
    engine: dict[str, Any] = (
        {"engine": "torch", "model": str(checkpoint)}
        if checkpoint is not None
        else {"engine": "trtllm", "engine_dir": engine_dir}
    )
    overrides: dict[str, Any] = {
        **engine,
        "device": "cuda",
        "host": "0.0.0.0",
        "port": port,
        "grace_seconds": grace,
    }
    if http_port is not None:
        overrides["http_port"] = http_port
    if "WHISPERWIRE_MAX_STREAMS_PER_CLIENT" not in os.environ:
        overrides["max_streams_per_client"] = 0
    return ServerSettings(**overrides)
