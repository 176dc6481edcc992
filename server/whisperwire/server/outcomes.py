"""How every RPC ends, in one place: a server interceptor maps each error to a gRPC status,
logs the call and counts it.

Domain errors (errors.py) get their codes and details (rpc_status.py); anything else is a bug
and becomes INTERNAL with ErrorInfo, so a caller never sees UNKNOWN and the server keeps serving
the others. Calls that aborted themselves (a status set on purpose) pass through untouched.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeAlias

import grpc

from whisperwire.server.errors import InternalError, WhisperwireError
from whisperwire.server.logs import request_id
from whisperwire.server.metrics import Metrics
from whisperwire.server.rpc_status import code_for, to_status

log = logging.getLogger(__name__)

Behavior = Callable[..., Any]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class OutcomeInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Wraps every method handler; logs and counts the calls of `service` (not health checks
    or reflection, which would drown the log)."""

    def __init__(self, metrics: Metrics, service: str) -> None:
        self.metrics = metrics
        self.prefix = f"/{service}/"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(details)
        if handler is None:
            return handler  # unknown method: grpc answers UNIMPLEMENTED
        path: str = details.method
        outcome = _Outcome(self.metrics if path.startswith(self.prefix) else None, path)
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.request_streaming and handler.response_streaming:
            behavior = _wrap(handler.stream_stream, outcome)
            return grpc.stream_stream_rpc_method_handler(behavior, **kwargs)
        if handler.request_streaming:
            behavior = _wrap(handler.stream_unary, outcome)
            return grpc.stream_unary_rpc_method_handler(behavior, **kwargs)
        if handler.response_streaming:
            behavior = _wrap(handler.unary_stream, outcome)
            return grpc.unary_stream_rpc_method_handler(behavior, **kwargs)
        behavior = _wrap(handler.unary_unary, outcome)
        return grpc.unary_unary_rpc_method_handler(behavior, **kwargs)


def _wrap(behavior: Behavior | None, outcome: _Outcome) -> Behavior:
    """The same kind of callable as `behavior` (coroutine or async generator), ending in
    `outcome`."""
    assert behavior is not None  # the handler's kind says which behavior it has
    if inspect.isasyncgenfunction(behavior):

        async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            try:
                async with contextlib.aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        yield response
            except Exception as error:
                await outcome.fail(context, error, started)
            outcome.succeed(started)

        return streaming

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        try:
            response = await behavior(request, context)
        except Exception as error:
            await outcome.fail(context, error, started)
        outcome.succeed(started)
        return response

    return unary


class _Outcome:
    """Logs and counts one method's calls (when given metrics) and aborts failed ones."""

    def __init__(self, metrics: Metrics | None, path: str) -> None:
        self.metrics = metrics
        self.method = path.rpartition("/")[2]

    def succeed(self, started: float) -> None:
        if self.metrics is None:
            return
        self.metrics.count_call("grpc", self.method, "OK")
        log.info(
            "%s ok in %.3f s",
            self.method,
            time.perf_counter() - started,
            extra={"request_id": request_id.get()},
        )

    async def fail(
        self, context: grpc.aio.ServicerContext[Any, Any], error: Exception, started: float
    ) -> NoReturn:
        if isinstance(error, grpc.aio.AbortError):
            raise error  # the call set its own status
        mapped = error if isinstance(error, WhisperwireError) else self._unexpected(error)
        self._count(mapped, started)
        await context.abort_with_status(to_status(mapped))  # type: ignore[attr-defined]
        raise AssertionError("abort_with_status returns only by raising")

    def _unexpected(self, error: Exception) -> InternalError:
        log.error(
            "%s failed with an unexpected error",
            self.method,
            exc_info=error,
            extra={"request_id": request_id.get()},
        )
        return InternalError(f"internal error ({type(error).__name__}); the server logged it")

    def _count(self, error: WhisperwireError, started: float) -> None:
        code = code_for(error)
        if self.metrics is not None:
            self.metrics.count_call("grpc", self.method, code.name)
        log.warning(
            "%s failed in %.3f s: %s %s: %s",
            self.method,
            time.perf_counter() - started,
            code.name,
            error.reason,
            error.message,
            extra={"request_id": request_id.get()},
        )
