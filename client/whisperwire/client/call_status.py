"""The status the server sent for a streaming call, kept safe from a grpcio race.

grpcio's asyncio client (1.85 included) replaces a call's status with INTERNAL "Internal error
from Core" when a write loses the race with the server ending the call: the write was issued
just before the status arrived and fails just after (grpc/grpc#36066). The server's own status
(say UNAVAILABLE SERVER_DRAINING with its RetryInfo) came first; `ServerStatus` records the
first status a call gets, so the SDK reports what the server said.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import grpc

T = TypeVar("T")
_CORE_WRITE_FAILURE = "Internal error from Core"


class ServerStatus:
    """Attach right after creating a call; `error_for` then undoes the race."""

    def __init__(self, call: grpc.aio.Call) -> None:
        self._first: grpc.aio.AioRpcError | None = None
        call.add_done_callback(self._record)

    @property
    def ended_ok(self) -> bool:
        return self._first is not None and self._first.code() == grpc.StatusCode.OK

    def error_for(self, error: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError | None:
        """The error the call really ended with: the server's, or None when it ended OK."""
        overwritten = (
            error.code() == grpc.StatusCode.INTERNAL and error.details() == _CORE_WRITE_FAILURE
        )
        if not overwritten or self._first is None:
            return error
        return None if self.ended_ok else self._first

    def _record(self, call: grpc.aio.Call) -> None:
        # Called once, synchronously, when the first status is set: the status accessors are
        # coroutines that finish without suspending from here on.
        self._first = grpc.aio.AioRpcError(
            _finished(call.code()),
            _finished(call.initial_metadata()),
            _finished(call.trailing_metadata()),
            _finished(call.details()),
            "",  # the debug string is not part of the Call interface
        )


def _finished(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that completes without suspending."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("the call's status is not set yet")
