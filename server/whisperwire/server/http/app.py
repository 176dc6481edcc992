"""The Starlette app and its uvicorn server, run on the gRPC server's event loop.

Middlewares, outermost first: call log and metrics (every API call is counted under the
`http` protocol with its status), bearer token (before the body is read, so a wrong token
costs no upload), body limit (a declared Content-Length over the limit is refused unread; a
chunked body is cut off once it passes the limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from whisperwire.server.auth import bearer_matches
from whisperwire.server.errors import ConfigurationError, WhisperwireError
from whisperwire.server.http.errors import (
    RequestTooLargeError,
    UnauthenticatedError,
    error_response,
    handle_domain_error,
    handle_http_error,
    handle_unexpected_error,
)
from whisperwire.server.http.routes import PROTOCOL, AudioApi
from whisperwire.server.metrics import Metrics

log = logging.getLogger(__name__)

# Probes work without the token, as gRPC health does.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
# Calls counted in the metrics, by path (a fixed set keeps the label's values bounded).
API_PATHS = frozenset({"/v1/audio/transcriptions", "/v1/audio/translations", "/v1/models"})


Lifespan = Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]


def build_app(
    api: AudioApi, *, token: str | None, max_request_bytes: int, lifespan: Lifespan | None = None
) -> Starlette:
    routes = [
        Route("/v1/audio/transcriptions", api.transcriptions, methods=["POST"]),
        Route("/v1/audio/translations", api.translations, methods=["POST"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/models/{model:path}", api.model, methods=["GET"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/readyz", api.readyz, methods=["GET"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(CallLog, metrics=api.metrics),
            Middleware(BearerAuth, token=token),
            Middleware(BodyLimit, max_bytes=max_request_bytes),
        ],
        exception_handlers={
            WhisperwireError: handle_domain_error,
            HTTPException: handle_http_error,
            Exception: handle_unexpected_error,
        },
        lifespan=lifespan,
    )


class CallLog:
    """Request id (the caller's `X-Request-Id` or a new one, echoed back), status metrics,
    one log line per API call."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in API_PATHS:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = Headers(scope=scope).get("x-request-id") or uuid.uuid4().hex
        status = 500  # if the app fails before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["x-request-id"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.count_call(PROTOCOL, scope["path"], str(status))
            log.info(
                "%s %s %d in %.3f s",
                scope["method"],
                scope["path"],
                status,
                time.perf_counter() - started,
                extra={"request_id": request_id},
            )


class BearerAuth:
    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.token is None
            or scope["path"] in OPEN_PATHS
            or bearer_matches(Headers(scope=scope).get("authorization", ""), self.token)
        ):
            await self.app(scope, receive, send)
            return
        denied = UnauthenticatedError("missing or wrong bearer token (Authorization: Bearer …)")
        await error_response(denied)(scope, receive, send)


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(self._too_large(int(declared)))(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise self._too_large(received)  # answered by the app's error handler
            return message

        await self.app(scope, limited, send)

    def _too_large(self, size: int) -> RequestTooLargeError:
        return RequestTooLargeError(
            f"the request body ({size} bytes so far) is over the server's limit of "
            f"{self.max_bytes} bytes (--max-request-bytes)"
        )


class HttpServer:
    """uvicorn serving the API on an already listening socket, as a task on the running loop.

    The socket is bound before uvicorn starts, so a taken port is a startup error and port 0
    is resolved at once; connections that arrive before uvicorn accepts wait in the backlog.
    """

    def __init__(
        self, api: AudioApi, sock: socket.socket, *, token: str | None, max_request_bytes: int
    ) -> None:
        self._socket = sock
        self._lifespan_started = asyncio.Event()
        app = build_app(
            api, token=token, max_request_bytes=max_request_bytes, lifespan=self._lifespan
        )
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        started = asyncio.create_task(self._lifespan_started.wait())
        await asyncio.wait({self._task, started}, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():
            started.cancel()
            await self._task  # raises what stopped it, if anything did
            raise ConfigurationError("the HTTP server stopped while starting (see the log)")

    async def stop(self, grace: float) -> None:
        """Close the listener, let requests in flight finish within `grace` s, then stop."""
        if self._task is None:
            return
        self._server.config.timeout_graceful_shutdown = max(
            1, math.ceil(grace)
        )  # uvicorn takes whole seconds
        self._server.should_exit = True
        await self._task
        self._socket.close()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._lifespan_started.set()
        yield


class _Server(uvicorn.Server):
    """The app owns SIGTERM/SIGINT (it drains gRPC and HTTP together): uvicorn must not
    install its own handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv6 literals too); a failure is a startup error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as error:
        raise ConfigurationError(f"cannot listen for HTTP on {host}:{port}: {error}") from error
